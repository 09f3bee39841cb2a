"""The extractor registry: the shipped evaluation network fmnist-eval-v2 (default) and fmnist-cnn-v1 (the
perceptual loss's), their recorded hashes, real-data accuracy, and the guard against scoring a model with a
network one of its losses used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ldmkit.data import load_fashion_mnist_arrays
from ldmkit.metrics import evaluate_images
from ldmkit.metrics.features import (
    DEFAULT_EXTRACTOR,
    EXTRACTORS,
    _asset_path,
    check_independent,
    get_extractor,
    loss_networks,
)
from ldmkit.registry import ConfigError

# The shipped files' sha256, written here by hand: a retrained or damaged asset fails this test.
EVAL_V2_SHA256 = "5ed587392d323204cc252d44498900448afa97608456b7cc88387f06b33c5f0b"
CNN_V1_SHA256 = "1ec63b2f54b5cdaab569a7c407791c449b84b013442045fd32ca14e46ec32ec4"


@pytest.fixture(scope="module")
def test_split():
    x, y = load_fashion_mnist_arrays("test")
    return x[:300], y[:300]


def test_registry_names_and_default():
    assert DEFAULT_EXTRACTOR == "fmnist-eval-v2"
    assert {"fmnist-eval-v2", "fmnist-cnn-v1", "fmnist-cnn", "inception-fid"} <= set(EXTRACTORS)
    with pytest.raises(ConfigError, match="fmnist-eval-v2"):
        get_extractor("fmnist-eval-v3")


@pytest.mark.parametrize("name,version,sha", [("fmnist-eval-v2", "fmnist-eval-v2", EVAL_V2_SHA256),
                                              ("fmnist-cnn-v1", "fmnist-cnn-v1", CNN_V1_SHA256),
                                              ("fmnist-cnn", "fmnist-cnn-v1", CNN_V1_SHA256)])
def test_shipped_extractor_loads_with_its_recorded_hash(name, version, sha):
    ex = get_extractor(name)
    assert ex.name == version and ex.weights_sha256 == sha and ex.feature_dim == 128


def test_eval_v2_is_small_and_its_sidecar_is_honest():
    meta = json.loads(_asset_path("fmnist_eval_v2.json").read_text())
    assert _asset_path("fmnist_eval_v2.safetensors").stat().st_size < 2_000_000
    assert meta["sha256"] == EVAL_V2_SHA256 and meta["version"] == "fmnist-eval-v2"
    assert meta["test_accuracy"] >= 0.915 and meta["val_size"] == 5000 and meta["training"]["seed"] != 0


@pytest.mark.parametrize("name", ["fmnist-eval-v2", "fmnist-cnn-v1"])
def test_classifies_real_test_images(name, test_split):
    x, y = test_split
    logits = get_extractor(name).extract(x).logits
    acc = float((logits.argmax(1) == y).mean())
    assert acc >= 0.90, (name, acc)


def test_v2_is_a_different_feature_space(test_split):
    """Not a copy of v1: other weights, and features that are not a linear image of v1's."""
    x, _ = test_split
    a, b = get_extractor("fmnist-eval-v2"), get_extractor("fmnist-cnn-v1")
    assert a.weights_sha256 != b.weights_sha256
    fa, fb = a.extract(x).features, b.extract(x).features
    # least-squares map from v1 features to v2 features leaves a large part unexplained
    fb1 = np.c_[fb, np.ones(len(fb))]
    coef, *_ = np.linalg.lstsq(fb1, fa, rcond=None)
    unexplained = ((fa - fb1 @ coef) ** 2).sum() / ((fa - fa.mean(0)) ** 2).sum()
    assert unexplained > 0.05, unexplained


def test_evaluate_images_defaults_to_eval_v2(tmp_path, test_split):
    x, _ = test_split
    r = evaluate_images(x, "fashion-mnist:test", ("fid",), n_reference=500, cache=tmp_path)
    assert r["protocol"]["extractor"] == "fmnist-eval-v2" and r["fid"] < 20


def test_guard_refuses_the_perceptual_loss_network():
    used = loss_networks({"loss": {"perceptual": "fmnist", "perceptual_weight": 1.0}})
    assert used == {"fmnist-cnn-v1"}
    assert loss_networks({"loss": {"perceptual": "fmnist", "perceptual_weight": 0.0}}) == set()
    assert loss_networks({"loss": {"perceptual": "none"}}) == set() and loss_networks(None) == set()
    for name in ("fmnist-cnn-v1", "fmnist-cnn"):
        with pytest.raises(ConfigError, match="perceptual-loss network of the first stage X.*fmnist-eval-v2"):
            check_independent(name, used, where="the first stage X")
    check_independent("fmnist-eval-v2", used, where="the first stage X")  # allowed


def test_features_are_float64_and_batch_independent(test_split):
    x, _ = test_split
    ex = get_extractor()
    whole = ex.extract(x[:40]).features
    parts = np.concatenate([ex.extract(x[:40], batch_size=7).features])
    assert whole.dtype == np.float64
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-5)
