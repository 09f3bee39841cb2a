"""The shipped pretrained models: a literal registry from a short name to a folder inside the package.

Every command that takes a checkpoint folder also takes one of these names (``ldmkit sample fmnist-text``),
and a shipped model's config may name its first stage by registry name (``"first_stage": "fmnist-ae-kl-f4"``),
so the folders work wherever the package is installed. ``resolve`` is the one place a name becomes a folder;
``training.checkpoint.resolve_checkpoint`` calls it, so every loader sees the same names.

Each folder holds a checkpoint (``config.json`` + ``ema.safetensors`` or ``model.safetensors``) and a
``model.json`` card written by ``scripts/train_pretrained.py``: task, parameters, training time and the
figures measured on the machine that trained it. ``tests/test_shipped_models.py`` checks every entry: it
loads, runs, and its weights' sha256 equals the card's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent / "assets"

# name -> (folder under assets/, task). Literal on purpose: `ldmkit models` lists exactly these.
SHIPPED: dict[str, tuple[str, str]] = {
    "fmnist-ae-kl-f4": ("fmnist_ae_kl_f4", "first stage (KL-f4 autoencoder)"),
    "fmnist-text": ("fmnist_text", "text-to-image (and class names)"),
    "fmnist-sr4": ("fmnist_sr4", "super-resolution x4"),
    "fmnist-inpaint": ("fmnist_inpaint", "inpainting"),
    "collage-layout": ("collage_layout", "layout-to-image (fashion-collage, 64x64)"),
    "demo-ddpm-fmnist": ("demo_ddpm_fmnist", "unconditional (pixel DDPM)"),
}
DEFAULT_TEXT_MODEL = "fmnist-text"
FIRST_STAGES = ("fmnist-ae-kl-f4",)  # autoencoders: shared by the others, not diffusion models themselves


def folder(name: str) -> Path:
    """The asset folder of a shipped model (it may be missing in a partial install; see :func:`available`)."""
    from ldmkit.registry import lookup

    return ASSETS / lookup(SHIPPED, name, "shipped model")[0]


def available() -> list[str]:
    """The registry names whose folder is installed (a checkpoint ``config.json`` present)."""
    return [n for n, (f, _) in SHIPPED.items() if (ASSETS / f / "config.json").is_file()]


def resolve(name_or_path: str | os.PathLike) -> Path:
    """``name_or_path`` as a path: an existing path stays itself (a folder named like a model wins), a
    registry name becomes its asset folder, anything else is returned unchanged for the caller's error."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in SHIPPED:
        return path
    return folder(str(name_or_path))


def card(name: str) -> dict[str, Any]:
    """The ``model.json`` card of a shipped model (``{}`` when its folder has none: a partial install)."""
    path = folder(name) / "model.json"
    if not path.is_file():
        return {}
    with open(path) as f:
        return json.load(f)


def headline(card: dict[str, Any]) -> str:
    """The one figure that says how good a model is, from its card's evaluation results."""
    results = (card.get("evaluation") or {}).get("results")
    if not results:
        return "-"
    if "psnr_db" in results:
        return f"PSNR {results['psnr_db']:.1f} dB, rFID {results['rfid']:.2f} (N={results['num']})"
    if "rows" in results and results.get("task") == "sr":
        r = results["rows"][-1]
        fid = next(k for k in r if k.startswith("FID"))
        return f"PSNR {r['PSNR (dB)']} dB, {fid} {r[fid]}"
    if "rows" in results and results.get("task") == "inpaint":
        r = next((r for r in results["rows"] if r["method"].startswith("trained")), results["rows"][0])
        fid = next(k for k in r if k.startswith("FID"))
        return f"{r['masks']} masks: {fid} {r[fid]}"
    if isinstance(results, list) and results and "accuracy" in results[0]:
        r = results[-1]
        return f"held-out prompts in class {100 * r['accuracy']:.1f}%, FID {r['fid']:.2f} (N={r.get('num_samples', '?')}, guidance {r.get('guidance_scale')})"
    if isinstance(results, dict) and "samples" in results:
        s = results["samples"]
        return f"boxes right {100 * s.get('both', 0):.0f}%, mean IoU {s.get('mean_iou', 0):.2f}"
    return "-"


def card_of_folder(path: str | os.PathLike) -> dict[str, Any]:
    """The card of the shipped model stored at ``path`` (a loaded model's checkpoint folder), else ``{}``."""
    p = Path(path).resolve()
    for name, (sub, _) in SHIPPED.items():
        if (ASSETS / sub).resolve() == p:
            return {"name": name, **card(name)}
    return {}
