"""``ldmkit bench CKPT_DIR``: training and sampling throughput of a checkpoint (Rombach et al. 2022, Table 6).

Train img/s: full optimizer steps (encode with the first stage if any, draw t and eps, loss, backward, AdamW
step) on batches of real training images, after warm-up steps. Sampling img/s: ``pipelines.generate`` with
the given sampler and step count, decoding included. Both run on a private copy of the weights; the
checkpoint is not modified.
"""

from __future__ import annotations

import json
import platform
import time

from ldmkit.commands._common import add_sampling_arguments, non_negative_int, positive_int


def add_parser(sub, formatter_class) -> None:
    p = sub.add_parser("bench", help="train and sampling throughput (img/s) of a checkpoint",
                       description=__doc__, formatter_class=formatter_class)
    p.add_argument("checkpoint", metavar="CKPT_DIR", help="checkpoint folder, or run folder (latest checkpoint)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="training batch (default: the run's)")
    p.add_argument("--train-steps", type=positive_int, default=5, help="timed optimizer steps")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed steps before each measurement")
    p.add_argument("--sample-n", type=positive_int, default=64, help="images to sample in the timed run")
    p.add_argument("--sample-batch-size", type=positive_int, default=64)
    add_sampling_arguments(p, eta=False, guidance=False)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure_train(loaded, model, batch_size: int, steps: int, warmup: int, device) -> float:
    """Images per second of full training steps of ``model`` (a copy of the loaded denoiser) on real data."""
    import torch

    from ldmkit import pipelines
    cfg = loaded.config
    data = pipelines.build_data(cfg)
    loss_fn = pipelines.make_loss_fn(cfg, loaded.process, loaded.space)
    model = model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = data.batch(torch.randint(0, len(data), (batch_size,), generator=gen))
        batch.images = batch.images.to(device)
        if batch.labels is not None:
            batch.labels = batch.labels.to(device)
        loss, _ = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - t0)


def measure_sampling(loaded, n: int, batch_size: int, sampler: str, steps: int, warmup: int, device) -> float:
    """Images per second of ``pipelines.generate`` (decode included)."""
    from ldmkit import pipelines
    cfg = loaded.config
    model = loaded.denoiser.eval()

    def go(count: int) -> None:
        pipelines.generate(model, loaded.process, loaded.space, pipelines.sample_shape(cfg, loaded.space), n=count,
                           sampler=sampler, steps=steps, variance_type=cfg.diffusion.variance_type,
                           cond=loaded.make_cond(count), batch_size=batch_size)

    if warmup:
        go(min(n, batch_size))
    _sync(device)
    t0 = time.perf_counter()
    go(n)
    _sync(device)
    return n / (time.perf_counter() - t0)


def run(args) -> int:
    import copy

    import torch

    from ldmkit.commands._common import device, load_model, sampling_settings
    dev = device(args.device)
    loaded = load_model(args.checkpoint, device=dev)
    s = sampling_settings(args, loaded.config.sample, loaded.process.num_timesteps)
    batch_size = args.batch_size or loaded.config.train.batch_size
    n_params = sum(p.numel() for p in loaded.denoiser.parameters())
    sampling = measure_sampling(loaded, args.sample_n, args.sample_batch_size, s.sampler, s.steps, args.warmup, dev)
    train = measure_train(loaded, copy.deepcopy(loaded.denoiser), batch_size, args.train_steps, args.warmup, dev)
    result = {
        "train_img_per_s": train, "sample_img_per_s": sampling,
        "settings": {"checkpoint": str(loaded.path), "step": loaded.step, "params": n_params,
                     "train_batch_size": batch_size, "train_steps_timed": args.train_steps,
                     "sampler": s.sampler, "sampling_steps": s.steps, "sample_n": args.sample_n,
                     "sample_batch_size": args.sample_batch_size, "first_stage": loaded.config.first_stage,
                     "device": str(args.device), "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__, "machine": platform.platform()},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"train     {train:10.2f} img/s  (batch {batch_size}, {args.train_steps} steps)")
    print(f"sampling  {sampling:10.2f} img/s  ({s.sampler}, {s.steps} steps, {args.sample_n} images)")
    for k, v in result["settings"].items():
        print(f"  {k}: {v}")
    return 0
