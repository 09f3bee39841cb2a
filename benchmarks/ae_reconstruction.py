#!/usr/bin/env python
"""Reconstruction quality of KL and VQ autoencoders at f = 2, 4, 8 on the Fashion-MNIST test split.

For each (type, f) the script trains an autoencoder from configs/ae_{type}_f4_fmnist.yaml with the
factor-specific overrides below (and the budget given on the command line), measures its latent
scale_factor (as ``ldmkit ae-stats`` does, so benchmarks/ldm_efficiency.py can reuse the KL ones), and
evaluates on the test split, on the original 28x28 area (the 32x32 padding is cropped off):

- PSNR and SSIM (``ldmkit.metrics.reconstruction``, data range 2 for [-1, 1] images), mean over images;
- rFID: FID between the features of the test images and of their reconstructions, in ldmkit's
  Fashion-MNIST classifier feature space (``ldmkit.metrics.reconstruction.rfid``).

KL models are evaluated with the posterior mean (deterministic). Results are appended to OUT/results.jsonl
and printed as a Markdown table.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ae_reconstruction.py --out /work/runs/ae/recon \
        --types kl --factors 2 4 8 --steps 800
    python benchmarks/ae_reconstruction.py --out /work/runs/ae/recon --report
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# f -> (channel_mult, z_channels): latents 16x16x2 (f=2), 8x8x4 (f=4), 4x4x8 (f=8) from 32x32x1 images.
FACTORS = {1: ([1], 1), 2: ([1, 2], 2), 4: ([1, 2, 2], 4), 8: ([1, 2, 2, 4], 8)}


def overrides_for(f: int, args) -> list[str]:
    mult, zc = FACTORS[f]
    return [f"--model.channel_mult={mult}", f"--model.z_channels={zc}", f"--model.channels={args.channels}",
            f"--train.max_steps={args.steps}", f"--train.batch_size={args.batch_size}",
            f"--loss.disc_start={int(args.steps * args.disc_start_frac)}", f"--train.lr={args.lr}",
            f"--train.disc_lr={args.lr}", f"--train.checkpoint_every={args.steps}",
            f"--train.log_every={max(1, args.steps // 10)}", f"--loss.perceptual={args.perceptual}",
            f"--train.seed={args.seed}"]


@torch.no_grad()
def reconstruct(ae, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Reconstructions from the posterior's mode (KL: the mean; VQ: the quantised latent), in batches."""
    out = []
    for i in range(0, len(images), batch_size):
        recon, _ = ae(images[i:i + batch_size], sample_posterior=False)
        out.append(recon.clamp(-1, 1))
    return torch.cat(out)


def run_one(kind: str, f: int, args) -> dict:
    from ldmkit.autoencoders.checkpoint import load_autoencoder, write_scale_factor
    from ldmkit.autoencoders.config import load_config
    from ldmkit.latent import measure_scale_factor
    from ldmkit.metrics.reconstruction import psnr, rfid, ssim
    from ldmkit.pipelines import autoencoder_images, train_autoencoder

    cfg = load_config(ROOT / "configs" / f"ae_{kind}_f4_fmnist.yaml", overrides_for(f, args))
    run_dir = Path(args.out) / f"{kind}_f{f}"
    train_images = autoencoder_images(cfg)
    t0 = time.perf_counter()
    ckpt = train_autoencoder(cfg, run_dir, images=train_images, resume=run_dir.exists()).checkpoint
    train_s = time.perf_counter() - t0
    ae, _ = load_autoencoder(ckpt)
    g = torch.Generator().manual_seed(0)
    sample = train_images[torch.randperm(len(train_images), generator=g)[:5000]]
    scale, stats = measure_scale_factor(ae, sample, "sample", generator=g)
    write_scale_factor(ckpt, scale, {**stats, "split": "train", "seed": 0})
    test = autoencoder_images(cfg, split="test", limit=args.num_test)
    t1 = time.perf_counter()
    recon = reconstruct(ae, test)
    recon_s = time.perf_counter() - t1
    crop = (slice(None), slice(None), slice(2, 30), slice(2, 30))
    x, y = test[crop], recon[crop]
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    row = {"type": kind, "f": f, "latent": [FACTORS[f][1], 32 // f, 32 // f], "steps": cfg.train.max_steps,
           "batch_size": cfg.train.batch_size, "channels": cfg.model.channels,
           "params": sum(p.numel() for p in ae.parameters()), "perceptual": cfg.loss.perceptual,
           "disc_start": cfg.loss.disc_start, "train_s": round(train_s, 1), "num_test": len(test),
           "psnr": float(psnr(x, y).mean()), "ssim": float(ssim(x, y).mean()),
           "rfid": float(rfid(x, y)["rfid"]), "recon_img_per_s": round(len(test) / recon_s, 1),
           "scale_factor": scale, "checkpoint": str(ckpt),
           "final_train_log": {k: last[k] for k in last if k in ("rec_l1", "perceptual", "kl", "perplexity",
                                                                 "codebook_usage", "d_loss")}}
    return row


def report(out: Path) -> str:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    latest = {}
    for r in rows:
        latest[(r["type"], r["f"])] = r
    lines = ["| type | f | latent | steps x batch | train time | PSNR (dB) | SSIM | rFID | codebook usage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (kind, f), r in sorted(latest.items()):
        usage = r["final_train_log"].get("codebook_usage", "")
        lines.append(f"| {kind.upper()} | {f} | {'x'.join(map(str, r['latent']))} | {r['steps']} x {r['batch_size']} "
                     f"| {r['train_s'] / 60:.1f} min | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['rfid']:.2f} | {usage} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (outside the repository)")
    p.add_argument("--types", nargs="+", default=["kl", "vq"], choices=["kl", "vq"])
    p.add_argument("--factors", nargs="+", type=int, default=[2, 4, 8], choices=sorted(FACTORS))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--disc-start-frac", type=float, default=0.6, help="discriminator starts at this fraction of steps")
    p.add_argument("--perceptual", default="fmnist", choices=["none", "fmnist", "lpips_vgg"])
    p.add_argument("--num-test", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only print the table of OUT/results.jsonl")
    args = p.parse_args()
    out = Path(args.out)
    if not args.report:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        torch.set_num_threads(1)
        out.mkdir(parents=True, exist_ok=True)
        for kind in args.types:
            for f in args.factors:
                row = run_one(kind, f, args)
                row["machine"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread"
                with open(out / "results.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(report(out))


if __name__ == "__main__":
    main()
