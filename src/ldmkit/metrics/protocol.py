"""The evaluation protocol: what every metric value carries so that two numbers can be compared.

A protocol is a plain JSON-able dict. Fields (absent ones do not apply):

* ``extractor``, ``extractor_sha256``, ``feature_dim``: the feature network and the exact weights file;
* ``reference`` (e.g. ``"fashion-mnist:test"``), ``n_reference``, ``reference_seed`` (subset draw; None =
  whole split), ``resize_reference``;
* ``n_generated``, ``resize_generated``, ``generation`` (sampler, steps, seeds ... when ldmkit sampled);
* metric settings: ``kid_subsets``, ``kid_subset_size``, ``kid_seed``, ``is_splits``, ``pr_k``;
* ``warnings``: e.g. N below 10,000 (FID is biased upward at small N, so such values only compare with
  values at the same N).
"""

from __future__ import annotations

import warnings

PROTOCOL_VERSION = 1
MIN_RECOMMENDED_N = 10_000
#: Fields that must agree before cached reference statistics may be used.
REFERENCE_FIELDS = ("protocol_version", "extractor", "extractor_sha256", "feature_dim", "reference",
                    "n_reference", "reference_seed", "resize_reference")


class ProtocolMismatchError(ValueError):
    """Two protocols that must agree differ; the message names every differing field."""


class SmallSampleWarning(UserWarning):
    """N is below the recommended 10,000 samples."""


def small_sample_warning(n: int, what: str = "samples") -> list[str]:
    """Warn (``SmallSampleWarning``) when ``n < 10,000`` and return the message list for the protocol."""
    if n >= MIN_RECOMMENDED_N:
        return []
    msg = (f"only {n} {what} (< {MIN_RECOMMENDED_N}): FID/KID/precision/recall at small N are biased and "
           f"only comparable with values computed at the same N")
    warnings.warn(msg, SmallSampleWarning, stacklevel=3)
    return [msg]


def check_protocol(stored: dict, expected: dict, fields: tuple[str, ...] = REFERENCE_FIELDS,
                   source: str = "reference statistics") -> None:
    """Refuse to compare when any of ``fields`` differs between ``stored`` and ``expected``.

    Raises:
        ProtocolMismatchError: listing each differing field as ``field: stored X, requested Y``.
    """
    diffs = [f"{k}: stored {stored.get(k)!r}, requested {expected.get(k)!r}"
             for k in fields if stored.get(k) != expected.get(k)]
    if diffs:
        raise ProtocolMismatchError(f"{source} were computed under a different protocol; refusing to compare. "
                                    "Differing fields: " + "; ".join(diffs))
