"""Fashion-MNIST from the installed IDX files, and its error messages on missing or malformed files."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from ldmkit.data import CLASS_NAMES, FashionMNIST, load_fashion_mnist_arrays
from ldmkit.data.fashion_mnist import DEFAULT_DIR, resolve_dir

pytestmark = pytest.mark.skipif(not (resolve_dir() / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="Fashion-MNIST not installed (make data)")


@pytest.fixture(scope="module")
def test_split():
    return FashionMNIST("test")


def test_test_split_contents(test_split):
    assert len(test_split) == 10000 and test_split.size == 28
    image, label = test_split[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and image.min() == -1  # background is 0 -> -1
    assert isinstance(label, int)
    counts = torch.bincount(test_split.labels, minlength=10)
    assert counts.tolist() == [1000] * 10
    images, labels = test_split.tensors()
    assert images.shape == (10000, 1, 28, 28) and torch.equal(images[0], image) and labels[0] == label
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"


def test_train_split_size():
    images, labels = load_fashion_mnist_arrays("train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10


def test_pad_to_32_keeps_content_and_pads_with_background(test_split):
    padded = FashionMNIST("test", pad_to=32)
    image, _ = padded[0]
    assert image.shape == (1, 32, 32)
    assert torch.equal(image[:, 2:30, 2:30], test_split[0][0])
    assert (image[:, :2] == -1).all() and (image[:, :, -2:] == -1).all()
    with pytest.raises(ValueError, match="pad_to"):
        FashionMNIST("test", pad_to=31)


def test_missing_files_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.gz not found.*apt-get install "
                                                r"dataset-fashion-mnist.*LDMKIT_FMNIST_DIR"):
        load_fashion_mnist_arrays("test", root=tmp_path)
    monkeypatch.setenv("LDMKIT_FMNIST_DIR", str(tmp_path))
    assert resolve_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        FashionMNIST("test")
    monkeypatch.delenv("LDMKIT_FMNIST_DIR")
    assert str(resolve_dir()) == DEFAULT_DIR
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split 'dev'; valid: test, train"):
        load_fashion_mnist_arrays("dev")


def test_malformed_idx_named_in_error(tmp_path):
    src = resolve_dir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(src / name, tmp_path / name)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(images, "wb") as f:  # header promises 10000 images, body holds 3
        f.write(struct.pack(">HBBIII", 0, 8, 3, 10000, 28, 28) + bytes(3 * 28 * 28))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: IDX body has 2352 bytes"):
        load_fashion_mnist_arrays("test", root=tmp_path)
    images.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: cannot read IDX file"):
        load_fashion_mnist_arrays("test", root=tmp_path)
