#!/usr/bin/env python
"""Recipe ablations for ``configs/ldm_fast_fmnist.yaml`` at a fixed diffusion budget (issue 11).

Each variant is the recipe plus a few ``--key=value`` overrides, trained by the same command a user runs,
``ldmkit train-ldm RECIPE --minutes M --first_stage AE --out OUT/VARIANT``, one after another, alone on the
machine, on one shared first stage (so only the diffusion side varies: with ``--first_stage`` the
autoencoder's share of the minutes passes to the diffusion stage). Every variant ends with the recipe's own
evaluation (``evaluation.num_samples`` samples, fmnist-eval-v2 features, against a 10,000 subset of the
**train** split by default: choices are not made on the test split), so the rows
share one protocol. Prints a Markdown table (FID, KID, precision, recall, steps, train img/s) with the
command of each row, and writes ``OUT/ablations.json``.

    python benchmarks/recipe_ablations.py --first_stage RUN/autoencoder --minutes 10 \\
        --variants baseline,unet32,lr2e-4,minsnr5,v,cosine_at_baseline --out /work/runs/ablations

``cosine_at_baseline`` anneals the learning rate to zero by the deadline: a cosine schedule whose
``max_steps`` is the step count the baseline reached in the same minutes (so run ``baseline`` first).
A first stage: ``ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes 30 --out RUN`` leaves one in
``RUN/autoencoder``. Variants whose directory already holds an ``eval.json`` are read, not retrained
(delete the directory to rerun one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (what it changes, overrides). ``{baseline_steps}`` is filled from the baseline's result.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the recipe as shipped", []),
    "unet32": ("U-Net width 64 -> 32", ["--ldm.unet.model_channels=32"]),
    "unet96": ("U-Net width 64 -> 96", ["--ldm.unet.model_channels=96"]),
    "attn4x4": ("attention at the 2x2 level (and the middle block) only, not at 4x4 (the name is historical)",
                ["--ldm.unet.attention_levels=[2]"]),
    "batch32": ("batch 64 -> 32", ["--ldm.train.batch_size=32"]),
    "batch128": ("batch 64 -> 128", ["--ldm.train.batch_size=128"]),
    "lr2e-4": ("learning rate 5e-4 -> 2e-4", ["--ldm.train.lr=2e-4"]),
    "lr1e-3": ("learning rate 5e-4 -> 1e-3", ["--ldm.train.lr=1e-3"]),
    "cosine_at_baseline": (("cosine decay of the learning rate to 0 at the baseline's step count "
                           "(anneal by the deadline)"), ["--ldm.train.lr_schedule=cosine", "--ldm.train.max_steps={baseline_steps}"]),
    "ema0.9995": ("EMA decay 0.999 -> 0.9995", ["--ldm.train.ema_decay=0.9995"]),
    "ema0.998": ("EMA decay 0.999 -> 0.998", ["--ldm.train.ema_decay=0.998"]),
    "v": ("v prediction instead of eps", ["--ldm.diffusion.prediction_type=v"]),
    "minsnr5": ("min-SNR-5 loss weighting (Hang et al. 2023)", ["--ldm.diffusion.min_snr_gamma=5"]),
    "cosine_schedule": ("cosine noise schedule instead of scaled linear", ["--ldm.diffusion.schedule=cosine"]),
    "bf16": ("bfloat16 autocast of the diffusion forward pass (fp32 weights and optimizer)", ["--ldm.train.bf16=true"]),
    "compile": ("torch.compile of the denoiser", ["--ldm.train.compile=true"]),
}


def run_variant(name: str, args, baseline_steps: int | None) -> dict:
    what, overrides = VARIANTS[name]
    if any("{baseline_steps}" in o for o in overrides):
        if baseline_steps is None:
            raise SystemExit(f"variant {name} needs the baseline's step count: list 'baseline' before it")
        overrides = [o.format(baseline_steps=baseline_steps) for o in overrides]
    out = Path(args.out) / name
    cmd = [sys.executable, "-m", "ldmkit.cli", "train-ldm", args.config, "--minutes", str(args.minutes),
           "--first_stage", args.first_stage, "--out", str(out), "--no-progress",
           f"--evaluation.num_samples={args.samples}", f"--evaluation.reference={args.reference}",
           "--evaluation.n_reference=10000", *overrides, *args.override]
    if not (out / "eval.json").is_file():
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                                           str(args.threads))})
    state = json.loads((out / "train_ldm.json").read_text())
    ev = json.loads((out / "eval.json").read_text())
    diff = state["results"]["diffusion"]
    import yaml
    batch = int(yaml.safe_load((out / "diffusion" / "config.yaml").read_text())["train"]["batch_size"])
    gen = ev["protocol"]["generation"]
    return {"variant": name, "what": what, "overrides": overrides, "command": "ldmkit " + " ".join(cmd[3:]),
            "steps": diff["step"], "train_seconds": diff["train_seconds"],
            "img_per_s": diff["step"] * batch / max(diff["train_seconds"], 1e-9),
            **{m: ev.get(m, float("nan")) for m in ("fid", "kid", "precision", "recall")},
            "sampler": f"{gen['sampler']} {gen['steps']}", "protocol": ev["protocol"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--first_stage", "--first-stage", dest="first_stage", required=True,
                   help="trained autoencoder shared by every variant (checkpoint, run folder or registry name)")
    p.add_argument("--minutes", type=float, default=10.0, help="train-ldm --minutes of each variant")
    p.add_argument("--variants", default="baseline", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--reference", default="fashion-mnist:train",
                   help="reference of the FID (default: a seeded 10,000 subset of the train split, so that "
                        "choosing a variant is not tuning on the test split)")
    p.add_argument("--config", default=str(ROOT / "configs" / "ldm_fast_fmnist.yaml"))
    p.add_argument("--override", action="append", default=[], help="extra --key=value for every variant")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS (unless set)")
    p.add_argument("--out", default="/work/runs/ablations")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    rows, baseline_steps = [], None
    for name in names:
        r = run_variant(name, args, baseline_steps)
        if name == "baseline":
            baseline_steps = r["steps"]
        rows.append(r)
    print(f"\n{args.minutes:g} minutes each (train-ldm --minutes), first stage {args.first_stage}, "
          f"N = {args.samples}, extractor {rows[0]['protocol']['extractor'] if rows else '?'}")
    print("\n| variant | change | steps | train img/s | FID | KID x 1e3 | precision | recall | sampler |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['what']} | {r['steps']} | {r['img_per_s']:.1f} | {r['fid']:.3f} | "
              f"{1e3 * r['kid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['sampler']} |")
    for r in rows:
        print(f"- {r['variant']}: {r['command']}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "ablations.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
