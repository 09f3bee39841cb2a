"""Noise schedules beta_1..beta_T (float64 numpy) and a Pillow plot of their alpha-bar and SNR curves.

Schedules (``SCHEDULES``):

- ``linear``: Ho et al. 2020, Sec. 4: beta linear from 1e-4 to 0.02 at T=1000. For other T both ends are
  multiplied by ``1000 / T`` (as improved-diffusion does), so alpha-bar_T stays about the same.
- ``cosine``: Nichol & Dhariwal 2021, Eq. 17: alpha-bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2,
  s = 0.008, beta_t = 1 - alpha-bar_t / alpha-bar_{t-1} clipped at 0.999.
- ``scaled_linear``: Rombach et al. 2022 (LDM / Stable Diffusion): sqrt(beta) linear from sqrt(0.00085) to
  sqrt(0.012). Not rescaled with T (as in the LDM code).
- ``sigmoid``: Chen 2023, "On the Importance of Noise Scheduling for Diffusion Models", Alg. 1 with
  start=-3, end=3, tau=1: alpha-bar(t) = (sigmoid(end/tau) - sigmoid((t(end-start)+start)/tau)) /
  (sigmoid(end/tau) - sigmoid(start/tau)), betas derived and clipped at 0.999 as for cosine.

``rescale_zero_terminal_snr=True`` applies Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
Steps are Flawed", Alg. 1: sqrt(alpha-bar) is shifted and scaled so that its first value is unchanged and
its last is exactly 0 (beta_T = 1, SNR_T = 0). Use it with v-prediction: an eps-prediction model cannot
recover x0 at SNR 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_BETA = 0.999


def _linear(num_timesteps: int) -> np.ndarray:
    scale = 1000.0 / num_timesteps
    if scale * 0.02 >= 1.0:
        raise ValueError(f"the linear schedule needs num_timesteps > 20 (its last beta, 0.02 * 1000 / T, must stay "
                         f"below 1); got {num_timesteps}. Use 'cosine' or respace a longer process instead")
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def _betas_from_alpha_bar_fn(fn, num_timesteps: int) -> np.ndarray:
    """beta_t = 1 - abar(t/T) / abar((t-1)/T), clipped at ``MAX_BETA`` (Nichol & Dhariwal 2021, Sec. 3.2)."""
    grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = fn(grid)
    betas = 1.0 - abar[1:] / abar[:-1]
    return np.clip(betas, 0.0, MAX_BETA)


def _cosine(num_timesteps: int, s: float = 0.008) -> np.ndarray:
    return _betas_from_alpha_bar_fn(lambda u: np.cos((u + s) / (1 + s) * math.pi / 2) ** 2, num_timesteps)


def _scaled_linear(num_timesteps: int) -> np.ndarray:
    return np.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=np.float64) ** 2


def _sigmoid(num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    v_start, v_end = sig(start / tau), sig(end / tau)
    return _betas_from_alpha_bar_fn(
        lambda u: (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start), num_timesteps
    )


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "scaled_linear": _scaled_linear,
    "sigmoid": _sigmoid,
}


def rescale_betas_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Zero-terminal-SNR rescaling, Lin et al. 2024, Alg. 1.

    Args:
        betas: ``[T]`` float64.

    Returns:
        ``[T]`` float64 betas whose sqrt(alpha-bar) is linearly remapped so that sqrt(alpha-bar_1) is kept
        and sqrt(alpha-bar_T) = 0, hence ``betas[-1] == 1``.
    """
    sqrt_abar = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def get_betas(name: str, num_timesteps: int = 1000, *, rescale_zero_terminal_snr: bool = False) -> np.ndarray:
    """Noise schedule ``name`` (one of ``SCHEDULES``) as ``[T]`` float64 betas.

    Args:
        name: ``linear``, ``cosine``, ``scaled_linear`` or ``sigmoid`` (see the module docstring).
        num_timesteps: T >= 1.
        rescale_zero_terminal_snr: apply Lin et al. 2024, Alg. 1 (beta_T = 1).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or T < 1.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    betas = SCHEDULES[name](int(num_timesteps))
    if rescale_zero_terminal_snr:
        betas = rescale_betas_zero_terminal_snr(betas)
    return betas


# ----------------------------------------------------------------------------------------------- plotting

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _draw_panel(draw, box, curves, *, title, y_range, y_ticks, y_fmt, font, small_font):
    """One line chart: axes, ticks, grid and ``curves`` = [(x [K] in [0, 1], y [K], color)]."""
    left, top, right, bottom = box
    y_lo, y_hi = y_range
    draw.text(((left + right) / 2, top - 22), title, fill="black", font=font, anchor="mm")

    def px(x, y):
        y = min(max(y, y_lo), y_hi)
        return left + x * (right - left), bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    for i in range(6):  # x ticks at t/T = 0, 0.2, ..., 1
        x = i / 5
        xx, _ = px(x, y_lo)
        draw.line([(xx, top), (xx, bottom)], fill=(230, 230, 230))
        draw.line([(xx, bottom), (xx, bottom + 5)], fill="black")
        draw.text((xx, bottom + 8), f"{x:.1f}", fill="black", font=small_font, anchor="mt")
    for y in y_ticks:
        _, yy = px(0, y)
        draw.line([(left, yy), (right, yy)], fill=(230, 230, 230))
        draw.line([(left - 5, yy), (left, yy)], fill="black")
        draw.text((left - 8, yy), y_fmt(y), fill="black", font=small_font, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, bottom + 30), "t / T", fill="black", font=small_font, anchor="mt")
    for xs, ys, color in curves:
        pts = [px(float(x), float(y)) for x, y in zip(xs, ys) if np.isfinite(y)]
        draw.line(pts, fill=color, width=2)


def plot_schedules(
    names: Sequence[str],
    path: str | Path,
    *,
    num_timesteps: int = 1000,
    rescale_zero_terminal_snr: bool = False,
    size: tuple[int, int] = (1000, 460),
) -> Path:
    """Draw alpha-bar_t and log10 SNR_t = log10(alpha-bar / (1 - alpha-bar)) against t/T into a PNG (Pillow).

    Args:
        names: schedule names (see ``SCHEDULES``), one curve each.
        path: output ``.png`` path; parent folders are created.
        num_timesteps: T for every schedule.
        rescale_zero_terminal_snr: apply Lin et al. 2024 to every schedule.
        size: image (width, height) in pixels.

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw

    if not names:
        raise ValueError(f"plot_schedules: give at least one schedule name; valid: {', '.join(SCHEDULES)}")
    width, height = size
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(12)
    x = (np.arange(num_timesteps, dtype=np.float64) + 1) / num_timesteps
    abar_curves, snr_curves = [], []
    for i, name in enumerate(names):
        abar = np.cumprod(1.0 - get_betas(name, num_timesteps, rescale_zero_terminal_snr=rescale_zero_terminal_snr))
        color = _COLORS[i % len(_COLORS)]
        with np.errstate(divide="ignore"):
            log_snr = np.log10(abar) - np.log10(1.0 - abar)
        abar_curves.append((x, abar, color))
        snr_curves.append((x, np.maximum(log_snr, -10.0), color))  # SNR = 0 is drawn at the axis floor

    margin_l, margin_r, margin_t, margin_b, gap = 60, 20, 50, 60, 70
    panel_w = (width - margin_l - margin_r - gap) / 2
    boxes = [
        (margin_l, margin_t, margin_l + panel_w, height - margin_b),
        (margin_l + panel_w + gap, margin_t, width - margin_r, height - margin_b),
    ]
    _draw_panel(draw, boxes[0], abar_curves, title=f"alpha-bar_t (T={num_timesteps})", y_range=(0.0, 1.0),
                y_ticks=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], y_fmt=lambda v: f"{v:.1f}", font=font, small_font=small)
    finite = np.concatenate([c[1][np.isfinite(c[1])] for c in snr_curves])
    y_lo = math.floor(max(float(finite.min()), -10.0))
    y_hi = math.ceil(float(finite.max()))
    step = max(1, math.ceil((y_hi - y_lo) / 8))
    _draw_panel(draw, boxes[1], snr_curves, title="log10 SNR_t", y_range=(y_lo, y_hi),
                y_ticks=list(range(-(-y_lo // step) * step, y_hi + 1, step)), y_fmt=lambda v: f"{v:g}", font=font, small_font=small)

    # legend in the first panel's lower left corner, where alpha-bar is near 0 only at the far right
    lx, ly = boxes[0][0] + 12, boxes[0][3] - 14 - 18 * len(names)
    legend_w = 40 + max(draw.textlength(n, font=small) for n in names) + 10
    draw.rectangle([lx - 6, ly - 6, lx + legend_w, ly + 18 * len(names)], fill="white", outline=(160, 160, 160))
    for i, name in enumerate(names):
        color = _COLORS[i % len(_COLORS)]
        yy = ly + 18 * i + 6
        draw.line([(lx, yy), (lx + 30, yy)], fill=color, width=3)
        draw.text((lx + 38, yy), name, fill="black", font=small, anchor="lm")
    if rescale_zero_terminal_snr:
        draw.text((width - margin_r, 12), "zero terminal SNR", fill="black", font=small, anchor="rt")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
