"""Layout-to-image scores: does each requested box hold an object of the requested class, where it was asked?

Two evaluators, one per layout dataset; both return one :class:`BoxScore` per requested box:

* :func:`score_collage` (``fashion-collage``, grayscale): the item's own box is found by thresholding the
  sample (pixels above ``threshold``), keeping the 8-connected components that reach into the requested box,
  and taking their bounding box (an item merged with a neighbour or with noise gets the merged extent). The class is the
  Fashion-MNIST classifier's on a square crop centred on the found box (side = its longer side, background
  padded), resized to 28x28: Fashion-MNIST items span the full 28 pixels along their longer side and are
  centred, so that crop is what the classifier was trained on. A box with no item in it scores class -1.
* :func:`score_shapes` (``shapes``, RGB): a detector written for the test: each pixel is a blend of one palette
  colour with the white background (antialiased edges too) or background; the 4-connected component of one
  colour with most pixels in the requested box is the object; its kind follows from its pixels' layout in its
  bounding box (an upward triangle is bottom-heavy, a square fills the box, a circle ~pi/4 of it).

A box counts as correct when the class (shapes: kind and colour) is the requested one and the IoU of the
found box with the request is at least 0.5 (:func:`summarize`). Boxes are ``(x0, y0, x1, y1)`` in [0, 1]
with x1/y1 exclusive in pixels, as the datasets write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ldmkit.data.shapes import BACKGROUND, COLOR_NAMES, COLORS, SHAPE_NAMES

IOU_THRESHOLD = 0.5
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class BoxScore:
    """One requested box: the requested and found class, the found box (None: nothing found) and its IoU."""

    requested: int
    predicted: int
    box: tuple[float, float, float, float] | None
    iou: float

    @property
    def class_ok(self) -> bool:
        return self.predicted == self.requested

    @property
    def ok(self) -> bool:
        return self.class_ok and self.iou >= IOU_THRESHOLD


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)`` (0 for empty ones)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _pixels(box: Sequence[float], h: int, w: int) -> tuple[int, int, int, int]:
    """A [0, 1] box -> pixel bounds (x0, y0, x1, y1), rounded, at least one pixel, inside the image."""
    x0 = min(max(round(box[0] * w), 0), w - 1)
    y0 = min(max(round(box[1] * h), 0), h - 1)
    x1 = min(max(round(box[2] * w), x0 + 1), w)
    y1 = min(max(round(box[3] * h), y0 + 1), h)
    return x0, y0, x1, y1


def find_item(gray: np.ndarray, box: Sequence[float], threshold: float = 0.1) -> tuple[float, float, float, float] | None:
    """The bounding box (in [0, 1]) of the bright item in ``gray`` ([H, W] in [0, 1]) at a requested box.

    The item is the union of the 8-connected components of ``gray > threshold`` (over the whole image) that
    reach into the request, so an item spilling out of its box, or merged with a neighbour or with noise,
    gets its whole extent and a lower IoU; None when no pixel in the request is bright.
    """
    h, w = gray.shape
    bx0, by0, bx1, by1 = _pixels(box, h, w)
    labels, _ = ndimage.label(gray > threshold, structure=_EIGHT)
    inside = labels[by0:by1, bx0:bx1]
    keep = np.unique(inside[inside > 0])
    if len(keep) == 0:
        return None
    ys, xs = np.nonzero(np.isin(labels, keep))
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


def square_crop(image: torch.Tensor, box: Sequence[float], size: int = 28) -> torch.Tensor:
    """``image [C, H, W]`` in [-1, 1] -> the square around ``box``'s centre with its longer side, padded with
    the background (-1) where it leaves the image, resized (bilinear, antialiased) to ``[C, size, size]``."""
    _, h, w = image.shape
    cx, cy = (box[0] + box[2]) / 2 * w, (box[1] + box[3]) / 2 * h
    side = max(1, round(max((box[2] - box[0]) * w, (box[3] - box[1]) * h)))
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    padded = F.pad(image, (side, side, side, side), value=-1.0)
    crop = padded[:, y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def score_collage(images: torch.Tensor, boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                  classifier, *, threshold: float = 0.1) -> list[list[BoxScore]]:
    """Score collage samples ``images [N, 1, H, W]`` in [-1, 1] against their requested layouts.

    Args:
        boxes / labels: per image the requested ``[K, 4]`` boxes and ``[K]`` Fashion-MNIST classes.
        classifier: a ``FeatureExtractor`` with logits (``ldmkit.metrics.features.get_extractor()``), or any
            callable ``crops [M, 1, 28, 28] -> logits [M, 10]``.
        threshold: item pixels are brighter than this (in [0, 1]).
    """
    images = images.detach().float().cpu()
    found, crops = [], []
    for img, req in zip(images, boxes, strict=True):
        gray = ((img[0] + 1) / 2).clamp(0, 1).numpy()
        row = []
        for box in req.tolist():
            item = find_item(gray, box, threshold)
            row.append(item)
            crops.append(square_crop(img, item if item is not None else box))
        found.append(row)
    logits = _logits(classifier, torch.stack(crops)) if crops else np.zeros((0, 10))
    pred = iter(np.argmax(logits, axis=1).tolist())
    out = []
    for row, req, lab in zip(found, boxes, labels, strict=True):
        scores = []
        for item, box, want in zip(row, req.tolist(), lab.tolist(), strict=True):
            p = next(pred)
            scores.append(BoxScore(int(want), int(p) if item is not None else -1, item,
                                   box_iou(item, box) if item is not None else 0.0))
        out.append(scores)
    return out


def _logits(classifier, crops: torch.Tensor) -> np.ndarray:
    if hasattr(classifier, "extract"):
        return classifier.extract(crops).logits
    with torch.no_grad():
        return np.asarray(classifier(crops), dtype=np.float64)


# ---------------------------------------------------------------------------------------------- shapes
_PALETTE = np.array([BACKGROUND] + [COLORS[c] for c in COLOR_NAMES], dtype=np.float64)  # 0 = background


def shape_kind(coverage: np.ndarray) -> int:
    """Kind index (SHAPE_NAMES) of one object from its per-pixel coverage ``[h, w]`` in [0, 1] (0 outside it).

    An upward triangle holds a quarter of its area in the top half of its bounding box (a circle or a square
    half); of the other two, a square covers its bounding box, a circle pi/4 of it.
    """
    ys, xs = np.nonzero(coverage)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = coverage[y0:y1, x0:x1]
    area = box.sum()
    top = box[np.arange(y1 - y0) + 0.5 < (y1 - y0) / 2].sum() / area  # rows whose centre is in the top half
    if top < 0.38:
        return SHAPE_NAMES.index("triangle")
    fill = area / box.size
    return SHAPE_NAMES.index("square" if fill > 0.9 else "circle")


def palette_labels(rgb: np.ndarray, color_tol: float = 40.0,
                   min_alpha: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of ``rgb [h, w, 3]`` (0..255): 1 + the index of the palette colour it is a blend of with the
    background (antialiased edges included: ``background + alpha (colour - background)`` within ``color_tol``,
    ``alpha >= min_alpha``), or 0 for background / anything else; and each pixel's ``alpha`` (its coverage)."""
    bg = _PALETTE[0]
    d = _PALETTE[1:] - bg  # [K, 3]
    p = rgb.astype(np.float64) - bg  # [h, w, 3]
    alpha = np.clip((p @ d.T) / (d * d).sum(axis=1), 0.0, 1.0)  # [h, w, K]
    residual = np.linalg.norm(p[:, :, None, :] - alpha[..., None] * d[None, None], axis=-1)
    best = residual.argmin(axis=-1)
    a = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    r = np.take_along_axis(residual, best[..., None], axis=-1)[..., 0]
    return np.where((r <= color_tol) & (a >= min_alpha), best + 1, 0), a


def detect_shape(rgb: np.ndarray, box: Sequence[float],
                 color_tol: float = 40.0) -> tuple[int, int, tuple[float, float, float, float]] | None:
    """``(kind, colour, found box)`` of the object at a requested box in ``rgb [H, W, 3]`` (0..255), or None.

    The object is the 4-connected component (over the whole image) of one palette colour
    (:func:`palette_labels`) with the most pixels inside the request.
    """
    h, w, _ = rgb.shape
    bx0, by0, bx1, by1 = _pixels(box, h, w)
    nearest, alpha = palette_labels(rgb, color_tol)
    best = None
    for c in np.unique(nearest[by0:by1, bx0:bx1]):
        if c == 0:
            continue
        comps, _ = ndimage.label(nearest == c)
        counts = np.bincount(comps[by0:by1, bx0:bx1].ravel(), minlength=comps.max() + 1)
        counts[0] = 0
        k = int(counts.argmax())
        if counts[k] and (best is None or counts[k] > best[0]):
            best = (int(counts[k]), int(c) - 1, comps == k)
    if best is None:
        return None
    _, color, mask = best
    ys, xs = np.nonzero(mask)
    found = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
    return shape_kind(np.where(mask, alpha, 0.0)), color, found


def score_shapes(images: torch.Tensor, boxes: Sequence[torch.Tensor], kinds: Sequence[torch.Tensor],
                 colors: Sequence[torch.Tensor], *, color_tol: float = 40.0) -> list[list[BoxScore]]:
    """Score shapes samples ``images [N, 3, H, W]`` in [-1, 1]; class = ``colour * 3 + kind`` (the layout
    vocabulary "shapes"), so ``class_ok`` needs both kind and colour right."""
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    n_kinds = len(SHAPE_NAMES)
    out = []
    for rgb, req, kind, color in zip(arr, boxes, kinds, colors, strict=True):
        row = []
        for box, k, c in zip(req.tolist(), kind.tolist(), color.tolist(), strict=True):
            hit = detect_shape(rgb, box, color_tol)
            want = int(c) * n_kinds + int(k)
            if hit is None:
                row.append(BoxScore(want, -1, None, 0.0))
            else:
                row.append(BoxScore(want, hit[1] * n_kinds + hit[0], hit[2], box_iou(hit[2], box)))
        out.append(row)
    return out


def summarize(scores: Sequence[Sequence[BoxScore]]) -> dict[str, float]:
    """Fractions of boxes with the right class, with IoU >= 0.5, with both; mean IoU; the box count."""
    flat = [s for row in scores for s in row]
    n = len(flat)
    if n == 0:
        raise ValueError("summarize: no boxes were scored")
    return {"boxes": n, "class_acc": sum(s.class_ok for s in flat) / n,
            "iou_ok": sum(s.iou >= IOU_THRESHOLD for s in flat) / n, "both": sum(s.ok for s in flat) / n,
            "mean_iou": float(np.mean([s.iou for s in flat]))}
