"""Layout conditioning: tokenizer round trip (examples + hypothesis), every bad-input error, JSON layouts, the
layout ContextKind (batch and request tokens), padding invariance of the encoder, vocabularies = the datasets'."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ldmkit.conditioning.layout import (
    FASHION_MNIST_NAMES,
    VOCABS,
    LayoutConfig,
    LayoutContext,
    LayoutError,
    LayoutTokenizer,
    check_dataset,
    label_index,
    load_layouts,
    parse_layout,
)
from ldmkit.registry import ConfigError
from ldmkit.types import Batch

TOK = LayoutTokenizer(num_labels=10, max_boxes=4, coord_bins=16)


def test_tokens_by_hand():
    tokens, mask = TOK.encode(torch.tensor([[0.0, 0.5, 1.0, 0.99]]), torch.tensor([7]))
    # label 7 -> 8; bins: 0 -> 0, 0.5 -> 8, 1.0 -> 15 (clamped), 0.99 -> 15; slot j offset 1 + 10 + 16 j
    assert tokens[:5].tolist() == [8, 11 + 0, 11 + 16 + 8, 11 + 32 + 15, 11 + 48 + 15]
    assert mask.tolist() == [True] * 5 + [False] * 15 and tokens[5:].eq(0).all()
    assert TOK.vocab_size == 1 + 10 + 64 and TOK.length == 20


def test_round_trip_within_half_a_bin():
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0], [0.51, 0.49, 0.52, 0.5]])
    labels = torch.tensor([3, 0, 9])
    out_boxes, out_labels = TOK.decode(*TOK.encode(boxes, labels))
    assert torch.equal(out_labels, labels)
    assert (out_boxes - boxes).abs().max() <= 0.5 / 16 + 1e-6


coord = st.floats(0.0, 1.0, allow_nan=False, width=32)


@st.composite
def layouts(draw):
    k = draw(st.integers(0, 4))
    boxes, labels = [], []
    for _ in range(k):
        x0, x1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        boxes.append([x0, y0, x1, y1])
        labels.append(draw(st.integers(0, 9)))
    bins = draw(st.integers(2, 200))
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64), bins


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_round_trip_property(layout):
    boxes, labels, bins = layout
    tok = LayoutTokenizer(10, 4, bins)
    tokens, mask = tok.encode(boxes, labels)
    assert tokens.shape == mask.shape == (20,) and int(mask.sum()) == 5 * len(boxes)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < tok.vocab_size
    out_boxes, out_labels = tok.decode(tokens, mask)
    assert torch.equal(out_labels, labels)
    assert out_boxes.shape == boxes.shape
    if len(boxes):
        assert float((out_boxes - boxes).abs().max()) <= 0.5 / bins + 1e-6


@pytest.mark.parametrize(("box", "match"), [
    ([-0.1, 0.2, 0.5, 0.6], r"box 0 .*must lie in \[0, 1\]"),
    ([0.1, 0.2, 1.2, 0.6], r"must lie in \[0, 1\]"),
    ([0.1, float("nan"), 0.5, 0.6], r"must lie in \[0, 1\]"),
    ([0.5, 0.2, 0.5, 0.6], r"x1 > x0 and y1 > y0"),
    ([0.6, 0.2, 0.5, 0.6], r"x1 > x0"),
    ([0.1, 0.7, 0.5, 0.6], r"y1 > y0"),
])
def test_bad_boxes(box, match):
    with pytest.raises(LayoutError, match=match):
        TOK.encode(torch.tensor([[0.1, 0.1, 0.2, 0.2], box])[1:], torch.tensor([1]))


def test_too_many_boxes_and_bad_label_index():
    with pytest.raises(LayoutError, match=r"5 boxes, more than this model's max_boxes=4"):
        TOK.encode(torch.tensor([[0.1, 0.1, 0.2, 0.2]] * 5), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(LayoutError, match=r"label index 10 out of range 0..9"):
        TOK.encode(torch.tensor([[0.1, 0.1, 0.2, 0.2]]), torch.tensor([10]))


def test_labels_by_name_or_index():
    assert label_index("sneaker", FASHION_MNIST_NAMES) == 7
    assert label_index("ANKLE boot", FASHION_MNIST_NAMES) == 9
    assert label_index(3, FASHION_MNIST_NAMES) == 3 and label_index("3", FASHION_MNIST_NAMES) == 3
    with pytest.raises(LayoutError, match=r"'hat': unknown label; valid: 0 'T-shirt/top', .*9 'Ankle boot'"):
        label_index("hat", FASHION_MNIST_NAMES)
    with pytest.raises(LayoutError, match=r"label index out of range 0..9"):
        label_index(12, FASHION_MNIST_NAMES)
    with pytest.raises(LayoutError, match="a label must be a name or an index"):
        label_index(True, FASHION_MNIST_NAMES)


def test_parse_layout_and_its_errors():
    boxes, labels = parse_layout([{"label": "bag", "box": [0.1, 0.2, 0.5, 0.6]}, {"label": 7, "box": [0, 0, 1, 1]}],
                                 FASHION_MNIST_NAMES)
    assert labels.tolist() == [8, 7] and torch.allclose(boxes, torch.tensor([[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1.0]]))
    with pytest.raises(LayoutError, match="a JSON list"):
        parse_layout({"label": "bag"}, FASHION_MNIST_NAMES)
    with pytest.raises(LayoutError, match=r"box 0: each box is an object with exactly the keys"):
        parse_layout([{"label": "bag", "box": [0, 0, 1, 1], "colour": "red"}], FASHION_MNIST_NAMES)
    with pytest.raises(LayoutError, match=r"'box' must be 4 numbers"):
        parse_layout([{"label": "bag", "box": [0, 0, 1]}], FASHION_MNIST_NAMES)
    with pytest.raises(LayoutError, match=r"box 1 label='hat': unknown label"):
        parse_layout([{"label": "bag", "box": [0, 0, 1, 1]}, {"label": "hat", "box": [0, 0, 1, 1]}],
                     FASHION_MNIST_NAMES)


def test_load_layouts_one_or_several(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"label": "sneaker", "box": [0.1, 0.1, 0.4, 0.3]}]))
    several = tmp_path / "several.json"
    several.write_text(json.dumps([[{"label": "bag", "box": [0, 0, 0.5, 0.5]}],
                                   [{"label": 1, "box": [0.5, 0, 1, 1]}, {"label": 2, "box": [0, 0, 0.4, 1]}]]))
    assert [lab.tolist() for _, lab in load_layouts(one, FASHION_MNIST_NAMES)] == [[7]]
    assert [lab.tolist() for _, lab in load_layouts(several, FASHION_MNIST_NAMES)] == [[8], [1, 2]]
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(LayoutError, match="not readable JSON"):
        load_layouts(bad, FASHION_MNIST_NAMES)
    with pytest.raises(LayoutError, match="no such file"):
        load_layouts(tmp_path / "missing.json", FASHION_MNIST_NAMES)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown cond.layout.labels vocabulary 'coco'"):
        LayoutConfig(labels="coco")
    with pytest.raises(ConfigError, match=r"cond.layout.max_boxes=0"):
        LayoutConfig(max_boxes=0)
    with pytest.raises(ConfigError, match="not divisible"):
        LayoutConfig(width=30, heads=4)
    with pytest.raises(ConfigError, match="set cond.layout.labels='shapes'"):
        check_dataset(LayoutConfig(), "shapes")
    with pytest.raises(ConfigError, match="has none"):
        check_dataset(LayoutConfig(), "fashion-mnist")
    check_dataset(LayoutConfig(), "fashion-collage")


def test_vocabularies_are_the_datasets_names():
    from ldmkit.data import CLASS_NAMES, COLOR_NAMES, SHAPE_NAMES

    assert VOCABS["fashion-mnist"].names == CLASS_NAMES
    assert VOCABS["shapes"].names == tuple(f"{c} {k}" for c in COLOR_NAMES for k in SHAPE_NAMES)


def tiny_kind(labels: str = "shapes") -> LayoutContext:
    return LayoutContext(LayoutConfig(labels=labels, max_boxes=3, coord_bins=8, width=16, depth=1, heads=2))


def test_from_batch_uses_colour_and_kind_for_shapes():
    kind = tiny_kind()
    boxes = [torch.tensor([[0.1, 0.1, 0.4, 0.4]]), torch.tensor([[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.2, 0.2]])]
    batch = Batch(images=torch.zeros(2, 3, 8, 8), boxes=boxes, box_labels=[torch.tensor([2]), torch.tensor([0, 1])],
                  indices=torch.tensor([11, 12]), extra={"box_colors": [torch.tensor([1]), torch.tensor([5, 0])]})
    cond = kind.from_batch(batch)
    assert cond.tokens.shape == cond.token_mask.shape == (2, 15)
    _, labels = kind.tokenizer.decode(cond.tokens[1], cond.token_mask[1])
    assert labels.tolist() == [5 * 3 + 0, 0 * 3 + 1]  # black circle, red square
    assert [kind.label_names[i] for i in labels] == ["black circle", "red square"]
    bad = Batch(images=torch.zeros(1, 3, 8, 8), boxes=[torch.tensor([[0.5, 0.1, 0.4, 0.4]])],
                box_labels=[torch.tensor([0])], indices=torch.tensor([42]), extra={"box_colors": [torch.tensor([0])]})
    with pytest.raises(LayoutError, match="dataset item 42 box 0"):
        kind.from_batch(bad)


def test_from_request_cycles_layouts_and_names_errors():
    kind = tiny_kind()
    req = [[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}],
           [{"label": "blue square", "box": [0.5, 0.5, 0.9, 0.9]}, {"label": 0, "box": [0, 0, 0.2, 0.2]}]]
    cond = kind.from_request(5, layouts=req)
    assert cond.tokens.shape == (5, 15)
    assert torch.equal(cond.tokens[0], cond.tokens[2]) and torch.equal(cond.tokens[1], cond.tokens[3])
    assert cond.token_mask.sum(1).tolist() == [5, 10, 5, 10, 5]
    default = kind.from_request(20, layouts=None)  # fixed layouts cycling through the 18 labels
    labels = [kind.tokenizer.decode(t, m)[1].tolist() for t, m in zip(default.tokens, default.token_mask)]
    assert labels[0] == [0, 1] and labels[17] == [17, 0] and labels[18] == [0, 1]
    assert not torch.equal(default.tokens[0], default.tokens[18])  # another quadrant
    assert not kind.from_request(1, layouts=[]).token_mask.any()  # the empty layout: unconditional
    with pytest.raises(LayoutError, match=r"layout 0 box 0 label='pink circle': unknown label; valid: 0 'red circle'"):
        kind.from_request(1, layouts=[{"label": "pink circle", "box": [0, 0, 1, 1]}])
    with pytest.raises(LayoutError, match=r"4 boxes, more than this model's max_boxes=3"):
        kind.from_request(1, layouts=[{"label": 0, "box": [0, 0, 1, 1]}] * 4)


def test_encoder_ignores_padding_tokens():
    kind = tiny_kind()
    enc = kind.context_encoder.eval()
    tokens, mask = kind.tokenizer.encode(torch.tensor([[0.1, 0.2, 0.6, 0.7]]), torch.tensor([4]))
    other = tokens.clone()
    other[~mask] = 7  # garbage in the padding positions
    with torch.no_grad():
        a, ma = enc(tokens[None], mask[None])
        b, _ = enc(other[None], mask[None])
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6) and torch.equal(ma[0], mask)
    moved, mmask = kind.tokenizer.encode(torch.tensor([[0.4, 0.2, 0.9, 0.7]]), torch.tensor([4]))
    with torch.no_grad():
        c, _ = enc(moved[None], mmask[None])
    assert not torch.allclose(a[0, :5], c[0, :5], atol=1e-4)  # the box position reaches the context
