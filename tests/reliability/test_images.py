"""Hostile image files through the checked loader (``ldmkit.data.image_folder.read_image``), the dataset
(ImageFolder) and the commands that read images (``data info``, ``inpaint``, ``img2img``, ``upscale``,
``visualize --image``, ``eval-images``):
correct pixels or one clear error naming the file; commands exit 2 without a traceback.

The conversions themselves (16-bit, palette + tRNS, CMYK, alpha, EXIF, truncated and corrupt files, bomb
headers over the default limit) are tested at the loader level in ``tests/data/test_image_folder.py``;
this file adds what was missing there and runs the same files through the commands.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from _data_files import noise_image, save, solid, truncate, write_png_raw
from _reliability_helpers import sr_checkpoint

from ldmkit.cli import main
from ldmkit.data import BadImageError, ImageFolder, ImageTooLargeError, load_image
from ldmkit.data.image_folder import read_image

PILLOW_MAX = Image.MAX_IMAGE_PIXELS  # Pillow warns above this and raises above twice this


def _header_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width x height`` over a 2x2 body (nothing large is ever allocated)."""
    return write_png_raw(path, np.zeros((2, 2), np.uint8), 0, 8, header_size=(width, height))


# ------------------------------------------------------------------------------ loader: decisions
def test_zero_byte_and_text_named_png_are_named_errors(tmp_path):
    """Guards ``_bad_image`` (UnidentifiedImageError -> BadImageError) and the ``except _DECODE_ERRORS``
    of ``read_image``: without them Pillow's UnidentifiedImageError leaks without the reason."""
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("this is text, not a picture\n")
    for name in ("zero.png", "notes.png"):
        with pytest.raises(BadImageError, match=rf"{name}: not a readable PNG/JPEG/WEBP/BMP image") as err:
            load_image(tmp_path / name)
        assert type(err.value) is BadImageError and err.value.path == str(tmp_path / name)


def test_png_bytes_named_jpg_decode_by_content(tmp_path):
    """Decision: the file's bytes decide the format, not its extension (``Image.open(path,
    formats=PIL_FORMATS)`` in ``read_image``): PNG bytes named ``.jpg`` load with their exact pixels."""
    arr = np.asarray(noise_image(3, size=8))
    path = save(Image.fromarray(arr), tmp_path / "really_png.jpg", format="PNG")
    assert np.array_equal(load_image(path), arr)
    ds = ImageFolder(tmp_path)
    assert ds.native_modes == {"RGB": 1} and np.array_equal(ds.image_uint8(0), arr)


def _frames(tmp_path, name, **kwargs):
    first, second = solid((255, 0, 0)), solid((0, 0, 255))
    first.save(tmp_path / name, save_all=True, append_images=[second], duration=100, **kwargs)
    return tmp_path / name


@pytest.mark.parametrize("name,kwargs", [("anim.png", {}), ("anim.webp", {"lossless": True})])
def test_animated_png_and_webp_give_the_first_frame(tmp_path, name, kwargs):
    """Decision: animated PNG (APNG) and WebP load their first frame (Pillow opens on frame 0; ``_decode``
    never seeks). Guards against a decode that would return a later frame or a stack of frames."""
    path = _frames(tmp_path, name, **kwargs)
    assert Image.open(path).n_frames == 2
    out = load_image(path)
    assert out.shape == (8, 8, 3) and (out == np.array([255, 0, 0], np.uint8)).all()


def test_animated_gif_is_a_clear_error(tmp_path):
    """Decision: GIF (animated or not) is not a supported format; ``formats=PIL_FORMATS`` in ``read_image``
    refuses it with the file named (without it, Pillow would open the GIF)."""
    path = _frames(tmp_path, "anim.gif")
    with pytest.raises(BadImageError, match=r"anim\.gif: not a readable PNG/JPEG/WEBP/BMP image"):
        load_image(path)


# ------------------------------------------------------------------------------ loader: bombs
def test_bomb_20000x20000_header_names_the_file(tmp_path):
    """Guards the DecompressionBombError branch of ``_bad_image``: a 20000 x 20000 header is refused at
    ``Image.open`` (before decoding) with the file named, whatever our own limit."""
    path = _header_png(tmp_path / "bomb.png", 20000, 20000)
    for max_pixels in (10**9, None):  # Pillow's hard error (over 2 * MAX_IMAGE_PIXELS) comes first
        with pytest.raises(ImageTooLargeError, match=r"bomb\.png: refused as a possible decompression bomb: "
                                                     r"Image size \(400000000 pixels\)"):
            read_image(path, max_pixels=max_pixels, decode=False)


@pytest.mark.parametrize("side", [9460, 10000, 13000])  # 89.5e6, 1e8, 1.69e8 pixels: all in (MAX, 2 MAX]
def test_pillow_warning_band_is_an_error_not_a_warning(tmp_path, side):
    """Guards ``warnings.simplefilter("error", Image.DecompressionBombWarning)`` in ``read_image`` (and
    ``_bomb_warning_band``): Pillow only *warns* for MAX_IMAGE_PIXELS < w*h <=
    2*MAX_IMAGE_PIXELS; even with our limit raised or off, such a file is refused with its name."""
    assert PILLOW_MAX < side * side <= 2 * PILLOW_MAX
    path = _header_png(tmp_path / "band.png", side, side)
    with pytest.raises(ImageTooLargeError, match=rf"band\.png: {side}x{side} = {side * side} pixels exceeds the "
                                                 r"limit of 64000000"):
        read_image(path, decode=False)  # over our default limit as well: our message (``_bomb_warning_band``)
    for max_pixels in (None, 4 * PILLOW_MAX):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning that escaped would fail here
            with pytest.raises(ImageTooLargeError, match=r"band\.png: refused as a possible decompression bomb.*"
                                                         r"an error here, not a warning"):
                read_image(path, max_pixels=max_pixels, decode=False)
    with pytest.raises(ImageTooLargeError, match=r"band\.png"):
        ImageFolder(tmp_path, verify="header", max_pixels=None)


def test_just_under_pillows_limit_passes_the_header_check(tmp_path):
    """The band's lower edge is Pillow's rule (w*h > MAX_IMAGE_PIXELS), not an arbitrary one of ours. Guards
    ``read_image`` / ``_bomb_warning_band`` (ldmkit/data/image_folder.py) against refusing legal sizes."""
    side = int(PILLOW_MAX ** 0.5)
    assert side * side <= PILLOW_MAX
    _, native, mode = read_image(_header_png(tmp_path / "ok.png", side, side), max_pixels=None, decode=False)
    assert native == (side, side) and mode == "L"


# ------------------------------------------------------------------------------ commands
def _checkpoint(root: Path) -> Path:
    """The editing tests' ``pixel`` checkpoint (8x8 gray, U-Net factor 2), built by their own helper."""
    spec = importlib.util.spec_from_file_location(
        "_editing_conftest", Path(__file__).resolve().parents[1] / "editing" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._diffusion_checkpoint(root, "pixel")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(_checkpoint(tmp_path_factory.mktemp("images_ckpt")))


def _bad_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    files = {p.name: p for p in root.iterdir()}
    files["cut.jpg"] = truncate(save(noise_image(0, size=16), root / "cut.jpg", quality=90))
    files["cut.png"] = truncate(save(noise_image(1, size=16), root / "cut.png"))
    files["bomb.png"] = _header_png(root / "bomb.png", 20000, 20000)
    files["band.png"] = _header_png(root / "band.png", 10000, 10000)
    files["anim.gif"] = _frames(root, "anim.gif")
    return files


def _run(argv, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.parametrize("name", ["zero.png", "text.png", "corrupt.png", "cut.jpg", "cut.png", "bomb.png",
                                  "band.png", "anim.gif"])
def test_inpaint_and_img2img_refuse_bad_files_with_exit_2(tmp_path, capsys, ckpt, name):
    """Guards ``read_image``'s translation to BadImageError (which ``editing.read_uint8`` turns into a usage
    error): each command (inpaint's image and mask, img2img's image) prints one line naming the file, exits 2,
    writes nothing, shows no traceback."""
    path = _bad_files(tmp_path / "in")[name]
    runs = {"inpaint": ["inpaint", ckpt, path, "--box", "0,0,4,4", "--steps", "2", "-o", tmp_path / "o.png"],
            "img2img": ["img2img", ckpt, path, "--strength", "0.5", "--steps", "2", "-o", tmp_path / "o.png"],
            "inpaint (mask)": ["inpaint", ckpt, save(solid(90, mode="L"), tmp_path / "good.png"), path,
                               "--steps", "2", "-o", tmp_path / "o.png"]}
    for command, argv in runs.items():
        rc, text = _run(argv, capsys)
        assert rc == 2, (command, text)
        assert name in text and "Traceback" not in text, (command, text)
        assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name", ["zero.png", "text.png", "corrupt.png", "cut.jpg", "cut.png", "bomb.png",
                                  "band.png", "anim.gif"])
def test_upscale_and_visualize_refuse_bad_files_with_exit_2(tmp_path, capsys, ckpt, name):
    """The other commands that read a user's images: ``upscale LOWRES`` and ``visualize --what noising
    --image``. Guards their use of the checked loader (``editing.load_image_tensor`` -> ``read_uint8`` ->
    ``read_image``, whose BadImageError is a usage error): one line naming the file, exit 2, nothing written,
    no traceback."""
    path = _bad_files(tmp_path / "in")[name]
    runs = {"upscale": ["upscale", sr_checkpoint(tmp_path), path, "-o", tmp_path / "o.png"],
            "visualize": ["visualize", ckpt, "--what", "noising", "--image", path, "--t", "0,20",
                          "-o", tmp_path / "o.png"]}
    for command, argv in runs.items():
        rc, text = _run(argv, capsys)
        assert rc == 2, (command, text)
        assert name in text and "Traceback" not in text, (command, text)
        assert len([line for line in text.splitlines() if "error:" in line]) == 1, (command, text)
        assert not (tmp_path / "o.png").exists()


def _good_hostile_files(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Valid files in awkward encodings, 8x8 (16x8 once rotated), with the gray pixels they must give."""
    root.mkdir(parents=True, exist_ok=True)
    luma = lambda rgb: np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).convert("L"))
    out = {}
    g16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    out["gray16.png"] = (write_png_raw(root / "gray16.png", g16, 0, 16), np.round(g16 / 257).astype(np.uint8))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    out["palette.png"] = (save(pal, root / "palette.png", transparency=0),
                          luma(np.where(np.arange(64).reshape(8, 8, 1) == 0, 255, [255, 0, 0])))
    out["rgba.png"] = (save(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), root / "rgba.png"),
                       np.full((8, 8), 255, np.uint8))  # fully transparent -> the white background
    out["cmyk.jpg"] = (save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), root / "cmyk.jpg", quality=95),
                       luma(np.full((8, 8, 3), [255, 0, 0])))
    stored = np.zeros((8, 16), np.uint8)
    stored[:4, :8] = 255  # white top-left block of the stored 16 wide x 8 high image
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: 8 wide x 16 high, block top-right
    out["rotated.jpg"] = (save(Image.fromarray(stored), root / "rotated.jpg", quality=95, exif=exif.tobytes()),
                          np.rot90(stored, k=-1))
    return out


def test_img2img_strength_0_returns_the_decoded_pixels_of_awkward_files(tmp_path, capsys, ckpt):
    """``img2img --strength 0`` returns its input, so the output PNG shows what the command decoded:
    16-bit rescaled (``_to_8bit``), palette transparency and alpha on white (``_flatten``), CMYK converted,
    EXIF orientation applied (``ImageOps.exif_transpose`` in ``_decode``): each checked pixel by pixel."""
    for name, (path, expect) in _good_hostile_files(tmp_path / "in").items():
        out = tmp_path / f"{name}.out.png"
        rc, text = _run(["img2img", ckpt, path, "--strength", "0", "--steps", "2", "-o", out], capsys)
        assert rc == 0, (name, text)
        got = np.asarray(Image.open(out).convert("L")).astype(int)
        tol = 12 if name.endswith(".jpg") else 0
        assert got.shape == expect.shape, (name, got.shape)
        assert np.abs(got - expect.astype(int)).max() <= tol, (name, got, expect)


def test_data_info_names_every_bad_file(tmp_path, capsys):
    """Guards ImageFolder's per-file BadImageError (``_scan`` with ``skip_bad``): ``data info`` lists each
    bad file with its reason, the good one is counted, and ``--skip-bad`` makes it a success."""
    files = _bad_files(tmp_path / "folder")
    files.pop("anim.gif")  # not an image extension: the folder scan never sees it
    save(solid((10, 20, 30)), tmp_path / "folder" / "good.png")
    rc, text = _run(["data", "info", tmp_path / "folder"], capsys)
    assert rc != 0 and "Traceback" not in text
    assert f"1 good images of {len(files) + 1} image files" in text
    for name, path in files.items():
        assert f"error: {path}: " in text, name
    assert "band.png: 10000x10000 = 100000000 pixels exceeds the limit of 64000000" in text
    assert "bomb.png: refused as a possible decompression bomb" in text
    rc, _ = _run(["data", "info", tmp_path / "folder", "--skip-bad"], capsys)
    assert rc == 0
    # our limit raised: Pillow's warning band is still refused (``_bomb_warning_band``), never a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        rc, text = _run(["data", "info", tmp_path / "folder", "--max-pixels", "1000000000"], capsys)
    assert rc != 0 and "band.png: refused as a possible decompression bomb" in text and "an error here" in text


def test_data_info_bad_files_exit_2(tmp_path, capsys):
    """The exit-code half of the issue for ``data info`` (guards commands/data.py ``_info_folder``'s EXIT_USAGE
    and commands/_common.py's BadImageError -> 2)."""
    (tmp_path / "zero.png").write_bytes(b"")
    save(solid((1, 2, 3)), tmp_path / "good.png")
    rc, _ = _run(["data", "info", tmp_path], capsys)
    assert rc == 2


@pytest.mark.parametrize("name", ["zero.png", "text.png", "corrupt.png", "cut.png", "cut.jpg", "band.png", "bomb.png",
                                  "anim-gif.png", "still-gif.png"])
def test_eval_images_folder_names_the_bad_file(tmp_path, capsys, name):
    """``eval-images DIR``: a bad file (zero-byte, text, valid signature with a corrupt body, truncated PNG and
    JPEG, a header in Pillow's warning band, a 20000x20000 bomb header, an animated and a still GIF) gives one
    line naming it and exit 2 (guards metrics/evaluate.py ``load_images`` reading through
    ``ldmkit.data.load_image``, and ``read_image``'s header checks before any decoding). The GIFs are named
    ``.png``: the folder is read by extension (``IMAGE_SUFFIXES``), so a ``*.gif`` file is not picked up."""
    folder = tmp_path / "eval"
    save(Image.new("L", (8, 8), 3), folder / "a.png")
    if name == "still-gif.png":
        solid((0, 0, 255)).save(folder / name, format="GIF")
    else:
        bad = _bad_files(tmp_path / "all")["anim.gif" if name == "anim-gif.png" else name]
        (folder / name).write_bytes(bad.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        rc, text = _run(["eval-images", folder, "--metrics", "fid"], capsys)
    assert rc == 2 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(folder / name) in errors[0], text


def test_eval_images_folder_says_which_files_it_skipped(tmp_path, caplog):
    """A folder read by extension does not drop other files silently: ``load_images`` warns with their names and
    records them in the protocol info (guards metrics/evaluate.py ``load_images``' ``skipped`` warning)."""
    from ldmkit.metrics.evaluate import load_images

    folder = tmp_path / "eval"
    save(Image.new("L", (8, 8), 3), folder / "a.png")
    save(Image.new("L", (8, 8), 9), folder / "b.png")
    solid((0, 0, 255)).save(folder / "x.gif", format="GIF")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="ldmkit.metrics.evaluate"):
        images, info = load_images(folder)
    assert images.shape[0] == 2 and info["skipped_files"] == ["notes.txt", "x.gif"]
    assert "skipped 2 file(s)" in caplog.text and "x.gif" in caplog.text


# ------------------------------------------------------------------------------ fuzz
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


def _seed_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    im = noise_image(7, size=8)
    if fmt == "PNG":
        im.putalpha(128)
    im.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


SEEDS = {"PNG": _seed_bytes("PNG"), "JPEG": _seed_bytes("JPEG")}


@st.composite
def _mutated(draw):
    fmt = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[fmt])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return fmt, bytes(data)


@hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(_mutated())
def test_fuzz_mutated_png_and_jpeg_raise_only_bad_image_error(tmp_path_factory, case):
    """Guards ``_DECODE_ERRORS`` / ``_bad_image`` in ``read_image``: flipped, inserted, deleted or cut bytes of a
    small valid PNG and JPEG either decode to a uint8 [H, W, 3] array or raise BadImageError (ours)."""
    fmt, data = case
    path = tmp_path_factory.mktemp("fuzz") / ("x.png" if fmt == "PNG" else "x.jpg")
    path.write_bytes(data)
    try:
        arr, _, _ = read_image(path, size=4)
    except BadImageError as e:
        assert str(path) in str(e)
        return
    assert arr.dtype == np.uint8 and arr.shape == (4, 4, 3)
