"""Small value types shared by every stage: what a denoiser predicts, what conditions it, a data batch."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch


@dataclass
class Prediction:
    """What a denoiser returns for a noisy batch ``x_t`` (all tensors ``[N, C, H, W]``).

    Attributes:
        x0: the predicted clean sample.
        eps: the predicted noise, consistent with ``x0`` through ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``.
        var_output: the network's raw variance channels, or ``None`` for a fixed variance. Its meaning
            depends on the variance type, and only ``GaussianProcess.p_mean_variance`` interprets it:
            ``learned`` -> the log-variance itself; ``learned_range`` -> ``v`` in [-1, 1] that
            interpolates log beta_t (v=1) and log beta-tilde_t (v=-1), Nichol & Dhariwal Eq. 15. It is kept
            raw because a respaced process has different betas than the one the network was trained on.
    """

    x0: torch.Tensor
    eps: torch.Tensor
    var_output: torch.Tensor | None = None


@dataclass
class Cond:
    """Conditioning for a batch of ``N`` examples; every field is optional.

    Attributes:
        class_labels: ``[N]`` int64 class indices; the null (unconditional) class is ``num_classes``.
        context: ``[N, L, D]`` tokens for cross-attention (text or layout encodings).
        context_mask: ``[N, L]`` bool, True where a context token is real (not padding).
        concat: ``[N, C, H, W]`` channels concatenated to ``x_t`` (super-resolution, inpainting).
        tokens: ``[N, L]`` int64 token ids for a *trainable* context encoder that is part of the denoiser
            (text from scratch, layout); ``Denoiser.encode_context`` turns them into ``context``.
        token_mask: ``[N, L]`` bool, True where a token is real (not padding).
    """

    class_labels: torch.Tensor | None = None
    context: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None
    concat: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def map(self, fn) -> Cond:
        """Apply ``fn`` to every tensor field that is set."""
        return replace(self, **{f.name: fn(v) for f in fields(self) if (v := getattr(self, f.name)) is not None})

    def to(self, device: torch.device | str) -> Cond:
        return self.map(lambda v: v.to(device))

    def index(self, idx) -> Cond:
        """Select examples along the batch dimension."""
        return self.map(lambda v: v[idx])

    def repeat(self, n: int) -> Cond:
        """Repeat the batch ``n`` times along dim 0 (``[a, b] -> [a, b, a, b]``)."""
        return self.map(lambda v: v.repeat(n, *([1] * (v.dim() - 1))))

    @staticmethod
    def cat(conds: list[Cond]) -> Cond:
        """Concatenate conditions along the batch dimension; a field must be set in all or none."""
        out = {}
        for f in fields(Cond):
            vals = [getattr(c, f.name) for c in conds]
            if all(v is None for v in vals):
                continue
            if any(v is None for v in vals):
                raise ValueError(f"Cond.cat: field {f.name!r} is set in some conditions but not all")
            out[f.name] = torch.cat(vals, dim=0)
        return Cond(**out)


@dataclass
class Batch:
    """A training batch: images in [-1, 1] plus whatever the dataset provides.

    Attributes:
        images: ``[N, C, H, W]`` float32 in [-1, 1].
        labels: ``[N]`` int64 class labels, or None.
        captions: N strings, or None.
        boxes: per example a ``[K, 4]`` float tensor of (x0, y0, x1, y1) in [0, 1], or None.
        box_labels: per example a ``[K]`` int64 tensor of object-class indices, or None.
        indices: ``[N]`` int64 dataset indices of the examples (for error messages and exact resume).
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    captions: list[str] | None = None
    boxes: list[torch.Tensor] | None = None
    box_labels: list[torch.Tensor] | None = None
    indices: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
