"""Where diffusion runs: pixel space (identity) or an autoencoder's latent space (Rombach et al. 2022).

Both classes have the same interface, so pixel DDPM and LDM share one code path:

    space = latent_space_for(config.first_stage, padding=data_padding(config.data))  # PixelSpace without one
    z = space.encode(images)                          # training: diffuse z instead of images
    images = space.decode(z)                          # sampling: decode the sampler's output

``LatentSpace`` multiplies latents by ``scale_factor`` (1 / std of the latents, measured once by
``ldmkit ae-stats CKPT_DIR`` and stored in the autoencoder's ``config.json``) so that they have roughly unit
variance, as the diffusion schedules assume. It is never estimated from the first training batch: a
checkpoint without ``scale_factor`` is refused.

Posterior: every first stage's ``encode`` returns a posterior with ``sample()`` / ``mode()``. For the KL
autoencoder ``encode`` draws a sample z ~ q(z|x) by default, as Rombach et al. do; ``posterior="mode"`` uses
the mean instead (deterministic, slightly sharper decodes). ``ae-stats`` records which one it measured and
``from_checkpoint`` uses the same one. A VQ autoencoder's posterior is a point mass at the quantised latent
(sample = mode); its ``decode`` quantises the sampler's output before decoding.

Data size: both spaces hold the ``ldmkit.data.Padding`` (or None) that ``data.pad_to`` added to the data's own images
(``ldmkit.data.data_padding``). ``encode`` takes images as the dataset yields them (padded); ``decode``
removes that padding again, so a model trained on Fashion-MNIST padded to 32x32 returns 28x28 images.
``space.pad(images)`` brings images at the data's own size (e.g. ``sample``'s output, an image to edit) to
the canvas ``encode`` expects, so ``decode(encode(pad(x)))`` has the size of ``x``. (The space duck-types
the padding, so latent.py does not import data/.)
"""

from __future__ import annotations

import math
import os
from typing import Literal

import torch
from torch import nn

PosteriorChoice = Literal["sample", "mode"]


def _crop(padding, images: torch.Tensor) -> torch.Tensor:
    """``padding.crop(images)``; ``padding`` is an ``ldmkit.data.Padding`` or None (nothing to remove)."""
    return images if padding is None else padding.crop(images)


def _pad(padding, images: torch.Tensor) -> torch.Tensor:
    """``padding.pad(images)``; None pads nothing."""
    return images if padding is None else padding.pad(images)


def _describe_padding(padding) -> dict:
    return {"padding": [padding.top, padding.bottom, padding.left, padding.right]} if padding else {}


class PixelSpace:
    """The identity "first stage": diffusion directly on images (LDM-1); ``decode`` removes ``padding``."""

    factor = 1
    scale_factor = 1.0
    clip_denoised = True  # x0 lives in [-1, 1]: samplers may clip it

    def __init__(self, padding=None):
        self.padding = padding if padding else None  # an empty Padding is no padding

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Samples at the training size -> images at the data's own size (what ``data.pad_to`` added removed)."""
        return _crop(self.padding, z)

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the data's own size -> the padded canvas the model works on (the inverse of the crop)."""
        return _pad(self.padding, images)

    def encode_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x, None

    def sample_from_params(self, mean: torch.Tensor, std: torch.Tensor | None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        return mean

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(image_shape)

    def to(self, device: torch.device | str) -> PixelSpace:
        return self

    def describe(self) -> dict:
        return {"type": "pixel", **_describe_padding(self.padding)}


class LatentSpace:
    """Encode to / decode from a frozen autoencoder's latent space, scaled by ``scale_factor``.

    Args:
        autoencoder: any first stage (``encode(x) -> posterior``, ``decode(z)``, ``factor``,
            ``latent_channels``): :class:`~ldmkit.autoencoders.AutoencoderKL`, :class:`~ldmkit.autoencoders.VQAutoencoder`.
        scale_factor: multiplies latents after encoding (divides before decoding); must be positive.
        posterior: ``sample`` (Rombach et al.) or ``mode`` (for VQ both give the quantised latent).
        padding: what ``data.pad_to`` added to the data's images; ``decode`` removes it.
    """

    clip_denoised = False  # latents are unbounded: never clip x0

    def __init__(self, autoencoder: nn.Module, scale_factor: float, posterior: PosteriorChoice = "sample",
                 padding=None):
        if scale_factor is None or not math.isfinite(float(scale_factor)) or float(scale_factor) <= 0.0:
            raise ValueError(f"LatentSpace: scale_factor must be a positive number, got {scale_factor!r}; "
                             "measure it with 'ldmkit ae-stats CKPT_DIR'")
        if posterior not in ("sample", "mode"):
            raise ValueError(f"LatentSpace: posterior must be 'sample' or 'mode', got {posterior!r}")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.posterior = posterior
        self.padding = padding if padding else None  # an empty Padding is no padding
        self.source: str | None = None

    @property
    def factor(self) -> int:
        return int(self.autoencoder.factor)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: torch.device | str = "cpu",
                        posterior: PosteriorChoice | None = None, padding=None) -> LatentSpace:
        """Load an autoencoder checkpoint (folder or run folder) that has a measured ``scale_factor``.

        Its ``config.json`` is read once, by ``load_autoencoder``; the space keeps what it needs of it.
        """
        from ldmkit.autoencoders.checkpoint import load_autoencoder

        ae, meta = load_autoencoder(path, device)
        if meta.get("scale_factor") is None:
            raise ValueError(f"first_stage {path}: {meta['folder']}/config.json has no scale_factor. Measure it "
                             f"once with 'ldmkit ae-stats {path}' (1 / std of the latents over a data sample) "
                             "before training a diffusion model in this latent space.")
        stats = meta.get("latent_stats") or {}
        space = cls(ae, meta["scale_factor"], posterior or stats.get("posterior", "sample"), padding)
        space.source = meta["folder"]
        return space

    @torch.no_grad()
    def encode_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled posterior mean and std ``[N, c, H/f, W/f]`` (std None: point-mass posterior, or ``mode``)."""
        post = self.autoencoder.encode(x)
        if self.posterior == "mode" or post.deterministic:
            return post.mode() * self.scale_factor, None
        return post.mean * self.scale_factor, post.std * self.scale_factor

    def sample_from_params(self, mean: torch.Tensor, std: torch.Tensor | None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """A latent from cached :meth:`encode_params` output (a fresh posterior sample per call)."""
        if std is None:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * eps

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [-1, 1] (as the dataset yields them) -> scaled latents ``[N, c, H/f, W/f]``."""
        return self.sample_from_params(*self.encode_params(x), generator=generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images at the data's own size (VQ: quantised first; ``padding`` removed)."""
        return _crop(self.padding, self.autoencoder.decode(z / self.scale_factor))

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the data's own size -> the padded canvas ``encode`` expects (the inverse of the crop)."""
        return _pad(self.padding, images)

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        _, h, w = image_shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"image size {h}x{w} is not divisible by the autoencoder's factor f={f}")
        return (int(self.autoencoder.latent_channels), h // f, w // f)

    def to(self, device: torch.device | str) -> LatentSpace:
        self.autoencoder.to(device)
        return self

    def describe(self) -> dict:
        return {"type": self.autoencoder.config.type, "factor": self.factor, "scale_factor": self.scale_factor,
                "posterior": self.posterior, "source": self.source, **_describe_padding(self.padding)}


def latent_space_for(first_stage: str | os.PathLike | None, device: torch.device | str = "cpu",
                     padding=None):
    """``PixelSpace(padding)`` when ``first_stage`` is None, else ``LatentSpace.from_checkpoint(first_stage)``."""
    if first_stage is None:
        return PixelSpace(padding)
    return LatentSpace.from_checkpoint(first_stage, device, padding=padding)


@torch.no_grad()
def cache_latents(space, images: torch.Tensor, batch_size: int = 256,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode a dataset once (latent caching): scaled means and stds ``[N, c, h, w]`` on the CPU.

    Draw training latents with ``space.sample_from_params(mean[idx], std[idx])``, which keeps Rombach et al.'s
    fresh posterior sample per step while running the encoder only once.
    """
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        m, s = space.encode_params(images[i:i + batch_size].to(device))
        means.append(m.cpu())
        if s is not None:
            stds.append(s.cpu())
    return torch.cat(means), (torch.cat(stds) if stds else None)


class CachedLatents:
    """A batch source whose batches also carry their items' cached first-stage posteriors (latent caching).

    Wraps a batch source (``len`` and ``batch(indices) -> Batch``) of a latent diffusion run: each batch gets
    ``batch.extra["latent_params"] = (mean, std)`` (scaled, ``std`` None for a point-mass posterior), which
    :class:`~ldmkit.pipelines.DiffusionLoss` turns into a fresh posterior sample, so the encoder runs once per
    item instead of once per step. Items are encoded lazily in fixed chunks of ``chunk`` consecutive indices,
    so every cached value depends on its chunk alone: a resumed run recomputes exactly what it had. The
    source's ``batch`` must not draw random numbers (no random flips).
    """

    def __init__(self, data, space: LatentSpace, chunk: int = 256):
        if not isinstance(space, LatentSpace):
            raise TypeError("CachedLatents: latent caching needs a first stage (a LatentSpace), got "
                             f"{type(space).__name__}")
        self.data, self.space, self.chunk = data, space, int(chunk)
        self.num_chunks = -(-len(data) // self.chunk)
        self.encoded = torch.zeros(self.num_chunks, dtype=torch.bool)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.data)

    def _fill(self, k: int) -> None:
        idx = torch.arange(k * self.chunk, min(len(self.data), (k + 1) * self.chunk))
        device = next(self.space.autoencoder.parameters()).device
        mean, std = self.space.encode_params(self.data.batch(idx).images.to(device))
        if self.mean is None:
            self.mean = torch.empty((len(self.data), *mean.shape[1:]), dtype=mean.dtype)
            self.std = None if std is None else torch.empty_like(self.mean)
        self.mean[idx] = mean.cpu()
        if std is not None:
            self.std[idx] = std.cpu()
        self.encoded[k] = True

    def batch(self, indices: torch.Tensor):
        batch = self.data.batch(indices)
        for k in torch.unique(indices // self.chunk).tolist():
            if not self.encoded[k]:
                self._fill(int(k))
        batch.extra["latent_params"] = (self.mean[indices], None if self.std is None else self.std[indices])
        return batch


@torch.no_grad()
def measure_scale_factor(autoencoder: nn.Module, images: torch.Tensor, posterior: PosteriorChoice = "sample",
                         batch_size: int = 256, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> tuple[float, dict]:
    """``1 / std`` of all latent elements over ``images`` (unscaled latents), and summary statistics."""
    space = LatentSpace(autoencoder, 1.0, posterior)
    total, total_sq, count = 0.0, 0.0, 0
    chan_sum = chan_sq = None
    for i in range(0, len(images), batch_size):
        z = space.encode(images[i:i + batch_size].to(device), generator=generator).double()
        total += float(z.sum())
        total_sq += float(z.pow(2).sum())
        count += z.numel()
        cs, cq = z.sum(dim=(0, 2, 3)), z.pow(2).sum(dim=(0, 2, 3))
        chan_sum = cs if chan_sum is None else chan_sum + cs
        chan_sq = cq if chan_sq is None else chan_sq + cq
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if not std > 0:
        raise ValueError("latent std is zero; is the autoencoder trained?")
    per_chan = count // chan_sum.numel()
    chan_mean = chan_sum / per_chan
    chan_std = (chan_sq / per_chan - chan_mean.pow(2)).clamp_min(0).sqrt()
    stats = {"num_images": len(images), "posterior": posterior, "mean": mean, "std": std,
             "channel_mean": [round(float(v), 6) for v in chan_mean],
             "channel_std": [round(float(v), 6) for v in chan_std]}
    return 1.0 / std, stats
