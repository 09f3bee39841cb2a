#!/usr/bin/env python
"""Autoguidance probe (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself").

The main model's prediction is pushed away from a weaker guide's at the same ``x_t``:
``D = D_guide + w (D_main - D_guide)`` for both ``x0`` and ``eps`` (w = 1: the main model alone). The guide
must share the main model's forward process and latent space (same first stage and scale factor), e.g. a
small U-Net trained for a few minutes with ``ldmkit train MAIN/config.yaml --first_stage=AE
--unet.model_channels=32 --train.max_minutes=5 --out GUIDE``. Each row draws ``--num`` samples with DDIM and
scores them against a seeded 10,000-image subset of the Fashion-MNIST **train** split (fmnist-eval-v2), so
nothing is chosen on the test split.

    python benchmarks/autoguidance_probe.py --main RUN/diffusion --guide GUIDE/checkpoints/step_0001000 \\
        --scales 1,1.3,1.6 --steps 20 --eta 0.5 --json out.json

A probe, not a feature: the library's samplers do not take a guide model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from ldmkit.metrics.evaluate import evaluate_images
from ldmkit.pipelines import generate, load_model, sample_shape
from ldmkit.training.checkpoint import resolve_checkpoint
from ldmkit.types import Prediction
from ldmkit.zoo import resolve


class Autoguided(nn.Module):
    """``guide + w (main - guide)`` of two denoisers' ``x0`` and ``eps`` (unconditional models)."""

    def __init__(self, main: nn.Module, guide: nn.Module, w: float):
        super().__init__()
        self.main, self.guide, self.w = main, guide, float(w)

    def forward(self, x_t, t, cond=None) -> Prediction:
        a, b = self.main(x_t, t, cond), self.guide(x_t, t, cond)
        return Prediction(x0=torch.lerp(b.x0, a.x0, self.w), eps=torch.lerp(b.eps, a.eps, self.w), var_output=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--main", required=True, help="the model's run or checkpoint folder")
    p.add_argument("--guide", required=True, help="the weaker guide's run or checkpoint folder")
    p.add_argument("--scales", default="1,1.3,1.6,2", help="comma-separated w (1 = the main model alone)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eta", type=float, default=0.5)
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    m, g = load_model(args.main), load_model(args.guide)
    if not torch.equal(m.denoiser.alphas_cumprod, g.denoiser.alphas_cumprod):
        raise SystemExit(f"{args.guide}: its noise schedule differs from {args.main}'s")
    def first_stage(cfg):  # a run folder and its latest checkpoint name the same weights
        return resolve_checkpoint(resolve(cfg.first_stage)).resolve(), cfg.first_stage_scale_factor

    if first_stage(m.config) != first_stage(g.config):
        raise SystemExit(f"{args.guide}: its first stage / scale factor differ from {args.main}'s")
    rows = []
    for w in (float(v) for v in args.scales.split(",")):
        model = m.denoiser if w == 1.0 else Autoguided(m.denoiser, g.denoiser, w)
        t0 = time.perf_counter()
        images = generate(model, m.process, m.space, sample_shape(m.config, m.space), n=args.num, sampler="ddim",
                          steps=args.steps, eta=args.eta, variance_type=m.config.diffusion.variance_type,
                          seed=args.seed, batch_size=250)
        seconds = time.perf_counter() - t0
        r = evaluate_images(images, reference="fashion-mnist:train", n_reference=10000, metrics=("fid", "kid", "pr"))
        row = {"main": str(m.path), "guide": str(g.path), "guide_step": g.step, "w": w, "sampler": "ddim",
               "steps": args.steps, "eta": args.eta, "num": args.num, "seed": args.seed, "fid": round(r["fid"], 3),
               "kid": round(r["kid"], 5), "precision": round(r["precision"], 3), "recall": round(r["recall"], 3),
               "sample_s": round(seconds, 1), "protocol": r["protocol"]}
        print(f"w {w:<4g} FID {row['fid']:.3f}  KID {row['kid']:.5f}  P {row['precision']:.3f}  "
              f"R {row['recall']:.3f}  ({seconds:.0f} s)", flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
