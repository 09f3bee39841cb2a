#!/usr/bin/env python
"""Rombach et al.'s efficiency comparison redone on Fashion-MNIST: pixel diffusion (LDM-1) vs LDM-2/4/8.

Every model uses the same U-Net (widths, depth, attention levels), the same diffusion settings
(configs/ldm_kl_f4_fmnist.yaml: scaled-linear betas, T = 1000, eps prediction) and the same training budget
of CPU time; only the space differs: 32x32x1 pixels (f = 1) or the latents of the KL autoencoders trained by
benchmarks/ae_reconstruction.py (16x16x2, 8x8x4, 4x4x8 for f = 2, 4, 8), encoded on the fly each step.
Reported per model:

- train img/s: images per second of training (CPU time; the per-step encoder cost is included);
- sample img/s: images per second of DDIM-50 sampling, decoding included;
- FID of ``--num-samples`` DDIM-50 samples (EMA weights) against the Fashion-MNIST test split in ldmkit's
  classifier feature space (``ldmkit.metrics.evaluate_images``).

The budget is CPU time of this single-threaded process (``time.process_time``), which equals wall-clock on
an otherwise idle core and stays fair when other jobs share the machine; wall-clock is reported too.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ldm_efficiency.py --out /work/runs/ae/ldm \
        --ae-root /work/runs/ae/recon --factors 1 2 4 8 --cpu-minutes 6
    python benchmarks/ldm_efficiency.py --out /work/runs/ae/ldm --report
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LATENT_CHANNELS = {1: 1, 2: 2, 4: 4, 8: 8}
log = logging.getLogger("ldm_efficiency")


def build_config(f: int, args):
    import yaml

    from ldmkit.config import config_from_data

    data = yaml.safe_load((ROOT / "configs" / "ldm_kl_f4_fmnist.yaml").read_text())
    data["first_stage"] = None if f == 1 else str(Path(args.ae_root) / f"kl_f{f}")
    overrides = [f"--unet.in_channels={LATENT_CHANNELS[f]}", f"--unet.model_channels={args.model_channels}",
                 f"--unet.num_res_blocks={args.num_res_blocks}", "--unet.channel_mult=[1,2,2]",
                 "--unet.attention_levels=[2]", f"--unet.norm_groups={min(32, args.model_channels)}",
                 f"--train.batch_size={args.batch_size}", f"--train.lr={args.lr}",
                 f"--train.ema_decay={args.ema_decay}", f"--train.seed={args.seed}"]
    return config_from_data(data, overrides, source="configs/ldm_kl_f4_fmnist.yaml + benchmark overrides")


def train(cfg, space, images: torch.Tensor, cpu_budget_s: float, out: Path):
    from ldmkit import pipelines
    from ldmkit.training.data_order import DataOrder
    from ldmkit.training.ema import EMA
    from ldmkit.types import Batch

    torch.manual_seed(cfg.train.seed)
    process = pipelines.build_process(cfg)
    model = pipelines.build_denoiser(cfg, process)
    loss_fn = pipelines.make_loss_fn(cfg, process, space)
    ema = EMA(model, cfg.train.ema_decay, cfg.train.ema_warmup)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, betas=cfg.train.adam_betas)
    order = DataOrder(len(images), cfg.train.batch_size, cfg.train.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    step, losses = 0, []
    model.train()
    while time.process_time() - cpu0 < cpu_budget_s:
        for group in opt.param_groups:
            group["lr"] = cfg.train.lr * min(1.0, (step + 1) / max(1, cfg.train.warmup_steps))
        idx = order.indices(step)
        loss, _ = loss_fn(model, Batch(images=images[idx], indices=idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        step += 1
        ema.update(model, step)
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            log.info("f-run %s step %d loss %.4f (cpu %.0f s)", out.name, step, sum(losses[-100:]) / 100,
                     time.process_time() - cpu0)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.module.state_dict().items()}, str(out / "ema.safetensors"))
    stats = {"steps": step, "train_cpu_s": round(cpu_s, 1), "train_wall_s": round(wall_s, 1),
             "train_img_per_s": round(step * cfg.train.batch_size / cpu_s, 2),
             "train_img_per_s_wall": round(step * cfg.train.batch_size / wall_s, 2),
             "final_loss": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 5),
             "params": sum(p.numel() for p in model.parameters())}
    return ema.module.eval(), process, stats


def sample_and_score(cfg, model, process, space, args, out: Path) -> dict:
    from ldmkit import pipelines
    from ldmkit.images import make_grid, save_png
    from ldmkit.metrics import evaluate_images

    cpu0, wall0 = time.process_time(), time.perf_counter()
    images = pipelines.generate(model, process, space, pipelines.sample_shape(cfg, space), n=args.num_samples, sampler="ddim",
                                steps=args.ddim_steps, eta=0.0, seed=args.seed, batch_size=args.sample_batch)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    save_png(out / "samples.png", make_grid(images[:64], nrow=8), {"ddim_steps": args.ddim_steps, "seed": args.seed})
    fid = evaluate_images(images, reference="fashion-mnist:test", metrics=("fid",))
    return {"num_samples": len(images), "ddim_steps": args.ddim_steps, "sample_cpu_s": round(cpu_s, 1),
            "sample_img_per_s": round(len(images) / cpu_s, 2), "sample_img_per_s_wall": round(len(images) / wall_s, 2),
            "fid": round(float(fid["fid"]), 3), "fid_protocol": {k: fid["protocol"].get(k) for k in
                                                               ("extractor", "n_reference", "n_generated")}}


def report(out: Path) -> str:
    rows = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[r["f"]] = r
    base = rows.get(1)
    lines = ["| model | space | steps in budget | train img/s | sample img/s (DDIM-50) | FID | train x / sample x vs LDM-1 |",
             "|---|---|---|---|---|---|---|"]
    for f, r in sorted(rows.items()):
        shape = "x".join(map(str, r["space_shape"]))
        speed = ""
        if base:
            speed = f"{r['train_img_per_s'] / base['train_img_per_s']:.1f}x / {r['sample_img_per_s'] / base['sample_img_per_s']:.1f}x"
        lines.append(f"| LDM-{f} | {shape} | {r['steps']} | {r['train_img_per_s']:.1f} | {r['sample_img_per_s']:.1f} "
                     f"| {r['fid']:.2f} | {speed} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--ae-root", default="/work/runs/ae/recon", help="folder with kl_f2, kl_f4, kl_f8 autoencoders")
    p.add_argument("--factors", nargs="+", type=int, default=[1, 2, 4, 8], choices=[1, 2, 4, 8])
    p.add_argument("--cpu-minutes", type=float, default=6.0, help="training budget per model (CPU time)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model-channels", type=int, default=32)
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    if not args.report:
        from ldmkit import pipelines
        from ldmkit.data import FashionMNIST

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        torch.set_num_threads(1)
        out.mkdir(parents=True, exist_ok=True)
        images = FashionMNIST("train", pad_to=32).tensors()[0]
        for f in args.factors:
            cfg = build_config(f, args)
            space = pipelines.build_space(cfg)
            run_dir = out / f"ldm_f{f}"
            model, process, stats = train(cfg, space, images, 60.0 * args.cpu_minutes, run_dir)
            row = {"f": f, "space_shape": list(pipelines.sample_shape(cfg, space)), "first_stage": cfg.first_stage,
                   "cpu_minutes": args.cpu_minutes, "batch_size": args.batch_size, **stats,
                   "unet": {"model_channels": args.model_channels, "num_res_blocks": args.num_res_blocks,
                            "channel_mult": [1, 2, 2], "attention_levels": [2]}}
            row.update(sample_and_score(cfg, model, process, space, args, run_dir))
            with open(out / "results.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(report(out))


if __name__ == "__main__":
    main()
