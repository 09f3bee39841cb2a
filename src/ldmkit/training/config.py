"""``TrainConfig``: optimisation and bookkeeping of the training loop, beside the loop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LRSchedule = Literal["constant", "cosine", "cosine_deadline"]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of the training loop.

    Attributes:
        lr: peak AdamW learning rate, reached after ``warmup_steps`` of linear warm-up.
        lr_schedule: after warm-up, ``constant``; ``cosine`` decay to ``min_lr_ratio * lr`` at ``max_steps``; or
            ``cosine_deadline``, the same decay ending at ``max_steps`` or at the ``max_minutes`` deadline,
            whichever comes first (a budgeted run anneals by its known end; the time progress is the run's
            training seconds, carried across resumes, over those at this invocation's start plus
            ``max_minutes``; without ``max_minutes`` it is ``cosine``).
        batch_size: the global batch per optimizer step (split over processes and accumulation steps).
        grad_accum: micro-batches accumulated per optimizer step.
        grad_clip: maximum global gradient norm (0 disables clipping).
        ema_decay, ema_warmup: EMA of the weights; warm-up uses ``min(decay, (1+n)/(10+n))``.
        log_every, sample_every, checkpoint_every: periods in optimizer steps (0 disables sampling).
        max_minutes: optional wall-clock budget of this invocation: when it is spent the loop writes a
            checkpoint and stops early (``--resume`` continues); ``None`` = run to ``max_steps``.
        keep_last: how many checkpoints to keep (at least 1).
        bf16: autocast the forward pass to bfloat16 (off by default; fp32 on CPU).
        compile: wrap the model in ``torch.compile``.
        device: ``auto`` (accelerator if present, else CPU) or a torch device string.
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    lr_schedule: LRSchedule = "constant"
    min_lr_ratio: float = 0.0
    batch_size: int = 64
    grad_accum: int = 1
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    max_steps: int = 10000
    max_minutes: float | None = None
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_last: int = 3
    seed: int = 0
    bf16: bool = False
    compile: bool = False
    device: str = "auto"

    def __post_init__(self):
        bad = [f"{k}={getattr(self, k)} must be positive" for k in
               ("lr", "batch_size", "grad_accum", "max_steps", "log_every", "checkpoint_every", "keep_last")
               if getattr(self, k) <= 0]
        bad += [f"{k}={getattr(self, k)} must be >= 0" for k in
                ("weight_decay", "warmup_steps", "grad_clip", "sample_every", "seed") if getattr(self, k) < 0]
        if self.max_minutes is not None and self.max_minutes <= 0:
            bad.append(f"max_minutes={self.max_minutes} must be positive (or null)")
        if not 0.0 <= self.ema_decay < 1.0:
            bad.append(f"ema_decay={self.ema_decay} must be in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            bad.append(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.batch_size > 0 and self.grad_accum > 0 and self.batch_size % self.grad_accum:
            bad.append(f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}")
        if bad:
            raise ValueError("; ".join(bad))


def lr_at(step: int, cfg: TrainConfig, time_progress: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or cosine decay.

    ``time_progress`` (``cosine_deadline`` only): the fraction of the wall-clock budget spent; the decay
    follows the further along of it and the step progress.
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.lr_schedule == "cosine_deadline":
        progress = min(1.0, max(progress, time_progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
