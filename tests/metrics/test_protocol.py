"""Reference statistics: npz round trip, protocol mismatch refused with the differing fields named, warnings."""

import warnings

import numpy as np
import pytest
import torch

from ldmkit.metrics.features import FeatureExtractor, to_nchw
from ldmkit.metrics.protocol import (
    ProtocolMismatchError,
    SmallSampleWarning,
    check_protocol,
    small_sample_warning,
)
from ldmkit.metrics.reference import ReferenceStats, expected_protocol, get_reference_stats


class _MeanPool(torch.nn.Module):
    """A cheap stand-in feature network: 4x4 average-pooled pixels (49-d) and 3 'logits'."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        f = torch.nn.functional.avg_pool2d(x, 4).flatten(1) * self.w
        return f, f[:, :3]


class _Toy(FeatureExtractor):
    name = "toy-v1"

    def preprocess(self, x):
        return x, "none"


def _toy(sha="abc"):
    return _Toy(_MeanPool(), weights_sha256=sha, feature_dim=49)


def test_npz_round_trip_and_mismatch_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(20, 4)).astype(np.float32)
    proto = {"protocol_version": 1, "extractor": "toy-v1", "extractor_sha256": "abc", "feature_dim": 4,
             "reference": "fashion-mnist:test", "n_reference": 20, "reference_seed": 0, "resize_reference": "none"}
    stats = ReferenceStats(feats, None, feats.mean(0).astype(np.float64), np.cov(feats.T.astype(np.float64)), proto)
    path = tmp_path / "ref.npz"
    stats.save(path)
    back = ReferenceStats.load(path, expected=dict(proto))
    np.testing.assert_array_equal(back.features, feats)
    assert back.protocol == proto and back.logits is None
    other = dict(proto, extractor_sha256="def", n_reference=10_000)
    with pytest.raises(ProtocolMismatchError) as err:
        ReferenceStats.load(path, expected=other)
    msg = str(err.value)
    assert "extractor_sha256: stored 'abc', requested 'def'" in msg and "n_reference: stored 20" in msg
    assert "feature_dim" not in msg


def test_not_a_stats_file(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="missing keys"):
        ReferenceStats.load(path)


def test_cached_reference_stats_with_other_protocol_are_refused(tmp_path):
    ex = _toy()
    stats = get_reference_stats("fashion-mnist:test", ex, n_reference=300, seed=1, cache=tmp_path)
    assert stats.features.shape == (300, 49)
    assert stats.protocol == expected_protocol("fashion-mnist:test", ex, 300, 1)
    (cached,) = list(tmp_path.glob("*.npz"))
    again = get_reference_stats("fashion-mnist:test", ex, n_reference=300, seed=1, cache=tmp_path)
    np.testing.assert_array_equal(again.mu, stats.mu)
    # Tamper with the cached file's protocol: the next use must refuse it, naming the field.
    tampered = ReferenceStats(stats.features, stats.logits, stats.mu, stats.sigma,
                              dict(stats.protocol, reference_seed=7))
    tampered.save(cached)
    with pytest.raises(ProtocolMismatchError, match="reference_seed: stored 7, requested 1"):
        get_reference_stats("fashion-mnist:test", ex, n_reference=300, seed=1, cache=tmp_path)
    # A stats file given explicitly must come from the same extractor weights.
    with pytest.raises(ProtocolMismatchError, match="extractor_sha256"):
        get_reference_stats(str(cached), _toy(sha="other"))


def test_unknown_reference_lists_valid_ones():
    with pytest.raises(ValueError, match="fashion-mnist:test"):
        get_reference_stats("cifar10:test", _toy())


def test_small_sample_warning():
    with pytest.warns(SmallSampleWarning, match="only 500 images"):
        assert small_sample_warning(500, "images")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert small_sample_warning(10_000) == []
    check_protocol({"a": 1}, {"a": 1}, ("a",))


def test_to_nchw_layouts_and_ranges():
    u8 = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    x = to_nchw(u8)
    assert x.shape == (2, 3, 4, 4) and x[0, 0, 0, 0] == -1.0
    assert torch.allclose(to_nchw(np.full((1, 5, 5), 0.5, np.float32), value_range=(0, 1)), torch.zeros(1, 1, 5, 5))
    assert to_nchw(np.full((1, 1, 5, 5), 255, np.uint8)).max() == 1.0
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_nchw(np.zeros((2, 5, 6, 7), np.float32))
