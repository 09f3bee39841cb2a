"""PNG plots drawn with Pillow (no plotting library needed): the loss curve, and noise schedules' alpha-bar / SNR."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT, MARGIN = 640, 400, 56


def read_metrics(path: str | Path, key: str = "loss") -> tuple[list[int], list[float]]:
    """Steps and values of ``key`` from a ``metrics.jsonl`` file (rows without it are skipped)."""
    steps, values = [], []
    p = Path(path)
    if not p.is_file():
        return steps, values
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            steps.append(int(row["step"]))
            values.append(float(v))
    return steps, values


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path, key: str = "loss", log_y: bool = True) -> bool:
    """Draw ``key`` against step (raw in light grey, moving average in blue); False when nothing to draw."""
    steps, values = read_metrics(metrics_path, key)
    if len(steps) < 2:
        return False
    log_y = log_y and min(values) > 0
    ys = [math.log10(v) for v in values] if log_y else list(values)
    x0, x1 = steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def pt(s: float, y: float) -> tuple[float, float]:
        px = MARGIN + (s - x0) / (x1 - x0) * (WIDTH - 2 * MARGIN)
        py = HEIGHT - MARGIN - (y - y0) / (y1 - y0) * (HEIGHT - 2 * MARGIN)
        return px, py

    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([MARGIN, MARGIN, WIDTH - MARGIN, HEIGHT - MARGIN], outline="black")
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):  # y ticks with labels
        y = y0 + frac * (y1 - y0)
        _, py = pt(x0, y)
        d.line([MARGIN - 4, py, MARGIN, py], fill="black")
        label = f"{10 ** y:.3g}" if log_y else f"{y:.3g}"
        d.text((4, py - 6), label, fill="black")
    for frac in (0.0, 0.5, 1.0):
        s = x0 + frac * (x1 - x0)
        px, _ = pt(s, y0)
        d.line([px, HEIGHT - MARGIN, px, HEIGHT - MARGIN + 4], fill="black")
        d.text((px - 12, HEIGHT - MARGIN + 8), f"{int(s)}", fill="black")
    d.line([pt(s, y) for s, y in zip(steps, ys)], fill=(190, 190, 190), width=1)
    window = max(1, len(ys) // 50)
    d.line([pt(s, y) for s, y in zip(steps, _smooth(ys, window))], fill=(30, 90, 200), width=2)
    scale = " (log scale)" if log_y else ""
    d.text((MARGIN, 18), f"{key}{scale} vs step; last {values[-1]:.4g}, min {min(values):.4g}", fill="black")
    d.text((WIDTH // 2 - 12, HEIGHT - 20), "step", fill="black")
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(png_path).with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(png_path)
    return True


# ------------------------------------------------------------------------------------- noise schedules

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def _font(size: int):
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


def _draw_legend(draw, box, names: list[str], font) -> None:
    """Legend in the panel's lower left corner, where alpha-bar is near 0 only at the far right."""
    lx, ly = box[0] + 12, box[3] - 14 - 18 * len(names)
    legend_w = 40 + max(draw.textlength(n, font=font) for n in names) + 10
    draw.rectangle([lx - 6, ly - 6, lx + legend_w, ly + 18 * len(names)], fill="white", outline=(160, 160, 160))
    for i, name in enumerate(names):
        yy = ly + 18 * i + 6
        draw.line([(lx, yy), (lx + 30, yy)], fill=_COLORS[i % len(_COLORS)], width=3)
        draw.text((lx + 38, yy), name, fill="black", font=font, anchor="lm")


def plot_schedules(
    alphas_cumprod: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    note: str | None = None,
    size: tuple[int, int] = (1000, 460),
) -> Path:
    """Draw alpha-bar_t and log10 SNR_t = log10(alpha-bar / (1 - alpha-bar)) against t/T into a PNG (Pillow).

    Args:
        alphas_cumprod: label -> ``[T]`` alpha-bar of a schedule (e.g. ``np.cumprod(1 - get_betas(name, T))``),
            one curve each, drawn at t/T = 1/T .. 1.
        path: output ``.png`` path; parent folders are created.
        note: a line printed in the top right corner (e.g. ``"zero terminal SNR"``).
        size: image (width, height) in pixels.

    Returns:
        The path written.
    """
    if not alphas_cumprod:
        raise ValueError("plot_schedules: give at least one alpha-bar curve")
    names = list(alphas_cumprod)
    lengths = sorted({len(a) for a in alphas_cumprod.values()})
    width, height = size
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(12)
    abar_curves, snr_curves = [], []
    for i, name in enumerate(names):
        abar = np.asarray(alphas_cumprod[name], dtype=np.float64)
        x = (np.arange(len(abar), dtype=np.float64) + 1) / len(abar)
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
    _draw_panel(draw, boxes[0], abar_curves, title=f"alpha-bar_t (T={'/'.join(map(str, lengths))})", y_range=(0.0, 1.0),
                y_ticks=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], y_fmt=lambda v: f"{v:.1f}", font=font, small_font=small)
    finite = np.concatenate([c[1][np.isfinite(c[1])] for c in snr_curves])
    y_lo = math.floor(max(float(finite.min()), -10.0))
    y_hi = math.ceil(float(finite.max()))
    step = max(1, math.ceil((y_hi - y_lo) / 8))
    _draw_panel(draw, boxes[1], snr_curves, title="log10 SNR_t", y_range=(y_lo, y_hi),
                y_ticks=list(range(-(-y_lo // step) * step, y_hi + 1, step)), y_fmt=lambda v: f"{v:g}", font=font, small_font=small)

    _draw_legend(draw, boxes[0], names, small)
    if note:
        draw.text((width - margin_r, 12), note, fill="black", font=small, anchor="rt")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
