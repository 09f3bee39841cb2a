"""fashion-collage: determinism, split separation (pixels come from the right Fashion-MNIST split), boxes are the
tight boxes of the pasted items, captions' relations hold, registry / collate / hflip integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.data import DataConfig, build_dataset, collate, image_shape
from ldmkit.data.fashion_collage import PHRASES, FashionCollage, true_relations
from ldmkit.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist_arrays, resolve_dir

pytestmark = pytest.mark.skipif(not (resolve_dir() / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def test_ds():
    return FashionCollage(100, split="test")


def test_item_fields_and_shape(test_ds):
    it = test_ds[3]
    assert it["image"].shape == (1, 64, 64) and it["image"].dtype == torch.float32
    assert float(it["image"].min()) == -1.0 and float(it["image"].max()) <= 1.0
    k = len(it["box_labels"])
    assert 2 <= k <= 4 and it["boxes"].shape == (k, 4) and it["index"] == 3
    assert image_shape(DataConfig(name="fashion-collage")) == (1, 64, 64) == FashionCollage.shape()
    counts = {len(test_ds.collage(i).items) for i in range(100)}
    assert counts == {2, 3, 4}


def test_deterministic_by_seed_and_index(test_ds):
    again = FashionCollage(100, split="test")
    for i in (0, 7, 99):
        a, b = test_ds[i], again[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
        assert a["caption"] == b["caption"]
    other_seed = FashionCollage(100, split="test", seed=1)
    assert not torch.equal(test_ds[0]["image"], other_seed[0]["image"])
    assert not torch.equal(test_ds[0]["image"], test_ds[1]["image"])


def test_items_come_from_their_own_split(test_ds):
    """Each pasted item's pixels equal its source image of the dataset's split, scaled independently here."""
    train = FashionCollage(10, split="train")
    for ds, split in ((test_ds, "test"), (train, "train")):
        images, labels = load_fashion_mnist_arrays(split)
        for i in range(5):
            canvas = ds.image_uint8(i)
            for it in ds.collage(i).items:
                patch = np.asarray(Image.fromarray(images[it.source]).resize((it.side, it.side), Image.BILINEAR))
                x0, y0, x1, y1 = it.box
                region = patch[y0 - it.top:y1 - it.top, x0 - it.left:x1 - it.left]
                assert np.array_equal(canvas[y0:y1, x0:x1], region)  # boxes are disjoint: nothing else there
                assert it.label == labels[it.source]
    assert not torch.equal(train[0]["image"], test_ds[0]["image"])


def test_boxes_are_the_tight_boxes_of_the_items(test_ds):
    for i in range(30):
        it = test_ds[i]
        canvas = test_ds.image_uint8(i)
        covered = np.zeros_like(canvas, dtype=bool)
        for x0, y0, x1, y1 in (it["boxes"] * 64).round().long().tolist():
            region = canvas[y0:y1, x0:x1] > 0
            # tight: each edge row / column of the box holds an item pixel
            assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
            covered[y0:y1, x0:x1] = True
        assert not (canvas[~covered] > 0).any()  # every item pixel lies in a box
        assert (it["boxes"] >= 0).all() and (it["boxes"] <= 1).all()


def test_caption_relations_hold(test_ds):
    for i in range(40):
        c = test_ds.collage(i)
        first = c.caption.split(", and ")[0]
        holds = [f"{PHRASES[a.label]} {w} {PHRASES[b.label]}" for a in c.items for b in c.items if a is not b
                 for w in true_relations(a.box, b.box)]
        assert first in holds, (c.caption, holds)


def test_boxes_do_not_overlap(test_ds):
    for i in range(50):
        boxes = [it.box for it in test_ds.collage(i).items]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert true_relations(boxes[a], boxes[b]), (i, boxes)


def test_registry_collate_and_hflip():
    cfg = DataConfig(name="fashion-collage", split="test", length=8, hflip=True)
    ds = build_dataset(cfg)
    batch = collate([ds[i] for i in range(4)])
    assert batch.images.shape == (4, 1, 64, 64) and len(batch.boxes) == len(batch.box_labels) == 4
    assert batch.captions and all(isinstance(c, str) for c in batch.captions)
    assert ds.class_names == CLASS_NAMES
    with pytest.raises(ValueError, match="data.image_size must be 64"):
        build_dataset(DataConfig(name="fashion-collage", image_size=32))
    with pytest.raises(ValueError, match="fashion-collage split"):
        FashionCollage(4, split="val")
