"""The null condition of classifier-free guidance (Ho & Salimans 2022) and condition dropout for training it.

The null condition is what the model sees for "unconditional": the learned null class (index
``num_classes``) for class labels, and an all-zero context with an all-False mask for context tokens.
Concat channels are kept (they are the input of the task, e.g. the low-resolution image, not a prompt).
Training-time dropout and sampling-time guidance both use :func:`null_condition`, so they agree.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from ldmkit.types import Cond


def null_condition(cond: Cond, null_class: int | None = None) -> Cond:
    """The unconditional counterpart of ``cond`` (same batch size, same tensor shapes).

    Class labels -> ``null_class``; ``context`` -> zeros with an all-False ``context_mask``; ``tokens`` ->
    the padding id 0 with an all-False ``token_mask`` (what the empty prompt / empty layout encodes to, so
    the context encoder's output is fully masked and cross-attention adds nothing); ``concat`` is kept.
    """
    labels = cond.class_labels
    if labels is not None:
        if null_class is None:
            raise ValueError("null_condition: cond has class_labels but null_class is None "
                             "(it is the model's num_classes)")
        labels = torch.full_like(labels, null_class)
    context, mask = cond.context, cond.context_mask
    if context is not None:
        context = torch.zeros_like(context)
        if mask is not None:
            mask = torch.zeros_like(mask, dtype=torch.bool)
    tokens, token_mask = cond.tokens, cond.token_mask
    if tokens is not None:
        tokens = torch.zeros_like(tokens)
        token_mask = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    return Cond(class_labels=labels, context=context, context_mask=mask, concat=cond.concat, tokens=tokens,
                token_mask=token_mask)


def drop_class_labels(labels: torch.Tensor, p: float, null_class: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_class`` with probability ``p`` (classifier-free guidance training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_class_labels: p={p} must be in [0, 1]")
    drop = torch.rand(labels.shape, generator=generator, device="cpu" if generator is None else generator.device)
    return torch.where(drop.to(labels.device) < p, torch.full_like(labels, null_class), labels)


def drop_condition(cond: Cond, p: float, null_class: int | None = None,
                   generator: torch.Generator | None = None) -> Cond:
    """Replace each example's condition by the null condition with probability ``p``.

    Class labels, context and tokens of one example are dropped together (one coin per example); concat
    channels are kept (they are the task's input).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_condition: p={p} must be in [0, 1]")
    tensors = [v for v in (cond.class_labels, cond.context, cond.tokens, cond.concat) if v is not None]
    if not tensors or p == 0.0:
        return cond
    n = tensors[0].shape[0]
    coin = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
    drop = coin.to(tensors[0].device) < p
    null = null_condition(cond, null_class)

    def pick(name: str):
        a, b = getattr(cond, name), getattr(null, name)
        if a is None or name == "concat":
            return a
        return torch.where(drop.view(-1, *([1] * (a.dim() - 1))), b, a)

    return Cond(**{f.name: pick(f.name) for f in fields(Cond)})
