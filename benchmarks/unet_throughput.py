"""U-Net throughput: train-step and forward images/s and achieved GFLOP/s, ldmkit vs diffusers.

For each default preset the script builds ldmkit's UNet and, when diffusers is installed (the ``bench``
extra), diffusers' UNet2DModel / UNet2DConditionModel at a matched configuration (same widths, levels,
residual blocks, attention placement, heads, GroupNorm groups, scale-and-shift timestep conditioning, and
for the conditional model linear-projection spatial transformers with GEGLU feed-forwards). FLOPs are
counted with ``torch.utils.flop_counter.FlopCounterMode`` on one batch (forward, and forward + backward),
so GFLOP/s compares the work each implementation actually does.

Timing alternates the two models round by round, swapping which goes first each round (so load from
other processes hits both alike), and reports the median round. A train step is forward, MSE loss to a random target, backward and an AdamW
step.

Usage::

    python benchmarks/unet_throughput.py [--batch-size 16] [--rounds 5] [--threads 2] [--presets ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ldmkit.networks import UNet, unet_config

# preset -> (UNet kwargs on top of the preset, image size, context tokens or None)
BENCHES = {
    "fmnist_small": ({"in_channels": 1}, 32, None),
    "ldm_small": ({"in_channels": 4, "context_dim": 32}, 8, 8),
}


def diffusers_model(preset: str, cfg):
    """diffusers' U-Net at the configuration matching ldmkit's ``cfg`` (None if diffusers is missing)."""
    try:
        import diffusers
    except ImportError:
        return None
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    levels = range(len(widths))
    heads = cfg.num_heads if cfg.num_heads is not None else None
    common = {"in_channels": cfg.in_channels, "out_channels": cfg.in_channels, "block_out_channels": widths,
              "layers_per_block": cfg.num_res_blocks, "norm_num_groups": cfg.norm_groups, "norm_eps": 1e-6,
              "resnet_time_scale_shift": "scale_shift", "dropout": cfg.dropout, "flip_sin_to_cos": True,
              "freq_shift": 0}
    if cfg.context_dim is None:
        # attention_head_dim here is the width of a head.
        head_width = widths[-1] // heads if heads else cfg.head_dim
        return diffusers.UNet2DModel(
            down_block_types=tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels),
            up_block_types=tuple("AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D"
                                 for i in reversed(levels)),
            attention_head_dim=head_width, **common)
    # UNet2DConditionModel's attention_head_dim is (for historical reasons) the number of heads.
    num_heads = heads if heads else widths[-1] // cfg.head_dim
    return diffusers.UNet2DConditionModel(
        down_block_types=tuple("CrossAttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D"
                             for i in reversed(levels)),
        cross_attention_dim=cfg.context_dim, attention_head_dim=num_heads, use_linear_projection=True,
        transformer_layers_per_block=cfg.transformer_depth, **common)


class Runner:
    """Uniform call interface: ``run(x, t, context) -> tensor``."""

    def __init__(self, name, model, kind):
        self.name, self.model, self.kind = name, model, kind
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def __call__(self, x, t, context):
        if self.kind == "ldmkit":
            return self.model(x, t, context=context)
        if context is None:
            return self.model(x, t).sample
        return self.model(x, t, encoder_hidden_states=context).sample

    def train_step(self, x, t, context, target):
        self.opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(self(x, t, context), target)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def forward(self, x, t, context):
        self(x, t, context)


def count_flops(runner, x, t, context):
    runner.model.train()
    with FlopCounterMode(display=False) as fc:
        runner(x, t, context)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        F.mse_loss(runner(x, t, context), torch.zeros_like(x)).backward()
    runner.model.zero_grad(set_to_none=True)
    return fwd, fc.get_total_flops()


def time_it(fn, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench(preset, batch_size, rounds, iters, with_diffusers):
    extra, size, tokens = BENCHES[preset]
    cfg = unet_config(preset, **extra)
    torch.manual_seed(0)
    runners = [Runner("ldmkit", UNet(cfg), "ldmkit")]
    if with_diffusers:
        peer = diffusers_model(preset, cfg)
        if peer is not None:
            runners.append(Runner("diffusers", peer, "diffusers"))
    x = torch.randn(batch_size, cfg.in_channels, size, size)
    t = torch.randint(0, 1000, (batch_size,))
    context = None if tokens is None else torch.randn(batch_size, tokens, cfg.context_dim)
    target = torch.randn_like(x)
    rows = []
    for r in runners:
        n_params = sum(p.numel() for p in r.model.parameters())
        fwd_flops, train_flops = count_flops(r, x, t, context)
        r.model.train()
        r.train_step(x, t, context, target)  # warm-up
        r.model.eval()
        r.forward(x, t, context)
        rows.append({"name": r.name, "params": n_params, "fwd_flops": fwd_flops, "train_flops": train_flops,
                     "train": [], "fwd": []})
    pairs = list(zip(runners, rows))
    for k in range(rounds):  # alternate implementations (and who goes first) so background load hits both alike
        for r, row in pairs if k % 2 == 0 else pairs[::-1]:
            r.model.train()
            row["train"].append(time_it(lambda r=r: r.train_step(x, t, context, target), iters))
            r.model.eval()
            row["fwd"].append(time_it(lambda r=r: r.forward(x, t, context), iters))
    print(f"\n== {preset}: {cfg.in_channels}x{size}x{size}"
          + (f", context {tokens}x{cfg.context_dim}" if tokens else "") + f", batch {batch_size} ==")
    print(f"{'impl':10s} {'params':>9s} {'GFLOP/img fwd':>14s} {'train img/s':>12s} {'train GFLOP/s':>14s} "
          f"{'fwd img/s':>10s} {'fwd GFLOP/s':>12s}")
    for row in rows:
        tr, fw = statistics.median(row["train"]), statistics.median(row["fwd"])
        row["train_ips"], row["fwd_ips"] = batch_size / tr, batch_size / fw
        print(f"{row['name']:10s} {row['params'] / 1e6:8.2f}M {row['fwd_flops'] / batch_size / 1e9:14.3f} "
              f"{row['train_ips']:12.1f} {row['train_flops'] / tr / 1e9:14.2f} {row['fwd_ips']:10.1f} "
              f"{row['fwd_flops'] / fw / 1e9:12.2f}")
    if len(rows) == 2:
        a, b = rows
        print(f"ratio ldmkit/diffusers: train img/s {a['train_ips'] / b['train_ips']:.2f}, "
              f"forward img/s {a['fwd_ips'] / b['fwd_ips']:.2f}, forward FLOPs {a['fwd_flops'] / b['fwd_flops']:.3f}, "
              f"train GFLOP/s {(a['train_flops'] * a['train_ips']) / (b['train_flops'] * b['train_ips']):.2f}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3, help="steps timed per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-diffusers", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    try:
        import diffusers
        print(f"diffusers {diffusers.__version__}")
    except ImportError:
        print("diffusers not installed (pip install -e '.[bench]'): ldmkit only")
    for preset in args.presets:
        bench(preset, args.batch_size, args.rounds, args.iters, not args.no_diffusers)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
