"""Teaching figures of a trained model, as the papers draw them: the forward process on real images, the
reverse process (x_t and the predicted x0 along a sampler's run), and the model's noise schedule.

    noising = forward_noising(loaded, images, [0, 100, 500, 999], seed=0)   # q(x_t | x0), Ho et al. Eq. 4
    img = noising_figure(noising)                                           # rows: images, columns: t
    traj = reverse_trajectory(loaded, 2, sampler="ddim", steps=25, seed=0)  # the sampler's callback
    img = trajectory_figure(traj)                                           # two rows per sample
    img = schedule_figure(loaded.process)                                   # alpha-bar_t and log10 SNR_t

The ``forward_*`` / ``reverse_*`` / ``schedule_curves`` functions return the numbers (tensors in the space
where diffusion runs, and their decoded images); the ``*_figure`` functions only draw them (Pillow, the
default font). A latent model is noised and sampled in its latent space; every shown ``x_t`` is decoded
through the first stage (``space.decode``), so its pictures are decoded latents, not noisy pixels.

Code name -> paper symbol: ``x0`` x_0, ``x_t`` x_t, ``eps`` epsilon, ``alphas_cumprod`` alpha-bar_t,
``log_snr`` log(alpha-bar_t / (1 - alpha-bar_t)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ldmkit.images import make_grid, to_uint8
from ldmkit.types import Cond

CELL_MIN = 64  # cells are enlarged (nearest) to at least this many pixels a side, so labels fit


# ------------------------------------------------------------------------------------------- inputs
def dataset_images(loaded, n: int, split: str = "test") -> torch.Tensor:
    """The first ``n`` images ``[n, C, H, W]`` in [-1, 1] of the model's dataset (``split``, no flips), at the
    data's own size (what ``data.pad_to`` adds is removed; ``space.pad`` adds it back)."""
    from ldmkit.data import build_dataset, collate, data_padding

    data_cfg = loaded.config.data
    if data_cfg.name == "folder":  # an image folder has no split: its own images
        data_cfg = dataclasses.replace(data_cfg, hflip=False)
    else:
        data_cfg = dataclasses.replace(data_cfg, split=split, hflip=False, captions=False)
    ds = build_dataset(data_cfg)
    if len(ds) == 0:
        raise ValueError(f"the model's dataset ({data_cfg.name}, split {split}) holds no image")
    batch = collate([ds[i] for i in range(min(n, len(ds)))])
    return data_padding(data_cfg).crop(batch.images)


def check_timesteps(timesteps: Sequence[int], num_timesteps: int) -> list[int]:
    """``timesteps`` as ints, each in ``[0, T-1]``; raises ``ValueError`` naming the first bad value."""
    out = [int(t) for t in timesteps]
    if not out:
        raise ValueError("no timestep given")
    for t in out:
        if not 0 <= t < num_timesteps:
            raise ValueError(f"t={t} is outside [0, {num_timesteps - 1}] (this model's T = {num_timesteps})")
    return out


def _device(loaded) -> torch.device:
    return next(loaded.denoiser.parameters()).device


def _show(images: torch.Tensor) -> torch.Tensor:
    return images.clamp(-1.0, 1.0).cpu()


# ------------------------------------------------------------------------------------------- forward
@dataclass
class Noising:
    """The forward process on real images: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (one ``eps`` per
    image, shared by all its columns), in the space where diffusion runs.

    Attributes:
        inputs: the images ``[R, C, H, W]`` in [-1, 1] (data's own size).
        x0: ``[R, c, h, w]`` clean data in the diffusion space (latents of a latent model).
        eps: ``[R, c, h, w]`` the noise.
        x_t: ``[R, K, c, h, w]`` one column per timestep.
        images: ``[R, K, C, H, W]`` ``x_t`` decoded (identity for pixels, bar the padding) and clipped to [-1, 1].
        timesteps: the K timesteps; latent: whether ``x_t`` are latents (then ``images`` are decoded latents).
    """

    inputs: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    x_t: torch.Tensor
    images: torch.Tensor
    timesteps: list[int]
    latent: bool


@torch.no_grad()
def forward_noising(loaded, images: torch.Tensor, timesteps: Sequence[int], *, seed: int = 0) -> Noising:
    """Draw q(x_t | x0) (Ho et al. 2020, Eq. 4) for each image at each timestep, with ``GaussianProcess.q_sample``.

    Args:
        loaded: a ``pipelines.LoadedModel`` (its process and space).
        images: ``[R, C, H, W]`` in [-1, 1] at the data's own size.
        timesteps: each in ``[0, T-1]``.
        seed: image ``i`` draws its ``eps`` (and a latent model's posterior sample) from ``seed + i``.
    """
    from ldmkit.samplers import make_generators, randn

    process, space = loaded.process, loaded.space
    timesteps = check_timesteps(timesteps, process.num_timesteps)
    device = _device(loaded)
    x = space.pad(images.to(device))
    gens = make_generators([seed + i for i in range(len(images))], device)
    # each image encodes alone with its own generator, so row i depends on seed + i only
    x0 = torch.cat([space.encode(x[i:i + 1], generator=gens[i]) for i in range(len(x))])
    eps = randn(x0.shape, gens, device=device, dtype=x0.dtype)
    cols = [process.q_sample(x0, torch.full((len(x0),), t, dtype=torch.int64, device=device), eps)
            for t in timesteps]
    x_t = torch.stack(cols, dim=1)
    decoded = torch.stack([_show(space.decode(c)) for c in cols], dim=1)
    return Noising(images.cpu(), x0.cpu(), eps.cpu(), x_t.cpu(), decoded, timesteps,
                   latent=loaded.config.first_stage is not None)


def noising_figure(noising: Noising) -> Image.Image:
    """The forward-process figure: one row per image, the input first, then one column per timestep."""
    cells = torch.cat([noising.inputs.clamp(-1, 1)[:, None], noising.images], dim=1)
    what = "decoded latent x_t" if noising.latent else "x_t"
    title = f"forward process q(x_t | x_0): {what} = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps"
    cols = ["input"] + [f"t={t}" for t in noising.timesteps]
    rows = [f"#{i}" for i in range(len(cells))]
    return labeled_grid(to_uint8(cells.flatten(0, 1)).reshape(*cells.shape[:2], *_hwc(cells)), cols, rows, title)


# ------------------------------------------------------------------------------------------- reverse
@dataclass
class Trajectory:
    """A sampler's run, recorded at chosen steps through its ``callback``.

    Attributes:
        steps: the recorded step indices ``i`` (0..K-1; the last step always included).
        timesteps: the timestep each recorded step started from.
        x_t: ``[N, S, c, h, w]`` the state each recorded step started from (``x_T`` at step 0).
        x0: ``[N, S, c, h, w]`` the predicted x0 of those steps (after the sampler's clipping, if any).
        sample: ``[N, c, h, w]`` the sampler's result (clean latents of a latent model).
        x_t_images, x0_images: ``[N, S, C, H, W]`` decoded and clipped; images: ``[N, C, H, W]`` the result's.
        num_steps: K, the sampler's grid length; latent: whether the states are latents.
    """

    steps: list[int]
    timesteps: list[int]
    x_t: torch.Tensor
    x0: torch.Tensor
    sample: torch.Tensor
    x_t_images: torch.Tensor
    x0_images: torch.Tensor
    images: torch.Tensor
    num_steps: int
    latent: bool


def default_every(num_steps: int, columns: int = 8) -> int:
    """The ``every`` that shows about ``columns`` steps of a ``num_steps``-step run."""
    return max(1, math.ceil(num_steps / columns))


@torch.no_grad()
def reverse_trajectory(loaded, n: int, *, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
                       seed: int = 0, cond: Cond | None = None, guidance_scale: float = 1.0,
                       every: int | None = None) -> Trajectory:
    """Run the model's sampler as ``LoadedModel.generate`` does (same grid, options, per-sample seeds, guidance),
    recording x_t and the predicted x0 every ``every``-th step through the sampler's ``callback``.

    The result's ``images`` equal ``loaded.generate(n, sampler=..., steps=..., eta=..., seed=..., cond=...,
    guidance_scale=...)``.

    Args:
        steps: the grid length K (``None``: all T); every: record steps ``0, every, 2 every, ...`` and the last
            (default :func:`default_every`).
    """
    process, space = loaded.process, loaded.space
    num_steps = steps or process.num_timesteps
    every = default_every(num_steps) if every is None else int(every)
    if not 1 <= every <= num_steps:
        raise ValueError(f"every={every} is outside [1, {num_steps}] (the sampler's {num_steps} steps)")
    record: dict[str, list] = {"steps": [], "timesteps": [], "x_t": [], "x0": []}
    last: dict = {}

    def keep(info: dict) -> None:
        record["steps"].append(int(info["i"]))
        record["timesteps"].append(int(info["t"]))
        record["x_t"].append(info["x_t"].detach().clone())
        record["x0"].append(info["prediction"].x0.detach().clone())

    def callback(info: dict) -> None:
        if info["i"] % every == 0:
            keep(info)
        last.update(info)

    images = loaded.generate(n, sampler=sampler, steps=steps, eta=eta, seed=seed, cond=cond,
                             guidance_scale=guidance_scale, batch_size=n, callback=callback)
    if record["steps"][-1] != last["i"]:  # the last step is always shown
        keep(last)
    sample, grid_len = last["x"], int(last["i"]) + 1
    x_t, x0 = torch.stack(record["x_t"], dim=1), torch.stack(record["x0"], dim=1)
    return Trajectory(record["steps"], record["timesteps"], x_t.cpu(), x0.cpu(), sample.cpu(),
                      _decode_columns(space, x_t), _decode_columns(space, x0), _show(images),
                      grid_len, latent=loaded.config.first_stage is not None)


def _decode_columns(space, x: torch.Tensor) -> torch.Tensor:
    """``[N, S, c, h, w]`` -> decoded ``[N, S, C, H, W]`` in [-1, 1]."""
    return torch.stack([_show(space.decode(x[:, s])) for s in range(x.shape[1])], dim=1)


def trajectory_figure(traj: Trajectory) -> Image.Image:
    """The reverse-process figure: per sample a row of x_t and a row of the predicted x0 at the recorded steps,
    then the sampler's output."""
    n = traj.images.shape[0]
    rows, names = [], []
    what = "x_t (decoded)" if traj.latent else "x_t"
    for i in range(n):
        out = traj.images[i][None]
        rows.append(torch.cat([traj.x_t_images[i], out]))
        rows.append(torch.cat([traj.x0_images[i], out]))
        names += [f"#{i} {what}", f"#{i} pred. x0"]
    cells = torch.stack(rows)
    cols = [f"t={t}" for t in traj.timesteps] + ["output"]
    title = f"reverse process: x_t and the predicted x0 at {len(traj.steps)} of {traj.num_steps} sampler steps"
    return labeled_grid(to_uint8(cells.flatten(0, 1)).reshape(*cells.shape[:2], *_hwc(cells)), cols, names, title)


# ------------------------------------------------------------------------------------------ schedule
def schedule_curves(process) -> dict[str, np.ndarray]:
    """The schedule of a ``GaussianProcess`` as arrays ``[T]``: ``t`` (0..T-1), ``alphas_cumprod`` (alpha-bar_t)
    and ``log_snr`` = log(alpha-bar_t / (1 - alpha-bar_t)) (natural log; -inf where alpha-bar_t = 0)."""
    abar = np.asarray(torch.as_tensor(process.alphas_cumprod).detach().cpu().to(torch.float64).numpy())
    with np.errstate(divide="ignore"):
        log_snr = np.log(abar) - np.log1p(-abar)
    return {"t": np.arange(len(abar)), "alphas_cumprod": abar, "log_snr": log_snr}


def schedule_figure(process, label: str = "this model") -> Image.Image:
    """alpha-bar_t and log10 SNR_t of ``process`` drawn by ``ldmkit schedule plot``'s plotter
    (``training.plot.plot_schedules``), returned as an image."""
    import tempfile
    from pathlib import Path

    from ldmkit.training.plot import plot_schedules

    curves = schedule_curves(process)
    with tempfile.TemporaryDirectory() as tmp:  # the plotter writes files; it is reused, not copied
        path = plot_schedules({label: curves["alphas_cumprod"]}, Path(tmp) / "schedule.png")
        with Image.open(path) as im:
            return im.convert("RGB")


# ------------------------------------------------------------------------------------------- drawing
def _hwc(cells: torch.Tensor) -> tuple[int, int, int]:
    """``(H, W, C)`` of the images in a ``[R, K, C, H, W]`` tensor."""
    return int(cells.shape[-2]), int(cells.shape[-1]), int(cells.shape[-3])


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def labeled_grid(cells: np.ndarray, col_labels: Sequence[str], row_labels: Sequence[str], title: str = "",
                 padding: int = 2) -> Image.Image:
    """uint8 cells ``[R, K, H, W, C]`` as one RGB picture: ``make_grid`` enlarged (nearest) to cells of at
    least :data:`CELL_MIN` pixels, column labels above, row labels on the left, ``title`` on top."""
    rows, cols, h, w, _ = cells.shape
    if len(col_labels) != cols or len(row_labels) != rows:
        raise ValueError(f"labeled_grid: {cols} columns / {rows} rows but {len(col_labels)} / {len(row_labels)} labels")
    grid = make_grid(cells.reshape(rows * cols, *cells.shape[2:]), nrow=cols, padding=padding)
    scale = max(1, math.ceil(CELL_MIN / min(h, w)))
    pil = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB")
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    font = _font(12)
    measure = ImageDraw.Draw(pil)
    left = 8 + int(max(measure.textlength(s, font=font) for s in row_labels))
    top = (24 if title else 0) + 20
    title_w = int(measure.textlength(title, font=font)) + 16 if title else 0
    canvas = Image.new("RGB", (max(left + pil.width, title_w), top + pil.height), "white")
    canvas.paste(pil, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((8, 6), title, fill="black", font=font)
    pitch_x, pitch_y = (w + padding) * scale, (h + padding) * scale
    for k, label in enumerate(col_labels):
        draw.text((left + padding * scale + k * pitch_x + w * scale / 2, top - 4), label, fill="black", font=font,
                  anchor="md")
    for r, label in enumerate(row_labels):
        draw.text((left - 4, top + padding * scale + r * pitch_y + h * scale / 2), label, fill="black", font=font,
                  anchor="rm")
    return canvas
