"""Synthetic shapes: 1-3 coloured circles / squares / triangles on a plain background, with captions and boxes.

Every item is a pure function of ``(seed, split, index)``, so the dataset needs no files, has any length, and
its ground truth is exact: the boxes are the shapes' pixel extents and every relation word in a caption
("a red circle above a blue square") holds for the boxes (box A lies wholly above box B). Shapes in one
image never overlap and have distinct colours, so a colour names one shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ldmkit.registry import lookup

SHAPE_NAMES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 30),
    "purple": (150, 60, 190),
    "black": (30, 30, 30),
}
COLOR_NAMES = tuple(COLORS)
BACKGROUND = (255, 255, 255)
# relation -> the one that holds with the two objects swapped
RELATIONS = {"above": "below", "below": "above", "to the left of": "to the right of",
             "to the right of": "to the left of"}
SPLITS = {"train": 0, "test": 1, "val": 2}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    """One drawn object: class and colour indices and its pixel box ``[x0, x1) x [y0, y1)``."""

    shape: int
    color: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def name(self) -> str:
        return f"{COLOR_NAMES[self.color]} {SHAPE_NAMES[self.shape]}"


@dataclass(frozen=True)
class Scene:
    """Objects plus the relations the caption states: ``(i, word, j)`` means object i <word> object j."""

    shapes: tuple[Shape, ...]
    relations: tuple[tuple[int, str, int], ...]
    caption: str


def true_relations(a: Shape, b: Shape) -> list[str]:
    """Every relation word that holds for ``a <word> b``: a's box wholly above / below / left / right of b's."""
    out = []
    if a.y1 <= b.y0:
        out.append("above")
    if a.y0 >= b.y1:
        out.append("below")
    if a.x1 <= b.x0:
        out.append("to the left of")
    if a.x0 >= b.x1:
        out.append("to the right of")
    return out


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """Boxes (x0, y0, x1, y1) at least ``gap`` pixels apart along x or along y."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def sample_shapes(rng: np.random.Generator, size: int, min_shapes: int = 1, max_shapes: int = 3,
                  gap: int = 2, max_tries: int = 200) -> list[Shape]:
    """Place 1-3 non-overlapping shapes of distinct colours (rejection sampling; fewer if they do not fit)."""
    count = int(rng.integers(min_shapes, max_shapes + 1))
    colors = rng.permutation(len(COLOR_NAMES))[:count]
    lo, hi = max(6, round(0.22 * size)), max(6, round(0.42 * size))
    shapes: list[Shape] = []
    for k in range(count):
        for _ in range(max_tries):
            side = int(rng.integers(lo, hi + 1))
            x0 = int(rng.integers(1, size - side))  # keep a 1-pixel margin to the border
            y0 = int(rng.integers(1, size - side))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_separated(box, (s.x0, s.y0, s.x1, s.y1), gap) for s in shapes):
                shapes.append(Shape(int(rng.integers(len(SHAPE_NAMES))), int(colors[k]), *box))
                break
    return shapes


def describe(shapes: Sequence[Shape], rng: np.random.Generator) -> tuple[str, tuple[tuple[int, str, int], ...]]:
    """A caption whose relations hold for the boxes, e.g. "a red circle above a blue square".

    One object: "a red circle". Two: "A <rel> B" with a relation picked among the true ones. Three: a
    second clause relates the third object to one of the first two ("..., and a green triangle to the
    left of the blue square").
    """
    if len(shapes) == 1:
        return _article(shapes[0].name), ()
    order = [int(i) for i in rng.permutation(len(shapes))]
    a, b = order[0], order[1]
    rel_ab = _pick(shapes[a], shapes[b], rng)
    caption = f"{_article(shapes[a].name)} {rel_ab} {_article(shapes[b].name)}"
    relations = [(a, rel_ab, b)]
    if len(shapes) == 3:
        c, ref = order[2], order[int(rng.integers(2))]
        rel_c = _pick(shapes[c], shapes[ref], rng)
        caption += f", and {_article(shapes[c].name)} {rel_c} the {shapes[ref].name}"
        relations.append((c, rel_c, ref))
    return caption, tuple(relations)


def _pick(a: Shape, b: Shape, rng: np.random.Generator) -> str:
    words = true_relations(a, b)
    if not words:  # cannot happen for separated boxes; guards the invariant the caption relies on
        raise AssertionError(f"no spatial relation holds between {a} and {b}")
    return words[int(rng.integers(len(words)))]


def _coverage(shape: Shape, ss: int = _SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel of the shape's box covered by the shape, ``[h, w]`` (supersampled ss x ss)."""
    w, h = shape.x1 - shape.x0, shape.y1 - shape.y0
    u = (np.arange(w * ss) + 0.5) / ss  # sub-pixel centres, box coordinates
    v = (np.arange(h * ss) + 0.5) / ss
    uu, vv = np.meshgrid(u, v)
    if SHAPE_NAMES[shape.shape] == "circle":
        inside = (uu - w / 2) ** 2 + (vv - h / 2) ** 2 <= (min(w, h) / 2) ** 2
    elif SHAPE_NAMES[shape.shape] == "square":
        inside = np.ones_like(uu, dtype=bool)
    else:  # upward triangle: apex at the top centre, base along the bottom edge
        inside = np.abs(uu - w / 2) <= vv * (w / 2) / h
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3))


def render(shapes: Sequence[Shape], size: int, background: Sequence[int] = BACKGROUND) -> np.ndarray:
    """Draw the shapes antialiased (4x4 supersampling) onto a plain background -> uint8 ``[size, size, 3]``."""
    canvas = np.empty((size, size, 3), dtype=np.float64)
    canvas[:] = np.asarray(background, dtype=np.float64)
    for s in shapes:
        cov = _coverage(s)[..., None]
        region = canvas[s.y0:s.y1, s.x0:s.x1]
        region[:] = region * (1 - cov) + np.asarray(COLORS[COLOR_NAMES[s.color]], dtype=np.float64) * cov
    return np.round(canvas).astype(np.uint8)


_OBJECT = r"(?:a|an|the) (\w+) (\w+)"
_CLAUSE = re.compile(rf"{_OBJECT} ({'|'.join(RELATIONS)}) {_OBJECT}")


def parse_caption(caption: str) -> list[tuple[tuple[str, str], str, tuple[str, str]]]:
    """Inverse of :func:`describe` for relations: ``[((colour, shape), word, (colour, shape)), ...]``."""
    return [((m[0], m[1]), m[2], (m[3], m[4])) for m in _CLAUSE.findall(caption)]


class Shapes(torch.utils.data.Dataset):
    """Synthetic shapes as float RGB tensors ``[3, size, size]`` in [-1, 1], with captions and boxes.

    Items are dicts: ``image``, ``index``, ``caption``, ``boxes`` (``[K, 4]`` float32 (x0, y0, x1, y1) in
    [0, 1]), ``box_labels`` (``[K]`` int64 indices into SHAPE_NAMES) and ``box_colors`` (``[K]`` int64
    indices into COLOR_NAMES). Item ``i`` depends only on ``(seed, split, i)``; any ``i >= 0`` is valid, and
    ``length`` only sets what ``len()`` reports.
    """

    class_names = SHAPE_NAMES
    color_names = COLOR_NAMES

    def __init__(self, length: int = 50_000, size: int = 32, *, seed: int = 0, split: str = "train",
                 min_shapes: int = 1, max_shapes: int = 3, background: Sequence[int] = BACKGROUND,
                 transform: Callable[[dict], dict] | None = None):
        lookup(SPLITS, split, "shapes split")
        if not 1 <= min_shapes <= max_shapes <= 3:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes <= 3, got {min_shapes}, {max_shapes}")
        if size < 16:
            raise ValueError(f"shapes images must be at least 16 pixels wide, got size={size}")
        if length < 1 or seed < 0:
            raise ValueError(f"length must be >= 1 and seed >= 0, got length={length}, seed={seed}")
        self.length, self.size, self.seed, self.split = int(length), int(size), int(seed), split
        self.min_shapes, self.max_shapes = min_shapes, max_shapes
        self.background = tuple(int(v) for v in background)
        self.transform = transform
        self.channels = 3

    def __len__(self) -> int:
        return self.length

    def scene(self, i: int) -> Scene:
        """The objects, relations and caption of item ``i`` (no pixels)."""
        if i < 0:
            raise IndexError(f"shapes index must be >= 0, got {i}")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], int(i)])
        shapes = sample_shapes(rng, self.size, self.min_shapes, self.max_shapes)
        caption, relations = describe(shapes, rng)
        return Scene(tuple(shapes), relations, caption)

    def image_uint8(self, i: int) -> np.ndarray:
        return render(self.scene(i).shapes, self.size, self.background)

    def __getitem__(self, i: int) -> dict:
        scene = self.scene(i)
        arr = render(scene.shapes, self.size, self.background)
        boxes = torch.tensor([[s.x0, s.y0, s.x1, s.y1] for s in scene.shapes], dtype=torch.float32) / self.size
        item = {
            "image": torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div(127.5).sub(1.0),
            "index": int(i),
            "caption": scene.caption,
            "boxes": boxes,
            "box_labels": torch.tensor([s.shape for s in scene.shapes], dtype=torch.int64),
            "box_colors": torch.tensor([s.color for s in scene.shapes], dtype=torch.int64),
        }
        return self.transform(item) if self.transform is not None else item
