"""Exponential moving average of model weights, with the usual warm-up of the decay rate."""

from __future__ import annotations

import copy

import torch


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """The EMA decay used after optimizer step ``step`` (1-based).

    With ``warmup`` the decay ramps as ``min(decay, (1 + step) / (10 + step))`` so that the average is not
    dominated by the random initial weights early on (the schedule used by many DDPM/LDM code bases).
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """A shadow copy of a module whose floating-point parameters and buffers track ``decay``-weighted means.

    The shadow is a full module (``self.module``), so it can be called directly for sampling and its
    ``state_dict`` has the same keys as the trained model's.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> float:
        """Blend ``model``'s current weights into the shadow; returns the decay that was used."""
        d = ema_decay_at(step, self.decay, self.warmup)
        shadow = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = shadow[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.detach().to(target.dtype), 1.0 - d)
            else:
                target.copy_(value)
        return d

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
