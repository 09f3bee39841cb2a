"""Layout conditioning: bounding boxes with class labels -> tokens -> a transformer -> cross-attention.

Rombach et al. 2022, Sec. 4.3.1 / App. (layout-to-image): each box becomes a short run of discrete tokens (its
class and its four coordinates quantised into ``coord_bins`` bins), a transformer trained jointly with the
U-Net (``tau_theta``) turns the sequence into context tokens, and the U-Net reads them through cross-attention.

Token layout (``LayoutTokenizer``), for ``B = coord_bins`` and ``M`` label names::

    0                         padding (token_mask False)
    1 .. M                    label m -> 1 + m
    1 + M + j*B + b           coordinate slot j (0 x0, 1 y0, 2 x1, 3 y1) in bin b = min(floor(c * B), B - 1)

Each box is ``[label, x0, y0, x1, y1]`` (5 tokens); ``max_boxes`` boxes give sequences of ``5 * max_boxes``.
Decoding maps bin b back to its centre ``(b + 0.5) / B``, so a round trip moves a coordinate by at most half a
bin. The four slots have their own ids, so no token is ambiguous; a box's tokens are grouped by position.

The label vocabulary is named in the config (``cond.layout.labels``, see ``VOCABS``): "fashion-mnist" (the 10
Fashion-MNIST classes, for ``fashion-collage``) or "shapes" (colour + kind, "red circle" ..., 18 labels, so a
layout can ask for kind and colour). An empty layout (no box, all padding) is the unconditional layout.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ldmkit.registry import ConfigError, lookup
from ldmkit.types import Batch, Cond

TOKENS_PER_BOX = 5
PAD = 0

# The vocabularies' names equal ldmkit.data's (a test checks it); conditioning/ may not import data/.
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                       "Bag", "Ankle boot")
SHAPE_KINDS = ("circle", "square", "triangle")
SHAPE_COLORS = ("red", "green", "blue", "yellow", "purple", "black")


class LayoutError(ValueError):
    """A layout that a layout model cannot take; the message names the box, the value and what is allowed."""


def _box_labels(batch: Batch) -> list[torch.Tensor]:
    return list(batch.box_labels)


def _shape_color_labels(batch: Batch) -> list[torch.Tensor]:
    colors = batch.extra.get("box_colors")
    if colors is None:
        raise LayoutError("layout vocabulary 'shapes' needs the batch's box_colors (the shapes dataset's)")
    return [c.long() * len(SHAPE_KINDS) + k.long() for k, c in zip(batch.box_labels, colors, strict=True)]


@dataclass(frozen=True)
class Vocab:
    """A label vocabulary: its names and how a batch's boxes map to label indices."""

    names: tuple[str, ...]
    from_batch: Callable[[Batch], list[torch.Tensor]]


VOCABS: dict[str, Vocab] = {
    "fashion-mnist": Vocab(FASHION_MNIST_NAMES, _box_labels),
    "shapes": Vocab(tuple(f"{c} {k}" for c in SHAPE_COLORS for k in SHAPE_KINDS), _shape_color_labels),
}
#: dataset name -> the vocabulary its boxes carry
DATASET_VOCABS = {"fashion-collage": "fashion-mnist", "shapes": "shapes"}


@dataclass
class LayoutConfig:
    """``cond.layout``: the layout tokenizer and the transformer ``tau_theta`` trained with the U-Net.

    Attributes:
        labels: label vocabulary ("fashion-mnist" or "shapes"; see ``VOCABS``).
        max_boxes: most boxes in one layout (sequence length = 5 * max_boxes).
        coord_bins: coordinate quantisation bins per axis (round trip within 0.5 / coord_bins).
        width: token width = the context width (``unet.context_dim`` must equal it).
        depth: transformer blocks.
        heads: attention heads (width must be divisible by it).
        dropout: attention / MLP dropout of the transformer while training.
        spatial: also draw the boxes as one channel per label at the resolution of ``x_t`` (the fraction of
            each cell a box of that label covers, boxes of one label merged by max), appended to ``x_t``
            (``unet.concat_channels`` = the number of labels). Not part of Rombach et al.'s layout model (tokens
            and cross-attention only): it makes *where* a direct input, learnable in a short CPU budget.
            Classifier-free guidance then acts on the tokens only: like a super-resolution input, the map is
            kept in the unconditional branch.
    """

    labels: str = "fashion-mnist"
    max_boxes: int = 8
    coord_bins: int = 64
    width: int = 128
    depth: int = 2
    heads: int = 4
    dropout: float = 0.0
    spatial: bool = False

    def __post_init__(self) -> None:
        lookup(VOCABS, self.labels, "cond.layout.labels vocabulary")
        for key in ("max_boxes", "coord_bins", "width", "depth", "heads"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"cond.layout.{key}={v!r}: must be a positive integer")
        if self.coord_bins < 2:
            raise ConfigError(f"cond.layout.coord_bins={self.coord_bins}: must be >= 2")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"cond.layout.dropout={self.dropout!r}: must be a number in [0, 1)")
        if self.width % self.heads:
            raise ConfigError(f"cond.layout.width={self.width} is not divisible by cond.layout.heads={self.heads}")

    @property
    def max_tokens(self) -> int:
        return TOKENS_PER_BOX * self.max_boxes


def check_dataset(cfg: LayoutConfig, data_name: str) -> None:
    """Refuse a dataset whose boxes carry another vocabulary than ``cfg.labels`` (or none)."""
    vocab = DATASET_VOCABS.get(data_name)
    if vocab is None:
        raise ConfigError(f"cond.context='layout' needs a dataset with layouts; data.name={data_name!r} has none "
                          f"(datasets with boxes: {', '.join(sorted(DATASET_VOCABS))})")
    if vocab != cfg.labels:
        raise ConfigError(f"cond.layout.labels={cfg.labels!r} but data.name={data_name!r} carries {vocab!r} labels; "
                          f"set cond.layout.labels={vocab!r}")


# ----------------------------------------------------------------------------------------- validation
def label_index(value, names: Sequence[str], where: str = "label") -> int:
    """A label given by index (int or digit string) or by name (case-insensitive) -> its index."""
    valid = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise LayoutError(f"{where}={value!r}: a label must be a name or an index; valid: {valid}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value < len(names):
            raise LayoutError(f"{where}={value}: label index out of range 0..{len(names) - 1}; valid: {valid}")
        return value
    folded = {n.casefold(): i for i, n in enumerate(names)}
    key = value.strip().casefold()
    if key not in folded:
        raise LayoutError(f"{where}={value!r}: unknown label; valid: {valid}")
    return folded[key]


def validate_layout(boxes: torch.Tensor, labels: torch.Tensor, num_labels: int, max_boxes: int,
                    where: str = "layout") -> None:
    """Check a layout: ``boxes [K, 4]`` (x0, y0, x1, y1) in [0, 1] with x1 > x0, y1 > y0; ``labels [K]`` in
    ``0..num_labels-1``; ``K <= max_boxes``.

    Raises:
        LayoutError: naming the box and the value and what is allowed.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise LayoutError(f"{where}: boxes must be [K, 4] (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    if labels.shape != boxes.shape[:1]:
        raise LayoutError(f"{where}: {len(boxes)} boxes but labels of shape {tuple(labels.shape)}")
    if len(boxes) > max_boxes:
        raise LayoutError(f"{where}: {len(boxes)} boxes, more than this model's max_boxes={max_boxes}")
    for k, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        at = f"{where} box {k} {[round(v, 4) for v in box]}"
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in box):
            raise LayoutError(f"{at}: coordinates must lie in [0, 1] (x0, y0, x1, y1 as fractions of width "
                              "and height)")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise LayoutError(f"{at}: needs x1 > x0 and y1 > y0 (got x1-x0={box[2] - box[0]:.4g}, "
                              f"y1-y0={box[3] - box[1]:.4g})")
        if not 0 <= int(label) < num_labels:
            raise LayoutError(f"{at}: label index {int(label)} out of range 0..{num_labels - 1}")


def parse_layout(obj, names: Sequence[str], where: str = "layout") -> tuple[torch.Tensor, torch.Tensor]:
    """``[{"label": "sneaker", "box": [x0, y0, x1, y1]}, ...]`` -> ``(boxes [K, 4] float32, labels [K] int64)``.

    Labels by name (case-insensitive) or index. Only checks the structure and labels; the coordinates are
    checked by :func:`validate_layout` (the tokenizer runs it).
    """
    if not isinstance(obj, list):
        raise LayoutError(f"{where}: a layout is a JSON list of {{\"label\": ..., \"box\": [x0, y0, x1, y1]}}, "
                          f"got {type(obj).__name__}")
    boxes, labels = [], []
    for k, entry in enumerate(obj):
        at = f"{where} box {k}"
        if not isinstance(entry, dict) or set(entry) != {"label", "box"}:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise LayoutError(f"{at}: each box is an object with exactly the keys 'label' and 'box', got {keys}")
        box = entry["box"]
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise LayoutError(f"{at}: 'box' must be 4 numbers [x0, y0, x1, y1] in [0, 1], got {box!r}")
        boxes.append([float(v) for v in box])
        labels.append(label_index(entry["label"], names, f"{at} label"))
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64))


def read_layout_json(path: str | os.PathLike) -> list:
    """The parsed JSON of a layout file (one layout or a list of layouts), unchecked beyond being JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LayoutError(f"layout file {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"layout file {path}: not readable JSON ({e})") from None


def split_layouts(obj) -> list:
    """One layout (a list of box objects) -> ``[layout]``; a list of layouts (a list of lists) -> itself."""
    if isinstance(obj, list) and obj and all(isinstance(v, list) for v in obj):
        return obj
    return [obj]


def read_layout_arg(value: str) -> list:
    """``--layout`` value: inline JSON (starting with ``[``) or a JSON file -> a list of layouts (JSON objects)."""
    if value.lstrip().startswith("["):
        try:
            return split_layouts(json.loads(value))
        except json.JSONDecodeError as e:
            raise LayoutError(f"layout {value[:60]!r}: not valid JSON ({e})") from None
    return split_layouts(read_layout_json(value))


def layout_json(boxes: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> list[dict]:
    """``(boxes, labels)`` -> the JSON form ``[{"label": name, "box": [x0, y0, x1, y1]}, ...]``."""
    return [{"label": names[int(k)], "box": [round(float(v), 6) for v in b]}
            for b, k in zip(boxes.tolist(), labels.tolist(), strict=True)]


def load_layouts(path: str | os.PathLike, names: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Read a layout JSON file: one layout (a list of boxes) or several (a list of such lists)."""
    layouts = split_layouts(read_layout_json(path))
    if len(layouts) == 1:
        return [parse_layout(layouts[0], names, str(path))]
    return [parse_layout(v, names, f"{path} layout {i}") for i, v in enumerate(layouts)]


# ------------------------------------------------------------------------------------------ tokenizer
class LayoutTokenizer:
    """Boxes + labels <-> int tokens with a padding mask (see the module docstring for the token ids)."""

    def __init__(self, num_labels: int, max_boxes: int, coord_bins: int):
        self.num_labels, self.max_boxes, self.coord_bins = int(num_labels), int(max_boxes), int(coord_bins)
        self.length = TOKENS_PER_BOX * self.max_boxes
        self.vocab_size = 1 + self.num_labels + 4 * self.coord_bins

    def quantize(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates in [0, 1] -> bins ``min(floor(c * B), B - 1)``."""
        return (coords * self.coord_bins).floor().long().clamp(0, self.coord_bins - 1)

    def dequantize(self, bins: torch.Tensor) -> torch.Tensor:
        """Bins -> their centres ``(b + 0.5) / B``."""
        return (bins.float() + 0.5) / self.coord_bins

    def encode(self, boxes: torch.Tensor, labels: torch.Tensor, where: str = "layout") -> tuple[torch.Tensor, torch.Tensor]:
        """One layout -> ``(tokens [L] int64, mask [L] bool)``, L = 5 * max_boxes; validates it first."""
        boxes, labels = torch.as_tensor(boxes, dtype=torch.float32).cpu(), torch.as_tensor(labels).long().cpu()
        validate_layout(boxes, labels, self.num_labels, self.max_boxes, where)
        k = len(boxes)
        tokens = torch.full((self.length,), PAD, dtype=torch.int64)
        offsets = 1 + self.num_labels + self.coord_bins * torch.arange(4)
        per_box = torch.cat([(1 + labels)[:, None], self.quantize(boxes) + offsets], dim=1)  # [K, 5]
        tokens[:TOKENS_PER_BOX * k] = per_box.reshape(-1)
        mask = torch.zeros(self.length, dtype=torch.bool)
        mask[:TOKENS_PER_BOX * k] = True
        return tokens, mask

    def encode_batch(self, layouts: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     where: str = "layout") -> tuple[torch.Tensor, torch.Tensor]:
        """Layouts ``[(boxes, labels), ...]`` -> ``(tokens [N, L], mask [N, L])``."""
        pairs = [self.encode(b, lab, f"{where} {i}" if len(layouts) > 1 else where)
                 for i, (b, lab) in enumerate(layouts)]
        if not pairs:
            return torch.zeros(0, self.length, dtype=torch.int64), torch.zeros(0, self.length, dtype=torch.bool)
        return torch.stack([t for t, _ in pairs]), torch.stack([m for _, m in pairs])

    def decode(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [L], mask [L])`` -> ``(boxes [K, 4] at bin centres, labels [K])``.

        Raises:
            LayoutError: when the tokens are not a sequence this tokenizer writes.
        """
        k, rest = divmod(int(mask.sum()), TOKENS_PER_BOX)
        if rest or not bool(mask[:TOKENS_PER_BOX * k].all()):
            raise LayoutError("decode: the mask must mark whole boxes (5 tokens each) at the start")
        per_box = tokens[:TOKENS_PER_BOX * k].reshape(k, TOKENS_PER_BOX).long()
        labels = per_box[:, 0] - 1
        bins = per_box[:, 1:] - 1 - self.num_labels - self.coord_bins * torch.arange(4)
        if bool((labels < 0).any() | (labels >= self.num_labels).any()
                | (bins < 0).any() | (bins >= self.coord_bins).any()):
            raise LayoutError(f"decode: tokens {per_box.tolist()} are not [label, x0, y0, x1, y1] ids")
        return self.dequantize(bins), labels


# ------------------------------------------------------------------------------------------- encoder
def build_encoder(cfg: LayoutConfig) -> nn.Module:
    """``tau_theta``: the :class:`~ldmkit.networks.transformer.TokenTransformer` over the layout vocabulary."""
    from ldmkit.networks.transformer import TokenTransformer

    tok = tokenizer_for(cfg)
    return TokenTransformer(tok.vocab_size, cfg.width, cfg.depth, cfg.heads, tok.length, dropout=cfg.dropout)


def tokenizer_for(cfg: LayoutConfig) -> LayoutTokenizer:
    return LayoutTokenizer(len(VOCABS[cfg.labels].names), cfg.max_boxes, cfg.coord_bins)


def box_map(layouts: Sequence[tuple[torch.Tensor, torch.Tensor]], num_labels: int, height: int,
            width: int) -> torch.Tensor:
    """Layouts -> ``[N, num_labels, height, width]``: channel m holds, per cell, the largest fraction of the cell
    covered by one box of label m (exact area coverage of the box on the cell grid; 0 where no box is)."""
    out = torch.zeros(len(layouts), num_labels, height, width)

    def coverage(lo: float, hi: float, cells: int) -> torch.Tensor:
        edges = torch.arange(cells + 1, dtype=torch.float32) / cells
        return ((torch.minimum(edges[1:], torch.tensor(hi)) - torch.maximum(edges[:-1], torch.tensor(lo)))
                .clamp_min(0) * cells)

    for i, (boxes, labels) in enumerate(layouts):
        for (x0, y0, x1, y1), m in zip(boxes.tolist(), labels.tolist(), strict=True):
            cover = coverage(y0, y1, height)[:, None] * coverage(x0, x1, width)[None, :]
            out[i, int(m)] = torch.maximum(out[i, int(m)], cover)
    return out


# ---------------------------------------------------------------------------------------- context kind
class LayoutContext:
    """The ``layout`` ContextKind: batches' boxes or requested layouts -> ``Cond(tokens, token_mask)``.

    ``context_encoder`` (the transformer) is part of the denoiser, which fills ``context``/``context_mask``.
    The empty layout (all padding, :func:`~ldmkit.conditioning.class_label.null_condition`'s tokens) is the
    unconditional one.
    """

    accepts = ("layouts",)

    def __init__(self, cfg: LayoutConfig, image_size: tuple[int, int] | None = None):
        self.cfg = cfg
        self.vocab = VOCABS[cfg.labels]
        self.tokenizer = tokenizer_for(cfg)
        self.context_encoder = build_encoder(cfg)
        self.context_dim = cfg.width
        self.concat_channels = len(self.vocab.names) if cfg.spatial else 0  # the box map's, if spatial
        self.image_size = image_size  # (H, W) of the data: the box map of a request is drawn at H/f x W/f

    def _with_map(self, cond: Cond, pairs, size: tuple[int, int] | None, space) -> Cond:
        if not self.cfg.spatial:
            return cond
        if size is None:
            raise LayoutError("cond.layout.spatial=true: the layout kind needs the data's image size to draw the "
                              "box map (build it with ldmkit.pipelines.build_conditioner)")
        f = 1 if space is None else int(space.factor)
        maps = box_map(pairs, len(self.vocab.names), size[0] // f, size[1] // f)
        device = cond.tokens.device
        return Cond(tokens=cond.tokens, token_mask=cond.token_mask, concat=maps.to(device))

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.vocab.names

    def default_layouts(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` fixed layouts that cycle through the labels: image i gets label ``i mod M`` in quadrant
        ``(i // M) mod 4`` and (when ``max_boxes >= 2``) label ``(i + 1) mod M`` in the opposite quadrant."""
        corners = torch.tensor([[0.05, 0.05], [0.55, 0.05], [0.55, 0.55], [0.05, 0.55]])
        m = len(self.vocab.names)
        out = []
        for i in range(n):
            q = (i // m) % 4
            quads = [q, (q + 2) % 4][:min(2, self.cfg.max_boxes)]
            boxes = torch.cat([corners[quads], corners[quads] + 0.4], dim=1)
            out.append((boxes, torch.tensor([i % m, (i + 1) % m][:len(quads)])))
        return out

    def default_layouts_json(self, n: int) -> list[list[dict]]:
        """:meth:`default_layouts` in the JSON form of a layout file."""
        return [layout_json(b, lab, self.vocab.names) for b, lab in self.default_layouts(n)]

    def from_batch(self, batch: Batch, space=None) -> Cond:
        if batch.boxes is None or batch.box_labels is None:
            raise LayoutError("a layout model trains on a dataset with boxes and box labels (fashion-collage, "
                              "shapes); this batch has none")
        labels = self.vocab.from_batch(batch)
        idx = batch.indices.tolist() if batch.indices is not None else range(len(labels))
        pairs = [self.tokenizer.encode(b, lab, f"dataset item {i}")
                 for b, lab, i in zip(batch.boxes, labels, idx, strict=True)]
        tokens, mask = torch.stack([t for t, _ in pairs]), torch.stack([m for _, m in pairs])
        device = batch.images.device
        cond = Cond(tokens=tokens.to(device), token_mask=mask.to(device))
        return self._with_map(cond, list(zip(batch.boxes, labels, strict=True)), tuple(batch.images.shape[-2:]),
                              space)

    def from_request(self, n: int, *, space=None, layouts=None, **_) -> Cond | None:
        """``layouts``: one layout or a list, as ``(boxes, labels)`` pairs or parsed JSON lists, cycled to ``n``.

        No layouts: :meth:`default_layouts` (preview grids, ``sample`` without ``--layout``). The empty
        layout ``[]`` is the unconditional one.
        """
        if layouts is None:
            layouts = self.default_layouts(n)
        if isinstance(layouts, tuple):
            layouts = [layouts]
        elif not (isinstance(layouts, list) and layouts and all(isinstance(v, (list, tuple)) for v in layouts)):
            layouts = [layouts]  # one layout as a JSON list of boxes (parse_layout names what is wrong)
        pairs = [lay if isinstance(lay, tuple) else parse_layout(lay, self.vocab.names, f"layout {i}")
                 for i, lay in enumerate(layouts)]
        pairs = [(torch.as_tensor(b, dtype=torch.float32), torch.as_tensor(lab).long()) for b, lab in pairs]
        tokens, mask = self.tokenizer.encode_batch(pairs)
        reps = torch.arange(n) % len(pairs)
        cond = Cond(tokens=tokens[reps], token_mask=mask[reps])
        return self._with_map(cond, [pairs[int(r)] for r in reps], self.image_size, space)


def build_kind(cfg, image_size: tuple[int, int] | None = None) -> LayoutContext:
    """The layout part of a run config's conditioner (``CONTEXT_KINDS["layout"]``): ``cfg.cond.layout``, checked
    against ``cfg.data.name`` (its boxes must carry the configured vocabulary); ``image_size``: the data's
    ``(H, W)`` (a spatial layout draws its box map at that size over the space's factor)."""
    check_dataset(cfg.cond.layout, cfg.data.name)
    return LayoutContext(cfg.cond.layout, image_size)
