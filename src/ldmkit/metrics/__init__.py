"""Evaluation with a stated protocol: FID, KID, Inception Score, improved precision/recall, PSNR/SSIM/rFID.

Quick use (generated images vs the Fashion-MNIST test split, in ldmkit's own feature space)::

    from ldmkit.metrics import evaluate_images
    r = evaluate_images(images_uint8_or_float, reference="fashion-mnist:test", metrics=("fid", "kid", "is", "pr"))
    print(r["fid"], r["protocol"])

Lower-level pieces: ``get_extractor`` (features.py), ``frechet_distance`` / ``fid_from_features`` (fid.py),
``kernel_inception_distance`` (kid.py), ``inception_score``, ``precision_recall``, ``psnr`` / ``ssim`` /
``rfid`` (reconstruction.py), ``get_reference_stats`` / ``ReferenceStats`` (reference.py).
"""

from ldmkit.metrics.evaluate import METRICS, evaluate_images, load_images
from ldmkit.metrics.features import EXTRACTORS, FeatureExtractor, get_extractor
from ldmkit.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from ldmkit.metrics.inception_score import inception_score
from ldmkit.metrics.kid import kernel_inception_distance
from ldmkit.metrics.precision_recall import precision_recall
from ldmkit.metrics.protocol import ProtocolMismatchError, SmallSampleWarning
from ldmkit.metrics.reconstruction import psnr, reconstruction_metrics, rfid, ssim
from ldmkit.metrics.reference import ReferenceStats, get_reference_stats

__all__ = [
    "EXTRACTORS", "METRICS", "FeatureExtractor", "ProtocolMismatchError", "ReferenceStats", "SmallSampleWarning",
    "evaluate_images", "fid_from_features", "frechet_distance", "gaussian_stats", "get_extractor",
    "get_reference_stats", "inception_score", "kernel_inception_distance", "load_images", "precision_recall",
    "psnr", "reconstruction_metrics", "rfid", "ssim",
]
