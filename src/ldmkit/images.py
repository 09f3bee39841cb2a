"""Image I/O helpers on Pillow + numpy: [-1, 1] floats -> uint8, image grids, PNGs with text metadata.

Array layout: numpy images are ``[H, W, C]`` (or ``[H, W]``) uint8; torch images are ``[C, H, W]`` /
``[N, C, H, W]`` floats in [-1, 1], the range every ldmkit dataset and sampler uses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, PngImagePlugin


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float images in [-1, 1] -> uint8 in channels-last layout.

    ``[C, H, W]`` -> ``[H, W, C]``, ``[N, C, H, W]`` -> ``[N, H, W, C]``; values are clipped, then mapped by
    round((x + 1) * 127.5). A uint8 input is returned unchanged (already channels-last).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.ndim not in (3, 4):
        raise ValueError(f"to_uint8 expects [C, H, W] or [N, C, H, W], got shape {x.shape}")
    out = np.round((np.clip(x.astype(np.float64), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.moveaxis(out, -3, -1)


def _as_nhwc(images: Any) -> np.ndarray:
    """A batch as uint8 ``[N, H, W, C]``: float tensors/arrays ``[N, C, H, W]`` in [-1, 1], or uint8
    ``[N, H, W, C]`` / ``[N, H, W]``, or a list of either kind of single image."""
    if isinstance(images, (list, tuple)):
        images = [_single_hwc(im) for im in images]
        if len({im.shape for im in images}) > 1:
            raise ValueError(f"make_grid: images differ in shape: {sorted({im.shape for im in images})}")
        return np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)
    if isinstance(images, torch.Tensor) or np.asarray(images).dtype != np.uint8:
        return to_uint8(images if isinstance(images, torch.Tensor) else np.asarray(images))
    arr = np.asarray(images)
    return arr[..., None] if arr.ndim == 3 else arr


def _single_hwc(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image)
    if isinstance(image, torch.Tensor) or np.asarray(image).dtype != np.uint8:
        return to_uint8(image)
    arr = np.asarray(image)
    return arr[..., None] if arr.ndim == 2 else arr


def make_grid(images: Any, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile N images into one uint8 image ``[H', W', C]``, ``nrow`` images per row, ``padding`` pixels
    of ``pad_value`` between and around them. Empty cells of the last row are filled with ``pad_value``.

    Accepts float ``[N, C, H, W]`` in [-1, 1] (tensor or array), uint8 ``[N, H, W, C]`` or a list of images.
    """
    batch = _as_nhwc(images)
    if batch.ndim != 4 or len(batch) == 0:
        raise ValueError(f"make_grid needs a non-empty batch of images, got shape {batch.shape}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"make_grid needs nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    n, h, w, c = batch.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = batch[k]
    return grid


#: outline colours of :func:`boxed_grid`, cycled over the boxes of one image
BOX_COLORS = ((255, 0, 255), (0, 200, 255), (255, 160, 0), (0, 230, 90), (255, 60, 60), (160, 120, 255))


def boxed_grid(images: Any, boxes: Any, labels: Any = None, nrow: int = 8, padding: int = 2, pad_value: int = 128,
               scale: int = 1) -> Image.Image:
    """:func:`make_grid` as an RGB PIL image, enlarged ``scale`` x (nearest), with each image's boxes outlined.

    Args:
        boxes: per image a sequence (or ``[K, 4]`` tensor) of ``(x0, y0, x1, y1)`` in [0, 1], x1/y1 exclusive.
        labels: per image K strings written at the boxes' top-left corners (Pillow's default font), or None.
    """
    batch = _as_nhwc(images)
    grid = make_grid(batch, nrow=nrow, padding=padding, pad_value=pad_value)
    pil = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(pil)
    _, h, w, _ = batch.shape
    cols = min(nrow, len(batch))
    for k, cell in enumerate(boxes):
        r, q = divmod(k, cols)
        oy, ox = padding + r * (h + padding), padding + q * (w + padding)
        cell = cell.tolist() if hasattr(cell, "tolist") else list(cell)
        for j, (x0, y0, x1, y1) in enumerate(cell):
            color = BOX_COLORS[j % len(BOX_COLORS)]
            left, top = (ox + x0 * w) * scale, (oy + y0 * h) * scale
            draw.rectangle([left, top, (ox + x1 * w) * scale - 1, (oy + y1 * h) * scale - 1], outline=color)
            if labels is not None:
                draw.text((left + 2, top + 1), str(labels[k][j]), fill=color)
    return pil


def to_pil(image: Any) -> Image.Image:
    """A PIL image from a PIL image, uint8 ``[H, W]`` / ``[H, W, 1|3|4]``, or a float ``[C, H, W]`` in [-1, 1]."""
    if isinstance(image, Image.Image):
        return image
    arr = _single_hwc(image)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"cannot make an image of shape {arr.shape}; expected [H, W, 1|3|4]")
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def save_png(path: str | os.PathLike, image: Any, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a PNG with ``metadata`` as text chunks (iTXt, UTF-8); non-string values are stored as JSON.

    Keys must be 1-79 Latin-1 characters (the PNG rule for keywords). Parent folders are created.
    Returns the path written.
    """
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not 1 <= len(key) <= 79:
            raise ValueError(f"PNG metadata key {key!r} must be a string of 1-79 characters")
        try:
            key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"PNG metadata key {key!r} must be Latin-1 text") from None
        text = value if isinstance(value, str) else json.dumps(value)
        info.add_itxt(key, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG", pnginfo=info)
    return path


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG as a dict of strings (JSON values stay JSON text)."""
    with Image.open(path, formats=["PNG"]) as im:
        im.load()  # text chunks after the image data are read only with the pixels
        return {str(k): str(v) for k, v in im.text.items()}
