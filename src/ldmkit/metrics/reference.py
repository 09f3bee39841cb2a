"""Reference statistics (features, mean, covariance) of a real dataset, cached to ``.npz`` with their protocol.

Reference specs: ``fashion-mnist:test`` or ``fashion-mnist:train`` (whole split, or a seeded random subset of
``n_reference`` images), or a path to an ``.npz`` written by ``ReferenceStats.save`` (e.g. statistics of any
image set made with ``ldmkit eval-images IMAGES --save-reference OUT.npz``). The cache lives in ``$LDMKIT_CACHE_DIR`` (default
``~/.cache/ldmkit/metrics``); a cached file whose stored protocol differs from the requested one is refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ldmkit.metrics.features import FeatureExtractor
from ldmkit.metrics.fid import gaussian_stats
from ldmkit.metrics.protocol import PROTOCOL_VERSION, REFERENCE_FIELDS, check_protocol
from ldmkit.registry import ConfigError, lookup

logger = logging.getLogger(__name__)
CACHE_ENV = "LDMKIT_CACHE_DIR"
# reference spec -> (dataset, split)
REFERENCES: dict[str, tuple[str, str]] = {
    "fashion-mnist:train": ("fashion-mnist", "train"),
    "fashion-mnist:test": ("fashion-mnist", "test"),
}


@dataclass
class ReferenceStats:
    """Features ``[N, D]`` (float32), logits or None, Gaussian stats (float64) and the protocol dict."""

    features: np.ndarray
    logits: np.ndarray | None
    mu: np.ndarray
    sigma: np.ndarray
    protocol: dict

    def save(self, path: str | os.PathLike) -> None:
        arrays = {"features": self.features.astype(np.float32), "mu": self.mu, "sigma": self.sigma,
                  "protocol_json": np.array(json.dumps(self.protocol, sort_keys=True))}
        if self.logits is not None:
            arrays["logits"] = self.logits.astype(np.float32)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, expected: dict | None = None) -> ReferenceStats:
        """Load (never unpickling) and, if ``expected`` is given, refuse a differing protocol."""
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("features", "mu", "sigma", "protocol_json") if k not in z.files]
                if missing:
                    raise ValueError(f"{path}: not ldmkit reference statistics (missing keys {missing}; "
                                     f"has {z.files})")
                protocol = json.loads(str(z["protocol_json"]))
                stats = cls(z["features"], z["logits"] if "logits" in z.files else None, z["mu"], z["sigma"],
                            protocol)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read reference statistics ({e})") from e
        if expected is not None:
            check_protocol(protocol, expected, source=f"reference statistics {path}")
        return stats


def parse_reference(spec: str) -> tuple[str, str]:
    """``"fashion-mnist:test"`` -> ``("fashion-mnist", "test")``; errors list the valid specs."""
    try:
        return lookup(REFERENCES, spec, "reference")
    except ConfigError as e:
        raise ConfigError(f"{e} (or a path to a reference .npz)") from None


def reference_images(spec: str, n_reference: int | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The reference images (uint8 ``[N, 28, 28]``) and their protocol fields."""
    from ldmkit.data import load_fashion_mnist_arrays
    _, split = parse_reference(spec)
    images, _ = load_fashion_mnist_arrays(split)
    fields = {"reference": spec, "n_reference": len(images), "reference_seed": None}
    if n_reference is not None and n_reference != len(images):
        if not 2 <= n_reference <= len(images):
            raise ValueError(f"n_reference={n_reference} is outside [2, {len(images)}] for {spec}")
        idx = np.sort(np.random.default_rng(seed).choice(len(images), n_reference, replace=False))
        images = images[idx]
        fields.update(n_reference=n_reference, reference_seed=seed)
    return images, fields


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ldmkit" / "metrics")


def expected_protocol(spec: str, extractor: FeatureExtractor, n_reference: int | None, seed: int) -> dict:
    """Protocol fields that reference statistics for this request must carry."""
    _, split = parse_reference(spec)
    n_full = {"train": 60_000, "test": 10_000}[split]
    subset = n_reference is not None and n_reference != n_full
    return {"protocol_version": PROTOCOL_VERSION, **extractor.describe(), "reference": spec,
            "n_reference": n_reference if subset else n_full, "reference_seed": seed if subset else None,
            "resize_reference": extractor.preprocess(torch.zeros(1, 1, 28, 28))[1]}


def get_reference_stats(spec: str, extractor: FeatureExtractor, *, n_reference: int | None = None,
                        seed: int = 0, cache: str | os.PathLike | None = None, use_cache: bool = True,
                        batch_size: int = 500, progress: bool = False) -> ReferenceStats:
    """Reference statistics for ``spec``: from a stats ``.npz`` path, the cache, or computed (then cached)."""
    if spec.endswith(".npz") or os.path.sep in spec:
        stats = ReferenceStats.load(spec)
        check_protocol(stats.protocol, extractor.describe(), ("extractor", "extractor_sha256", "feature_dim"),
                       source=f"reference statistics {spec}")
        return stats
    expected = expected_protocol(spec, extractor, n_reference, seed)
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{spec}_n{expected['n_reference']}_s{expected['reference_seed']}"
                 f"_{extractor.name}_{extractor.weights_sha256[:12]}")
    path = cache_dir(cache) / f"{key}.npz"
    if use_cache and path.is_file():
        logger.info("using cached reference statistics %s", path)
        return ReferenceStats.load(path, expected)
    images, _ = reference_images(spec, n_reference, seed)
    feats = extractor.extract(images, batch_size=batch_size, progress=progress)
    expected["resize_reference"] = feats.resize
    mu, sigma = gaussian_stats(feats.features)
    stats = ReferenceStats(feats.features.astype(np.float32), feats.logits, mu, sigma, expected)
    check_protocol(stats.protocol, expected, REFERENCE_FIELDS)
    if use_cache:
        stats.save(path)
        logger.info("cached reference statistics to %s", path)
    return stats



def stats_from_images(images, extractor: FeatureExtractor, name: str, *, value_range=None,
                      batch_size: int = 500, progress: bool = False) -> ReferenceStats:
    """Reference statistics of any image set (``name`` goes into the protocol's ``reference`` field)."""
    feats = extractor.extract(images, batch_size=batch_size, value_range=value_range, progress=progress)
    mu, sigma = gaussian_stats(feats.features)
    protocol = {"protocol_version": PROTOCOL_VERSION, **extractor.describe(), "reference": name,
                "n_reference": len(feats.features), "reference_seed": None, "resize_reference": feats.resize}
    return ReferenceStats(feats.features.astype(np.float32), feats.logits, mu, sigma, protocol)
