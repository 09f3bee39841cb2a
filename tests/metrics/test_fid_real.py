"""FID on real Fashion-MNIST with the shipped feature network: small for real vs real, monotone in degradation.

Features of 10k train and 10k test images are extracted once per module (a few seconds with the small CNN).
"""

import itertools
import json
from importlib import resources

import numpy as np
import pytest
import torch

from ldmkit.data import load_fashion_mnist_arrays
from ldmkit.metrics import evaluate_images, fid_from_features, get_extractor
from ldmkit.metrics.degrade import add_gaussian_noise, gaussian_blur
from ldmkit.metrics.fid import frechet_distance, gaussian_stats
from ldmkit.metrics.reference import reference_images

N_DEGRADED = 2000


@pytest.fixture(scope="module")
def feats():
    ex = get_extractor("fmnist-cnn")
    train, _ = load_fashion_mnist_arrays("train")
    test, test_labels = load_fashion_mnist_arrays("test")
    train10k = torch.from_numpy(train[:10_000].copy())[:, None].float().div(127.5).sub(1.0)
    out = {"ex": ex, "train_images": train10k, "test_labels": test_labels}
    out["train"] = ex.extract(train10k)
    out["test"] = ex.extract(test)
    out["test_stats"] = gaussian_stats(out["test"].features)
    return out


def _fid_vs_test(feats, images):
    return frechet_distance(*gaussian_stats(feats["ex"].extract(images).features), *feats["test_stats"])


def _fid_base(feats):
    """FID of the clean images the degraded ones start from (their features are already extracted)."""
    return frechet_distance(*gaussian_stats(feats["train"].features[:N_DEGRADED]), *feats["test_stats"])


def test_shipped_network_accuracy(feats):
    meta = json.loads((resources.files("ldmkit") / "assets" / "fmnist_features.json").read_text())
    acc = float((feats["test"].logits.argmax(1) == feats["test_labels"]).mean())
    assert acc >= 0.92
    assert acc == pytest.approx(meta["test_accuracy"], abs=5e-4)
    assert feats["ex"].weights_sha256 == meta["sha256"] and feats["ex"].name == meta["version"]


def test_real_vs_real_is_small(feats):
    fid_real = fid_from_features(feats["train"].features, feats["test"].features)
    fid_noise = _fid_vs_test(feats, add_gaussian_noise(feats["train_images"][:N_DEGRADED], 0.05))
    assert fid_real < 1.0
    assert fid_real < 0.2 * fid_noise


def test_fid_grows_monotonically_with_noise(feats):
    base = feats["train_images"][:N_DEGRADED]
    fids = [_fid_base(feats)] + [_fid_vs_test(feats, add_gaussian_noise(base, s, seed=1)) for s in (0.1, 0.3, 0.6)]
    assert all(a < b for a, b in itertools.pairwise(fids)), fids


def test_fid_grows_monotonically_with_blur(feats):
    base = feats["train_images"][:N_DEGRADED]
    fids = [_fid_base(feats)] + [_fid_vs_test(feats, gaussian_blur(base, s)) for s in (0.7, 1.2, 2.0)]
    assert all(a < b for a, b in itertools.pairwise(fids)), fids


def test_padded_32_inputs_are_center_cropped(feats):
    x = feats["train_images"][:50]
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    a, b = feats["ex"].extract(x), feats["ex"].extract(padded)
    np.testing.assert_array_equal(a.features, b.features)
    assert b.resize == "center-crop-32-to-28" and a.resize == "none"
    rgb = feats["ex"].extract(x.expand(-1, 3, -1, -1))
    np.testing.assert_allclose(rgb.features, a.features, atol=1e-4)


def test_evaluate_images_matches_direct_computation(feats, tmp_path):
    images = (feats["train_images"][:1000] + 1).mul(127.5).round().to(torch.uint8).numpy()
    with pytest.warns(UserWarning, match="only 1000 images"):
        r = evaluate_images(images, "fashion-mnist:test", ("fid", "is"), n_reference=2000, reference_seed=3,
                            cache=tmp_path, is_splits=5, extractor=feats["ex"])
    ref, _ = reference_images("fashion-mnist:test", 2000, seed=3)
    direct = fid_from_features(feats["ex"].extract(images).features, feats["ex"].extract(ref).features)
    assert r["fid"] == pytest.approx(direct, rel=1e-6)
    p = r["protocol"]
    assert (p["n_generated"], p["n_reference"], p["reference_seed"]) == (1000, 2000, 3)
    assert p["extractor"] == "fmnist-cnn-v1" and p["extractor_sha256"] == feats["ex"].weights_sha256
    assert p["resize_generated"] == "none" and p["warnings"]
    assert 1.0 < r["is"] <= 10.0


def test_rfid_of_identical_images_is_zero_and_grows_with_error(feats):
    from ldmkit.metrics import rfid
    x = feats["train_images"][:400]
    same = rfid(x, x, extractor=feats["ex"])
    noisy = rfid(x, add_gaussian_noise(x, 0.2), extractor=feats["ex"])
    assert same["rfid"] == pytest.approx(0.0, abs=1e-6) and noisy["rfid"] > 1.0
    assert same["protocol"]["n_reference"] == 400 and same["protocol"]["warnings"]


def test_unit_range_floats_are_flagged(feats, caplog):
    x = (feats["train_images"][:10] + 1) / 2
    feats["ex"].extract(x)
    assert "value_range=(0, 1)" in caplog.text
