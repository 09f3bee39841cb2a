"""`ldmkit data export`: PNG files that the folder dataset reads back pixel for pixel (labels and captions too),
and a refusal (exit 2, naming the file) to write into a folder that already holds files."""

from __future__ import annotations

import numpy as np
import pytest
from _data_files import save, solid

from ldmkit.cli import main
from ldmkit.data import CLASS_NAMES, DataConfig, FashionMNIST, ImageFolder, Shapes, build_dataset
from ldmkit.data.fashion_mnist import resolve_dir


def test_shapes_round_trip(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["data", "export", "shapes", "--out", str(out), "-n", "6", "--seed", "3"]) == 0
    assert "wrote 6 images of 32x32x3" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    ref = Shapes(6, seed=3)
    back = build_dataset(DataConfig(name="folder", root=str(out)))  # what train-ldm builds for data.name=folder
    assert len(back) == 6 and back.class_names is None
    for i in range(6):
        assert np.array_equal(back.image_uint8(i), ref.image_uint8(i))
        item = back[i]
        assert item["caption"] == ref.scene(i).caption and "label" not in item
        assert np.array_equal(item["image"].numpy(), ref[i]["image"].numpy())  # the same floats in [-1, 1]


def test_labelled_folder_round_trip(tmp_path):
    src = tmp_path / "src"
    colours = {"blue": (0, 0, 255), "green": (0, 160, 0), "red": (255, 0, 0)}
    for k, (name, rgb) in enumerate(colours.items()):
        save(solid(rgb, size=(12 + k, 10)), src / name / f"{k}.png")  # not square: resized + cropped to 8
    out = tmp_path / "out"
    assert main(["data", "export", str(src), "--out", str(out), "--size", "8"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == \
        ["0_blue/000000.png", "1_green/000001.png", "2_red/000002.png"]
    ref, back = ImageFolder(src, 8), ImageFolder(out)
    assert [r.label for r in back.records] == [r.label for r in ref.records] == [0, 1, 2]
    for i in range(3):
        assert np.array_equal(back.image_uint8(i), ref.image_uint8(i))


@pytest.mark.skipif(not (resolve_dir() / "t10k-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_labels_round_trip(tmp_path):
    out = tmp_path / "fmnist"
    ref = FashionMNIST("test")
    n = 1 + max(int(np.flatnonzero(ref.labels.numpy() == k)[0]) for k in range(10))  # every class occurs
    assert main(["data", "export", "fashion-mnist", "--split", "test", "--out", str(out), "-n", str(n)]) == 0
    assert (out / "0_T-shirt-top").is_dir() and (out / "9_Ankle-boot").is_dir()
    back = ImageFolder(out, channels=1)
    assert len(back) == n and [name.split("_", 1)[0] for name in back.class_names] == [str(k) for k in range(10)]
    for i, rec in enumerate(back.records):
        j = int(rec.path.rsplit("/", 1)[1][:-4])  # the file name is the dataset index
        assert rec.label == int(ref.labels[j]) and back.class_names[rec.label] == f"{rec.label}_" + \
            CLASS_NAMES[rec.label].replace("/", "-").replace(" ", "-")
        assert np.array_equal(back.image_uint8(i)[..., 0], ref.images_uint8[j].numpy())


def test_refuses_a_folder_that_holds_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "export", "shapes", "--out", str(out), "-n", "2"]) == 0
    before = (out / "000000.png").read_bytes()
    capsys.readouterr()
    assert main(["data", "export", "shapes", "--out", str(out), "-n", "2", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"already holds {out / '000000.png'}" in err and "empty or new folder" in err
    assert (out / "000000.png").read_bytes() == before
    (tmp_path / "file").write_text("x")
    assert main(["data", "export", "shapes", "--out", str(tmp_path / "file"), "-n", "1"]) == 2
    assert "is a file" in capsys.readouterr().err
