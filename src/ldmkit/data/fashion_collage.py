"""Fashion collage: 2-4 Fashion-MNIST items pasted at random positions and scales on a 64x64 canvas, with layouts.

A dataset of real images with layouts for layout-to-image (Rombach et al. 2022, Sec. 4.3.1). Item ``i`` is a pure
function of ``(seed, split, i)`` and the Fashion-MNIST split it draws from (train items for ``split="train"``,
test items for ``split="test"``, so no item crosses the split). Its ground truth is exact:

* each box ``(x0, y0, x1, y1)`` in [0, 1] is the tight bounding box of the item's nonzero pixels after scaling,
  in canvas pixels divided by the canvas side (``x1``/``y1`` exclusive, as for ``shapes``);
* the boxes never overlap and are at least ``GAP`` pixels apart along x or y, so each box holds one item and the
  caption's relation words ("a bag to the left of a sneaker") hold for the boxes;
* items are pasted with ``max`` (the background is 0 = -1 in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ldmkit.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist_arrays
from ldmkit.registry import lookup

SIZE = 64  # canvas side
MIN_ITEMS, MAX_ITEMS = 2, 4
GAP = 2  # pixels between the tight boxes of two items (along x or along y)
SCALE_RANGE = (28, 44)  # side (pixels) the 28x28 frame of an item is resized to
MIN_SCALE = 20  # placement shrinks items down to this side when they do not fit
SPLITS = {"train": 0, "test": 1}
#: the noun phrase of each Fashion-MNIST class in captions
PHRASES = ("a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt",
           "a sneaker", "a bag", "an ankle boot")


@dataclass(frozen=True)
class Item:
    """One pasted item: Fashion-MNIST index and class, frame side and origin, and its tight pixel box."""

    source: int
    label: int
    side: int
    left: int
    top: int
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) canvas pixels, x1/y1 exclusive


@dataclass(frozen=True)
class Collage:
    """The items of one canvas and its caption."""

    items: tuple[Item, ...]
    caption: str


def scale_item(image: np.ndarray, side: int) -> np.ndarray:
    """Resize one 28x28 uint8 item to ``side x side`` (Pillow bilinear, deterministic)."""
    if side == image.shape[0]:
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))


def tight_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (x1/y1 exclusive) of the nonzero pixels of a 2-D array, or None if all are zero."""
    ys, xs = np.nonzero(image)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _separated(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def true_relations(a: Sequence[int], b: Sequence[int]) -> list[str]:
    """Relation words that hold for ``a <word> b`` with pixel boxes ``(x0, y0, x1, y1)``."""
    out = []
    if a[3] <= b[1]:
        out.append("above")
    if a[1] >= b[3]:
        out.append("below")
    if a[2] <= b[0]:
        out.append("to the left of")
    if a[0] >= b[2]:
        out.append("to the right of")
    return out


def place_items(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, size: int = SIZE,
                max_tries: int = 60) -> list[Item]:
    """Pick 2-4 items from ``images`` and place them without overlap (rejection sampling, shrinking on failure).

    Each item gets one scale per attempt (drawn in ``SCALE_RANGE``, capped lower after each failed attempt)
    and ``max_tries`` random positions for it. The frame of an item may leave the canvas as long as its
    nonzero pixels stay inside.
    """
    count = int(rng.integers(MIN_ITEMS, MAX_ITEMS + 1))
    placed: list[Item] = []
    while len(placed) < count:
        source = int(rng.integers(len(images)))
        item, hi = None, SCALE_RANGE[1]
        while item is None and hi >= MIN_SCALE:
            side = int(rng.integers(min(SCALE_RANGE[0], hi), hi + 1))
            box = tight_box(scale_item(images[source], side))
            if box is None:  # an empty image: draw another item
                break
            bw, bh = box[2] - box[0], box[3] - box[1]
            xs = rng.integers(0, size - bw + 1, size=max_tries)
            ys = rng.integers(0, size - bh + 1, size=max_tries)
            for x0, y0 in zip(xs.tolist(), ys.tolist(), strict=True):
                canvas_box = (x0, y0, x0 + bw, y0 + bh)
                if all(_separated(canvas_box, p.box, GAP) for p in placed):
                    item = Item(source, int(labels[source]), side, x0 - box[0], y0 - box[1], canvas_box)
                    break
            hi -= 4
        if item is None:  # no room left even at the smallest scale: stop with what fits
            if len(placed) >= MIN_ITEMS:
                break
            continue
        placed.append(item)
    return placed


def describe(items: Sequence[Item], rng: np.random.Generator) -> str:
    """A caption whose relations hold, e.g. "a bag to the left of a sneaker, and a coat below the bag"."""
    order = [int(i) for i in rng.permutation(len(items))]
    a, b = items[order[0]], items[order[1]]
    caption = f"{PHRASES[a.label]} {_pick(a, b, rng)} {PHRASES[b.label]}"
    for k in order[2:]:
        ref = items[order[int(rng.integers(2))]]
        noun = PHRASES[ref.label].split(" ", 1)[1]
        the_ref = ("the other " if ref.label == items[k].label else "the ") + noun
        caption += f", and {PHRASES[items[k].label]} {_pick(items[k], ref, rng)} {the_ref}"
    return caption


def _pick(a: Item, b: Item, rng: np.random.Generator) -> str:
    words = true_relations(a.box, b.box)
    if not words:  # cannot happen for separated boxes; guards the invariant the caption relies on
        raise AssertionError(f"no spatial relation holds between {a} and {b}")
    return words[int(rng.integers(len(words)))]


def render(items: Sequence[Item], images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Paste the scaled items onto a black canvas with ``max`` -> uint8 ``[size, size]``."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    for it in items:
        patch = scale_item(images[it.source], it.side)
        # clip the frame to the canvas (only zero pixels lie outside)
        x0, y0 = max(it.left, 0), max(it.top, 0)
        x1, y1 = min(it.left + it.side, size), min(it.top + it.side, size)
        sub = patch[y0 - it.top:y1 - it.top, x0 - it.left:x1 - it.left]
        np.maximum(canvas[y0:y1, x0:x1], sub, out=canvas[y0:y1, x0:x1])
    return canvas


class FashionCollage(torch.utils.data.Dataset):
    """Fashion-MNIST collages as float images ``[1, 64, 64]`` in [-1, 1], with boxes, labels and a caption.

    Items are dicts: ``image``, ``index``, ``caption``, ``boxes`` (``[K, 4]`` float32 (x0, y0, x1, y1) in
    [0, 1]) and ``box_labels`` (``[K]`` int64 Fashion-MNIST classes), K in 2..4. Item ``i`` depends only on
    ``(seed, split, i)`` (and the Fashion-MNIST files); any ``i >= 0`` is valid, ``length`` only sets ``len()``.
    """

    class_names = CLASS_NAMES
    channels = 1
    size = SIZE

    def __init__(self, length: int = 50_000, *, seed: int = 0, split: str = "train", root: str | None = None):
        lookup(SPLITS, split, "fashion-collage split")
        if length < 1 or seed < 0:
            raise ValueError(f"fashion-collage: length must be >= 1 and seed >= 0, got length={length}, seed={seed}")
        self.length, self.seed, self.split = int(length), int(seed), split
        self.images, self.labels = load_fashion_mnist_arrays(split, root)

    @staticmethod
    def shape() -> tuple[int, int, int]:
        """``(C, H, W)`` of every item (reads no file)."""
        return 1, SIZE, SIZE

    def __len__(self) -> int:
        return self.length

    def collage(self, i: int) -> Collage:
        """The items and caption of canvas ``i`` (no pixels)."""
        if i < 0:
            raise IndexError(f"fashion-collage index must be >= 0, got {i}")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], int(i)])
        items = place_items(rng, self.images, self.labels)
        return Collage(tuple(items), describe(items, rng))

    def image_uint8(self, i: int) -> np.ndarray:
        return render(self.collage(i).items, self.images)

    def __getitem__(self, i: int) -> dict:
        c = self.collage(i)
        arr = render(c.items, self.images)
        return {
            "image": torch.from_numpy(arr[None].copy()).float().div(127.5).sub(1.0),
            "index": int(i),
            "caption": c.caption,
            "boxes": torch.tensor([it.box for it in c.items], dtype=torch.float32) / SIZE,
            "box_labels": torch.tensor([it.label for it in c.items], dtype=torch.int64),
        }


def build_from_config(cfg) -> FashionCollage:
    """The dataset for a ``DataConfig`` with ``name="fashion-collage"`` (uses root, split, length, seed)."""
    if cfg.channels not in (None, 1):
        raise ValueError(f"fashion-collage is grayscale: data.channels must be 1 or null, got {cfg.channels}")
    if cfg.image_size not in (None, SIZE):
        raise ValueError(f"fashion-collage canvases are {SIZE}x{SIZE}: data.image_size must be {SIZE} or null, "
                         f"got {cfg.image_size}")
    return FashionCollage(cfg.length, seed=cfg.seed, split=cfg.split, root=cfg.root)


def shape_from_config(cfg) -> tuple[int, int, int]:
    """``(C, H, W)`` for a ``DataConfig`` (reads no file)."""
    return FashionCollage.shape()


__all__ = ["PHRASES", "SIZE", "Collage", "FashionCollage", "Item", "build_from_config", "describe", "place_items",
           "render", "scale_item", "shape_from_config", "tight_box", "true_relations"]
