"""``ldmkit nll CKPT_DIR``: test-set negative log-likelihood (bits/dim) via the full T-step bound."""

from __future__ import annotations

from ldmkit.commands._common import positive_int


def add_parser(sub, formatter_class):
    p = sub.add_parser("nll", help="bits/dim of a data split under a checkpoint (variational bound)",
                       formatter_class=formatter_class,
                       description="Evaluates the full T-step variational bound (Ho et al. 2020 Eq. 5) on the "
                                   "first N examples of a split: T network calls per example, so N is small "
                                   "by default on a CPU. Prints the mean with its standard error.")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("--split", default="test", help="data split")
    p.add_argument("-n", "--num", type=positive_int, default=64, help="number of examples")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _batches(data, cfg, n: int, batch_size: int, device):
    """``(x0, cond)`` of the first ``n`` examples, in order, on ``device``."""
    import torch

    from ldmkit import pipelines

    for start in range(0, n, batch_size):
        batch = data.batch(torch.arange(start, min(n, start + batch_size)))
        cond = pipelines.make_cond(cfg, batch)
        yield batch.images.to(device), (cond.to(device) if cond is not None else None)


def run(args) -> int:
    import dataclasses
    import json

    import torch
    from tqdm.auto import tqdm

    from ldmkit import pipelines
    from ldmkit.commands._common import UsageError, device, load_model
    from ldmkit.diffusion.likelihood import dataset_bits_per_dim

    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    cfg = loaded.config
    if cfg.first_stage is not None:
        raise UsageError(f"{loaded.path}: nll measures bits/dim of pixels; this model diffuses latents "
                         "(first_stage is set)")
    data = pipelines.build_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split=args.split,
                                                                                    hflip=False)))
    n = min(args.num, len(data))
    dev = next(loaded.denoiser.parameters()).device
    T = loaded.process.num_timesteps
    generator = torch.Generator(device=dev).manual_seed(args.seed)
    with tqdm(total=n, unit="img", desc=f"nll ({args.split}, T={T})", disable=args.json) as bar:
        def progress(done: int, mean_bpd: float) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(bpd=f"{mean_bpd:.4f}")

        result = dataset_bits_per_dim(loaded.denoiser, loaded.process, _batches(data, cfg, n, args.batch_size, dev),
                                      variance_type=cfg.diffusion.variance_type, generator=generator,
                                      progress=progress)
    weights = "raw" if args.no_ema else "ema"
    if args.json:
        print(json.dumps({"bpd": result.bpd, "bpd_stderr": result.bpd_stderr, "prior_bpd": result.prior_bpd,
                          "num_examples": result.num_examples, "split": args.split, "num_timesteps": T,
                          "seed": args.seed, "weights": weights, "step": loaded.step, "checkpoint": str(loaded.path)}))
        return 0
    print(f"{args.split} NLL: {result.bpd:.4f} +- {result.bpd_stderr:.4f} bits/dim (N={result.num_examples}, T={T}, "
          f"{'raw' if args.no_ema else 'EMA'} weights, step {loaded.step}, {loaded.path})")
    return 0
