"""Conditioning (``tau_theta`` of Rombach et al. 2022): from a batch or a request to a :class:`~ldmkit.types.Cond`.

``build_conditioner(cfg)`` turns a run config into a :class:`Conditioner` made of small per-kind parts:
class labels (``unet.num_classes``), one *context* kind (``cond.context``: cross-attention tokens) and one
*concat* kind (``cond.concat``: channels appended to ``x_t``). Every part has the same two methods,
``from_batch(batch, space)`` (training) and ``from_request(n, *, space, **request)`` (sampling, CLI, web),
and names the request arguments it accepts; the conditioner refuses any other one with a clear error.

A trainable context encoder (text from scratch, layout) is the part's ``context_encoder``: it becomes part of
the :class:`~ldmkit.denoiser.Denoiser` and turns ``Cond.tokens`` into ``Cond.context``. A frozen encoder
(pretrained MiniLM) stays in the part and fills ``Cond.context`` itself.

Registries are literal dicts of builder functions; text, layout and concat modules are imported only when
their kind is built (``import ldmkit`` stays light).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch

from ldmkit.conditioning.class_label import drop_condition, null_condition
from ldmkit.registry import ConfigError, lookup
from ldmkit.types import Batch, Cond

__all__ = ["CONCAT_KINDS", "CONTEXT_KINDS", "ClassKind", "Conditioner", "build_conditioner", "drop_condition",
           "merge_conds", "null_condition", "parse_classes"]

REQUEST_ARGS = ("labels", "prompts", "layouts", "images", "masks")


def merge_conds(parts: list[Cond | None]) -> Cond | None:
    """One :class:`Cond` from the parts' (each field set by at most one part); ``None`` when all are empty."""
    out: dict[str, Any] = {}
    for part in parts:
        if part is None:
            continue
        for f in fields(Cond):
            value = getattr(part, f.name)
            if value is None:
                continue
            if f.name in out:
                raise ValueError(f"conditioning: two conditioners both set Cond.{f.name}")
            out[f.name] = value
    return Cond(**out) if out else None


def parse_classes(values, num_classes: int, class_names: tuple[str, ...] | None = None,
                  what: str = "labels") -> list[int]:
    """Class indices from names or indices (``["ankle boot", 3]`` or ``"ankle boot,3"``).

    Raises:
        ValueError: an unknown name (the valid ones listed) or an index outside ``[0, num_classes - 1]``.
    """
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    elif isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    out = []
    names = {n.lower(): i for i, n in enumerate(class_names or ())}
    for v in values:
        if isinstance(v, str) and v.strip().lower() in names:
            out.append(names[v.strip().lower()])
            continue
        try:
            k = int(v)
        except (TypeError, ValueError):
            valid = ", ".join(repr(n) for n in class_names) if class_names else "(this data has no class names)"
            raise ConfigError(f"{what}: unknown class {v!r}; valid: {valid} or an index in "
                              f"[0, {num_classes - 1}]") from None
        if not 0 <= k < num_classes:
            raise ConfigError(f"{what}: class index {k} outside [0, {num_classes - 1}]")
        out.append(k)
    if not out:
        raise ConfigError(f"{what}: no class given")
    return out


class ClassKind:
    """Class labels (``unet.num_classes``): the batch's labels; a request's ``labels`` (names or indices,
    repeated to ``n``), class-balanced ``i mod K`` when none are given."""

    accepts = ("labels",)

    def __init__(self, num_classes: int, class_names: tuple[str, ...] | None = None):
        self.num_classes, self.class_names = num_classes, class_names

    def from_batch(self, batch: Batch, space=None) -> Cond:
        if batch.labels is None:
            raise ValueError("unet.num_classes is set but the data has no labels")
        return Cond(class_labels=batch.labels)

    def from_request(self, n: int, *, space=None, labels=None) -> Cond:
        if labels is None:
            values = [i % self.num_classes for i in range(n)]
        else:
            values = parse_classes(labels, self.num_classes, self.class_names)
        return Cond(class_labels=torch.tensor([values[i % len(values)] for i in range(n)], dtype=torch.int64))


class Conditioner:
    """The parts that condition one model: class labels, a context kind, a concat kind (each optional).

    Attributes:
        context_encoder: the trainable context encoder to hand to the Denoiser, or ``None``.
        null_class: the null class index (``num_classes``) or ``None``.
    """

    def __init__(self, parts: dict[str, Any], num_classes: int | None = None):
        self.parts = {k: v for k, v in parts.items() if v is not None}
        self.num_classes = num_classes

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    @property
    def context_encoder(self) -> torch.nn.Module | None:
        return getattr(self.parts.get("context"), "context_encoder", None)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return getattr(self.parts.get("class"), "class_names", None)

    @property
    def accepts(self) -> tuple[str, ...]:
        """The request arguments this model takes (``labels``, ``prompts``, ``layouts``, ``images``, ``masks``)."""
        return tuple(a for p in self.parts.values() for a in p.accepts)

    @property
    def is_conditional(self) -> bool:
        """Whether classifier-free guidance has anything to act on (labels or a context)."""
        return "class" in self.parts or "context" in self.parts

    def from_batch(self, batch: Batch, space=None) -> Cond | None:
        """The condition of a training batch (before condition dropout)."""
        return merge_conds([p.from_batch(batch, space) for p in self.parts.values()])

    def from_request(self, n: int, *, space=None, device: torch.device | str = "cpu", **request) -> Cond | None:
        """The condition of a sampling request of ``n`` images, on ``device``.

        ``request`` holds ``labels``, ``prompts``, ``layouts``, ``images``, ``masks`` (each optional).

        Raises:
            ValueError: an argument this model does not take (naming what it does take), or a bad value.
        """
        unknown = [k for k in request if k not in REQUEST_ARGS]
        if unknown:
            raise TypeError(f"from_request: unknown arguments {unknown}; valid: {list(REQUEST_ARGS)}")
        accepted = self.accepts
        for name, value in request.items():
            if value is not None and name not in accepted:
                takes = ", ".join(accepted) if accepted else "no condition (it is unconditional)"
                raise ConfigError(f"{name}: this model does not take {name}; it takes {takes}")
        conds = [p.from_request(n, space=space, **{a: request.get(a) for a in p.accepts})
                 for p in self.parts.values()]
        cond = merge_conds(conds)
        return None if cond is None else cond.to(device)


def _no_kind(cfg, hints: dict) -> None:
    return None


def _text_kind(cfg, hints: dict):
    from ldmkit.conditioning.text import build_kind

    # class names become prompts only where the U-Net has no class embedding of its own (which takes labels)
    names = hints.get("class_names") if cfg.unet.num_classes is None else None
    return build_kind(cfg, hints.get("prompts"), names)


def _layout_kind(cfg, hints: dict):
    from ldmkit.conditioning.layout import build_kind

    return build_kind(cfg, hints.get("image_size"))


def _concat_kind(name: str) -> Callable:
    def build(cfg, hints: dict):
        from ldmkit.conditioning.concat import build_kind

        return build_kind(cfg, name)

    return build


# Each builder takes the root Config and the data hints (see build_conditioner) and returns a part (or None);
# see the module docstring for a part's methods.
CONTEXT_KINDS: dict[str, Callable] = {"none": _no_kind, "text": _text_kind, "layout": _layout_kind}
CONCAT_KINDS: dict[str, Callable] = {"none": _no_kind, "super_resolution": _concat_kind("super_resolution"),
                                     "inpainting": _concat_kind("inpainting")}


def build_conditioner(cfg, *, class_names: tuple[str, ...] | None = None,
                      prompts: list[str] | None = None, image_size: tuple[int, int] | None = None) -> Conditioner:
    """The :class:`Conditioner` of a run config (``ldmkit.config.Config``), checked against its U-Net.

    What only the data knows comes in as hints (``conditioning/`` does not import ``data/``;
    ``pipelines.build_conditioner`` fills them): ``class_names`` of the labels (``--class "ankle boot"``) and
    the default ``prompts`` of a text model (preview grids, ``sample`` without ``--prompt``).

    Raises:
        ConfigError: ``cond.context`` set without a matching ``unet.context_dim`` (or the reverse), or the
            concat conditioner's channels differ from ``unet.concat_channels``.
    """
    unet, c = cfg.unet, cfg.cond
    hints = {"class_names": class_names, "prompts": prompts, "image_size": image_size}
    parts: dict[str, Any] = {}
    if unet.num_classes is not None:
        parts["class"] = ClassKind(unet.num_classes, class_names)
    context = lookup(CONTEXT_KINDS, c.context, "cond.context")(cfg, hints)
    width = getattr(context, "context_dim", None)
    if context is None and unet.context_dim is not None:
        raise ConfigError(f"unet.context_dim={unet.context_dim} but cond.context='none' gives no context; set "
                          "cond.context (text, layout) or unset unet.context_dim")
    if context is not None and unet.context_dim != width:
        raise ConfigError(f"cond.context={c.context!r} gives {width}-d tokens but unet.context_dim="
                          f"{unet.context_dim}; set --unet.context_dim={width}")
    concat = lookup(CONCAT_KINDS, c.concat, "cond.concat")(cfg, hints)
    channels = (0 if concat is None else concat.channels) + getattr(context, "concat_channels", 0)
    if channels != unet.concat_channels:
        spatial = " and the layout's box map (cond.layout.spatial)" if getattr(context, "concat_channels", 0) else ""
        raise ConfigError(f"cond.concat={c.concat!r}{spatial} give {channels} concat channels but "
                          f"unet.concat_channels={unet.concat_channels}; set --unet.concat_channels={channels}")
    parts["context"], parts["concat"] = context, concat
    return Conditioner(parts, unet.num_classes)
