"""DataConfig / build_dataset / collate: every dataset becomes a Batch; bad configs give clear errors."""

from __future__ import annotations

import pytest
import torch
from _data_files import save, solid

from ldmkit.data import DATASETS, DataConfig, FashionMNIST, Shapes, build_dataset, collate
from ldmkit.data.fashion_mnist import resolve_dir
from ldmkit.types import Batch

has_fmnist = (resolve_dir() / "t10k-images-idx3-ubyte.gz").is_file()


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset name 'mnist'; valid: fashion-collage, fashion-mnist, folder, shapes"):
        DataConfig(name="mnist")
    assert list(DATASETS) == ["fashion-mnist", "shapes", "folder", "fashion-collage"]
    with pytest.raises(ValueError, match="data.channels must be 1 or 3"):
        DataConfig(name="shapes", channels=4)
    with pytest.raises(ValueError, match="data.image_size"):
        DataConfig(name="shapes", image_size=0)


def test_shapes_batch():
    ds = build_dataset(DataConfig(name="shapes", length=16, seed=2))
    assert len(ds) == 16 and ds.class_names == ("circle", "square", "triangle")
    assert isinstance(ds.dataset, Shapes)
    batch = collate([ds[i] for i in range(4)])
    assert isinstance(batch, Batch)
    assert batch.images.shape == (4, 3, 32, 32) and batch.labels is None
    assert len(batch.captions) == 4 and all(isinstance(c, str) for c in batch.captions)
    assert len(batch.boxes) == 4 and all(b.shape[1] == 4 and b.dtype == torch.float32 for b in batch.boxes)
    assert [len(b) for b in batch.boxes] == [len(lbl) for lbl in batch.box_labels]
    assert batch.indices.tolist() == [0, 1, 2, 3]
    assert [len(c) for c in batch.extra["box_colors"]] == [len(b) for b in batch.boxes]


def test_dataloader_with_collate_and_flip():
    ds = build_dataset(DataConfig(name="shapes", length=8, hflip=True))
    torch.manual_seed(0)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate))
    assert len(batches) == 2 and batches[1].indices.tolist() == [4, 5, 6, 7]
    plain = Shapes(length=8)
    flipped = [torch.equal(batches[0].images[k], plain[k]["image"].flip(-1)) for k in range(4)]
    same = [torch.equal(batches[0].images[k], plain[k]["image"]) for k in range(4)]
    assert all(f or s for f, s in zip(flipped, same))


@pytest.mark.skipif(not has_fmnist, reason="Fashion-MNIST not installed")
def test_fashion_mnist_items_and_pairs():
    ds = build_dataset(DataConfig(name="fashion-mnist", split="test", pad_to=32))
    assert ds.size == 32 and isinstance(ds.dataset, FashionMNIST)
    batch = collate([ds[i] for i in range(3)])
    assert batch.images.shape == (3, 1, 32, 32) and batch.labels.dtype == torch.int64
    assert batch.captions is None and batch.boxes is None and batch.indices.tolist() == [0, 1, 2]
    pairs = collate([ds.dataset[i] for i in range(3)])  # raw (image, label) pairs also collate
    assert torch.equal(pairs.images, batch.images) and torch.equal(pairs.labels, batch.labels)
    assert pairs.indices is None
    with pytest.raises(ValueError, match="grayscale: data.channels must be 1"):
        build_dataset(DataConfig(name="fashion-mnist", split="test", channels=3))
    with pytest.raises(ValueError, match="data.image_size is 64; use data.pad_to"):
        build_dataset(DataConfig(name="fashion-mnist", split="test", image_size=64))


def test_folder_config(tmp_path):
    save(solid((255, 0, 0), size=(20, 10)), tmp_path / "a" / "x.png")
    save(solid((0, 0, 255), size=(10, 20)), tmp_path / "b" / "y.png")
    (tmp_path / "b" / "junk.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="data.root must name"):
        build_dataset(DataConfig(name="folder"))
    ds = build_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=8, channels=1, skip_bad=True))
    batch = collate([ds[0], ds[1]])
    assert batch.images.shape == (2, 1, 8, 8) and batch.labels.tolist() == [0, 1]
    native = build_dataset(DataConfig(name="folder", root=str(tmp_path), skip_bad=True))
    with pytest.raises(ValueError, match="images of different shapes"):
        collate([native[0], native[1]])


def test_collate_errors():
    with pytest.raises(ValueError, match="empty"):
        collate([])
    a = {"image": torch.zeros(1, 2, 2), "label": 1}
    b = {"image": torch.zeros(1, 2, 2)}
    with pytest.raises(ValueError, match="'label' is set for some items"):
        collate([a, b])
    with pytest.raises(TypeError, match="dataset item of type str"):
        collate(["x"])
