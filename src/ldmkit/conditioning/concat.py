"""Concat conditioning: images and masks given to the U-Net as extra input channels (Rombach et al. 2022, Sec. 4.4-4.5).

``tau_theta`` is (almost) the identity here: the condition is resized to the grid of ``x_t`` and concatenated
to it (``Cond.concat`` -> ``UNet(concat_channels=...)``). Two kinds:

- ``super_resolution`` (:class:`SuperResolution`): the low-resolution image. Training draws it from the
  training image with the degradation :func:`degrade` (``factor`` x smaller by ``bicubic`` (PIL-style
  antialiased, a = -0.5) or ``area`` averaging, optional Gaussian noise, clamped and rounded to 8-bit levels
  like a PNG); a request takes the user's low-res image. Either way it becomes concat channels by
  :func:`lowres_concat`: bicubic upsampling by ``factor`` to the data's own size, the data's padding
  (``data.pad_to``) added, then ``embed="resize"``: area-resized to the latent grid (``C`` image channels;
  the identity in pixel space) or ``embed="encode"``: encoded by the first stage (its latent channels).
  Padding first keeps the geometry exact: Fashion-MNIST 28x28 padded to 32x32 under an f4 first stage
  gives an 8x8 latent whose every cell covers one 4x4 block of the padded canvas; the 7x7 low-res image
  cannot be laid on that grid directly (the 2-pixel pad is half a low-res pixel).
- ``inpainting`` (:class:`Inpainting`): Rombach et al.'s inpainting model: the masked image (hole set to
  0, the middle of [-1, 1]) encoded by the first stage (posterior mean), plus the mask max-pooled to the
  latent grid (a latent is "hole" when any pixel under it is): ``latent channels + 1`` channels. Training
  masks are drawn by :func:`random_masks` (random boxes or brush strokes, deterministic by seed).

The concat channels are the task's input, not a prompt: :func:`~ldmkit.conditioning.class_label.null_condition`
keeps them, so condition dropout and guidance act on class / text only.

Spaces are duck-typed (``pad``, ``padding``, ``factor``, ``encode_params``): this module imports no stage
besides ``types`` and ``registry``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ldmkit.registry import ConfigError, lookup
from ldmkit.types import Batch, Cond


class ConcatInputError(ValueError):
    """An image or mask given to a concat-conditioned model that does not fit it; the message says why."""


# ------------------------------------------------------------------------------------------- configs
DOWNSAMPLE_MODES = {"bicubic": "bicubic", "area": "area"}
EMBED_MODES = {"resize": "resize", "encode": "encode"}


@dataclass
class SuperResConfig:
    """``cond.sr``: how the low-resolution image of a super-resolution model is made and embedded.

    Attributes:
        factor: the low-res image is ``factor`` x smaller than the output (Rombach et al.: 4).
        downsample: the degradation: ``bicubic`` (antialiased, as PIL's ``Image.resize(BICUBIC)``) or ``area``
            (mean over ``factor x factor`` blocks).
        noise_std: training only: std of Gaussian noise added to the low-res image (in [-1, 1] units) before
            rounding; 0 = none.
        quantize: training only: round the low-res image to 8-bit levels, as the PNG a user gives.
        embed: ``resize`` (the upsampled low-res image area-resized to the latent grid: image channels) or
            ``encode`` (encoded by the first stage: its latent channels).
    """

    factor: int = 4
    downsample: Literal["bicubic", "area"] = "bicubic"
    noise_std: float = 0.0
    quantize: bool = True
    embed: Literal["resize", "encode"] = "resize"

    def __post_init__(self) -> None:
        if not isinstance(self.factor, int) or isinstance(self.factor, bool) or self.factor < 2:
            raise ConfigError(f"cond.sr.factor={self.factor!r}: must be an integer >= 2")
        lookup(DOWNSAMPLE_MODES, self.downsample, "cond.sr.downsample")
        lookup(EMBED_MODES, self.embed, "cond.sr.embed")
        if not (isinstance(self.noise_std, (int, float)) and math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ConfigError(f"cond.sr.noise_std={self.noise_std!r}: must be a finite number >= 0")


@dataclass
class InpaintConfig:
    """``cond.inpaint``: the training masks of an inpainting model (see :func:`random_masks`).

    Attributes:
        box_prob: probability that an example's mask is one box (else brush strokes).
        min_area, max_area: a box covers a fraction of the image drawn uniformly from this range.
        max_strokes: brush masks have 1 ... max_strokes strokes.
        max_vertices: a stroke is a polyline of 2 ... max_vertices vertices.
        min_width, max_width: stroke width as a fraction of the shorter side (at least one pixel).
        max_length: a stroke segment is up to this fraction of the shorter side long.
    """

    box_prob: float = 0.5
    min_area: float = 0.1
    max_area: float = 0.5
    max_strokes: int = 4
    max_vertices: int = 6
    min_width: float = 0.07
    max_width: float = 0.18
    max_length: float = 0.4

    def __post_init__(self) -> None:
        def unit(name: str, low_open: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and (0 < v <= 1 if low_open else 0 <= v <= 1)
            if not ok:
                raise ConfigError(f"cond.inpaint.{name}={v!r}: must be in {'(0, 1]' if low_open else '[0, 1]'}")

        unit("box_prob")
        for name in ("min_area", "max_area", "min_width", "max_width", "max_length"):
            unit(name, low_open=True)
        if self.min_area > self.max_area:
            raise ConfigError(f"cond.inpaint.min_area={self.min_area} must be <= max_area={self.max_area}")
        if self.min_width > self.max_width:
            raise ConfigError(f"cond.inpaint.min_width={self.min_width} must be <= max_width={self.max_width}")
        for name, low in (("max_strokes", 1), ("max_vertices", 2)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"cond.inpaint.{name}={v!r}: must be an integer >= {low}")


# ------------------------------------------------------------------------------------------- spaces
def _crop(space, images: torch.Tensor) -> torch.Tensor:
    padding = getattr(space, "padding", None)
    return images if padding is None else padding.crop(images)


def pad_mask(space, mask: torch.Tensor) -> torch.Tensor:
    """A bool mask at the data's size -> the padded canvas, the padding kept (never filled).

    Uses only ``space.pad`` (whatever its fill value v): inside, ``pad(m)`` and ``pad(m + 2)`` hold the mask
    and the mask + 2; on the padding both hold v, which cannot be 1 and 3 at once.
    """
    m = mask.float()
    return (space.pad(m) == 1) & (space.pad(m + 2) == 3)


def latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """``[N, 1, H, W]`` pixel mask -> ``[N, 1, H/f, W/f]`` bool: a latent is filled when any pixel it covers is
    (max-pooling), so every kept latent sees only known pixels."""
    if factor == 1:
        return mask.bool()
    return F.max_pool2d(mask.float(), factor) > 0.5


# ------------------------------------------------------------------------------------------- super-resolution
def degrade(images: torch.Tensor, cfg: SuperResConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """The low-resolution image of super-resolution training: ``[N, C, H, W]`` -> ``[N, C, H/f, W/f]``.

    Steps: 1. downsample by ``f = cfg.factor`` (``bicubic``: antialiased bicubic, PIL's filter with a = -0.5
    and support scaled by f; ``area``: the mean of each f x f block); 2. add ``N(0, noise_std^2)`` noise;
    3. clamp to [-1, 1]; 4. with ``quantize``, round to the 256 levels of an 8-bit image.
    """
    h, w = images.shape[-2:]
    f = cfg.factor
    if h % f or w % f:
        raise ConcatInputError(f"super-resolution: image size {h}x{w} is not divisible by cond.sr.factor={f}")
    if cfg.downsample == "area":
        low = F.avg_pool2d(images, f)
    else:
        low = F.interpolate(images, size=(h // f, w // f), mode="bicubic", antialias=True, align_corners=False)
    if cfg.noise_std > 0:
        noise = torch.randn(low.shape, generator=generator, device=low.device if generator is None
                            else generator.device, dtype=low.dtype)
        low = low + cfg.noise_std * noise.to(low.device)
    low = low.clamp(-1.0, 1.0)
    if cfg.quantize:
        low = torch.round((low + 1.0) * 127.5) / 127.5 - 1.0
    return low


def upsample(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upsampling by ``factor`` (antialiased bicubic, as PIL), clamped to [-1, 1]: the baseline of
    Rombach et al.'s Table 5 and the first step of :func:`lowres_concat`."""
    h, w = low.shape[-2:]
    up = F.interpolate(low, size=(h * factor, w * factor), mode="bicubic", antialias=True, align_corners=False)
    return up.clamp(-1.0, 1.0)


def lowres_concat(low: torch.Tensor, space, cfg: SuperResConfig) -> torch.Tensor:
    """Low-res images ``[N, C, h, w]`` (data's own size / factor) -> concat channels on the ``x_t`` grid.

    Upsampled by :func:`upsample` to ``f h x f w``, padded with ``space.pad``, then ``resize``: area-resized by
    ``space.factor`` (``[N, C, H/F, W/F]``), or ``encode``: the first stage's scaled posterior mean.
    """
    canvas = space.pad(upsample(low, cfg.factor))
    if cfg.embed == "encode":
        return space.encode_params(canvas)[0]
    factor = int(space.factor)
    ch, cw = canvas.shape[-2:]
    if ch % factor or cw % factor:
        raise ConcatInputError(f"super-resolution: the canvas {ch}x{cw} is not divisible by the first stage's "
                               f"factor {factor}")
    return canvas if factor == 1 else F.avg_pool2d(canvas, factor)


# ------------------------------------------------------------------------------------------- inpainting
def masked_image_concat(canvas: torch.Tensor, mask: torch.Tensor, space) -> torch.Tensor:
    """Rombach et al.'s inpainting condition: ``[encode(x * (1 - m)), pool(m)]``, ``[N, c + 1, H/F, W/F]``.

    Args:
        canvas: ``[N, C, H, W]`` images on the padded canvas, in [-1, 1]; mask: ``[N, 1, H, W]`` bool on the
            same canvas, True = hole (its pixels are set to 0 before encoding, so nothing of the hole leaks).
    """
    masked = torch.where(mask, torch.zeros_like(canvas), canvas)
    encoded = space.encode_params(masked)[0]
    small = latent_mask(mask, int(space.factor)).to(encoded.dtype)
    return torch.cat([encoded, small], dim=1)


def _segment_distance(py: np.ndarray, px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of the points (py, px) to the segment a-b (each ``(y, x)``)."""
    d = b - a
    denom = float(d @ d)
    s = np.zeros_like(py) if denom == 0 else np.clip(((py - a[0]) * d[0] + (px - a[1]) * d[1]) / denom, 0, 1)
    return np.hypot(py - (a[0] + s * d[0]), px - (a[1] + s * d[1]))


def _box(rng: np.random.Generator, h: int, w: int, cfg: InpaintConfig) -> np.ndarray:
    area = rng.uniform(cfg.min_area, cfg.max_area) * h * w
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # height / width
    bh = int(np.clip(round(math.sqrt(area * aspect)), 1, h))
    bw = int(np.clip(round(area / bh), 1, w))
    y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    out = np.zeros((h, w), bool)
    out[y0:y0 + bh, x0:x0 + bw] = True
    return out


def _brush(rng: np.random.Generator, h: int, w: int, cfg: InpaintConfig) -> np.ndarray:
    side = min(h, w)
    py, px = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # pixel centres
    out = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, cfg.max_strokes + 1))):
        radius = max(0.5, rng.uniform(cfg.min_width, cfg.max_width) * side / 2)
        p = np.array([rng.integers(0, h), rng.integers(0, w)], np.float64) + 0.5  # starts on a pixel centre
        out |= np.hypot(py - p[0], px - p[1]) <= radius
        for _ in range(int(rng.integers(1, cfg.max_vertices))):
            angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 1.0) * cfg.max_length * side
            q = np.clip(p + length * np.array([math.sin(angle), math.cos(angle)]), [0, 0], [h, w])
            out |= _segment_distance(py, px, p, q) <= radius
            p = q
    return out


def random_masks(n: int, size: tuple[int, int], cfg: InpaintConfig, seed: int) -> torch.Tensor:
    """Training masks ``[n, 1, H, W]`` bool (True = hole); mask ``i`` depends only on ``(seed, i)`` and ``cfg``.

    Each example draws from ``numpy.random.default_rng([seed, i])``: with probability ``box_prob`` one box
    (area fraction ~ U[min_area, max_area], height/width ~ log-U[1/2, 2], position uniform), otherwise brush
    strokes (1 ... max_strokes polylines of 1 ... max_vertices - 1 segments from a random pixel centre, each
    segment in a uniform direction with length ~ U[0.1, 1] x max_length x side, clipped to the image, drawn
    with a width ~ U[min_width, max_width] x side (radius >= half a pixel)). Never empty.
    """
    h, w = size
    out = np.zeros((n, 1, h, w), bool)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        out[i, 0] = _box(rng, h, w, cfg) if rng.random() < cfg.box_prob else _brush(rng, h, w, cfg)
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------- input checks
def check_images(images, channels: int | None, what: str = "images") -> torch.Tensor:
    """``[N, C, H, W]`` (or ``[C, H, W]``) finite floats in [-1, 1] with ``channels`` channels (None: any)."""
    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or (channels is not None and images.shape[1] != channels):
        which = "C" if channels is None else channels
        raise ConcatInputError(f"{what}: expected [N, {which}, H, W] (this model's {which} image channels), "
                               f"got {tuple(images.shape)}")
    images = images.float()
    if not bool(torch.isfinite(images).all()) or float(images.abs().max()) > 1.0 + 1e-6:
        raise ConcatInputError(f"{what}: values must be finite and in [-1, 1] (found min {float(images.min()):.3g}, "
                               f"max {float(images.max()):.3g})")
    return images


def check_mask(mask, n: int, size: tuple[int, int], what: str = "mask") -> torch.Tensor:
    """``[1 or N, 1, H, W]`` (or ``[H, W]``, ``[1, H, W]``) holding only 0/1 (or bool) -> ``[N, 1, H, W]`` bool."""
    mask = torch.as_tensor(mask)
    while mask.dim() < 4:
        mask = mask[None]
    if mask.shape[1] != 1 or tuple(mask.shape[-2:]) != tuple(size) or mask.shape[0] not in (1, n):
        raise ConcatInputError(f"{what}: expected [1 or {n}, 1, {size[0]}, {size[1]}] (one channel, the image's "
                               f"size), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        values = torch.unique(mask.float())
        other = values[(values != 0) & (values != 1)]
        if other.numel():
            shown = ", ".join(f"{float(v):g}" for v in values[:10]) + (", ..." if values.numel() > 10 else "")
            raise ConcatInputError(f"{what}: not binary: found {values.numel()} values ({shown}); a mask holds "
                                   "only 0 (keep) and 1 (fill), or True/False")
        mask = mask > 0.5
    if not bool(mask.flatten(1).any(dim=1).all()):
        empty = [i for i in range(mask.shape[0]) if not bool(mask[i].any())]
        raise ConcatInputError(f"{what}: empty (no pixel to fill) for image(s) {empty}")
    return mask.expand(n, -1, -1, -1)


# ------------------------------------------------------------------------------------------- kinds
def _space_device(space, fallback: torch.device) -> torch.device:
    ae = getattr(space, "autoencoder", None)
    return fallback if ae is None else next(ae.parameters()).device


class SuperResolution:
    """The ``super_resolution`` ConcatKind: ``from_batch`` degrades the training images, ``from_request``
    takes the user's low-res images; both return ``Cond(concat=...)`` (see :func:`lowres_concat`).

    Args:
        cfg: ``cond.sr``; image_channels: of the data's images; latent_channels: of ``x_t`` (``unet.in_channels``).
    """

    name = "super_resolution"
    accepts = ("images",)

    def __init__(self, cfg: SuperResConfig, image_channels: int | None, latent_channels: int):
        self.cfg, self.image_channels = cfg, None if image_channels is None else int(image_channels)
        if cfg.embed == "resize" and self.image_channels is None:
            raise ConfigError("cond.sr.embed='resize': the data's image channels are needed (hints)")
        self.channels = self.image_channels if cfg.embed == "resize" else int(latent_channels)  # unet.concat_channels

    def output_size(self, low_size: tuple[int, int]) -> tuple[int, int]:
        """Size (data's own) of the images generated from low-res images of ``low_size``."""
        return low_size[0] * self.cfg.factor, low_size[1] * self.cfg.factor

    def from_batch(self, batch: Batch, space, generator: torch.Generator | None = None) -> Cond:
        """Training: the padded batch images -> their own size -> :func:`degrade` -> :func:`lowres_concat`."""
        low = degrade(_crop(space, batch.images), self.cfg, generator)
        return Cond(concat=lowres_concat(low, space, self.cfg))

    def from_request(self, n: int, *, space, images=None) -> Cond:
        """Sampling: ``images`` = ``n`` low-res images ``[n, C, h, w]`` in [-1, 1] (already degraded)."""
        if images is None:
            raise ConcatInputError("images: a super-resolution model needs the low-resolution image(s) to upscale "
                                   "(CLI: ldmkit upscale CKPT_DIR LOWRES.png)")
        low = check_images(images, self.image_channels, "low-res images")
        if low.shape[0] != n:
            raise ConcatInputError(f"low-res images: got {low.shape[0]} for {n} samples")
        low = low.to(_space_device(space, low.device))
        return Cond(concat=lowres_concat(low, space, self.cfg))


class Inpainting:
    """The ``inpainting`` ConcatKind: ``[encoded masked image, latent mask]`` (:func:`masked_image_concat`);
    training draws the masks with :func:`random_masks`, a request takes the user's image and mask."""

    name = "inpainting"
    accepts = ("images", "masks")

    def __init__(self, cfg: InpaintConfig, image_channels: int | None, latent_channels: int):
        self.cfg, self.image_channels = cfg, None if image_channels is None else int(image_channels)
        self.channels = int(latent_channels) + 1  # unet.concat_channels

    def from_batch(self, batch: Batch, space, generator: torch.Generator | None = None) -> Cond:
        """Training: one random mask per example at the data's own size (seed drawn from ``generator``, or
        torch's global RNG, which the Trainer seeds and checkpoints), padded as ``space.pad`` pads."""
        own = _crop(space, batch.images)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        mask = pad_mask(space, random_masks(own.shape[0], tuple(own.shape[-2:]), self.cfg, seed))
        return Cond(concat=masked_image_concat(batch.images, mask.to(batch.images.device), space))

    def from_request(self, n: int, *, space, images=None, masks=None) -> Cond:
        """Sampling: ``images`` ``[n, C, H, W]`` in [-1, 1] and ``masks`` ``[1 or n, 1, H, W]`` (True / 1 = fill),
        both at the data's own size."""
        if images is None or masks is None:
            raise ConcatInputError("images, masks: an inpainting model needs both the image(s) and the mask(s) "
                                   "(white/1 = fill; CLI: ldmkit inpaint CKPT_DIR IMAGE MASK)")
        images = check_images(images, self.image_channels, "images")
        if images.shape[0] != n:
            raise ConcatInputError(f"images: got {images.shape[0]} for {n} samples")
        mask = check_mask(masks, n, tuple(images.shape[-2:]))
        device = _space_device(space, images.device)
        canvas = space.pad(images.to(device))
        return Cond(concat=masked_image_concat(canvas, pad_mask(space, mask.to(device)), space))


def build_kind(cfg, name: str, hints: dict | None = None):
    """The ConcatKind ``name`` of a run config (``ldmkit.config.Config``): ``cond.sr`` / ``cond.inpaint``
    options and the channels of ``x_t`` (``unet.in_channels``).

    The data's image channels come from ``hints["image_channels"]`` (``conditioning/`` does not import
    ``data/``; the builder's caller knows them). Without the hint: ``unet.in_channels`` in pixel space; in a
    latent space ``unet.concat_channels`` for super-resolution with ``embed: resize`` (so a wrong value shows
    up as the U-Net's concat-shape error on the first batch) and unchecked for inpainting (``editing``
    checks a request's channels against the data before it gets here).
    """
    latent = int(cfg.unet.in_channels)
    channels = (hints or {}).get("image_channels")
    if channels is None and cfg.first_stage is None:
        channels = latent
    if name == "super_resolution":
        sr = getattr(cfg.cond, "sr", None) or SuperResConfig()
        if channels is None:
            channels = cfg.unet.concat_channels if sr.embed == "resize" else None
        return SuperResolution(sr, channels, latent)
    if name == "inpainting":
        return Inpainting(getattr(cfg.cond, "inpaint", None) or InpaintConfig(), channels, latent)
    raise ConfigError(f"unknown cond.concat {name!r}; valid: 'none', 'super_resolution', 'inpainting'")


__all__ = [
    "ConcatInputError", "InpaintConfig", "Inpainting", "SuperResConfig", "SuperResolution", "build_kind", "check_images",
    "check_mask", "degrade", "latent_mask", "lowres_concat", "masked_image_concat", "pad_mask", "random_masks",
    "upsample",
]
