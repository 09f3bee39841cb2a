"""Feature extractors for FID, KID, IS and precision/recall, behind a small registry.

``EXTRACTORS`` maps a name to a loader:

* ``"fmnist-eval-v2"`` (the default, ``DEFAULT_EXTRACTOR``): ldmkit's evaluation-only Fashion-MNIST
  classifier (``ldmkit/assets/fmnist_eval_v2.safetensors``, see ``fmnist_eval.py``); no ldmkit loss uses it.
  Features = its 128-d penultimate layer, logits = its 10 class logits.
* ``"fmnist-cnn-v1"`` (alias ``"fmnist-cnn"``): the Fashion-MNIST classifier the autoencoders' perceptual
  loss uses (``ldmkit/assets/fmnist_features.safetensors``, see ``fmnist_cnn.py``); same outputs. Scoring a
  model whose first stage was trained with it measures partly how well it fitted its own loss network, so
  ``ldmkit eval`` refuses that combination (``loss_networks`` / ``check_independent``).
* ``"inception-fid"``: the standard FID Inception-v3 (``inception.py``); features = 2048-d pool features,
  logits = 1008-way classifier. Its weights come only from a local safetensors file the user supplies.

Every extractor reports ``name``, ``weights_sha256`` and the resize mode it applied, so that each metric value
can state exactly which feature space it was computed in. Images enter as ``uint8`` (0..255) or float arrays
in ``[-1, 1]`` (ldmkit's convention; pass ``value_range=(0, 1)`` for [0, 1] floats), laid out ``[N, H, W]``,
``[N, C, H, W]`` or ``[N, H, W, C]`` with C in {1, 3}.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ldmkit.registry import ConfigError, lookup
from ldmkit.weights import load_verified_safetensors

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS_ENV = "LDMKIT_INCEPTION_WEIGHTS"
INCEPTION_SHA256_ENV = "LDMKIT_INCEPTION_SHA256"
INCEPTION_HELP = f"""\
ldmkit does not download weights and never loads pickle files, so the FID Inception weights must be supplied
as a local safetensors file. To make one (once, outside ldmkit, in an environment you trust):
  1. download pytorch-fid's port of the TF-FID graph:
     https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  2. convert it:
     python -c "import torch; from safetensors.torch import save_file; \\
sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu', weights_only=True); \\
save_file({{k: v.contiguous() for k, v in sd.items()}}, 'fid_inception_v3.safetensors')"
  3. note its hash: sha256sum fid_inception_v3.safetensors
then pass --inception-weights PATH --inception-sha256 HASH (or set {INCEPTION_WEIGHTS_ENV} and
{INCEPTION_SHA256_ENV})."""


def to_nchw(images: np.ndarray | torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Bring images to float32 ``[N, C, H, W]`` in ``[-1, 1]``.

    Args:
        images: uint8 (0..255) or float; ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]`` with C in {1, 3}.
        value_range: range of float inputs; default ``(-1, 1)``. Ignored for uint8.

    Raises:
        ValueError: for an unsupported shape or dtype, naming it.
    """
    if isinstance(images, np.ndarray):
        images = np.array(images, copy=True) if not images.flags.writeable else np.ascontiguousarray(images)
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be [N,H,W], [N,C,H,W] or [N,H,W,C]; got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels; got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div(127.5).sub(1.0)
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got dtype {x.dtype}")
    lo, hi = value_range or (-1.0, 1.0)
    x = (x.float() - lo) * (2.0 / (hi - lo)) - 1.0
    if x.numel() and (float(x.min()) < -1.01 or float(x.max()) > 1.01):
        logger.warning("float images exceed the value range %s (min %.3f, max %.3f after rescaling); clamping",
                       (lo, hi), float(x.min()), float(x.max()))
    return x.clamp(-1.0, 1.0)


def _looks_like_unit_range(images: np.ndarray | torch.Tensor) -> bool:
    if isinstance(images, torch.Tensor):
        return bool(images.is_floating_point() and images.numel() and float(images.min()) >= 0.0)
    a = np.asarray(images)
    return bool(np.issubdtype(a.dtype, np.floating) and a.size and float(a.min()) >= 0.0)


@dataclass
class Features:
    """Output of ``FeatureExtractor.extract``: ``features [N, D]`` float64, ``logits [N, K]`` or None."""

    features: np.ndarray
    logits: np.ndarray | None
    resize: str


class FeatureExtractor:
    """A frozen network mapping images to features (and logits); subclasses define ``preprocess``.

    Attributes:
        name: versioned name written into every protocol ("fmnist-cnn-v1", "inception-fid-v3").
        weights_sha256: sha256 of the weights file the network was loaded from.
        feature_dim: D.
    """

    name: str = "base"

    def __init__(self, model: torch.nn.Module, weights_sha256: str, feature_dim: int) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.weights_sha256 = weights_sha256
        self.feature_dim = feature_dim

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        """``[N,C,H,W]`` in [-1, 1] -> network input, plus a short name of the resize applied."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"extractor": self.name, "extractor_sha256": self.weights_sha256, "feature_dim": self.feature_dim}

    @torch.no_grad()
    def extract(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 500,
                value_range: tuple[float, float] | None = None, progress: bool = False) -> Features:
        """Features and logits of all images, computed in batches of ``batch_size`` (float64 output)."""
        n = len(images)
        if n == 0:
            raise ValueError("no images to extract features from")
        feats, logits, resize = [], [], "none"
        device = next(self.model.parameters()).device
        batches = range(0, n, batch_size)
        if progress:
            from tqdm import tqdm
            batches = tqdm(batches, desc=f"features ({self.name})", unit="batch")
        for i in batches:
            x = to_nchw(images[i:i + batch_size], value_range).to(device)
            if i == 0 and value_range is None and _looks_like_unit_range(images[:batch_size]):
                logger.warning("float images are all >= 0 although read as [-1, 1]; if they are in [0, 1], "
                               "pass value_range=(0, 1) (CLI: --value-range 0,1)")
            x, resize = self.preprocess(x)
            f, lg = self.model(x)
            feats.append(f.double().cpu().numpy())
            logits.append(lg.double().cpu().numpy())
        return Features(np.concatenate(feats), np.concatenate(logits), resize)


class FMNISTExtractor(FeatureExtractor):
    """One of ldmkit's Fashion-MNIST classifiers (v1 or eval-v2). Inputs: 28x28 as is; 32x32 (the padded training size) center-cropped
    back to 28; any other size resized bilinearly with antialiasing to 28. RGB is converted to luma (BT.601)."""

    def __init__(self, model: torch.nn.Module, weights_sha256: str, version: str, feature_dim: int = 128) -> None:
        super().__init__(model, weights_sha256, feature_dim)
        self.name = version

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        if x.shape[1] == 3:
            x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        h, w = x.shape[-2:]
        if (h, w) == (28, 28):
            return x, "none"
        if (h, w) == (32, 32):
            return x[:, :, 2:30, 2:30], "center-crop-32-to-28"
        return F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True), \
            f"bilinear-antialias-{h}x{w}-to-28"


class InceptionExtractor(FeatureExtractor):
    """FID Inception-v3: grayscale is repeated to 3 channels; any size is resized bilinearly to 299x299
    (``align_corners=False``, no antialias), as pytorch-fid does."""

    name = "inception-fid-v3"

    def __init__(self, model: torch.nn.Module, weights_sha256: str) -> None:
        from ldmkit.metrics.inception import FEATURE_DIM
        super().__init__(model, weights_sha256, FEATURE_DIM)

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        parts = []
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
            parts.append("gray-to-rgb")
        if tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            parts.append("bilinear-299")
        return x, "+".join(parts) or "none"


def _asset_path(name: str) -> Path:
    return Path(str(resources.files("ldmkit") / "assets" / name))


def _fmnist_sidecar(path: Path) -> dict:
    """The asset's JSON sidecar (expected sha256, version, architecture), checked against this ldmkit."""
    from ldmkit.metrics.fmnist_cnn import CHANNELS, FINAL_POOL, VERSION

    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if tuple(meta.get("channels", CHANNELS)) != CHANNELS or meta.get("final_pool", FINAL_POOL) != FINAL_POOL:
        raise ValueError(f"{meta_path}: architecture (channels {meta.get('channels')}, final_pool "
                         f"{meta.get('final_pool')}) differs from this ldmkit's {CHANNELS}, {FINAL_POOL}")
    if meta.get("version", VERSION) != VERSION:
        raise ValueError(f"{path}: feature network version {meta['version']!r}, this ldmkit builds {VERSION!r}")
    return meta


def load_fmnist_extractor(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                          **_: object) -> FMNISTExtractor:
    """Load the shipped Fashion-MNIST feature network (or ``weights``, a file with the same layout).

    The file must match the sha256 in its JSON sidecar (the shipped asset has one), so a damaged asset is
    refused rather than silently changing FIDs; a user file without a sidecar loads with a warning.
    """
    from ldmkit.metrics.fmnist_cnn import VERSION, FMNISTClassifier

    path = Path(weights) if weights else _asset_path("fmnist_features.safetensors")
    howto = "The Fashion-MNIST feature network ships with ldmkit (ldmkit/assets); scripts/train_fmnist_features.py rebuilds it."
    meta = _fmnist_sidecar(path) if path.is_file() else {}
    state, sha = load_verified_safetensors(path, meta.get("sha256"), "Fashion-MNIST feature weights", howto=howto,
                                           allow_unverified=True)
    model = FMNISTClassifier()
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
    return FMNISTExtractor(model.to(device), sha, meta.get("version", VERSION))


def load_inception_extractor(weights: str | os.PathLike | None = None, sha256: str | None = None,
                             device: str | torch.device = "cpu", **_: object) -> InceptionExtractor:
    """Load the FID Inception-v3 from a local safetensors file, checking its sha256.

    Args:
        weights: path to the safetensors file; default ``$LDMKIT_INCEPTION_WEIGHTS``.
        sha256: expected hex digest; default ``$LDMKIT_INCEPTION_SHA256``. Without one, the file's hash is
            still recorded in every protocol, and a warning says it was not verified.

    Raises:
        FileNotFoundError / ValueError: with instructions (``INCEPTION_HELP``) on how to obtain the file.
    """
    from ldmkit.metrics.inception import FIDInceptionV3

    weights = weights or os.environ.get(INCEPTION_WEIGHTS_ENV)
    sha256 = sha256 or os.environ.get(INCEPTION_SHA256_ENV) or None
    if not weights:
        raise FileNotFoundError(f"no FID Inception weights given.\n{INCEPTION_HELP}")
    path = Path(weights)
    state, actual = load_verified_safetensors(path, sha256, "FID Inception weights", howto=INCEPTION_HELP,
                                              allow_unverified=True)
    model = FIDInceptionV3()
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: not the FID Inception-v3 state dict: missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), "
                         f"shape mismatches {shapes[:5]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return InceptionExtractor(model.to(device), actual)


def load_fmnist_eval_extractor(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                               **_: object) -> FMNISTExtractor:
    """Load the shipped evaluation-only Fashion-MNIST network ``fmnist-eval-v2`` (or ``weights`` with its layout).

    The file must match the sha256 of its JSON sidecar; a user file without a sidecar loads with a warning.
    """
    from ldmkit.metrics.fmnist_eval import CHANNELS, FEATURE_DIM, VERSION, FMNISTEvalClassifier

    path = Path(weights) if weights else _asset_path("fmnist_eval_v2.safetensors")
    howto = ("The evaluation network ships with ldmkit (ldmkit/assets/fmnist_eval_v2.*); "
             "scripts/train_fmnist_features.py --arch eval-v2 rebuilds it.")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("version", VERSION) != VERSION or tuple(meta.get("channels", CHANNELS)) != CHANNELS:
        raise ValueError(f"{meta_path}: feature network {meta.get('version')!r} with channels "
                         f"{meta.get('channels')}; this ldmkit builds {VERSION!r} with {CHANNELS}")
    state, sha = load_verified_safetensors(path, meta.get("sha256"), "Fashion-MNIST evaluation weights",
                                           howto=howto, allow_unverified=True)
    model = FMNISTEvalClassifier()
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
    return FMNISTExtractor(model.to(device), sha, VERSION, FEATURE_DIM)


#: The extractor ``ldmkit eval`` / ``eval-images`` / ``evaluate_images`` use unless told otherwise: one that
#: no ldmkit loss uses.
DEFAULT_EXTRACTOR = "fmnist-eval-v2"

#: name -> loader(**options) -> FeatureExtractor. Options: weights, sha256, device.
EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "fmnist-eval-v2": load_fmnist_eval_extractor,
    "fmnist-cnn-v1": load_fmnist_extractor,
    "fmnist-cnn": load_fmnist_extractor,  # the v1 network's name before v2 existed
    "inception-fid": load_inception_extractor,
}

#: an autoencoder's ``loss.perceptual`` -> the extractor whose network that loss runs
PERCEPTUAL_EXTRACTORS: dict[str, str] = {"fmnist": "fmnist-cnn-v1"}


def get_extractor(name: str = DEFAULT_EXTRACTOR, **options: object) -> FeatureExtractor:
    """Build a registered extractor by name; an unknown name lists the valid ones."""
    return lookup(EXTRACTORS, name, "feature extractor")(**options)


def canonical_name(name: str) -> str:
    """The versioned network behind a registry name (``"fmnist-cnn"`` -> ``"fmnist-cnn-v1"``)."""
    return {"fmnist-cnn": "fmnist-cnn-v1", "inception-fid": "inception-fid-v3"}.get(name, name)


def loss_networks(first_stage_config: dict | None) -> set[str]:
    """Extractor names whose networks a first stage's losses used, from its stored run config (``config.json``
    ``config``: sections ``loss``, ...); empty for pixel-space models or unknown losses."""
    if not first_stage_config:
        return set()
    perceptual = (first_stage_config.get("loss") or {}).get("perceptual")
    weight = (first_stage_config.get("loss") or {}).get("perceptual_weight", 1.0)
    used = PERCEPTUAL_EXTRACTORS.get(perceptual) if weight else None
    return {used} if used else set()


def check_independent(extractor: str, used: set[str], *, where: str) -> None:
    """Refuse to score with a network that one of the model's losses used.

    Raises:
        ConfigError: naming the extractor, the model (``where``) and the extractors that are allowed.
    """
    name = canonical_name(extractor)
    if name in used:
        others = sorted(n for n in EXTRACTORS if canonical_name(n) not in used and n != "fmnist-cnn")
        raise ConfigError(f"extractor {extractor!r} ({name}) is the perceptual-loss network of {where}: it would "
                          f"score the model in the feature space it was trained to match. Use one of "
                          f"{', '.join(others)} (default {DEFAULT_EXTRACTOR}), or pass --allow-loss-extractor "
                          "to score anyway (recorded in the protocol)")
