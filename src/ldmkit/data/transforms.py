"""Item transforms. An item is a dict with ``image`` (``[C, H, W]`` in [-1, 1]) and optional ``label``,
``caption``, ``boxes`` (``[K, 4]`` (x0, y0, x1, y1) in [0, 1]), ``box_labels``, ``box_colors``, ``index``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def swap_left_right(text: str) -> str:
    """Swap the words "left" and "right" (what a caption must do when its image is mirrored)."""
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def hflip(item: dict) -> dict:
    """Mirror an item left-right: the image, its boxes (x -> 1 - x) and left/right in its caption."""
    out = dict(item)
    out["image"] = item["image"].flip(-1)
    if item.get("boxes") is not None:
        b = item["boxes"]
        out["boxes"] = torch.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], dim=1) if len(b) else b.clone()
    if isinstance(item.get("caption"), str):
        out["caption"] = swap_left_right(item["caption"])
    return out


@dataclass(frozen=True)
class Padding:
    """Pixels a dataset adds on each side of its own images (``data.pad_to``), and the fill value.

    ``pad`` applies it to ``[..., H, W]`` images at the data's own size; ``crop`` removes it again from
    images at the padded size (or larger: the same margins are cut from every side). No padding: both are
    the identity.
    """

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0
    value: float = -1.0  # the background of [-1, 1] images

    def __bool__(self) -> bool:
        return any((self.top, self.bottom, self.left, self.right))

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., H, W]`` -> ``[..., top + H + bottom, left + W + right]`` filled with ``value``."""
        if not self:
            return x
        return F.pad(x, (self.left, self.right, self.top, self.bottom), value=self.value)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., H, W]`` -> ``[..., H - top - bottom, W - left - right]`` (the inverse of :meth:`pad`)."""
        if not self:
            return x
        h, w = x.shape[-2:]
        if h <= self.top + self.bottom or w <= self.left + self.right:
            raise ValueError(f"cannot remove padding {self} from images of size {h}x{w}")
        return x[..., self.top:h - self.bottom, self.left:w - self.right]


def center_padding(size: int, target: int | None, value: float = -1.0) -> Padding:
    """The padding that centres a ``size`` x ``size`` image in ``target`` x ``target`` (None: no padding)."""
    if target is None or target == size:
        return Padding(value=value)
    if target < size or (target - size) % 2:
        raise ValueError(f"pad_to must be {size} or an even size above {size}, got {target}")
    p = (target - size) // 2
    return Padding(p, p, p, p, value)


class RandomHorizontalFlip:
    """Mirror an item with probability ``p`` (boxes and "left"/"right" in captions follow the image).

    The coin comes from ``generator`` when given, else from torch's global RNG (which DataLoader seeds per
    worker).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, item: dict) -> dict:
        if self.p > 0 and torch.rand((), generator=self.generator).item() < self.p:
            return hflip(item)
        return item


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, item: dict) -> dict:
        for t in self.transforms:
            item = t(item)
        return item


def as_item(item: Any, index: int | None = None) -> dict:
    """Normalise a dataset item to a dict: ``(image, label)`` tuples (Fashion-MNIST) become
    ``{"image", "label"}``; dicts pass through. ``index`` is added when given and missing."""
    if isinstance(item, dict):
        out = item
    elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
        out = {"image": item[0], "label": int(item[1])}
    else:
        raise TypeError(f"cannot use a dataset item of type {type(item).__name__}; expected a dict or "
                        "an (image, label) pair")
    if index is not None and "index" not in out:
        out = {**out, "index": int(index)}
    return out


class TransformedDataset(torch.utils.data.Dataset):
    """Wrap any dataset: items become dicts (with ``index``) and pass through ``transform``."""

    def __init__(self, dataset, transform: Callable[[dict], dict] | None = None):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = as_item(self.dataset[i], i)
        return self.transform(item) if self.transform is not None else item

    def __getattr__(self, name: str):
        # class_names, size, channels ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
