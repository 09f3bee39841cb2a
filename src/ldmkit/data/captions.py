"""Captions for datasets that have class labels but no text: Fashion-MNIST.

A caption is a template filled with a synonym of the item's class and sometimes an attribute
("a pair of trousers", "some pants", "a photo of a sneaker", "footwear: ankle boot"). It is a pure function
of ``(seed, index, label)``, so every run, rank and resume sees the same caption for the same image.

:func:`held_out_captions` gives paraphrases never produced for training: templates and synonyms that
:func:`fmnist_caption` never uses (each held-out caption has a held-out template or a held-out synonym, and
none of them equals a training caption, see :func:`train_captions`). Evaluate text models on those.

The shapes dataset writes its own captions ("a red circle above a blue square", ``data/shapes.py``).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ldmkit.data.fashion_mnist import CLASS_NAMES
from ldmkit.types import Batch

# (determiner, noun) per class; the determiner takes the attribute ("a pair of" + "dark" + "trousers").
SYNONYMS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("a", "t-shirt"), ("a", "top"), ("a", "tee"), ("a", "short-sleeved top")),
    (("a pair of", "trousers"), ("some", "pants"), ("a pair of", "slacks"), ("some", "trousers")),
    (("a", "pullover"), ("a", "sweater"), ("a", "jumper")),
    (("a", "dress"), ("a", "frock"), ("a", "gown")),
    (("a", "coat"), ("a", "jacket"), ("an", "overcoat")),
    (("a", "sandal"), ("a pair of", "sandals"), ("a", "flip-flop")),
    (("a", "shirt"), ("a", "button-up shirt"), ("a", "blouse")),
    (("a", "sneaker"), ("a", "trainer"), ("a", "running shoe")),
    (("a", "bag"), ("a", "handbag"), ("a", "purse")),
    (("an", "ankle boot"), ("a", "boot"), ("a", "short boot")),
)
HELD_OUT_SYNONYMS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("a", "tee shirt"),), (("a pair of", "jeans"),), (("a", "knitted sweatshirt"),), (("a", "sundress"),),
    (("a", "parka"),), (("a", "strappy sandal"),), (("a", "dress shirt"),), (("an", "athletic shoe"),),
    (("a", "tote bag"),), (("a", "chelsea boot"),),
)
# Validation paraphrases: neither trained on nor part of the held-out evaluation set; for choosing settings
# (guidance scale, encoder options) on unseen wording without looking at the held-out set.
VALIDATION_SYNONYMS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("a", "crew-neck tee"),), (("a pair of", "chinos"),), (("a", "cable-knit sweater"),), (("a", "cocktail dress"),),
    (("a", "trench coat"),), (("a", "beach sandal"),), (("a", "flannel shirt"),), (("a", "tennis shoe"),),
    (("a", "shoulder bag"),), (("a", "suede bootie"),),
)
CATEGORIES = ("tops", "bottoms", "tops", "dresses", "outerwear", "footwear", "tops", "footwear", "accessories",
              "footwear")
ATTRIBUTES = ("plain", "dark", "light", "grey", "simple", "small", "large", "black", "white", "soft")

# {np}: determiner + noun; {npa}: with an attribute; {noun}: bare noun; {cat}: the category word.
TEMPLATES = ("{np}", "a photo of {np}", "a picture of {np}", "{cat}: {noun}", "{npa}", "a photo of {npa}",
             "{noun}", "product photo of {np}", "a black and white photo of {np}", "{np} on a dark background")
VALIDATION_TEMPLATES = ("a close-up of {np}", "here is {npa}", "an online listing for {np}",
                        "{noun} in black and white")
HELD_OUT_TEMPLATES = ("an image showing {np}", "this is {npa}", "a grayscale product shot of {np}",
                      "someone is selling {np}", "{noun}, front view")


def _fill(template: str, det: str, noun: str, attr: str, cat: str) -> str:
    def phrase(words: str) -> str:  # "a" before a vowel becomes "an" (and back)
        first = det.split()[-1]
        if first in ("a", "an"):
            head = det.rsplit(" ", 1)[0] + " " if " " in det else ""
            return f"{head}{'an' if words[0] in 'aeiou' else 'a'} {words}"
        return f"{det} {words}"

    return template.format(np=phrase(noun), npa=phrase(f"{attr} {noun}"), noun=noun, cat=cat)


def _check_label(label: int) -> int:
    label = int(label)
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"caption: label {label} outside [0, {len(CLASS_NAMES) - 1}] (Fashion-MNIST classes)")
    return label


def fmnist_caption(label: int, index: int, seed: int = 0) -> str:
    """The training caption of Fashion-MNIST item ``index`` of class ``label`` (pure in seed, index, label)."""
    label = _check_label(label)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), label])
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    det, noun = SYNONYMS[label][rng.integers(len(SYNONYMS[label]))]
    return _fill(template, det, noun, ATTRIBUTES[rng.integers(len(ATTRIBUTES))], CATEGORIES[label])


def _all(label: int, templates, synonyms) -> list[str]:
    return sorted({_fill(t, d, n, a, CATEGORIES[label])
                   for t, (d, n), a in itertools.product(templates, synonyms, ATTRIBUTES)})


def train_captions(label: int) -> list[str]:
    """Every caption :func:`fmnist_caption` can give class ``label``."""
    label = _check_label(label)
    return _all(label, TEMPLATES, SYNONYMS[label])


def held_out_captions(label: int) -> list[str]:
    """Paraphrases of class ``label`` never used in training (held-out template or held-out synonym)."""
    label = _check_label(label)
    train = set(train_captions(label))
    out = set(_all(label, HELD_OUT_TEMPLATES, SYNONYMS[label] + HELD_OUT_SYNONYMS[label]))
    out |= set(_all(label, TEMPLATES, HELD_OUT_SYNONYMS[label]))
    return sorted(out - train)


def validation_captions(label: int) -> list[str]:
    """Paraphrases of class ``label`` in neither :func:`train_captions` nor :func:`held_out_captions`
    (a validation template or a validation synonym)."""
    label = _check_label(label)
    seen = set(train_captions(label)) | set(held_out_captions(label))
    out = set(_all(label, VALIDATION_TEMPLATES, SYNONYMS[label] + VALIDATION_SYNONYMS[label]))
    out |= set(_all(label, TEMPLATES, VALIDATION_SYNONYMS[label]))
    return sorted(out - seen)


def _balanced(pool_of, per_class: int, seed: int) -> tuple[list[str], torch.Tensor]:
    rng = np.random.default_rng(seed)
    prompts, labels = [], []
    for k in range(len(CLASS_NAMES)):
        pool = pool_of(k)
        prompts += [pool[j] for j in rng.choice(len(pool), per_class, replace=per_class > len(pool))]
        labels += [k] * per_class
    return prompts, torch.tensor(labels, dtype=torch.int64)


def held_out_prompts(per_class: int, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """``per_class`` held-out captions of each class (class-balanced, label i // per_class) and their labels."""
    return _balanced(held_out_captions, per_class, seed)


def validation_prompts(per_class: int, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """As :func:`held_out_prompts` from :func:`validation_captions`."""
    return _balanced(validation_captions, per_class, seed)


def train_prompts(per_class: int, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """As :func:`held_out_prompts` from the training captions: for choosing settings (guidance scale) without
    looking at the held-out paraphrases."""
    return _balanced(train_captions, per_class, seed)


def default_prompts(data_cfg) -> list[str]:
    """Prompts for a preview grid / ``sample`` without ``--prompt``: one per class or scene, else ``[""]``."""
    if data_cfg.name == "fashion-mnist":
        return [_fill("a photo of {np}", *SYNONYMS[k][0], "", "") for k in range(len(CLASS_NAMES))]
    if data_cfg.name == "shapes":
        from ldmkit.data.shapes import Shapes

        ds = Shapes(8, data_cfg.image_size or 32, seed=data_cfg.seed, split="test",
                    min_shapes=data_cfg.min_shapes, max_shapes=data_cfg.max_shapes)
        return [ds.scene(i).caption for i in range(len(ds))]
    return [""]


class CaptionedFashionMNIST(torch.utils.data.Dataset):
    """A Fashion-MNIST dataset whose items are dicts with a ``caption`` (see :func:`fmnist_caption`)."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        image, label = self.dataset[i]
        return {"image": image, "label": label, "index": i, "caption": fmnist_caption(label, i, self.seed)}

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class CaptionedSource:
    """A batch source (``TensorData``: the Fashion-MNIST fast path) whose batches get captions."""

    def __init__(self, source, seed: int = 0):
        self.source, self.seed = source, seed

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, indices: torch.Tensor) -> Batch:
        batch = self.source.batch(indices)
        batch.captions = [fmnist_caption(int(k), int(i), self.seed) for k, i in zip(batch.labels, indices)]
        return batch


def with_captions(dataset, config):
    """``dataset`` with a caption per item (``data.captions: true``); shapes already has its own."""
    if config.name == "fashion-mnist":
        return CaptionedFashionMNIST(dataset, config.seed)
    if config.name == "shapes":
        return dataset
    raise ValueError(f"data.captions=true: data.name={config.name!r} has no captions; valid: fashion-mnist, shapes")
