"""Synthetic shapes: determinism by (seed, split, index), and captions / boxes that match the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmkit.data import COLOR_NAMES, COLORS, SHAPE_NAMES, Shapes, hflip
from ldmkit.data.shapes import BACKGROUND, RELATIONS, parse_caption

N_CHECK = 200


def _uint8(item) -> np.ndarray:
    return np.round((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)


def _holds(word: str, a, b) -> bool:
    """The relation from the boxes alone (normalised x0, y0, x1, y1): a's box wholly <word> b's box."""
    return {"above": a[3] <= b[1], "below": a[1] >= b[3],
            "to the left of": a[2] <= b[0], "to the right of": a[0] >= b[2]}[word]


def check_item(item, size: int) -> None:
    """Every claim an item makes, checked against its pixels."""
    img = _uint8(item)
    boxes, labels, colors = item["boxes"].numpy(), item["box_labels"].tolist(), item["box_colors"].tolist()
    k = len(boxes)
    assert 1 <= k <= 3 and len(labels) == len(colors) == k
    assert len(set(colors)) == k, "colours must be distinct so that a colour names one object"
    assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    drawn = np.zeros(img.shape[:2], bool)
    for box, color, label in zip(boxes, colors, labels):
        rgb = np.array(COLORS[COLOR_NAMES[color]], np.uint8)
        x0, y0, x1, y1 = np.round(box * size).astype(int)
        # 1. the pixel at the box centre has exactly the shape's colour
        assert (img[(y0 + y1) // 2, (x0 + x1) // 2] == rgb).all()
        # 2. pixels of (nearly) that colour lie inside the box, and touch all four of its sides
        ys, xs = np.nonzero(np.abs(img.astype(int) - rgb).sum(-1) <= 30)
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
        assert xs.max() - xs.min() >= (x1 - x0) - 3 and ys.max() - ys.min() >= (y1 - y0) - 3
        # 3. the pixels have the labelled geometry: which corners of the box the shape fills
        painted = (img[y0:y1, x0:x1] != np.array(BACKGROUND, np.uint8)).any(-1)
        corners = (painted[0, 0], painted[0, -1], painted[-1, 0], painted[-1, -1])  # TL, TR, BL, BR
        expected = {"square": (True,) * 4, "circle": (False,) * 4, "triangle": (False, False, True, True)}
        assert corners == expected[SHAPE_NAMES[label]], (SHAPE_NAMES[label], corners)
        drawn[y0:y1, x0:x1] = True
    # 4. outside every box: plain background
    assert (img[~drawn] == np.array(BACKGROUND, np.uint8)).all()
    # 5. the caption names exactly the drawn objects, and every relation it states holds for the boxes
    caption = item["caption"]
    objects = {f"{COLOR_NAMES[c]} {SHAPE_NAMES[s]}": boxes[i] for i, (c, s) in enumerate(zip(colors, labels))}
    for name in objects:
        assert name in caption, (name, caption)
    named = [w for w in caption.replace(",", "").split() if w in COLOR_NAMES]
    assert set(named) == {COLOR_NAMES[c] for c in colors}
    clauses = parse_caption(caption)
    assert len(clauses) == k - 1, caption
    for (ca, sa), word, (cb, sb) in clauses:
        assert _holds(word, objects[f"{ca} {sa}"], objects[f"{cb} {sb}"]), (caption, boxes)


def test_captions_and_boxes_match_pixels():
    ds = Shapes(length=N_CHECK, seed=3)
    counts, classes, colours, words = set(), set(), set(), set()
    for i in range(N_CHECK):
        item = ds[i]
        check_item(item, 32)
        counts.add(len(item["boxes"]))
        classes.update(item["box_labels"].tolist())
        colours.update(item["box_colors"].tolist())
        words.update(w for _, w, _ in parse_caption(item["caption"]))
    assert counts == {1, 2, 3} and classes == set(range(3)) and colours == set(range(len(COLOR_NAMES)))
    assert words == set(RELATIONS)


def test_single_shape_caption_and_larger_size():
    ds = Shapes(length=50, size=64, seed=1, min_shapes=1, max_shapes=1)
    for i in range(20):
        item = ds[i]
        assert item["image"].shape == (3, 64, 64)
        name = f"{COLOR_NAMES[int(item['box_colors'][0])]} {SHAPE_NAMES[int(item['box_labels'][0])]}"
        assert item["caption"] == f"a {name}"
        check_item(item, 64)


def test_flip_keeps_captions_and_boxes_truthful():
    ds = Shapes(length=60, seed=5, min_shapes=2)
    for i in range(60):
        item = ds[i]
        flipped = hflip(item)
        assert torch.equal(flipped["image"], item["image"].flip(-1))
        check_item(flipped, 32)


def test_item_depends_only_on_seed_split_and_index():
    a, b = Shapes(length=10, seed=7), Shapes(length=1_000_000, seed=7)
    order_a = [a[i] for i in (9, 3, 5)]
    order_b = [b[i] for i in (5, 3, 9)][::-1]
    for x, y in zip(order_a, order_b):
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
        assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["box_labels"], y["box_labels"])
    assert torch.equal(a[3]["image"], a[3]["image"])
    far = b.scene(10**12)  # beyond any length: still defined
    assert far == Shapes(length=1, seed=7).scene(10**12)


def test_seeds_and_splits_give_different_streams():
    def captions(**kw):
        ds = Shapes(length=20, **kw)
        return [ds.scene(i).caption for i in range(20)]

    base = captions(seed=0)
    assert base == captions(seed=0)
    assert base != captions(seed=1)
    assert base != captions(seed=0, split="test")
    assert len(set(base)) > 15  # items vary


def test_known_first_item_is_stable():
    # Pin one item so that an accidental change of the generator (which would silently change every
    # experiment that names a seed) shows up here.
    scene = Shapes(seed=0).scene(0)
    assert scene.caption == "a blue square below a black circle, and a yellow square below the black circle"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unknown shapes split 'dev'; valid: test, train, val"):
        Shapes(split="dev")
    with pytest.raises(ValueError, match="min_shapes"):
        Shapes(min_shapes=2, max_shapes=1)
    with pytest.raises(ValueError, match="at least 16"):
        Shapes(size=8)
    with pytest.raises(IndexError):
        Shapes().scene(-1)
