"""Soak: ``ldmkit train`` killed with SIGKILL at random moments for a while, restarted with ``--resume`` each time.

    python benchmarks/soak.py                     # 30 minutes (the default)
    nice -n 10 python benchmarks/soak.py --minutes 6 --seed 0 --json soak.json

A supervisor loop launches ``python -m ldmkit.cli train soak.yaml --out RUN`` (``--resume`` once RUN holds a
checkpoint), lets it run for a random, seeded 1-8 s (import, start-up, steps and checkpoint writes all get hit)
and kills it with SIGKILL; until the time is spent. The soaked run's last checkpoint, at step S, is then
compared with an uninterrupted run of S steps of the same config: every tensor (weights, EMA, optimizer
moments) must be bit-identical and the loss curves equal. A tiny U-Net on synthetic 16x16 shapes, one CPU
thread, constant learning rate (so a run of S steps is the same whatever max_steps says).

Prints and writes (``--json``) the counts: kills survived, kills that left a torn checkpoint folder,
attempts that made progress, steps, checkpoints written, tensors compared and mismatching (must be 0).
Exit code 1 when anything mismatches or an attempt fails on its own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ldmkit.training import checkpoint as ck

CONFIG = """
data: {{name: shapes, image_size: 16, length: 512}}
unet: {{in_channels: 3, model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [1],
       num_heads: 2, norm_groups: 4}}
diffusion: {{schedule: linear, num_timesteps: 100}}
train: {{lr: 1.0e-3, lr_schedule: constant, warmup_steps: 10, batch_size: 8, max_steps: 1000000000,
        log_every: 1, checkpoint_every: {every}, sample_every: 0, keep_last: 2, ema_decay: 0.99,
        device: cpu, seed: {seed}}}
"""


def train_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    resume = ["--resume"] if ck.latest_checkpoint(out) is not None else []
    return [sys.executable, "-m", "ldmkit.cli", "train", str(config), "--out", str(out), "--no-progress",
            *resume, *extra]


def latest_step(out: Path) -> int:
    latest = ck.latest_checkpoint(out)
    return 0 if latest is None else int(latest.name.split("_")[1])


def flat_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: module weights, EMA, train-step extras and optimizer state."""
    state = ck.load_training_state(ckpt)
    flat: dict[str, torch.Tensor] = {}
    for part, value in state.items():
        if part == "optimizers":
            for name, opt in value.items():
                for pid, slots in opt["state"].items():
                    flat.update({f"opt.{name}.{pid}.{k}": v for k, v in slots.items() if isinstance(v, torch.Tensor)})
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            flat.update({f"{part}.{k}": v for k, v in value.items()})
    return flat


def loss_rows(run: Path, last: int) -> dict[int, float]:
    """step -> loss of the rows up to ``last`` (a resume truncates later rows, so each step appears once)."""
    rows: dict[int, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["step"] <= last:
            rows[row["step"]] = row["loss"]
    return rows


def soak(root: Path, minutes: float, seed: int, min_s: float, max_s: float, every: int) -> dict:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    config, run, ref = root / "soak.yaml", root / "run", root / "reference"
    for folder in (run, ref):
        if folder.exists():
            raise SystemExit(f"{folder} exists: pick a fresh --out")
    config.write_text(CONFIG.format(every=every, seed=seed))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    counts = {"kills": 0, "kills_leaving_torn_folder": 0, "attempts_with_progress": 0, "attempts_failed": 0}
    deadline = time.monotonic() + 60.0 * minutes
    with open(root / "attempts.log", "a") as log:
        while time.monotonic() < deadline:
            before = latest_step(run)
            proc = subprocess.Popen(train_cmd(config, run), env=env, stdout=log, stderr=subprocess.STDOUT)
            delay = min(rng.uniform(min_s, max_s), max(0.0, deadline - time.monotonic()))
            try:
                code = proc.wait(timeout=delay)
                counts["attempts_failed"] += 1  # a run of 10^9 steps never ends by itself
                print(f"attempt ended on its own with exit code {code}; see {root / 'attempts.log'}")
                break
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                counts["kills"] += 1
            ckpts = run / ck.CHECKPOINTS
            if ckpts.is_dir() and any(p.name.startswith(".") for p in ckpts.iterdir()):
                counts["kills_leaving_torn_folder"] += 1
            counts["attempts_with_progress"] += latest_step(run) > before
            print(f"\rkills {counts['kills']}, step {latest_step(run)}, "
                  f"{max(0.0, deadline - time.monotonic()) / 60:.1f} min left", end="", flush=True)
    print()
    steps = latest_step(run)
    if steps == 0:
        raise SystemExit("no checkpoint was written during the soak: give it more --minutes or a larger --max-s")
    t0 = time.perf_counter()
    subprocess.run(train_cmd(config, ref, f"--train.max_steps={steps}"), env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref_s = time.perf_counter() - t0
    name = f"step_{steps:07d}"
    a, b = flat_tensors(run / ck.CHECKPOINTS / name), flat_tensors(ref / ck.CHECKPOINTS / name)
    mismatching = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))
    la, lb = loss_rows(run, steps), loss_rows(ref, steps)
    return {**counts, "steps": steps, "checkpoint_every": every, "checkpoints_written": steps // every,
            "tensors_compared": len(a), "mismatching_tensors": len(mismatching), "mismatching_names": mismatching[:20],
            "loss_rows_compared": len(lb), "mismatching_loss_rows": sum(la.get(s) != v for s, v in lb.items()),
            "reference_run_s": round(ref_s, 1), "minutes": minutes, "seed": seed, "kill_window_s": [min_s, max_s],
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                       f"torch {torch.__version__}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to keep killing (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments and of the training run")
    p.add_argument("--min-s", type=float, default=1.0, help="shortest life of an attempt, seconds")
    p.add_argument("--max-s", type=float, default=8.0, help="longest life of an attempt, seconds")
    p.add_argument("--checkpoint-every", type=int, default=10, help="train.checkpoint_every of the soaked run")
    p.add_argument("--out", default="runs/soak", help="work folder (must not hold a previous soak)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not 0 < args.min_s <= args.max_s:
        p.error(f"--min-s={args.min_s} and --max-s={args.max_s}: need 0 < min-s <= max-s")
    if args.minutes <= 0 or args.checkpoint_every < 1:
        p.error("--minutes must be > 0 and --checkpoint-every >= 1")
    figures = soak(Path(args.out), args.minutes, args.seed, args.min_s, args.max_s, args.checkpoint_every)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    bad = figures["mismatching_tensors"] or figures["mismatching_loss_rows"] or figures["attempts_failed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
