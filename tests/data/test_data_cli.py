"""`ldmkit data info` on Fashion-MNIST, shapes (with a grid) and good / bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _data_files import noise_image, save, solid, truncate
from PIL import Image

from ldmkit.cli import main
from ldmkit.data import CLASS_NAMES, Shapes
from ldmkit.data.fashion_mnist import resolve_dir
from ldmkit.images import read_png_metadata


@pytest.mark.skipif(not (resolve_dir() / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_info_fashion_mnist(capsys):
    assert main(["data", "info", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "train: 60000 images of 28x28x1" in out and "test: 10000 images of 28x28x1" in out
    for name in CLASS_NAMES:
        assert f"  {name}  (6000 images)" in out


def test_info_shapes_with_grid(tmp_path, capsys):
    grid_path = tmp_path / "shapes.png"
    assert main(["data", "info", "shapes", "--grid", str(grid_path), "--n", "6", "--nrow", "3", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    ds = Shapes(seed=4)
    captions = [ds.scene(i).caption for i in range(6)]
    assert "32x32x3" in out and "circle" in out and "purple" in out
    for i, caption in enumerate(captions):
        assert f"({i // 3}, {i % 3}) {caption}" in out
    grid = np.asarray(Image.open(grid_path))
    assert grid.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    # the cell at row 1, column 2 is item 5, exactly as the dataset renders it
    assert np.array_equal(grid[2 + 34:2 + 34 + 32, 2 + 2 * 34:2 + 2 * 34 + 32], ds.image_uint8(5))
    meta = read_png_metadata(grid_path)
    assert json.loads(meta["captions"]) == captions and meta["source"] == "shapes"


def _good_folder(root):
    save(solid((255, 0, 0), size=(30, 20)), root / "red" / "a.png")
    save(solid((0, 0, 255), size=(20, 30)), root / "blue" / "b.jpg")
    (root / "blue" / "b.txt").write_text("a blue thing")
    return root


def test_info_good_folder(tmp_path, capsys):
    grid = tmp_path / "out" / "preview.png"
    assert main(["data", "info", str(_good_folder(tmp_path / "imgs")), "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "count:    2 good images of 2" in out and "2 classes" in out and "blue/b.jpg: a blue thing" in out
    assert "width 20-30, height 20-30" in out
    assert Image.open(grid).size == (2 * 66 + 2, 66 + 2)  # previews at 64 pixels


def test_info_bad_folder_exits_nonzero_with_the_file_named(tmp_path, capsys):
    # main() returning (instead of raising) is what keeps a traceback off the user's terminal
    root = _good_folder(tmp_path / "imgs")
    truncate(save(noise_image(0), root / "red" / "cut.png"))
    (root / "blue" / "junk.webp").write_bytes(b"RIFF0000WEBPjunk")
    assert main(["data", "info", str(root)]) == 2  # the user named a folder with bad files: usage
    err = capsys.readouterr().err
    assert f"error: {root / 'red' / 'cut.png'}: cannot decode image: image file is truncated" in err
    assert f"error: {root / 'blue' / 'junk.webp'}:" in err
    assert "2 bad image file(s)" in err
    assert main(["data", "info", str(root), "--skip-bad"]) == 0
    assert "count:    2 good images of 4" in capsys.readouterr().out


def test_info_missing_folder(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 2  # a path the user named: usage error
    assert f"error: image folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_data_without_action_prints_help(capsys):
    assert main(["data"]) == 2
    assert "info" in capsys.readouterr().out


def test_shapes_grid_box_outlines(tmp_path, capsys):
    grid_path = tmp_path / "boxes.png"
    assert main(["data", "info", "shapes", "--grid", str(grid_path), "--n", "2", "--scale", "2", "--boxes"]) == 0
    capsys.readouterr()
    grid = np.asarray(Image.open(grid_path))
    x0, y0, x1, y1 = (Shapes().__getitem__(1)["boxes"][0] * 32).round().int().tolist()
    ox, oy = 2 + 34, 2  # item 1: second cell of the first row
    magenta = [255, 0, 255]
    assert grid[(oy + y0) * 2, (ox + x0) * 2].tolist() == magenta  # top-left corner of the outline
    assert grid[(oy + y1) * 2 - 1, (ox + x1) * 2 - 1].tolist() == magenta  # bottom-right corner
