"""Datasets: Fashion-MNIST, image folders and synthetic shapes, all yielding images in [-1, 1].

``build_dataset(DataConfig(...))`` builds any of them with items as dicts (``image``, ``index`` and, when the
dataset has them, ``label``, ``caption``, ``boxes``, ``box_labels``, ``box_colors``); ``collate`` turns a
list of items into a :class:`ldmkit.types.Batch`. Each dataset also reports, without loading anything, the
``(C, H, W)`` of its items (:func:`image_shape`) and the padding ``data.pad_to`` added to its own images
(:func:`data_padding`), so that a model trained on padded images can return the data's own size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from ldmkit.data import fashion_collage
from ldmkit.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load_fashion_mnist_arrays
from ldmkit.data.fashion_mnist import SIZE as FASHION_MNIST_SIZE
from ldmkit.data.image_folder import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    ImageFolder,
    ImageTooLargeError,
    Verify,
    load_image,
)
from ldmkit.data.shapes import COLOR_NAMES, COLORS, SHAPE_NAMES, Shapes
from ldmkit.data.transforms import (
    Compose,
    Padding,
    RandomHorizontalFlip,
    TransformedDataset,
    as_item,
    center_padding,
    hflip,
)
from ldmkit.registry import ConfigError, lookup
from ldmkit.types import Batch

__all__ = [
    "CLASS_NAMES", "COLORS", "COLOR_NAMES", "DATASETS", "DEFAULT_MAX_PIXELS", "SHAPE_NAMES",
    "BadImageError", "Compose", "DataConfig", "DatasetSpec", "FashionMNIST", "ImageFolder", "ImageTooLargeError",
    "Padding", "RandomHorizontalFlip", "Shapes", "TransformedDataset", "as_item", "build_dataset", "class_names",
    "collate",
    "data_padding", "hflip", "image_shape", "load_fashion_mnist_arrays", "load_image",
]


@dataclass
class DataConfig:
    """What to load. Fields a dataset does not use must stay at their defaults' meaning (see each builder).

    Attributes:
        name: "fashion-mnist", "shapes" or "folder".
        root: Fashion-MNIST IDX directory (default: $LDMKIT_FMNIST_DIR, else /usr/share/datasets/fashion-mnist)
            or the image folder (required for "folder").
        split: "train" or "test" (shapes also "val": a third independent stream).
        image_size: output side; None: the dataset's own (28, or pad_to, for Fashion-MNIST; 32 for shapes;
            each image's native size for a folder).
        channels: 1 or 3; None: the dataset's own (1 for Fashion-MNIST, 3 for shapes and folders).
        pad_to: Fashion-MNIST only: zero-pad (the background value, -1) from 28 to this even size.
        skip_bad: folder: skip unusable images (one warning with the count) instead of raising.
        max_pixels: folder: refuse images with more pixels than this (decompression bombs); None: no limit.
        labels: folder: class labels from first-level sub-folder names (None: when all images are in one).
        background: folder: colour that transparent pixels are composited onto (name, #rrggbb).
        verify: folder: "full" decodes every image at start (and keeps them in memory when cache), "header"
            reads only headers.
        cache: folder: keep decoded images in memory after a full scan.
        length: shapes: number of items len() reports (items exist for every index >= 0).
        seed: shapes: generator seed; item i depends only on (seed, split, i).
        min_shapes: shapes: fewest objects per image (1-3).
        max_shapes: shapes: most objects per image (1-3).
        hflip: mirror items at random with probability 1/2 (boxes and left/right words follow).
        cache_latents: latent diffusion: encode every training item once with the first stage and draw each
            step's latent from its cached posterior (a fresh sample per step, as without the cache). Items are
            encoded in fixed chunks of indices, so the cache holds the same values however the run is
            interrupted and resumed. Not with ``hflip`` (a cached item has one orientation).
        captions: give every item a ``caption`` (Fashion-MNIST: varied templates over its class names,
            deterministic by ``seed`` and index, see ``data/captions.py``; shapes always has them).
    """

    name: str = "fashion-mnist"
    root: str | None = None
    split: str = "train"
    image_size: int | None = None
    channels: int | None = None
    pad_to: int | None = None
    skip_bad: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    labels: bool | None = None
    background: str = "white"
    verify: Verify = "full"
    cache: bool = True
    length: int = 50_000
    seed: int = 0
    min_shapes: int = 1
    max_shapes: int = 3
    hflip: bool = False
    captions: bool = False
    cache_latents: bool = False

    def __post_init__(self) -> None:
        lookup(DATASETS, self.name, "dataset name")
        if self.pad_to is not None and self.name != "fashion-mnist":
            raise ConfigError(f"data.pad_to={self.pad_to} is for Fashion-MNIST only (data.name={self.name!r} sets "
                              "its size with data.image_size); leave it null")
        if self.captions and self.name not in ("fashion-mnist", "shapes"):
            raise ConfigError(f"data.captions=true: data.name={self.name!r} has no captions; valid: fashion-mnist, "
                              "shapes")
        if self.cache_latents and self.hflip:
            raise ConfigError("data.cache_latents=true with data.hflip=true: a cached latent has one orientation; "
                              "set one of them to false")
        if self.channels is not None and self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3 (or null for the dataset's own), got {self.channels!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise ValueError(f"data.image_size must be a positive integer or null, got {self.image_size!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _fashion_mnist(cfg: DataConfig) -> torch.utils.data.Dataset:
    if cfg.channels not in (None, 1):
        raise ValueError(f"Fashion-MNIST is grayscale: data.channels must be 1 or null, got {cfg.channels}")
    ds = FashionMNIST(cfg.split, root=cfg.root, pad_to=cfg.pad_to)
    if cfg.image_size is not None and cfg.image_size != ds.size:
        raise ValueError(f"Fashion-MNIST images are {ds.size}x{ds.size} here but data.image_size is "
                         f"{cfg.image_size}; use data.pad_to (28 or an even size above) to change the size")
    return ds


def _shapes(cfg: DataConfig) -> torch.utils.data.Dataset:
    if cfg.channels not in (None, 3):
        raise ValueError(f"shapes images are RGB: data.channels must be 3 or null, got {cfg.channels}")
    return Shapes(cfg.length, cfg.image_size or 32, seed=cfg.seed, split=cfg.split, min_shapes=cfg.min_shapes,
                  max_shapes=cfg.max_shapes)


def _folder(cfg: DataConfig) -> torch.utils.data.Dataset:
    if not cfg.root:
        raise ValueError("data.root must name the image directory for data.name='folder'")
    return ImageFolder(cfg.root, cfg.image_size, cfg.channels or 3, labels=cfg.labels, skip_bad=cfg.skip_bad,
                       max_pixels=cfg.max_pixels, background=cfg.background, verify=cfg.verify,
                       cache=cfg.cache)


def _fashion_mnist_shape(cfg: DataConfig) -> tuple[int, int, int]:
    size = cfg.pad_to or FASHION_MNIST_SIZE
    return 1, size, size


def _shapes_shape(cfg: DataConfig) -> tuple[int, int, int]:
    size = cfg.image_size or 32
    return 3, size, size


def _folder_shape(cfg: DataConfig) -> tuple[int, int, int]:
    if cfg.image_size is None:
        raise ConfigError("data.image_size must be set for data.name='folder' (its images have their own sizes)")
    return cfg.channels or 3, cfg.image_size, cfg.image_size


def _no_padding(cfg: DataConfig) -> Padding:
    return Padding()


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to build it, the ``(C, H, W)`` of its items, and what ``data.pad_to`` adds."""

    build: Callable[[DataConfig], Any]
    shape: Callable[[DataConfig], tuple[int, int, int]]
    padding: Callable[[DataConfig], Padding] = _no_padding


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(_fashion_mnist, _fashion_mnist_shape,
                                 lambda cfg: center_padding(FASHION_MNIST_SIZE, cfg.pad_to)),
    "shapes": DatasetSpec(_shapes, _shapes_shape),
    "folder": DatasetSpec(_folder, _folder_shape),
    "fashion-collage": DatasetSpec(fashion_collage.build_from_config, fashion_collage.shape_from_config),
}


def image_shape(config: DataConfig) -> tuple[int, int, int]:
    """``(C, H, W)`` of the dataset's items, padding included (what a model trains on); reads no file."""
    return lookup(DATASETS, config.name, "dataset name").shape(config)


def data_padding(config: DataConfig) -> Padding:
    """What ``data.pad_to`` added around the dataset's own images (``Padding()`` when nothing)."""
    return lookup(DATASETS, config.name, "dataset name").padding(config)


def class_names(config: DataConfig) -> tuple[str, ...] | None:
    """The names of the dataset's class labels (index order), read without loading it; ``None`` if unnamed."""
    return {"fashion-mnist": CLASS_NAMES, "shapes": SHAPE_NAMES}.get(config.name)


def build_dataset(config: DataConfig, transform: Callable[[dict], dict] | None = None) -> TransformedDataset:
    """Build the configured dataset; items are dicts (see the module docstring) with ``index`` set.

    The result forwards attribute reads to the underlying dataset (``class_names``, ``tensors()`` for
    Fashion-MNIST, ``scene(i)`` for shapes ...); ``.dataset`` is the underlying dataset itself.
    ``transform`` runs after the random flip that ``config.hflip`` asks for.
    """
    base = lookup(DATASETS, config.name, "dataset name").build(config)
    if config.captions:
        from ldmkit.data.captions import with_captions

        base = with_captions(base, config)
    steps = [RandomHorizontalFlip(0.5)] if config.hflip else []
    if transform is not None:
        steps.append(transform)
    return TransformedDataset(base, Compose(steps) if len(steps) > 1 else (steps[0] if steps else None))


def _gather(items: list[dict], key: str) -> list | None:
    present = [key in it and it[key] is not None for it in items]
    if not any(present):
        return None
    if not all(present):
        missing = [it.get("index", n) for n, it in enumerate(items) if key not in it or it[key] is None]
        raise ValueError(f"collate: field {key!r} is set for some items but missing for items {missing[:5]}")
    return [it[key] for it in items]


def collate(items: list) -> Batch:
    """Stack dataset items (dicts, or Fashion-MNIST ``(image, label)`` pairs) into a :class:`Batch`.

    Images must share one shape. Boxes and box labels stay per-example lists (they vary in count); any
    other per-item field (e.g. ``box_colors``) lands in ``Batch.extra`` as a list.
    """
    if not items:
        raise ValueError("collate: empty list of items")
    dicts = [as_item(it) for it in items]
    shapes = {tuple(it["image"].shape) for it in dicts}
    if len(shapes) != 1:
        raise ValueError(f"collate: images of different shapes {sorted(shapes)} in one batch; set "
                         "data.image_size so that every image is resized to the same size")
    labels = _gather(dicts, "label")
    indices = _gather(dicts, "index")
    known = {"image", "label", "caption", "boxes", "box_labels", "index"}
    extra = {k: _gather(dicts, k) for k in sorted(set().union(*dicts) - known)}
    return Batch(
        images=torch.stack([it["image"] for it in dicts]),
        labels=torch.as_tensor(labels, dtype=torch.int64) if labels is not None else None,
        captions=_gather(dicts, "caption"),
        boxes=_gather(dicts, "boxes"),
        box_labels=_gather(dicts, "box_labels"),
        indices=torch.as_tensor(indices, dtype=torch.int64) if indices is not None else None,
        extra=extra,
    )
