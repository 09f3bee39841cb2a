"""Score a set of images against a reference under a stated protocol (the function behind ``ldmkit eval*``).

    from ldmkit.metrics import evaluate_images
    result = evaluate_images(images, reference="fashion-mnist:test", metrics=("fid", "kid"))
    result["fid"], result["kid"], result["kid_std"], result["protocol"]

``images``: uint8 (0..255) or float in [-1, 1], ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ldmkit.metrics.features import DEFAULT_EXTRACTOR, FeatureExtractor, get_extractor
from ldmkit.metrics.fid import frechet_distance, gaussian_stats
from ldmkit.metrics.inception_score import inception_score
from ldmkit.metrics.kid import kernel_inception_distance
from ldmkit.metrics.precision_recall import precision_recall
from ldmkit.metrics.protocol import PROTOCOL_VERSION, small_sample_warning
from ldmkit.metrics.reference import get_reference_stats
from ldmkit.registry import ConfigError, lookup

logger = logging.getLogger(__name__)
# metric name -> what it is (``--metrics fid,kid,is,pr``)
METRICS: dict[str, str] = {
    "fid": "Frechet Inception Distance (Heusel et al. 2017)",
    "kid": "Kernel Inception Distance (Binkowski et al. 2018)",
    "is": "Inception Score (Salimans et al. 2016)",
    "pr": "improved precision and recall (Kynkaanniemi et al. 2019)",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
NPZ_KEYS = ("images", "samples", "arr_0", "x")


def parse_metrics(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"fid,kid"`` -> ``("fid", "kid")``; unknown names are an error listing the valid ones."""
    names = tuple(m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip())
    if not names:
        raise ConfigError(f"no metric given in {text!r}; valid: {', '.join(METRICS)}")
    for name in names:
        lookup(METRICS, name, "metric")
    return names


def _describe_seeds(seeds: np.ndarray) -> str | list[int]:
    """A contiguous run of seeds as ``"first..last"``, anything else as the full list."""
    seeds = np.asarray(seeds).ravel().astype(np.int64)
    if len(seeds) > 1 and np.array_equal(seeds, np.arange(seeds[0], seeds[0] + len(seeds))):
        return f"{int(seeds[0])}..{int(seeds[-1])}"
    return seeds.tolist()


def _channels_of(path: Path) -> int:
    """1 for grayscale files (L, I, I;16, 1 modes), else 3; unreadable files get 3 (the loader names them)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return 1 if im.mode in ("L", "I", "I;16", "1", "LA") else 3
    except Exception:  # noqa: BLE001 - load_image reports the problem with the file's name
        return 3


def load_images(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, dict]:
    """Images from a directory of image files (sorted by name) or an ``.npz`` / ``.npy`` array file.

    Returns the array (as stored: uint8 or float) and extra protocol info (source, and ``seeds`` when the npz
    holds a ``seeds`` array). npz files are read with ``allow_pickle=False``.
    """
    path = Path(path)
    info: dict = {"source": str(path)}
    if path.is_dir():
        from ldmkit.data import load_image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        skipped = sorted(p.name for p in path.iterdir()
                         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES)
        if skipped:  # said, not silent: a .gif or .tif among the samples would otherwise just lower N
            logging.getLogger(__name__).warning(
                "%s: skipped %d file(s) that are not %s images: %s%s", path, len(skipped), "/".join(IMAGE_SUFFIXES),
                ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "")
            info["skipped_files"] = skipped
        if not files:
            raise ValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this directory")
        arrays = []
        for f in files:  # the datasets' checked loader: bad files are a BadImageError naming the file
            arrays.append(load_image(f, channels=_channels_of(f)))
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"{path}: images have different shapes {sorted(shapes)[:4]}")
        return np.stack(arrays), info
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such directory or file")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), info
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected a directory of images, an .npz or an .npy file")
    with np.load(path, allow_pickle=False) as z:
        if key is None:
            key = next((k for k in NPZ_KEYS if k in z.files), z.files[0] if len(z.files) == 1 else None)
        if key is None or key not in z.files:
            raise ValueError(f"{path}: no image array found (key {key!r}); keys present: {z.files}; "
                             f"pass --key (tried {list(NPZ_KEYS)})")
        images = z[key]
        if "seeds" in z.files:
            info["seeds"] = _describe_seeds(z["seeds"])
    info["key"] = key
    return images, info


def evaluate_images(images, reference: str = "fashion-mnist:test", metrics=("fid",), *,
                    extractor: str | FeatureExtractor = DEFAULT_EXTRACTOR, extractor_options: dict | None = None,
                    n_reference: int | None = None, reference_seed: int = 0,
                    value_range: tuple[float, float] | None = None, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, kid_seed: int = 0, is_splits: int = 10, pr_k: int = 3,
                    batch_size: int = 500, cache: str | os.PathLike | None = None, use_cache: bool = True,
                    generation: dict | None = None, progress: bool = False) -> dict:
    """Compute the requested metrics of ``images`` against ``reference`` and return them with the protocol.

    Returns a JSON-able dict: ``fid``; ``kid``, ``kid_std``; ``is``, ``is_std``; ``precision``, ``recall``
    (those requested) and ``protocol``. ``generation`` (sampler, steps, seeds ...) is copied into the
    protocol so that the evaluation can be rerun exactly.
    """
    metrics = parse_metrics(metrics)
    if isinstance(extractor, str):
        extractor = get_extractor(extractor, **(extractor_options or {}))
    gen = extractor.extract(images, batch_size=batch_size, value_range=value_range, progress=progress)
    ref = get_reference_stats(reference, extractor, n_reference=n_reference, seed=reference_seed, cache=cache,
                              use_cache=use_cache, batch_size=batch_size, progress=progress)
    n_gen = len(gen.features)
    protocol = {**ref.protocol, "protocol_version": PROTOCOL_VERSION, "n_generated": n_gen,
                "resize_generated": gen.resize, "metrics": list(metrics)}
    result: dict = {}
    if "fid" in metrics:
        result["fid"] = frechet_distance(*gaussian_stats(gen.features), ref.mu, ref.sigma)
    if "kid" in metrics:
        result["kid"], result["kid_std"] = kernel_inception_distance(
            gen.features, ref.features, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=kid_seed)
        protocol.update(kid_subsets=kid_subsets, kid_subset_size=min(kid_subset_size, n_gen, len(ref.features)),
                        kid_seed=kid_seed, kid_kernel="(x.y/d + 1)^3")
    if "is" in metrics:
        result["is"], result["is_std"] = inception_score(gen.logits, splits=is_splits)
        protocol["is_splits"] = is_splits
    if "pr" in metrics:
        result["precision"], result["recall"] = precision_recall(ref.features, gen.features, k=pr_k)
        protocol["pr_k"] = pr_k
    if generation:
        protocol["generation"] = generation
    protocol["warnings"] = small_sample_warning(min(n_gen, protocol["n_reference"]), "images")
    result["protocol"] = protocol
    return result
