"""The run's ``metrics.jsonl``: windowed means of the logged values, one JSON row every ``log_every`` steps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ldmkit.training.distributed import DistInfo, all_reduce_mean


class MetricsWindow:
    """Sums the loss and the logged values of the steps since the last row; :meth:`row` averages them over
    the steps and the ranks (one all-reduce) and starts a new window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.steps, self.loss, self.logs = time.perf_counter(), 0, 0.0, {}

    def restart_clock(self) -> None:
        """Leave time spent on previews and checkpoints out of the images-per-second figure."""
        self.start = time.perf_counter()

    def add(self, loss: float, logs: dict[str, float]) -> None:
        self.steps += 1
        self.loss += float(loss)
        for k, v in logs.items():
            self.logs[k] = self.logs.get(k, 0.0) + float(v)

    def row(self, step: int, batch_size: int, dist: DistInfo, **extra: float) -> dict:
        """``{"step", "loss", **extra, "img_per_s", **means}`` over the window; resets it."""
        keys = sorted(self.logs)
        means = all_reduce_mean(torch.tensor([self.loss] + [self.logs[k] for k in keys], dtype=torch.float64)
                                / self.steps, dist)
        rate = self.steps * batch_size / max(time.perf_counter() - self.start, 1e-9)
        row = {"step": step, "loss": means[0].item(), **extra, "img_per_s": rate,
               **{k: means[i + 1].item() for i, k in enumerate(keys)}}
        self.reset()
        return row


def append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_after(path: Path, step: int) -> None:
    """Drop rows after ``step`` (written by an interrupted run after its last checkpoint; all of them for
    a fresh run) and unreadable lines."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if step > 0 and json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    path.write_text("".join(x + "\n" for x in keep))
