"""Makers of real image files for the data tests (hand-written PNG chunks where Pillow cannot write them)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_raw(path: Path, array: np.ndarray, color_type: int, bit_depth: int = 16,
                  extra_chunks: bytes = b"", header_size: tuple[int, int] | None = None) -> Path:
    """A PNG written chunk by chunk: ``array`` is ``[H, W]`` or ``[H, W, C]`` of samples at ``bit_depth``.

    color_type: 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA. ``header_size`` overrides the (width, height) that
    IHDR declares (for a decompression-bomb header over a tiny body).
    """
    h, w = array.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + np.ascontiguousarray(array[y]).astype(dtype).tobytes() for y in range(h))
    width, height = header_size or (w, h)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra_chunks + _chunk(b"IDAT", zlib.compress(raw)) \
        + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def trns_chunk(payload: bytes) -> bytes:
    return _chunk(b"tRNS", payload)


def noise_image(seed: int, size: int = 64) -> Image.Image:
    """Random RGB pixels: incompressible, so a truncated file loses real image data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def solid(color, size=(8, 8), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)
