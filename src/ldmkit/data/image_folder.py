"""A dataset over any directory tree of PNG / JPEG / WebP / BMP images, with optional labels and captions.

Labels come from first-level sub-folder names (``root/cat/x.png`` -> ``cat``); captions from
``root/captions.jsonl`` (one ``{"file": "cat/x.png", "text": "..."}`` per line) or from a ``.txt`` file
with the image's name beside it (``cat/x.txt``). Every image is resized (shorter side) and center-cropped
to ``size``, alpha is composited onto a background colour, and the result is converted to 1 or 3 channels.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
DEFAULT_MAX_PIXELS = 64_000_000
CAPTIONS_FILE = "captions.jsonl"
Verify = Literal["full", "header"]


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLargeError(BadImageError):
    """An image with more pixels than the configured limit (a possible decompression bomb)."""


def parse_background(background: str | int | Sequence[int]) -> tuple[int, int, int]:
    """A colour name / ``#rrggbb`` / gray level / RGB triple -> an RGB triple of ints in [0, 255]."""
    if isinstance(background, str):
        try:
            rgb = ImageColor.getrgb(background)
        except ValueError as e:
            raise ValueError(f"background colour {background!r} is not a colour name or #rrggbb ({e})") from None
        return tuple(int(v) for v in rgb[:3])  # type: ignore[return-value]
    if isinstance(background, (int, np.integer)):
        background = (int(background),) * 3
    values = tuple(int(v) for v in background)
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"background must be a colour name, a gray level or 3 ints in [0, 255], got {background!r}")
    return values  # type: ignore[return-value]


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit gray (``I;16*``, or ``I`` as older Pillow reads such PNGs) -> 8-bit ``L``, or ``LA`` when a
    tRNS chunk marks one gray value transparent.

    Pillow's own ``convert("L")`` clips 16-bit values at 255 (most images turn white), so the 16-bit range
    is rescaled here: v8 = round(v16 / 257), which maps 0 -> 0 and 65535 -> 255 exactly.
    """
    arr = np.asarray(im)
    arr8 = np.round(np.clip(arr.astype(np.float64), 0, 65535) / 257.0).astype(np.uint8)
    trns = im.info.get("transparency")
    if isinstance(trns, (int, np.integer)):
        alpha = np.where(arr == trns, 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([arr8, alpha], axis=-1), "LA")
    return Image.fromarray(arr8, "L")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info


def _flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any 8-bit mode -> ``L`` or ``RGB``; alpha (also palette / tRNS transparency) composited onto ``background``."""
    if _has_alpha(im):
        rgba = im.convert("RGBA")  # handles P + transparency, L/RGB + tRNS, LA, PA, premultiplied modes
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX ...


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` and cut the centered ``size x size`` square, in one resampling.

    The crop box is taken in source coordinates and handed to ``resize(box=...)``, so the output is an
    antialiased (Pillow's support-scaled bicubic) view of exactly the central square.
    """
    w, h = im.size
    if (w, h) == (size, size):
        return im
    side = min(w, h)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    return im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


# What Pillow raises on bad files (truncated data, broken chunks, bad EXIF, a bomb over its own global limit).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
                  Image.DecompressionBombError)


def _bad_image(path: Path, e: BaseException) -> BadImageError:
    """Translate what Pillow raises for a bad file into a BadImageError naming the file and the reason."""
    if isinstance(e, BadImageError):
        return e
    if isinstance(e, Image.DecompressionBombError):
        return ImageTooLargeError(path, f"refused as a possible decompression bomb: {e}")
    if isinstance(e, UnidentifiedImageError):
        return BadImageError(path, f"not a readable {'/'.join(PIL_FORMATS)} image (unknown or corrupt header)")
    # e.g. "image file is truncated (12 bytes not processed)", "Truncated File Read", "broken PNG file"
    return BadImageError(path, f"cannot decode image: {str(e) or type(e).__name__}")


def check_pixel_limit(path: str | os.PathLike, width: int, height: int, max_pixels: int | None) -> None:
    """Raise ImageTooLargeError when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            path, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels "
                  "(max_pixels); refusing to decode a possible decompression bomb")


def read_image(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    channels: int = 3,
    background: str | int | Sequence[int] = "white",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode: bool = True,
) -> tuple[np.ndarray | None, tuple[int, int], str]:
    """Like :func:`load_image`, also returning the native ``(width, height)`` and Pillow mode.

    With ``decode=False`` only the header is read (and the pixel limit checked); the array is then None.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    rgb_background = parse_background(background)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between Image.MAX_IMAGE_PIXELS and twice that (and raises above): here the
            # warning band is an error too (ImageTooLargeError naming the file), whatever max_pixels says:
            # see _bomb_warning_band.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PIL_FORMATS) as im:
                native, mode = im.size, im.mode
                check_pixel_limit(path, *native, max_pixels)
                arr = _decode(im, size, channels, rgb_background) if decode else None
    except Image.DecompressionBombWarning as e:
        raise _bomb_warning_band(path, e, max_pixels) from None
    except _DECODE_ERRORS + (BadImageError,) as e:
        raise _bad_image(path, e) from None
    return arr, native, mode


def _bomb_warning_band(path: Path, warning: Warning, max_pixels: int | None) -> ImageTooLargeError:
    """The error for a file in Pillow's warning band: ours (naming size and max_pixels) when our limit is
    exceeded too, else one naming Pillow's ``MAX_IMAGE_PIXELS``. Only the header is read again."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=PIL_FORMATS) as im:
                check_pixel_limit(path, *im.size, max_pixels)
    except ImageTooLargeError as e:
        return e
    except _DECODE_ERRORS:
        pass
    return ImageTooLargeError(path, f"refused as a possible decompression bomb: {warning} (Pillow warns over "
                                    f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}; an error here, "
                                    "not a warning)")


def load_image(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    channels: int = 3,
    background: str | int | Sequence[int] = "white",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read one image file into a uint8 array ``[H, W, channels]``, fully decoded and converted.

    Steps: refuse files over ``max_pixels`` before decoding; decode (JPEG at a reduced scale when that still
    covers ``size``); apply the EXIF orientation; 16-bit -> 8-bit; composite alpha onto ``background``;
    resize + center-crop to ``size`` (None keeps the native size); convert to ``channels`` (1: ITU-R 601-2
    luma, 3: RGB).

    Raises:
        BadImageError: unreadable, corrupt or truncated file, or an unsupported format (message names the file).
        ImageTooLargeError: more than ``max_pixels`` pixels.
        FileNotFoundError: the file does not exist.
    """
    arr, _, _ = read_image(path, size=size, channels=channels, background=background, max_pixels=max_pixels)
    assert arr is not None
    return arr


def _decode(im: Image.Image, size: int | None, channels: int, background: tuple[int, int, int]) -> np.ndarray:
    if size is not None and im.format == "JPEG":
        im.draft(None, (size, size))  # DCT-domain downscale that keeps both sides >= size
    im.load()
    im = ImageOps.exif_transpose(im)
    if im.mode == "I" or im.mode.startswith("I;16"):
        im = _to_8bit(im)
    im = _flatten(im, background)
    if size is not None:
        im = resize_center_crop(im, size)
    im = im.convert("L" if channels == 1 else "RGB")
    arr = np.array(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


@dataclass
class ImageRecord:
    """One image found by the scan: its path (relative to the root), label index and caption."""

    path: str
    label: int | None = None
    caption: str | None = None


def _find_images(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def _read_captions_jsonl(path: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            well_formed = isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("file", "text"))
            if not well_formed:  # bad data in a file, hence ValueError
                raise ValueError(f"{path}:{lineno}: expected an object with string fields 'file' and 'text', "
                                 f"got {line.strip()[:80]!r}")
            captions[Path(entry["file"]).as_posix()] = entry["text"]
    return captions


class ImageFolder(torch.utils.data.Dataset):
    """Images of a directory tree as float tensors ``[channels, size, size]`` in [-1, 1].

    Items are dicts: ``image``, ``index``, plus ``label`` (when labels are used) and ``caption`` (when the
    dataset has any caption; images without one get ``""``).

    Args:
        root: the directory to scan (recursively; hidden files and folders are ignored).
        size: output side length; None keeps each image's native size (batches then need equal sizes).
        channels: 1 (gray) or 3 (RGB).
        labels: True: every image must sit in a first-level sub-folder, whose name is its class;
            False: no labels; None: labels when every image sits in a sub-folder.
        skip_bad: skip unusable files (counted in one warning at the end of the scan) instead of raising.
        max_pixels: refuse images with more pixels than this (decompression bombs); None: no limit.
        background: colour that transparent pixels are composited onto.
        verify: "full" decodes every image during the scan (catches truncated files; keeps the decoded
            images in memory when ``cache``); "header" only reads headers (fast; a file found bad later
            raises when it is loaded, whatever ``skip_bad``).
        cache: keep the decoded, resized images in memory after a full scan.
        transform: applied to each item dict.
        progress: show a progress bar during the scan.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | None = None,
        channels: int = 3,
        *,
        labels: bool | None = None,
        skip_bad: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        background: str | int | Sequence[int] = "white",
        verify: Verify = "full",
        cache: bool = True,
        transform: Callable[[dict], dict] | None = None,
        progress: bool = False,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        if verify not in ("full", "header"):
            raise ValueError(f"verify must be 'full' or 'header', got {verify!r}")
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {self.root} is not a directory")
        self.size, self.channels, self.skip_bad = size, channels, skip_bad
        self.max_pixels, self.background = max_pixels, parse_background(background)
        self.verify, self.transform = verify, transform
        paths = _find_images(self.root)
        if not paths:
            raise ValueError(f"image folder {self.root} holds no images (looked recursively for "
                             f"{', '.join(IMAGE_EXTENSIONS)} files)")
        self.class_names = self._class_names(paths, labels)
        captions = self._captions(paths)
        self.has_captions = bool(captions)
        self.bad_files: list[tuple[str, str]] = []
        self.native_sizes: list[tuple[int, int]] = []
        self.native_modes: dict[str, int] = {}
        self._cache: list[np.ndarray] | None = [] if (verify == "full" and cache) else None
        self.records = self._scan(paths, captions, progress)

    # -- scanning -------------------------------------------------------------------------------------
    def _class_names(self, paths: list[str], labels: bool | None) -> tuple[str, ...] | None:
        at_top = [p for p in paths if "/" not in p]
        if labels is None:
            labels = not at_top
        if not labels:
            return None
        if at_top:
            raise ValueError(f"labels from sub-folder names were requested, but {self.root / at_top[0]} (and "
                             f"{len(at_top) - 1} more) is not inside a sub-folder of {self.root}")
        return tuple(sorted({p.split("/", 1)[0] for p in paths}))

    def _captions(self, paths: list[str]) -> dict[str, str]:
        captions: dict[str, str] = {}
        jsonl = self.root / CAPTIONS_FILE
        if jsonl.is_file():
            captions = _read_captions_jsonl(jsonl)
            unknown = sorted(set(captions) - set(paths))
            if unknown:
                logger.warning("%s: %d caption(s) name no image file under %s (first: %r)",
                               jsonl, len(unknown), self.root, unknown[0])
        for p in paths:
            txt = (self.root / p).with_suffix(".txt")
            if p not in captions and txt.is_file():
                captions[p] = txt.read_text(encoding="utf-8").strip()
        return {p: captions[p] for p in paths if p in captions}

    def _scan(self, paths: list[str], captions: dict[str, str], progress: bool) -> list[ImageRecord]:
        label_of = {name: i for i, name in enumerate(self.class_names or ())}
        iterator = paths
        if progress:
            from tqdm import tqdm

            iterator = tqdm(paths, desc=f"checking {self.root}", unit="img", leave=False)
        records = []
        for p in iterator:
            try:
                arr = self._check(self.root / p)
            except BadImageError as e:
                if not self.skip_bad:
                    raise
                self.bad_files.append((str(self.root / p), e.reason))
                continue
            if self._cache is not None:
                self._cache.append(arr)
            label = label_of[p.split("/", 1)[0]] if self.class_names else None
            caption = captions.get(p, "") if self.has_captions else None
            records.append(ImageRecord(p, label, caption))
        if self.bad_files:
            path, reason = self.bad_files[0]
            logger.warning("%s: skipped %d bad image(s) of %d (first: %s: %s)", self.root, len(self.bad_files),
                           len(paths), path, reason)
        if not records:
            raise ValueError(f"image folder {self.root}: all {len(paths)} image files are bad (first: "
                             f"{self.bad_files[0][0]}: {self.bad_files[0][1]})")
        return records

    def _check(self, path: Path) -> np.ndarray | None:
        """Open one file for the scan: header + pixel limit always, full decode when ``verify == "full"``."""
        arr, native, mode = read_image(path, size=self.size, channels=self.channels, background=self.background,
                                       max_pixels=self.max_pixels, decode=self.verify == "full")
        self.native_sizes.append(native)
        self.native_modes[mode] = self.native_modes.get(mode, 0) + 1
        return arr

    def _load(self, path: Path) -> np.ndarray:
        return load_image(path, size=self.size, channels=self.channels, background=self.background,
                          max_pixels=self.max_pixels)

    # -- access ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def image_uint8(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``[H, W, C]`` (from the cache when there is one)."""
        if self._cache is not None:
            return self._cache[i]
        return self._load(self.root / self.records[i].path)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        arr = self.image_uint8(i)
        item = {"image": torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div(127.5).sub(1.0),
                "index": int(i)}
        if rec.label is not None:
            item["label"] = rec.label
        if rec.caption is not None:
            item["caption"] = rec.caption
        return self.transform(item) if self.transform is not None else item

    def path(self, i: int) -> Path:
        return self.root / self.records[i].path
