"""ImageFolder and load_image on real files written by the tests: layout, captions, conversions, bad input."""

from __future__ import annotations

import json
import logging
import struct

import numpy as np
import pytest
import torch
from _data_files import noise_image, save, solid, trns_chunk, truncate, write_png_raw
from PIL import Image

from ldmkit.data import BadImageError, ImageFolder, ImageTooLargeError, load_image


# ---------------------------------------------------------------------------------------------- layout
def _labelled_tree(root):
    save(solid((255, 0, 0)), root / "cat" / "a.png")
    save(solid((0, 255, 0)), root / "cat" / "b.jpg", quality=95)
    save(solid((0, 0, 255)), root / "dog" / "c.webp", lossless=True)
    save(solid((255, 255, 0)), root / "dog" / "sub" / "d.bmp")
    save(solid((9, 9, 9)), root / "dog" / ".hidden.png")
    (root / "dog" / "notes.md").write_text("not an image")
    return root


def test_labels_from_subfolders_and_formats(tmp_path):
    ds = ImageFolder(_labelled_tree(tmp_path), size=8)
    assert ds.class_names == ("cat", "dog")
    assert [r.path for r in ds.records] == ["cat/a.png", "cat/b.jpg", "dog/c.webp", "dog/sub/d.bmp"]
    assert [ds[i]["label"] for i in range(4)] == [0, 0, 1, 1]
    item = ds[0]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["index"] == 0 and "caption" not in item
    # lossless formats decode exactly: (255, 0, 0) -> (1, -1, -1), (0, 0, 255), (255, 255, 0)
    assert torch.equal(ds[0]["image"][:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(ds[2]["image"][:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))
    assert torch.equal(ds[3]["image"][:, 0, 0], torch.tensor([1.0, 1.0, -1.0]))
    green = ds.image_uint8(1)[4, 4]
    assert green[1] > 240 and green[0] < 15 and green[2] < 15  # JPEG: close, not exact


def test_labels_auto_off_with_top_level_images_and_explicit_error(tmp_path):
    save(solid((255, 0, 0)), tmp_path / "top.png")
    save(solid((0, 255, 0)), tmp_path / "cls" / "x.png")
    assert ImageFolder(tmp_path, size=8).class_names is None
    assert "label" not in ImageFolder(tmp_path, size=8)[0]
    with pytest.raises(ValueError, match="top.png.*not inside a sub-folder"):
        ImageFolder(tmp_path, size=8, labels=True)
    assert ImageFolder(tmp_path / "cls", size=8, labels=False).class_names is None


def test_captions_from_jsonl_and_txt(tmp_path):
    for name in ("a", "b", "c"):
        save(solid((200, 0, 0)), tmp_path / f"{name}.png")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "a.png", "text": "from jsonl"}) + "\n\n")
    (tmp_path / "a.txt").write_text("jsonl wins over this")
    (tmp_path / "b.txt").write_text("  from txt \n")
    ds = ImageFolder(tmp_path, size=8)
    assert ds.has_captions
    assert [ds[i]["caption"] for i in range(3)] == ["from jsonl", "from txt", ""]


def test_malformed_captions_jsonl_names_line(tmp_path):
    save(solid((200, 0, 0)), tmp_path / "a.png")
    (tmp_path / "captions.jsonl").write_text('{"file": "a.png", "text": "ok"}\n{"file": "a.png"}\n')
    with pytest.raises(ValueError, match=r"captions.jsonl:2: .*'file' and 'text'"):
        ImageFolder(tmp_path, size=8)
    (tmp_path / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"captions.jsonl:1: not valid JSON"):
        ImageFolder(tmp_path, size=8)


# ------------------------------------------------------------------------------------ resize and crop
def _striped(w, h, inner, horizontal=True):
    """Red image with a green band of width ``inner`` across the center (vertical band if horizontal)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = (255, 0, 0)
    if horizontal:
        arr[:, (w - inner) // 2:(w + inner) // 2] = (0, 255, 0)
    else:
        arr[(h - inner) // 2:(h + inner) // 2, :] = (0, 255, 0)
    return Image.fromarray(arr)


def test_center_crop_keeps_the_middle_exactly_at_unit_scale(tmp_path):
    wide = save(_striped(60, 20, 20), tmp_path / "wide.png")
    tall = save(_striped(20, 60, 20, horizontal=False), tmp_path / "tall.png")
    for path in (wide, tall):
        out = load_image(path, size=20)
        assert out.shape == (20, 20, 3)
        assert (out == np.array([0, 255, 0], np.uint8)).all()  # only the green center survives


def test_resize_then_crop_downscales_shorter_side(tmp_path):
    path = save(_striped(120, 40, 40), tmp_path / "wide.png")
    out = load_image(path, size=10)
    assert out.shape == (10, 10, 3)
    inner = out[:, 2:8].astype(int)  # away from the crop edges, where bicubic taps reach the red border
    assert (inner[..., 1] >= 250).all() and (inner[..., 0] <= 5).all()


def test_gray_output_uses_luma_and_rgb_from_gray(tmp_path):
    red = save(solid((255, 0, 0)), tmp_path / "red.png")
    out = load_image(red, channels=1)
    assert out.shape == (8, 8, 1)
    assert abs(int(out[0, 0, 0]) - round(0.299 * 255)) <= 1  # ITU-R 601-2 luma of pure red
    gray = save(solid(77, mode="L"), tmp_path / "gray.png")
    assert (load_image(gray, channels=3) == 77).all()


# ---------------------------------------------------------------------------- modes: 16-bit, palette, alpha
def test_16bit_gray_png_is_rescaled_not_clipped(tmp_path):
    samples = np.array([[0, 257 * 128], [65535, 1000]], np.uint16)
    path = write_png_raw(tmp_path / "g16.png", samples, color_type=0, bit_depth=16)
    assert Image.open(path).mode.startswith("I;16")
    out = load_image(path, channels=1)[..., 0]
    assert out.tolist() == [[0, 128], [255, round(1000 / 257)]]


def test_16bit_gray_png_with_transparent_value(tmp_path):
    samples = np.array([[0, 1000], [65535, 1000]], np.uint16)
    path = write_png_raw(tmp_path / "g16t.png", samples, 0, 16, trns_chunk(struct.pack(">H", 1000)))
    out = load_image(path, channels=1, background="black")[..., 0]
    assert out.tolist() == [[0, 0], [255, 0]]
    out = load_image(path, channels=1, background=200)[..., 0]
    assert out.tolist() == [[0, 200], [255, 200]]


def test_16bit_rgb_and_rgba_png(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[0, 0] = (65535, 32896, 0)
    path = write_png_raw(tmp_path / "rgb16.png", rgb, color_type=2, bit_depth=16)
    assert load_image(path)[0, 0].tolist() == [255, 128, 0]
    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[...] = (65535, 0, 0, 0)  # fully transparent red
    rgba[0, 0] = (0, 0, 65535, 65535)  # opaque blue
    path = write_png_raw(tmp_path / "rgba16.png", rgba, color_type=6, bit_depth=16)
    out = load_image(path, background="white")
    assert out[0, 0].tolist() == [0, 0, 255] and out[1, 1].tolist() == [255, 255, 255]


def _palette_image(transparency):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, index 1 red
    im.putpixel((1, 1), 1)
    im.info["transparency"] = transparency
    return im


def test_palette_png_with_transparent_index(tmp_path):
    path = tmp_path / "p.png"
    _palette_image(0).save(path, transparency=0)  # index 0 fully transparent
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    out = load_image(path, background="white")
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent black -> background, not black
    assert out[1, 1].tolist() == [255, 0, 0]
    assert load_image(path, background="#00ff00")[0, 0].tolist() == [0, 255, 0]


def test_palette_png_with_partial_alpha(tmp_path):
    path = tmp_path / "pa.png"
    _palette_image(b"\xff\x80").save(path, transparency=b"\xff\x80")  # red at alpha 128/255
    out = load_image(path, background="white")
    assert out[0, 0].tolist() == [0, 0, 0]
    r, g, b = out[1, 1].tolist()
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_rgba_and_la_composite_onto_background(tmp_path):
    rgba = save(solid((255, 0, 0, 128), mode="RGBA"), tmp_path / "rgba.png")
    r, g, b = load_image(rgba, background="white")[0, 0].tolist()
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1
    assert load_image(rgba, background="black")[0, 0].tolist()[1:] == [0, 0]
    la = save(solid((0, 0), mode="LA"), tmp_path / "la.png")  # transparent black
    assert (load_image(la, channels=1, background="white") == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high with a red top-left quadrant; EXIF orientation 6 means "rotate 90 degrees
    # clockwise to display", so the displayed image is 20 wide x 40 high with the red block top-right.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[...] = (0, 0, 255)
    arr[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(Image.fromarray(arr), tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    out = load_image(path).astype(int)
    assert out.shape == (40, 20, 3)
    top_right, top_left = out[5, 15], out[5, 4]
    assert top_right[0] > 200 and top_right[2] < 60  # red
    assert top_left[2] > 200 and top_left[0] < 60  # blue
    assert out[30, 15][2] > 200  # bottom half is blue
    cropped = load_image(path, size=20).astype(int)  # center crop of the displayed (tall) image
    assert cropped.shape == (20, 20, 3) and cropped[2, 17][0] > 200 and cropped[17, 17][2] > 200


# ------------------------------------------------------------------------------------------ bad input
def test_corrupt_bytes_named_in_error(tmp_path):
    save(solid((1, 2, 3)), tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"garbage" * 20)
    with pytest.raises(BadImageError, match=r"broken\.png: not a readable PNG/JPEG/WEBP/BMP image") as err:
        ImageFolder(tmp_path, size=8)
    assert err.value.path.endswith("broken.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # valid signature
    with pytest.raises(BadImageError, match=r"broken\.png: cannot decode image: \w+"):
        ImageFolder(tmp_path, size=8)


@pytest.mark.parametrize("name,kwargs", [("cut.png", {}), ("cut.jpg", {"quality": 90})])
def test_truncated_file_named_in_error(tmp_path, name, kwargs):
    path = truncate(save(noise_image(0), tmp_path / name, **kwargs))
    with pytest.raises(BadImageError, match=rf"{name}: cannot decode image: image file is truncated"):
        ImageFolder(tmp_path, size=16)
    # a header-only scan accepts it; loading the item then fails with the same message
    ds = ImageFolder(tmp_path, size=16, verify="header")
    with pytest.raises(BadImageError, match="truncated"):
        ds[0]
    assert path.exists()


def test_skip_bad_counts_in_one_warning(tmp_path, caplog):
    save(solid((10, 20, 30)), tmp_path / "good1.png")
    save(solid((10, 20, 30)), tmp_path / "good2.png")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all")
    truncate(save(noise_image(1), tmp_path / "cut.png"))
    with caplog.at_level(logging.WARNING, logger="ldmkit.data.image_folder"):
        ds = ImageFolder(tmp_path, size=8, skip_bad=True)
    assert len(ds) == 2 and [r.path for r in ds.records] == ["good1.png", "good2.png"]
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in ds.bad_files) == ["cut.png", "junk.jpg"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 bad image(s) of 4" in warnings[0].getMessage()


def test_all_bad_is_an_error_even_with_skip_bad(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"xx")
    with pytest.raises(ValueError, match=r"all 1 image files are bad.*junk\.png"):
        ImageFolder(tmp_path, size=8, skip_bad=True)


def test_other_format_behind_an_image_extension_is_refused(tmp_path):
    save(solid((1, 2, 3)), tmp_path / "anim.png", format="GIF")
    with pytest.raises(BadImageError, match="anim.png"):
        load_image(tmp_path / "anim.png")


def test_decompression_bomb_refused_with_small_limit(tmp_path):
    path = save(noise_image(2, size=100), tmp_path / "big.png")
    with pytest.raises(ImageTooLargeError, match=r"big\.png: 100x100 = 10000 pixels exceeds the limit of 5000"):
        ImageFolder(tmp_path, size=8, max_pixels=5000)
    assert load_image(path, max_pixels=10_000).shape == (100, 100, 3)  # at the limit: fine
    save(solid((1, 2, 3)), tmp_path / "small.png")
    ds = ImageFolder(tmp_path, size=8, max_pixels=5000, skip_bad=True)
    assert [r.path for r in ds.records] == ["small.png"] and "decompression bomb" in ds.bad_files[0][1]


def test_bomb_header_refused_before_decoding(tmp_path):
    # IHDR declares 10000 x 10000 (1e8 pixels, over the default 64e6) over a 2x2 body: refusing must
    # happen on the header, before any decoding (which would fail differently or allocate 100 MB).
    path = write_png_raw(tmp_path / "bomb.png", np.zeros((2, 2), np.uint8), 0, 8, header_size=(10000, 10000))
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 10000x10000 = 100000000 pixels exceeds the limit "
                                                 r"of 64000000"):
        load_image(path)
    huge = write_png_raw(tmp_path / "huge.png", np.zeros((2, 2), np.uint8), 0, 8, header_size=(10**5, 10**5))
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        load_image(huge, max_pixels=None)  # over Pillow's own hard limit as well: still a clear refusal


def test_missing_empty_and_wrong_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file.png is not a directory"):
        ImageFolder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty holds no images"):
        ImageFolder(tmp_path / "empty")
    save(solid((1, 2, 3)), tmp_path / "ok" / "a.png")
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 4"):
        ImageFolder(tmp_path / "ok", size=8, channels=4)
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        load_image(tmp_path / "ok" / "a.png", channels=2)
    with pytest.raises(ValueError, match="background colour 'nocolour'"):
        ImageFolder(tmp_path / "ok", size=8, background="nocolour")
    with pytest.raises(FileNotFoundError, match="gone.png does not exist"):
        load_image(tmp_path / "gone.png")


def test_cache_off_reads_from_disk(tmp_path):
    save(solid((255, 0, 0)), tmp_path / "a.png")
    ds = ImageFolder(tmp_path, size=4, cache=False, verify="header")
    assert torch.equal(ds[0]["image"][:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert ds.native_sizes == [(8, 8)] and ds.native_modes == {"RGB": 1}


@pytest.mark.parametrize("mode,color,fmt,expect", [
    ("1", 1, "BMP", (255, 255, 255)),
    ("L", 90, "PNG", (90, 90, 90)),
    ("P", None, "PNG", (255, 0, 0)),  # palette without transparency
    ("CMYK", (0, 255, 255, 0), "JPEG", (255, 0, 0)),
    ("RGBA", (0, 0, 255, 128), "WEBP", (127, 127, 255)),  # half-transparent blue over white
])
def test_other_modes_convert_to_rgb(tmp_path, mode, color, fmt, expect):
    im = _palette_image(None) if mode == "P" else solid(color, mode=mode)
    if mode == "P":
        im.info.pop("transparency")
        im = im.point(lambda v: 1)  # every pixel -> palette index 1 (red)
    path = save(im, tmp_path / f"x.{fmt.lower()}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(path).mode == mode
    out = load_image(path).astype(int)
    tol = {"JPEG": 12, "WEBP": 1}.get(fmt, 0)
    assert (np.abs(out - np.array(expect)) <= tol).all(), out[0, 0]
