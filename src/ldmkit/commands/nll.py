"""``ldmkit nll CKPT_DIR``: test-set negative log-likelihood (bits/dim) via the full T-step bound."""

from __future__ import annotations

import sys


def add_parser(sub, formatter_class):
    p = sub.add_parser("nll", help="bits/dim of a data split under a checkpoint (variational bound)",
                       formatter_class=formatter_class,
                       description="Evaluates the full T-step variational bound (Ho et al. 2020 Eq. 5) on the "
                                   "first N examples of a split: T network calls per example, so N is small "
                                   "by default on a CPU. Prints the mean with its standard error.")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("--split", default="test", help="data split")
    p.add_argument("-n", "--num", type=int, default=64, help="number of examples")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses
    import math

    import torch
    from tqdm.auto import tqdm

    from ldmkit import pipelines
    from ldmkit.config import ConfigError
    from ldmkit.diffusion.likelihood import vlb_bits_per_dim
    from ldmkit.training.checkpoint import CheckpointError
    from ldmkit.training.distributed import pick_device

    if args.num < 1 or args.batch_size < 1:
        print("error: -n and --batch-size must be positive", file=sys.stderr)
        return 2
    try:
        loaded = pipelines.load_model(args.checkpoint, ema=not args.no_ema, device=pick_device(args.device))
        cfg = loaded.config
        if cfg.first_stage is not None:
            raise ValueError("nll measures bits/dim of pixels; this model diffuses latents (first_stage is set)")
        data = pipelines.build_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split=args.split,
                                                                                        hflip=False)))
    except (CheckpointError, ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = min(args.num, len(data))
    device = next(loaded.denoiser.parameters()).device
    T = loaded.process.num_timesteps
    generator = torch.Generator(device=device).manual_seed(args.seed)
    totals = []
    with torch.no_grad(), tqdm(total=n * T, unit="img-step", desc=f"nll ({args.split}, T={T})") as bar:
        for start in range(0, n, args.batch_size):
            batch = data.batch(torch.arange(start, min(n, start + args.batch_size)))
            x0 = batch.images.to(device)
            cond = pipelines.make_cond(cfg, batch)
            cond = cond.to(device) if cond is not None else None
            result = vlb_bits_per_dim(loaded.denoiser, loaded.process, x0, cond,
                                      variance_type=cfg.diffusion.variance_type, generator=generator,
                                      progress=lambda done, total, b=x0.shape[0]: bar.update(b))
            totals.append(result.total_bpd.double().cpu())
            running = torch.cat(totals)
            bar.set_postfix(bpd=f"{running.mean():.4f}")
    total = torch.cat(totals)
    stderr = float(total.std(unbiased=True)) / math.sqrt(len(total)) if len(total) > 1 else float("nan")
    print(f"{args.split} NLL: {float(total.mean()):.4f} +- {stderr:.4f} bits/dim (N={len(total)}, T={T}, "
          f"{'raw' if args.no_ema else 'EMA'} weights, step {loaded.step}, {loaded.path})")
    return 0
