#!/usr/bin/env python
"""First-stage ablations for ``configs/ldm_fast_fmnist.yaml`` at the recipe's autoencoder budget (issue 11).

A latent diffusion model can be no better than its decoder: the FID of *reconstructions* bounds the FID
of samples from below. This script trains the recipe's autoencoder section with a few ``--key=value``
overrides each, for the same wall clock (``--minutes``, default 7.5 = the recipe's 25% of 30 minutes), one
variant after another, alone on the machine, with the command a user runs::

    ldmkit train-ae OUT/VARIANT/ae.yaml --out OUT/VARIANT --no-progress --train.max_minutes=M [overrides]

(``ae.yaml`` = the recipe's ``autoencoder`` section plus its ``data`` section), then scores each on
``--num`` training images (seeded subset, disjoint from the reference subset; posterior mode; padding
cropped off): PSNR, SSIM and **rFID**
in the fmnist-eval-v2 feature space (the evaluation network, which no autoencoder loss uses) between
the images and their reconstructions, and the FID of the reconstructions against a reference (default a
10,000 subset of the train split: choices are not made on the test split). Prints a Markdown table and
writes ``OUT/ae_ablations.json``. A variant folder that already holds ``scores.json`` is read, one with a
``checkpoints`` folder is scored, not retrained (the baseline row of docs/benchmarks.md is the autoencoder
stage of the 30-minute ``train-ldm`` run, the same config and minutes).

    python benchmarks/ae_ablations.py --variants baseline,z8,lr5e-4 --out /work/runs/ae_ablations
    python benchmarks/ae_ablations.py --checkpoints RUN/autoencoder/checkpoints/step_0002500 RUN/autoencoder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (what it changes, overrides of the autoencoder run config)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the recipe's autoencoder as shipped", []),
    "z8": ("8 latent channels instead of 4", ["--model.z_channels=8"]),
    "z3": ("3 latent channels instead of 4", ["--model.z_channels=3"]),
    "lr5e-4": ("learning rate 2e-4 -> 5e-4", ["--train.lr=5e-4"]),
    "lr1e-3": ("learning rate 2e-4 -> 1e-3", ["--train.lr=1e-3"]),
    "ch64": ("width 32 -> 64", ["--model.channels=64"]),
    "res2": ("2 residual blocks per level instead of 1", ["--model.num_res_blocks=2"]),
    "batch16": ("batch 32 -> 16", ["--train.batch_size=16"]),
    "batch64": ("batch 32 -> 64", ["--train.batch_size=64"]),
    "noperceptual": ("L1 only (perceptual weight 0)", ["--loss.perceptual_weight=0"]),
    "perceptual0.3": ("perceptual weight 1 -> 0.3", ["--loss.perceptual_weight=0.3"]),
    "noattn": ("no self-attention in the middle block", ["--model.mid_attention=false"]),
    "z8_lr5e-4": ("8 latent channels and learning rate 5e-4", ["--model.z_channels=8", "--train.lr=5e-4"]),
    "z8_lr1e-3": ("8 latent channels and learning rate 1e-3", ["--model.z_channels=8", "--train.lr=1e-3"]),
    "bf16": ("bfloat16 autocast of the forward passes (weights and optimizers fp32)", ["--train.bf16=true"]),
}


def ae_config(recipe: Path, out: Path) -> Path:
    import yaml

    data = yaml.safe_load(recipe.read_text())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ae.yaml"
    path.write_text(yaml.safe_dump({**data["autoencoder"], "data": data["data"]}, sort_keys=False))
    return path


def score(run: Path, num: int, seed: int, reference: str, n_reference: int) -> dict:
    import numpy as np
    import torch

    from ldmkit.autoencoders.checkpoint import load_autoencoder
    from ldmkit.autoencoders.config import load_config
    from ldmkit.data import data_padding
    from ldmkit.metrics.evaluate import evaluate_images
    from ldmkit.metrics.features import get_extractor
    from ldmkit.metrics.reconstruction import reconstruction_metrics, rfid
    from ldmkit.pipelines import autoencoder_images
    from ldmkit.training import checkpoint as ckpt_io

    ckpt = ckpt_io.resolve_checkpoint(run)
    ae, meta = load_autoencoder(ckpt)
    cfg = load_config(None, data=meta["config"])
    images = autoencoder_images(cfg, limit=None)
    pool = np.arange(len(images))
    if reference == f"{cfg.data.name}:{cfg.data.split}":  # disjoint from the reference subset (seed 0)
        pool = np.setdiff1d(pool, np.random.default_rng(0).choice(len(images), n_reference, replace=False))
    idx = np.sort(np.random.default_rng(seed).choice(pool, num, replace=False))
    x = images[torch.from_numpy(idx)]
    with torch.no_grad():
        rec = torch.cat([ae.decode(ae.encode(x[i:i + 250]).mode()) for i in range(0, len(x), 250)]).clamp(-1, 1)
    pad = data_padding(cfg.data)
    x, rec = pad.crop(x), pad.crop(rec)
    ext = get_extractor("fmnist-eval-v2")
    r = rfid(x, rec, extractor=ext)
    fid = evaluate_images(rec, reference=reference, metrics=("fid",), extractor=ext, n_reference=n_reference,
                          value_range=(-1.0, 1.0))
    fid_real = evaluate_images(x, reference=reference, metrics=("fid",), extractor=ext, n_reference=n_reference,
                               value_range=(-1.0, 1.0))
    return {"checkpoint": str(ckpt), **reconstruction_metrics(x, rec), "rfid": r["rfid"], "fid_recon": fid["fid"],
            "fid_originals": fid_real["fid"], "num": num, "seed": seed, "extractor": "fmnist-eval-v2",
            "reference": reference, "n_reference": n_reference}


def run_variant(name: str, args) -> dict:
    what, overrides = VARIANTS[name]
    out = Path(args.out) / name
    cfg = ae_config(Path(args.config), out)
    cmd = [sys.executable, "-m", "ldmkit.cli", "train-ae", str(cfg), "--out", str(out), "--no-progress",
           f"--train.max_minutes={args.minutes}", *overrides]
    scores_path = out / "scores.json"
    if not scores_path.is_file():
        if not (out / "checkpoints").is_dir():
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
                "OMP_NUM_THREADS", str(args.threads))})
        scores = score(out, args.num, args.seed, args.reference, args.n_reference)
        scores_path.write_text(json.dumps(scores, indent=1) + "\n")
    scores = json.loads(scores_path.read_text())
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = max((m.get("step", 0) for m in last), default=0)
    return {"variant": name, "what": what, "overrides": overrides, "steps": steps,
            "command": "ldmkit " + " ".join(cmd[3:]), **scores}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "ldm_fast_fmnist.yaml"), help="the recipe")
    p.add_argument("--variants", default="baseline,z8,lr5e-4", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--minutes", type=float, default=7.5, help="wall clock per variant")
    p.add_argument("--num", type=int, default=5000, help="training images reconstructed and scored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", default="fashion-mnist:train", help="reference of the reconstructions' FID")
    p.add_argument("--n_reference", type=int, default=10000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/ae_ablations")
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="score these autoencoder checkpoints / run folders instead of training variants "
                        "(rows to stdout and --json)")
    p.add_argument("--json", default=None, help="with --checkpoints: write their scores here")
    args = p.parse_args(argv)
    if args.checkpoints:
        import torch
        torch.set_num_threads(args.threads)
        print("| checkpoint | PSNR (dB) | SSIM | rFID | FID (recon) | FID (originals) |")
        print("|---|---|---|---|---|---|")
        rows = []
        for ckpt in args.checkpoints:
            r = score(Path(ckpt), args.num, args.seed, args.reference, args.n_reference)
            rows.append(r)
            print(f"| {r['checkpoint']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['rfid']:.3f} | {r['fid_recon']:.3f} | "
                  f"{r['fid_originals']:.3f} |", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
        return 0
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    import torch
    torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        rows.append(run_variant(name, args))
        Path(args.out, "ae_ablations.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n{args.num} training images (seed {args.seed}), posterior mode; rFID vs the originals and FID vs "
          f"{args.reference} ({args.n_reference}) in fmnist-eval-v2 features; {args.minutes:g} min each\n")
    print("| variant | change | steps | PSNR (dB) | SSIM | rFID | FID (recon) | FID (originals) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['what']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['rfid']:.3f} | {r['fid_recon']:.3f} | {r['fid_originals']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
