"""Editing existing images with any trained model: RePaint inpainting, SDEdit image-to-image, other sizes.

A sibling of :mod:`ldmkit.pipelines` that crosses stages the same way (space, process, denoiser, samplers):

    loaded = load_model(CKPT)                              # pipelines.LoadedModel
    image = load_image_tensor("x.png", loaded)             # [1, C, H, W] in [-1, 1], checked against the model
    mask = load_mask("m.png", image.shape[-2:])            # [1, 1, H, W] bool, True = fill
    out = inpaint(loaded, image, mask, steps=50, resample=2, seed=0)   # RePaint (samplers/repaint.py)
    out, run = img2img(loaded, image, strength=0.6, steps=50, seed=0)  # SDEdit on a truncated grid
    big = upscale(sr_model, low_res, steps=50, seed=0)     # trained super-resolution (cond.concat)
    out = inpaint_concat(inpaint_model, image, mask, steps=50, seed=0)  # trained inpainting model

All wrap the samplers or ``pipelines.generate``; none copies a sampling loop (DESIGN.md, principle 4). Sizes: any ``H x W``
divisible by :func:`size_factor` (U-Net downsamplings x first-stage factor) works for a convolutional
model; :func:`shape_at` gives the ``x_t`` shape of such a size for ``pipelines.generate``.

Every bad input raises :class:`EditInputError` (a ``ValueError``: exit code 2 in the CLI) naming the file
or value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ldmkit.conditioning.concat import latent_mask, pad_mask
from ldmkit.denoiser import ClassifierFreeGuidance
from ldmkit.pipelines import generate, image_shape, sampler_options
from ldmkit.registry import lookup
from ldmkit.samplers import (
    SAMPLERS,
    make_generators,
    make_timestep_grid,
    randn,
    repaint_schedule,
    sample_repaint,
)
from ldmkit.types import Cond


class EditInputError(ValueError):
    """An image, mask, size or setting that does not fit the model or the edit; the message says why."""


# ------------------------------------------------------------------------------------------- sizes
def size_factor(loaded) -> int:
    """Image sides must be multiples of this: ``2^(U-Net levels - 1)`` x the first stage's factor."""
    return 2 ** (len(loaded.config.unet.channel_mult) - 1) * int(loaded.space.factor)


def image_channels(loaded) -> int:
    """Channels of the model's images (pixel space, before any first stage)."""
    return image_shape(loaded.config)[0]


def canvas_size(loaded, height: int, width: int) -> tuple[int, int]:
    """The size the model works on for images of ``height x width`` at the data's own size: the padding
    ``data.pad_to`` added during training is added again (``space.pad``; ``space.decode`` removes it)."""
    canvas = loaded.space.pad(torch.zeros(1, image_channels(loaded), height, width))
    return int(canvas.shape[-2]), int(canvas.shape[-1])


def check_size(loaded, height: int, width: int, what: str = "size") -> None:
    """Raise :class:`EditInputError` unless images of ``height x width`` (the data's own size) fit the model:
    positive, and with the data's padding added, multiples of :func:`size_factor`."""
    f = size_factor(loaded)
    why = (f"this model's factor: {2 ** (len(loaded.config.unet.channel_mult) - 1)} from the U-Net levels x "
           f"{loaded.space.factor} from the first stage")
    if height < 1 or width < 1:
        raise EditInputError(f"{what} {height}x{width}: height and width must be positive multiples of {f} ({why})")
    ch, cw = canvas_size(loaded, height, width)
    if ch % f or cw % f:
        up = f"{-(-ch // f) * f - (ch - height)}x{-(-cw // f) * f - (cw - width)}"
        if (ch, cw) == (height, width):
            raise EditInputError(f"{what} {height}x{width}: height and width must be positive multiples of {f} "
                                 f"({why}); e.g. {up}")
        raise EditInputError(f"{what} {height}x{width}: with the data's padding (data.pad_to) the model works on "
                             f"{ch}x{cw}, whose sides must be multiples of {f} ({why}); e.g. {up}")


def shape_at(loaded, height: int, width: int, what: str = "size") -> tuple[int, int, int]:
    """``[C, h, w]`` of one ``x_t`` whose decoded images are ``height x width`` (checked by :func:`check_size`;
    the data's padding is added for the model and removed by ``space.decode``)."""
    check_size(loaded, height, width, what)
    return tuple(loaded.space.latent_shape((image_channels(loaded), *canvas_size(loaded, height, width))))


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"HxW"`` (e.g. ``56x112``) -> ``(H, W)``."""
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise EditInputError(f"{option}: expected HxW with two positive integers (e.g. 56x112), got {text!r}") \
            from None
    if h < 1 or w < 1:
        raise EditInputError(f"{option}: expected HxW with two positive integers (e.g. 56x112), got {text!r}")
    return h, w


# ------------------------------------------------------------------------------------------- inputs
def read_uint8(path: str | os.PathLike, channels: int, what: str = "image") -> np.ndarray:
    """An image file as uint8 ``[H, W, channels]`` through the datasets' checked loader (PNG/JPEG/WebP/BMP;
    EXIF orientation, alpha composited onto white, converted to ``channels``)."""
    from ldmkit.data.image_folder import BadImageError, load_image

    if channels not in (1, 3):
        raise EditInputError(f"{what} {path}: the model takes {channels}-channel images; only 1 (gray) or 3 "
                             "(RGB) channel models can read image files")
    try:
        return load_image(path, channels=channels)
    except FileNotFoundError:
        raise EditInputError(f"{what} {path}: no such file") from None
    except BadImageError as e:  # the user named it: a usage error here, not a bad file inside a dataset
        raise EditInputError(f"{what} {e}") from None


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, C]`` -> float ``[1, C, H, W]`` in [-1, 1] (the datasets' mapping, ``v / 127.5 - 1``)."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div(127.5).sub(1.0)[None]


def load_image_tensor(path: str | os.PathLike, loaded) -> torch.Tensor:
    """An image file as ``[1, C, H, W]`` in [-1, 1] with the model's channels and a size it can take."""
    t = to_tensor(read_uint8(path, image_channels(loaded)))
    check_size(loaded, t.shape[-2], t.shape[-1], what=f"image {path}: size")
    return t


def binary_mask(values: np.ndarray, source: str, threshold: int | None = None) -> torch.Tensor:
    """uint8 ``[H, W]`` gray levels -> ``[1, 1, H, W]`` bool (True = fill = white).

    Without ``threshold`` the mask must hold only 0 and 255; ``threshold`` T in [1, 255] marks ``v >= T``
    as fill. Raises :class:`EditInputError` for other values, or when nothing is to be filled.
    """
    if threshold is None:
        found = np.unique(values)
        other = found[(found != 0) & (found != 255)]
        if other.size:
            shown = ", ".join(str(int(v)) for v in found[:10]) + (", ..." if found.size > 10 else "")
            raise EditInputError(f"mask {source}: not binary: found {found.size} gray levels ({shown}); a mask "
                                 "holds only 0 (keep) and 255 (fill); pass --threshold T (1-255) to mark values "
                                 ">= T as fill")
        fill = values == 255
    else:
        if not 1 <= int(threshold) <= 255:
            raise EditInputError(f"--threshold {threshold}: must be in [1, 255]")
        fill = values >= int(threshold)
    if not fill.any():
        raise EditInputError(f"mask {source}: empty: no pixel to fill (white = fill)")
    return torch.from_numpy(np.ascontiguousarray(fill))[None, None]


def load_mask(path: str | os.PathLike, size: tuple[int, int], threshold: int | None = None) -> torch.Tensor:
    """A mask image (white = fill) of the image's ``(H, W)`` as ``[1, 1, H, W]`` bool (see :func:`binary_mask`)."""
    arr = read_uint8(path, 1, what="mask")[..., 0]
    if arr.shape != tuple(size):
        raise EditInputError(f"mask {path}: size {arr.shape[0]}x{arr.shape[1]} (HxW) differs from the image's "
                             f"{size[0]}x{size[1]}; the mask must have the image's size")
    return binary_mask(arr, str(path), threshold)


def parse_box(text: str, size: tuple[int, int], option: str = "--box") -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (pixels, x1/y1 exclusive) inside an image of ``(H, W)``."""
    h, w = size
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise EditInputError(f"{option}: expected four integers x0,y0,x1,y1, got {text!r}") from None
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise EditInputError(f"{option} {text}: needs 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (the image is "
                             f"{w} wide, {h} high; x1 and y1 are exclusive)")
    return x0, y0, x1, y1


def box_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """``[1, 1, H, W]`` bool, True inside ``box = (x0, y0, x1, y1)`` (x1, y1 exclusive)."""
    x0, y0, x1, y1 = box
    mask = torch.zeros(1, 1, *size, dtype=torch.bool)
    mask[..., y0:y1, x0:x1] = True
    return mask


def _check_images(loaded, images: torch.Tensor, what: str = "images") -> torch.Tensor:
    if images.dim() == 3:
        images = images[None]
    c = image_channels(loaded)
    if images.dim() != 4 or images.shape[1] != c:
        raise EditInputError(f"{what}: expected [N, {c}, H, W] (this model's {c} channels), got "
                             f"{tuple(images.shape)}")
    check_size(loaded, images.shape[-2], images.shape[-1], what=f"{what}: size")
    return images.float()


def _check_steps(steps: int, loaded) -> None:
    T = loaded.process.num_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise EditInputError(f"steps={steps}: must be an integer in [1, {T}] (the model's T)")


def _check_fill_mask(mask, image: torch.Tensor) -> torch.Tensor:
    """``[1 or N, 1, H, W]`` bool (or 0/1) like ``image`` and not empty -> bool."""
    mask = torch.as_tensor(mask)
    if mask.dim() == 3:
        mask = mask[None]
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:] \
            or mask.shape[0] not in (1, image.shape[0]):
        raise EditInputError(f"mask: expected [1 or N, 1, {image.shape[-2]}, {image.shape[-1]}] like the image, "
                             f"got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        found = torch.unique(mask.float())
        if bool(((found != 0) & (found != 1)).any()):
            raise EditInputError(f"mask: not binary: found values {[round(float(v), 4) for v in found[:10]]}; a "
                                 "mask holds only 0 (keep) and 1 (fill), or True/False")
        mask = mask > 0.5
    if not bool(mask.any()):
        raise EditInputError("mask: empty: no pixel to fill")
    return mask


def _cond(labels: torch.Tensor | None, n: int, loaded, device, prompts: str | list[str] | None = None) -> Cond | None:
    """The condition of ``n`` edited images: class labels, or for a text model a prompt (one for all, or one
    per image; none = the empty prompt, the unconditional branch), through ``loaded.make_cond``."""
    accepts = getattr(loaded.conditioner, "accepts", ()) or ()
    if prompts is not None or "prompts" in accepts:
        if "prompts" not in accepts:
            raise EditInputError("prompt: this model does not take prompts (it is not a text-conditional model)")
        prompts = [prompts] * n if isinstance(prompts, str) else [""] * n if prompts is None else list(prompts)
        if len(prompts) != n:
            raise EditInputError(f"prompts: {len(prompts)} given for {n} images; give one, or one per image")
        return loaded.make_cond(n, labels=labels, prompts=prompts).to(device)
    k = loaded.config.unet.num_classes
    if labels is None:
        if k is not None:
            raise EditInputError(f"labels: this model is class-conditional ({k} classes); pass one label per image")
        return None
    if k is None:
        raise EditInputError("labels: this model is not class-conditional")
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.numel() != n or bool(((labels < 0) | (labels >= k)).any()):
        raise EditInputError(f"labels {labels.tolist()}: need {n} classes in [0, {k - 1}]")
    return Cond(class_labels=labels.to(device))


def _model(loaded, guidance_scale: float):
    return loaded.denoiser if guidance_scale == 1.0 else ClassifierFreeGuidance(loaded.denoiser, guidance_scale)


def _device(loaded) -> torch.device:
    return next(loaded.denoiser.parameters()).device


# ------------------------------------------------------------------------------------------- RePaint
@torch.no_grad()
def inpaint(loaded, image: torch.Tensor, mask: torch.Tensor, *, steps: int, resample: int = 1, seed: int = 0,
            jump_length: int | None = None, labels: torch.Tensor | None = None,
            guidance_scale: float = 1.0, progress: Callable[[int], None] | None = None,
            prompts: str | list[str] | None = None) -> torch.Tensor:
    """RePaint inpainting (Lugmayr et al. 2022) of ``image`` where ``mask`` is True, with any model.

    Latent models: the image is encoded (posterior mean), the mask max-pooled to the latent grid, RePaint
    runs on the latents, and after decoding the known pixels are pasted back from ``image``, so the known
    region of the output equals the input exactly (in pixel space the chain already keeps it exactly).
    Images are at the data's own size: the training padding (``data.pad_to``) is added for the model (and
    kept, never filled) and removed again by ``space.decode``.

    Args:
        loaded: a ``pipelines.LoadedModel``.
        image: ``[N, C, H, W]`` (or ``[C, H, W]``) in [-1, 1]; H and W multiples of :func:`size_factor`.
        mask: ``[N or 1, 1, H, W]`` bool (or 0/1), True = fill.
        steps: grid length T' (uniform grid); resample: R; jump_length: j (default ``min(10, T' - 1)``).
        seed: image ``i`` uses ``seed + i``; labels: ``[N]`` for class-conditional models.
        progress: called with 1 after each denoiser evaluation (:func:`inpaint_evaluations` in all).

    Returns:
        ``[N, C, H, W]`` in [-1, 1].
    """
    if concat_task(loaded) != "none":
        raise EditInputError(f"RePaint: this model is a trained {concat_task(loaded)} model (cond.concat); "
                             "use inpaint_concat for an inpainting model, upscale for super-resolution")
    image = _check_images(loaded, image, "image")
    mask = _check_fill_mask(mask, image)
    _check_steps(steps, loaded)
    if resample < 1:
        raise EditInputError(f"resample={resample}: must be >= 1")
    if resample > 1 and jump_length is not None and not 1 <= jump_length < steps:
        raise EditInputError(f"jump_length={jump_length}: must be in [1, steps - 1 = {steps - 1}]")
    device, n = _device(loaded), image.shape[0]
    cond = _cond(labels, n, loaded, device, prompts)
    space = loaded.space
    known = space.encode_params(space.pad(image).to(device))[0]
    fill = latent_mask(pad_mask(space, mask).to(device), int(space.factor))
    gens = make_generators([seed + i for i in range(n)], device)
    x_T = randn(tuple(known.shape), gens, device=device)
    grid = make_timestep_grid("uniform", loaded.process.num_timesteps, steps)
    z = sample_repaint(_model(loaded, guidance_scale), x_T, grid, loaded.process, known=known, mask=fill,
                       cond=cond, generator=gens, resample=resample, jump_length=jump_length,
                       variance_type=loaded.config.diffusion.variance_type,
                       clip_denoised=space.clip_denoised,
                       callback=None if progress is None else (lambda info: progress(1)))
    out = space.decode(z).clamp(-1, 1).cpu()
    return torch.where(mask.expand_as(image), out, image)  # paste the known pixels back (exact after decode)


def inpaint_evaluations(steps: int, resample: int = 1, jump_length: int | None = None) -> int:
    """Denoiser evaluations of one :func:`inpaint` run (RePaint's schedule: the jumps add ``(R - 1) j`` each)."""
    j = max(1, min(10, steps - 1)) if jump_length is None else jump_length
    return sum(1 for move in repaint_schedule(steps, j, resample) if move < 0)


# ------------------------------------------------------------------------------------------- trained concat models
def concat_task(loaded) -> str:
    """What a model was trained for by concat conditioning (``cond.concat``): ``"none"``,
    ``"super_resolution"`` or ``"inpainting"``."""
    cond = getattr(loaded.config, "cond", None)
    return getattr(cond, "concat", "none") or "none"


def concat_part(loaded, task: str, use: str):
    """The model's ConcatKind (``conditioning/concat.py``) when it was trained for ``task``, else an
    :class:`EditInputError` naming its task and what ``use`` needs."""
    have = concat_task(loaded)
    if have != task:
        what = "an unconditional or class-conditional model" if have == "none" else f"a {have} model"
        raise EditInputError(f"{loaded.path}: this is {what} (cond.concat={have!r}); {use} needs a model trained "
                             f"with cond.concat={task!r}")
    return loaded.conditioner.parts["concat"]


def _concat_settings(loaded, steps: int | None, sampler: str | None, eta: float | None) -> dict:
    cfg = loaded.config
    if steps is None:  # `is None`: a stored steps of 0 must not become all T steps
        steps = loaded.process.num_timesteps if cfg.sample.steps is None else cfg.sample.steps
    _check_steps(steps, loaded)
    sampler = sampler or cfg.sample.sampler
    lookup(SAMPLERS, sampler, "sampler")
    return {"steps": steps, "sampler": sampler, "eta": cfg.sample.eta if eta is None else eta,
            "variance_type": cfg.diffusion.variance_type}


def _request(loaded, n: int, **request) -> Cond | None:
    try:
        return loaded.conditioner.from_request(n, space=loaded.space, device=_device(loaded), **request)
    except ValueError as e:  # ConcatInputError and the conditioner's checks: the same usage error here
        raise EditInputError(str(e)) from None


def upscaled_size(loaded, low_size: tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` that :func:`upscale` makes of low-res images of ``low_size``: ``cond.sr.factor`` x larger,
    checked by :func:`check_size` (an :class:`EditInputError` naming both sizes when it does not fit)."""
    kind = concat_part(loaded, "super_resolution", "upscale")
    h, w = kind.output_size(tuple(low_size))
    check_size(loaded, h, w, what=f"low-res size {low_size[0]}x{low_size[1]} x{kind.cfg.factor} = output size")
    return h, w


@torch.no_grad()
def upscale(loaded, low_res: torch.Tensor, *, steps: int | None = None, seed: int = 0, sampler: str | None = None,
            eta: float | None = None, batch_size: int = 64,
            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Super-resolution with a model trained on concatenated low-res images (Rombach et al. 2022, Sec. 4.4).

    The low-res images (already degraded: given as they are, no noise added) are embedded by the model's
    ``super_resolution`` ConcatKind (bicubic x factor, padding, resize or encode to the ``x_t`` grid;
    ``conditioning/concat.py``) and ``pipelines.generate`` samples ``factor`` x larger images with them.

    Args:
        loaded: a ``pipelines.LoadedModel`` with ``cond.concat: super_resolution``.
        low_res: ``[N, C, h, w]`` (or ``[C, h, w]``) in [-1, 1]; ``factor x (h, w)`` must fit the model
            (:func:`check_size`), e.g. 7x7 -> 28x28 for the Fashion-MNIST preset.
        steps, sampler, eta: default the checkpoint config's ``sample`` section; seed: image ``i`` uses ``seed + i``.
        progress: called with the number of images finished after each batch.

    Returns:
        ``[N, C, factor h, factor w]`` in [-1, 1].
    """
    low = torch.as_tensor(low_res)
    low = low[None] if low.dim() == 3 else low
    c = image_channels(loaded)
    if low.dim() != 4 or low.shape[1] != c:
        raise EditInputError(f"low-res images: expected [N, {c}, h, w] (this model's {c} channels), got "
                             f"{tuple(low.shape)}")
    shape = shape_at(loaded, *upscaled_size(loaded, tuple(low.shape[-2:])))
    settings = _concat_settings(loaded, steps, sampler, eta)
    cond = _request(loaded, low.shape[0], images=low.float())
    return generate(loaded.denoiser, loaded.process, loaded.space, shape, n=low.shape[0], seed=seed, cond=cond,
                    batch_size=batch_size, progress=progress, **settings)


@torch.no_grad()
def inpaint_concat(loaded, image: torch.Tensor, mask: torch.Tensor, *, steps: int | None = None, seed: int = 0,
                   sampler: str | None = None, eta: float | None = None, batch_size: int = 64,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Inpainting with a model trained on ``[encoded masked image, mask]`` concat channels (Rombach et al.
    2022, Sec. 4.5): one plain sampling run (no RePaint resampling), the condition built by the model's
    ``inpainting`` ConcatKind; afterwards the known pixels are pasted back, so the known region of the output
    equals the input exactly.

    Args:
        image: ``[N, C, H, W]`` in [-1, 1] at the data's own size; mask: ``[1 or N, 1, H, W]`` bool (or 0/1),
            True = fill. steps, sampler, eta: default the checkpoint's ``sample`` section; seed: ``seed + i``.

    Returns:
        ``[N, C, H, W]`` in [-1, 1].
    """
    concat_part(loaded, "inpainting", "inpaint_concat")
    image = _check_images(loaded, image, "image")
    mask = _check_fill_mask(mask, image).expand(image.shape[0], -1, -1, -1)
    shape = shape_at(loaded, image.shape[-2], image.shape[-1], what="image: size")
    settings = _concat_settings(loaded, steps, sampler, eta)
    cond = _request(loaded, image.shape[0], images=image, masks=mask)
    out = generate(loaded.denoiser, loaded.process, loaded.space, shape, n=image.shape[0], seed=seed, cond=cond,
                   batch_size=batch_size, progress=progress, **settings)
    return torch.where(mask.expand_as(image), out, image)


# ------------------------------------------------------------------------------------------- SDEdit
@dataclass(frozen=True)
class Img2ImgRun:
    """What :func:`img2img` ran: ``steps_run`` denoising steps (``round(strength x steps)``) from process
    timestep ``t_start`` (``None``: nothing run, the input returned; ``T - 1`` at strength 1: pure noise)."""

    strength: float
    steps: int
    steps_run: int
    t_start: int | None
    sampler: str


@torch.no_grad()
def img2img(loaded, images: torch.Tensor, *, strength: float, steps: int, seed: int = 0,
            labels: torch.Tensor | None = None, sampler: str | None = None, eta: float | None = None,
            guidance_scale: float = 1.0, prompts: str | list[str] | None = None) -> tuple[torch.Tensor, Img2ImgRun]:
    """SDEdit (Meng et al. 2022, Sec. 3): noise the input to ``t0 ~ strength x T`` and denoise from there.

    Steps: 1. ``z0`` = the images (latent models: the first stage's posterior mean); 2. the sampler's full
    grid of ``steps`` entries is truncated to its last ``K = round(strength x steps)`` (its smallest
    timesteps; ``t0`` = the largest of them); 3. ``x_t0 = q_sample(z0, t0, eps)``; at strength 1 the chain
    starts from pure noise instead, exactly as ``pipelines.generate`` (same seed, same result), so the
    input is ignored; 4. the model's sampler runs on the truncated grid; 5. decode. ``K = 0`` (strength 0,
    or below ``0.5 / steps``) returns the input unchanged.

    Args:
        images: ``[N, C, H, W]`` in [-1, 1]; strength: in [0, 1]; steps: grid length at strength 1.
        sampler, eta: default the checkpoint config's ``sample`` section; seed: image ``i`` uses ``seed + i``.
        labels / prompts: the condition of a class- / text-conditional model (a text model without a prompt
            edits unconditionally: the empty prompt).

    Returns:
        (images ``[N, C, H, W]`` in [-1, 1], :class:`Img2ImgRun`).
    """
    images = _check_images(loaded, images, "images")
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise EditInputError(f"strength={strength!r}: must be a number in [0, 1]") from None
    if not 0.0 <= strength <= 1.0:  # also refuses NaN
        raise EditInputError(f"strength={strength}: must be in [0, 1] (0 returns the input, 1 ignores it)")
    _check_steps(steps, loaded)
    cfg = loaded.config
    sampler = sampler or cfg.sample.sampler
    spec = lookup(SAMPLERS, sampler, "sampler")
    k = steps_run(strength, steps)
    device, n = _device(loaded), images.shape[0]
    cond = _cond(labels, n, loaded, device, prompts)
    if k == 0:
        return images.clone(), Img2ImgRun(strength, steps, 0, None, sampler)
    space, process = loaded.space, loaded.process
    grid = make_timestep_grid(spec.grid, process.num_timesteps, steps, alphas_cumprod=process.alphas_cumprod)
    grid = grid[len(grid) - k:]
    t_start = int(grid[0])
    gens = make_generators([seed + i for i in range(n)], device)
    z0 = space.encode_params(space.pad(images).to(device))[0]
    noise = randn(tuple(z0.shape), gens, device=device)
    x = noise if strength == 1.0 else process.q_sample(z0, torch.full((n,), t_start, dtype=torch.int64,
                                                                 device=device), noise)
    options = sampler_options(sampler, variance_type=cfg.diffusion.variance_type,
                              clip_denoised=space.clip_denoised, eta=cfg.sample.eta if eta is None else eta)
    z = spec.fn(_model(loaded, guidance_scale), x.to(torch.get_default_dtype()), grid, process, cond=cond,
                generator=gens, **options)
    return space.decode(z).clamp(-1, 1).cpu(), Img2ImgRun(strength, steps, k, t_start, sampler)


def steps_run(strength: float, steps: int) -> int:
    """Denoising steps SDEdit runs: ``round(strength x steps)`` (Python's round: halves to even)."""
    return round(strength * steps)


__all__ = [
    "EditInputError",
    "Img2ImgRun",
    "binary_mask",
    "box_mask",
    "canvas_size",
    "check_size",
    "concat_part",
    "concat_task",
    "image_channels",
    "img2img",
    "inpaint",
    "inpaint_concat",
    "inpaint_evaluations",
    "latent_mask",
    "load_image_tensor",
    "load_mask",
    "pad_mask",
    "parse_box",
    "parse_size",
    "read_uint8",
    "shape_at",
    "size_factor",
    "steps_run",
    "to_tensor",
    "upscale",
    "upscaled_size",
]
