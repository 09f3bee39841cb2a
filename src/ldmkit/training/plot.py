"""A loss-curve PNG drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

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
