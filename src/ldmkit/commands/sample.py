"""``ldmkit sample CKPT_DIR``: draw images from a trained model (grid PNG, one PNG each, or an .npz)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def add_parser(sub, formatter_class):
    p = sub.add_parser("sample", help="sample images from a trained checkpoint", formatter_class=formatter_class,
                       description="Sample from a checkpoint (EMA weights by default). Image i uses its own "
                                   "noise seeded by --seed + i, so any image can be reproduced alone.")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("-n", "--num", type=int, default=64, help="number of images")
    p.add_argument("--sampler", default=None, help="ddpm, ddim or dpmpp_2m (default: the config's sample.sampler)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the config's sample.steps; all T for ddpm)")
    p.add_argument("--eta", type=float, default=None, help="DDIM stochasticity in [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--labels", default=None,
                   help="class-conditional models: comma-separated class indices, repeated to -n "
                        "(default: 0, 1, ..., K-1, 0, ...)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--grid", help="write a grid PNG here (default samples.png when no output is given)")
    p.add_argument("--out-dir", help="write one PNG per image, with the settings to reproduce it as metadata")
    p.add_argument("--npz", help="write uint8 images [N, H, W, C] (key images) and labels (key labels)")
    p.set_defaults(func=run)


def _labels(text: str | None, n: int, num_classes: int | None):
    import torch

    if num_classes is None:
        if text:
            raise ValueError("--labels: this model is not class-conditional")
        return None
    if text:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--labels: expected comma-separated integers, got {text!r}") from None
        bad = [v for v in values if not 0 <= v < num_classes]
        if bad or not values:
            raise ValueError(f"--labels: classes must lie in [0, {num_classes - 1}], got {values}")
    else:
        values = list(range(num_classes))
    return torch.tensor([values[i % len(values)] for i in range(n)], dtype=torch.int64)


def run(args) -> int:
    import math

    import numpy as np
    from tqdm.auto import tqdm

    from ldmkit import __version__, pipelines
    from ldmkit.config import ConfigError
    from ldmkit.images import make_grid, save_png, to_uint8
    from ldmkit.training.checkpoint import CheckpointError
    from ldmkit.training.distributed import pick_device

    if args.num < 1 or args.batch_size < 1:
        print("error: -n and --batch-size must be positive", file=sys.stderr)
        return 2
    try:
        loaded = pipelines.load_model(args.checkpoint, ema=not args.no_ema, device=pick_device(args.device))
        cfg = loaded.config
        sampler = args.sampler or cfg.sample.sampler
        steps = args.steps if args.steps is not None else (None if sampler == "ddpm" else cfg.sample.steps)
        eta = cfg.sample.eta if args.eta is None else args.eta
        scale = cfg.sample.guidance_scale if args.guidance_scale is None else args.guidance_scale
        labels = _labels(args.labels, args.num, cfg.unet.num_classes)
        with tqdm(total=args.num, unit="img", desc=f"sampling ({sampler})") as bar:
            images = pipelines.generate(loaded.denoiser, loaded.process, cfg, n=args.num, space=loaded.space,
                                        sampler=sampler, steps=steps, eta=eta, seed=args.seed, labels=labels,
                                        guidance_scale=scale, batch_size=args.batch_size, progress=bar.update)
    except (CheckpointError, ConfigError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    uint8 = to_uint8(images)
    steps_used = steps or loaded.process.num_timesteps
    wrote = []
    if args.npz:
        arrays = {"images": uint8}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        Path(args.npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.npz, **arrays)
        wrote.append(args.npz)
    if args.out_dir:
        common = {"ldmkit_version": __version__, "checkpoint": str(loaded.path), "step": loaded.step,
                  "weights": "model" if args.no_ema else "ema", "sampler": sampler, "steps": steps_used,
                  "eta": eta, "guidance_scale": scale}
        for i in range(args.num):
            label = None if labels is None else int(labels[i])
            cmd = (f"ldmkit sample {shlex.quote(str(loaded.path))} -n 1 --sampler {sampler} --steps {steps_used} "
                   f"--eta {eta} --seed {args.seed + i}" + ("" if label is None else f" --labels {label}")
                   + (" --no-ema" if args.no_ema else "") + (f" --guidance-scale {scale}" if label is not None else ""))
            meta = {**common, "seed": args.seed + i, "index": i, "label": label, "reproduce": cmd}
            save_png(Path(args.out_dir) / f"{i:05d}.png", uint8[i], meta)
        wrote.append(f"{args.out_dir}/ ({args.num} PNGs)")
    if args.grid or not wrote:
        grid_path = args.grid or "samples.png"
        save_png(grid_path, make_grid(uint8, nrow=math.ceil(math.sqrt(args.num))),
                 {"checkpoint": str(loaded.path), "step": loaded.step, "sampler": sampler, "steps": steps_used,
                  "eta": eta, "seed": args.seed, "n": args.num})
        wrote.append(grid_path)
    print(f"{args.num} images from {loaded.path} (step {loaded.step}, {sampler}, {steps_used} steps) -> "
          + ", ".join(wrote))
    return 0
