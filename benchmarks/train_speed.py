#!/usr/bin/env python
"""CPU speed of the recipe's diffusion training loop: fp32 vs bf16 autocast vs torch.compile vs threads (issue 11).

Trains the diffusion stage of a ``train-ldm`` run (``RUN/diffusion/config.yaml`` on ``RUN/autoencoder``) with
the library's own loop (``ldmkit.pipelines.train``: cached latents, the real loss, AdamW, EMA, clipping,
logging) for ``--steps`` optimizer steps per variant, each in a fresh process, and reports the training
images per second over the steps after ``--warmup`` (which covers latent caching of the ``--images`` training
images and compilation). Variants alternate round by round, so load from other processes hits all alike;
the table gives the median over rounds and each round's figure.

    python benchmarks/train_speed.py --run /work/runs/qab2_l30/ldmkit_30min --steps 400 --warmup 150 \\
        --rounds 2 --variants fp32,fp32_unfused_adam,bf16,compile,bf16_compile,fp32_1thread

Speed only: whether bf16 trains as well is a quality question for ``recipe_ablations.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: name -> (train overrides, torch threads)
VARIANTS: dict[str, tuple[list[str], int]] = {
    "fp32": ([], 2),
    "fp32_unfused_adam": ([], 2),   # AdamW's per-tensor loop instead of the fused kernel the library uses
    "bf16": (["--train.bf16=true"], 2),
    "compile": (["--train.compile=true"], 2),
    "bf16_compile": (["--train.bf16=true", "--train.compile=true"], 2),
    "fp32_1thread": ([], 1),
    "bf16_1thread": (["--train.bf16=true"], 1),
}


def worker(args) -> None:
    """One variant: train ``args.steps`` steps and print the JSON result on the last line."""
    import dataclasses

    import torch

    from ldmkit import pipelines
    from ldmkit.config import load_config
    from ldmkit.training.data_order import TensorData

    if args.worker.endswith("_unfused_adam"):  # this process only: AdamW without the fused kernel
        class UnfusedAdamW(torch.optim.AdamW):
            def __init__(self, *a, fused=None, **k):
                super().__init__(*a, **k)

        torch.optim.AdamW = UnfusedAdamW
    run = Path(args.run)
    overrides = [f"--first_stage={run / 'autoencoder'}", f"--train.max_steps={args.steps}", "--train.log_every=25",
                 "--train.sample_every=0", f"--train.checkpoint_every={args.steps}", "--train.max_minutes=null",
                 *VARIANTS[args.worker][0]]
    cfg = load_config(str(run / "diffusion" / "config.yaml"), overrides)
    full = pipelines.build_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_latents=False)))
    if not hasattr(full, "images"):
        raise SystemExit(f"{run}: the speed benchmark needs in-memory data (Fashion-MNIST), got {type(full).__name__}")
    n = min(args.images, len(full))
    data = TensorData(full.images[:n], None if full.labels is None else full.labels[:n])
    with tempfile.TemporaryDirectory() as out:
        pipelines.train(cfg, out, data=data, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "elapsed_s" in r and "step" in r]
    first = max((r for r in rows if r["step"] <= args.warmup), key=lambda r: r["step"])
    last = rows[-1]
    steps = last["step"] - first["step"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    print(json.dumps({"variant": args.worker, "threads": torch.get_num_threads(), "steps": steps,
                      "seconds": seconds, "img_per_s": steps * cfg.train.batch_size / seconds,
                      "batch_size": cfg.train.batch_size}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a train-ldm output directory (autoencoder/ and diffusion/)")
    p.add_argument("--variants", default="fp32,bf16,compile,bf16_compile",
                   help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=150, help="steps not timed (latent caching, compilation)")
    p.add_argument("--images", type=int, default=4096, help="training images (their latents are cached first)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    if args.warmup >= args.steps:
        p.error(f"--warmup={args.warmup} must be below --steps={args.steps}")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            env = dict(os.environ, OMP_NUM_THREADS=str(VARIANTS[v][1]))
            cmd = [sys.executable, __file__, "--worker", v, "--run", args.run, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--images", str(args.images)]
            proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"variant {v} failed (exit {proc.returncode})")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[v].append(res)
            print(f"round {r} {v}: {res['img_per_s']:.1f} img/s ({res['threads']} threads)", flush=True)
    base = statistics.median(x["img_per_s"] for x in results[variants[0]])
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; run {args.run}; "
          f"{args.steps} steps, first {args.warmup} not timed, {args.images} images\n")
    print(f"| variant | threads | train img/s (median) | vs {variants[0]} | per round |")
    print("|---|---|---|---|---|")
    table = []
    for v in variants:
        med = statistics.median(x["img_per_s"] for x in results[v])
        per = ", ".join(f"{x['img_per_s']:.1f}" for x in results[v])
        print(f"| {v} | {results[v][0]['threads']} | {med:.1f} | {med / base:.2f} | {per} |")
        table.append({"variant": v, "overrides": VARIANTS[v][0], "threads": results[v][0]["threads"],
                      "img_per_s_median": med, "rounds": results[v]})
    if args.json:
        Path(args.json).write_text(json.dumps({"run": args.run, "steps": args.steps, "warmup": args.warmup,
                                               "images": args.images, "rounds": args.rounds, "rows": table},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
