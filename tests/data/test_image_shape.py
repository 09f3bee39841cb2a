"""Each dataset reports the (C, H, W) of its items and the padding data.pad_to added, without loading files."""

from __future__ import annotations

import pytest
import torch
from _data_files import save, solid

from ldmkit.data import DataConfig, Padding, build_dataset, data_padding, image_shape
from ldmkit.data.fashion_mnist import resolve_dir
from ldmkit.data.transforms import center_padding

has_fmnist = (resolve_dir() / "t10k-images-idx3-ubyte.gz").is_file()


def test_reported_shape_is_the_items_shape_for_shapes_and_folders(tmp_path):
    for size in (None, 24):
        cfg = DataConfig(name="shapes", length=2, image_size=size)
        assert image_shape(cfg) == tuple(build_dataset(cfg)[0]["image"].shape) == (3, size or 32, size or 32)
        assert not data_padding(cfg)
    save(solid((255, 0, 0), size=(20, 10)), tmp_path / "x.png")
    cfg = DataConfig(name="folder", root=str(tmp_path), image_size=16, channels=1)
    assert image_shape(cfg) == tuple(build_dataset(cfg)[0]["image"].shape) == (1, 16, 16)
    with pytest.raises(ValueError, match="data.image_size must be set for data.name='folder'"):
        image_shape(DataConfig(name="folder", root=str(tmp_path)))


def test_fashion_mnist_shape_and_padding_need_no_files():
    assert image_shape(DataConfig(root="/nonexistent")) == (1, 28, 28)
    assert image_shape(DataConfig(pad_to=32, root="/nonexistent")) == (1, 32, 32)
    assert data_padding(DataConfig(pad_to=32)) == Padding(2, 2, 2, 2, -1.0)
    assert not data_padding(DataConfig(pad_to=28)) and not data_padding(DataConfig())


def test_pad_to_is_refused_for_datasets_that_ignore_it():
    with pytest.raises(ValueError, match="data.pad_to=32 is for Fashion-MNIST only"):
        DataConfig(name="shapes", pad_to=32)


@pytest.mark.skipif(not has_fmnist, reason="Fashion-MNIST not installed")
def test_padding_crop_undoes_what_pad_to_added():
    padded_cfg = DataConfig(split="test", pad_to=36)
    padded = build_dataset(padded_cfg).tensors()[0][:5]
    plain = build_dataset(DataConfig(split="test")).tensors()[0][:5]
    assert tuple(padded.shape[1:]) == image_shape(padded_cfg) == (1, 36, 36)
    pad = data_padding(padded_cfg)
    assert torch.equal(pad.crop(padded), plain)
    assert torch.equal(pad.pad(plain), padded)  # the same centring and background value as the dataset


def test_padding_pad_and_crop_by_hand():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    p = Padding(top=1, bottom=2, left=0, right=3, value=-1.0)
    y = p.pad(x)
    assert y.shape == (1, 1, 6, 7)
    assert torch.equal(y[..., 1:4, 0:4], x) and (y[..., 0, :] == -1).all() and (y[..., 4:, :] == -1).all()
    assert (y[..., 4:] == -1).all()
    assert torch.equal(p.crop(y), x)
    assert torch.equal(p.crop(torch.zeros(2, 3, 10, 10)), torch.zeros(2, 3, 7, 7))  # larger: same margins
    with pytest.raises(ValueError, match="cannot remove padding"):
        p.crop(torch.zeros(1, 1, 3, 3))
    assert center_padding(28, 32) == Padding(2, 2, 2, 2) and not center_padding(28, None)
    with pytest.raises(ValueError, match="pad_to must be 28 or an even size above 28"):
        center_padding(28, 31)
