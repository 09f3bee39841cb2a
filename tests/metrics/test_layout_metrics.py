"""Layout scores against synthetic ground truth: IoU closed forms, the item finder and the shapes detector on
hand-drawn canvases, the datasets' own images scoring ~100% (collage class accuracy up to the classifier's), and
wrong requests scoring as wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmkit.data import Shapes, collate
from ldmkit.data.fashion_mnist import resolve_dir
from ldmkit.data.shapes import SHAPE_NAMES, Shape, render
from ldmkit.metrics.layout import (
    BoxScore,
    box_iou,
    detect_shape,
    find_item,
    score_collage,
    score_shapes,
    square_crop,
    summarize,
)

has_fmnist = (resolve_dir() / "t10k-images-idx3-ubyte.gz").is_file()


def test_box_iou_closed_forms():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(0.0625 / (0.25 + 0.25 - 0.0625))
    assert box_iou((0.2, 0.2, 0.4, 0.4), (0, 0, 1, 1)) == pytest.approx(0.04)


def test_find_item_on_a_drawn_canvas():
    gray = np.zeros((64, 64))
    gray[10:30, 5:20] = 0.8  # the item
    gray[12, 21] = 0.9  # a speck outside the request that touches no pixel inside it (gap of one column)
    gray[40:50, 40:60] = 0.9  # another item far away
    assert find_item(gray, (6 / 64, 12 / 64, 18 / 64, 28 / 64)) == (5 / 64, 10 / 64, 20 / 64, 30 / 64)
    assert find_item(gray, (0.0, 0.8, 0.1, 0.95)) is None  # nothing there
    gray[25:45, 19:41] = 0.5  # a bridge merges the two items: the found extent is the merged one
    assert find_item(gray, (6 / 64, 12 / 64, 18 / 64, 28 / 64)) == (5 / 64, 10 / 64, 60 / 64, 50 / 64)


def test_noise_finds_no_clean_item():
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(4, 1, 64, 64, generator=gen) * 2 - 1
    boxes = [torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.6, 0.5, 0.9, 0.9]])] * 4
    labels = [torch.tensor([0, 7])] * 4
    clf = lambda crops: torch.zeros(len(crops), 10)  # class 0 always: only the IoU matters here
    assert summarize(score_collage(noise, boxes, labels, clf))["iou_ok"] == 0.0


def test_square_crop_geometry():
    img = -torch.ones(1, 40, 40)
    img[0, 10:20, 5:10] = 1.0  # 5 wide, 10 tall
    crop = square_crop(img, (5 / 40, 10 / 40, 10 / 40, 20 / 40), size=10)
    assert crop.shape == (1, 10, 10)
    cols = (crop[0] > 0).any(0).nonzero().flatten().tolist()
    assert (crop[0] > 0).any(1).all() and cols[0] >= 2 and cols[-1] <= 7  # full height, centred across


def test_detect_shape_each_kind_and_colour():
    for kind in range(3):
        for color in range(6):
            s = Shape(kind, color, 6, 8, 20, 22)
            rgb = render([s], 32)
            hit = detect_shape(rgb, (6 / 32, 8 / 32, 20 / 32, 22 / 32))
            assert hit is not None and hit[:2] == (kind, color), (SHAPE_NAMES[kind], color, hit)
            assert box_iou(hit[2], (6 / 32, 8 / 32, 20 / 32, 22 / 32)) > 0.8
    assert detect_shape(render([], 32), (0.1, 0.1, 0.5, 0.5)) is None


def test_shapes_dataset_scores_all_boxes():
    ds = Shapes(64, 32, split="test", seed=3)
    b = collate([ds[i] for i in range(64)])
    summary = summarize(score_shapes(b.images, b.boxes, b.box_labels, b.extra["box_colors"]))
    assert summary["both"] == 1.0 and summary["mean_iou"] > 0.9
    # a wrong colour, a wrong kind, a moved box: each is scored wrong
    wrong_color = [(c + 1) % 6 for c in b.extra["box_colors"]]
    assert summarize(score_shapes(b.images, b.boxes, b.box_labels, wrong_color))["class_acc"] == 0.0
    wrong_kind = [(k + 1) % 3 for k in b.box_labels]
    assert summarize(score_shapes(b.images, b.boxes, wrong_kind, b.extra["box_colors"]))["class_acc"] == 0.0
    blank = torch.ones_like(b.images)  # white canvases: no object anywhere
    assert summarize(score_shapes(blank, b.boxes, b.box_labels, b.extra["box_colors"]))["both"] == 0.0


def test_summarize_counts():
    rows = [[BoxScore(1, 1, (0, 0, 1, 1), 0.9), BoxScore(2, 3, (0, 0, 1, 1), 0.9)], [BoxScore(0, 0, None, 0.2)]]
    s = summarize(rows)
    assert s["boxes"] == 3 and s["class_acc"] == pytest.approx(2 / 3) and s["iou_ok"] == pytest.approx(2 / 3)
    assert s["both"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no boxes"):
        summarize([[]])


@pytest.mark.skipif(not has_fmnist, reason="Fashion-MNIST not installed")
def test_collage_dataset_scores_near_the_classifier_ceiling():
    from ldmkit.data.fashion_collage import FashionCollage
    from ldmkit.metrics.features import get_extractor

    ds = FashionCollage(60, split="test", seed=5)
    b = collate([ds[i] for i in range(60)])
    clf = get_extractor("fmnist-cnn-v1")  # its raw test accuracy is 93%; scaled crops cost some
    summary = summarize(score_collage(b.images, b.boxes, b.box_labels, clf))
    assert summary["iou_ok"] >= 0.98 and summary["mean_iou"] > 0.9
    assert summary["class_acc"] >= 0.75
    shuffled = [(lab + 1 + torch.arange(len(lab))) % 10 for lab in b.box_labels]
    assert summarize(score_collage(b.images, b.boxes, shuffled, clf))["class_acc"] < 0.2
    moved = [torch.stack([1 - bx[:, 2], bx[:, 1], 1 - bx[:, 0], bx[:, 3]], 1) for bx in b.boxes]  # mirrored boxes
    assert summarize(score_collage(b.images, moved, b.box_labels, clf))["both"] < 0.3
    blank = summarize(score_collage(-torch.ones_like(b.images), b.boxes, b.box_labels, clf))
    assert blank["both"] == blank["class_acc"] == blank["iou_ok"] == 0.0
