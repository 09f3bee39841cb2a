"""ldmkit.images: [-1, 1] -> uint8, grids, PNG text metadata round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.images import make_grid, read_png_metadata, save_png, to_uint8


def test_to_uint8_maps_range_and_layout():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.5]).view(3, 1, 2)  # [C, H, W]
    out = to_uint8(x)
    assert out.shape == (1, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 255, 0]  # -1 -> 0, 1 -> 255, -3 clipped -> 0
    assert out[0, 1].tolist() == [128, 255, 191]  # 0 -> 127.5 -> 128, 2 clipped, 0.5 -> 191.25
    assert to_uint8(torch.zeros(5, 3, 4, 6)).shape == (5, 4, 6, 3)
    with pytest.raises(ValueError, match="expects"):
        to_uint8(torch.zeros(4))


def test_make_grid_layout():
    images = np.stack([np.full((4, 3, 1), 10 * (k + 1), np.uint8) for k in range(5)])  # [5, 4, 3, 1]
    grid = make_grid(images, nrow=2, padding=1, pad_value=7)
    assert grid.shape == (3 * 5 + 1, 2 * 4 + 1, 1)
    for k in range(5):
        r, c = divmod(k, 2)
        cell = grid[1 + r * 5:1 + r * 5 + 4, 1 + c * 4:1 + c * 4 + 3]
        assert (cell == 10 * (k + 1)).all()
    assert (grid[11:15, 5:8] == 7).all()  # the empty sixth cell
    assert (grid[0] == 7).all() and (grid[:, 0] == 7).all()
    floats = make_grid(torch.ones(3, 3, 2, 2), nrow=8, padding=0)  # fewer images than nrow: one row
    assert floats.shape == (2, 6, 3) and (floats == 255).all()
    with pytest.raises(ValueError, match="non-empty"):
        make_grid(np.zeros((0, 2, 2, 3), np.uint8))


def test_save_png_with_metadata_round_trip(tmp_path):
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    meta = {"caption": "ein grüner Kreis", "seed": 3, "config": {"steps": 50, "sampler": "ddim"}}
    path = save_png(tmp_path / "sub" / "x.png", image, meta)
    assert np.array_equal(np.asarray(Image.open(path)), image)
    got = read_png_metadata(path)
    assert got == {"caption": "ein grüner Kreis", "seed": "3", "config": '{"steps": 50, "sampler": "ddim"}'}
    gray = save_png(tmp_path / "g.png", torch.zeros(1, 3, 3))  # float [C, H, W] in [-1, 1]
    assert Image.open(gray).mode == "L" and read_png_metadata(gray) == {}
    with pytest.raises(ValueError, match="1-79 characters"):
        save_png(tmp_path / "bad.png", image, {"": "x"})
    with pytest.raises(ValueError, match="Latin-1"):
        save_png(tmp_path / "bad.png", image, {"ключ": "x"})
