"""``ldmkit eval CKPT_DIR`` and ``ldmkit eval-images DIR_OR_NPZ``: FID, KID, IS, precision/recall with protocol.

``eval-images`` scores images made anywhere (a folder of PNGs, or an .npz/.npy array), so peers' outputs
are scored exactly like ldmkit's. ``eval`` first samples ``-n`` images from a checkpoint through
``ldmkit.pipelines.generate`` (seeds ``seed .. seed+n-1``, recorded), then scores them the same way.
"""

from __future__ import annotations

import argparse
import json

from ldmkit.commands._common import UsageError, add_sampling_arguments, positive_int

DEFAULT_EXTRACTOR = "fmnist-eval-v2"  # = ldmkit.metrics.features.DEFAULT_EXTRACTOR (not imported: lazy CLI)

EPILOG = """\
examples:
  ldmkit eval-images samples.npz --reference fashion-mnist:test --metrics fid,kid,is,pr --json
  ldmkit eval runs/ddpm_fmnist --metrics fid,kid -n 10000 --sampler ddim --steps 50 --json
  ldmkit eval-images pngs/ --extractor inception-fid --inception-weights fid_inception_v3.safetensors \\
      --inception-sha256 HASH

The default feature space is ldmkit's evaluation-only Fashion-MNIST classifier (fmnist-eval-v2, shipped with
ldmkit; no ldmkit loss uses it); fmnist-cnn-v1 is the autoencoders' perceptual-loss network, and 'eval'
refuses it for a model whose first stage trained with it. These FIDs are not comparable to Inception FIDs
nor to each other. Every result prints its protocol (with the extractor); see docs/evaluation.md."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", default="fashion-mnist:test",
                   help="fashion-mnist:test, fashion-mnist:train, or a reference-statistics .npz")
    p.add_argument("--metrics", default="fid,kid,is,pr", help="comma-separated subset of fid,kid,is,pr")
    p.add_argument("--n-reference", type=int, default=None, help="seeded random subset of the reference split")
    p.add_argument("--reference-seed", type=int, default=0, help="seed of the reference subset draw")
    p.add_argument("--extractor", default=DEFAULT_EXTRACTOR,
                   help="feature extractor: fmnist-eval-v2 (default), fmnist-cnn-v1 (the perceptual-loss "
                        "network) or inception-fid")
    p.add_argument("--inception-weights", default=None,
                   help="safetensors file of the FID Inception-v3 (or $LDMKIT_INCEPTION_WEIGHTS)")
    p.add_argument("--inception-sha256", default=None, help="expected sha256 (or $LDMKIT_INCEPTION_SHA256)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--kid-seed", type=int, default=0)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=500, help="feature-extraction batch size")
    p.add_argument("--cache-dir", default=None, help="reference-statistics cache (default $LDMKIT_CACHE_DIR "
                   "or ~/.cache/ldmkit/metrics)")
    p.add_argument("--no-cache", action="store_true", help="recompute reference statistics, write no cache")
    p.add_argument("--device", default="cpu", help="torch device for feature extraction (and sampling)")
    p.add_argument("--json", action="store_true", help="print one JSON object (metrics + protocol)")


def add_parser(sub, formatter_class) -> None:
    p = sub.add_parser("eval-images", help="score images (folder/.npz) with FID, KID, IS, precision/recall",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter_class)
    p.add_argument("path", metavar="DIR_OR_NPZ", help="folder of image files, or .npz/.npy with [N,(C,)H,W(,C)]")
    p.add_argument("--key", default=None, help="array name inside the .npz (default: images/samples/arr_0)")
    p.add_argument("--value-range", default=None,
                   help="range of float images, e.g. '0,1' (default -1,1; uint8 is always 0..255)")
    p.add_argument("--save-reference", default=None, metavar="OUT_NPZ",
                   help="instead of scoring, save these images' statistics as a reference (.npz) for --reference")
    _add_common(p)
    p.set_defaults(func=run_images)

    q = sub.add_parser("eval", help="sample from a checkpoint and score the samples",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter_class)
    q.add_argument("checkpoint", metavar="CKPT_DIR", help="checkpoint folder, or run folder (latest checkpoint)")
    q.add_argument("-n", "--num-samples", type=positive_int, default=10_000)
    add_sampling_arguments(q)
    q.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    q.add_argument("--sample-batch-size", type=positive_int, default=250)
    q.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    q.add_argument("--allow-loss-extractor", action="store_true",
                   help="score even with the network the first stage's perceptual loss used (recorded)")
    q.add_argument("--save-samples", default=None,
                   help="also write the samples to this .npz: uint8 images [N, H, W, C], labels, seeds")
    _add_common(q)
    q.set_defaults(func=run_checkpoint)


def _extractor_options(args) -> dict:
    if args.extractor == "inception-fid":
        return {"weights": args.inception_weights, "sha256": args.inception_sha256, "device": args.device}
    return {"device": args.device}


def _score(images, args, metrics, generation: dict | None, value_range=None) -> int:
    from ldmkit.metrics.evaluate import evaluate_images
    result = evaluate_images(
        images, reference=args.reference, metrics=metrics, extractor=args.extractor,
        extractor_options=_extractor_options(args), n_reference=args.n_reference,
        reference_seed=args.reference_seed, value_range=value_range, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, kid_seed=args.kid_seed, is_splits=args.is_splits,
        batch_size=args.batch_size, cache=args.cache_dir, use_cache=not args.no_cache, generation=generation,
        progress=not args.json)
    if args.json:
        print(json.dumps(result, sort_keys=False))
        return 0
    for name, value in result.items():
        if name != "protocol":
            print(f"{name:>10s}  {value:.6g}")
    print("protocol:")
    for name, value in result["protocol"].items():
        print(f"  {name}: {value}")
    return 0


def _save_reference(images, args, value_range) -> int:
    from ldmkit.metrics.features import get_extractor
    from ldmkit.metrics.reference import stats_from_images
    extractor = get_extractor(args.extractor, **_extractor_options(args))
    stats = stats_from_images(images, extractor, str(args.path), value_range=value_range,
                              batch_size=args.batch_size, progress=not args.json)
    stats.save(args.save_reference)
    print(json.dumps({"saved": args.save_reference, "protocol": stats.protocol}) if args.json
          else f"saved reference statistics of {len(images)} images to {args.save_reference}")
    return 0


def run_images(args) -> int:
    from ldmkit.metrics.evaluate import load_images, parse_metrics
    metrics = parse_metrics(args.metrics)  # before any work: a bad name fails fast
    value_range = _value_range(args.value_range)
    images, info = load_images(args.path, args.key)
    if args.save_reference:
        return _save_reference(images, args, value_range)
    return _score(images, args, metrics, info, value_range)


def _value_range(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--value-range: expected 'LOW,HIGH' such as '0,1', got {text!r}") from None
    if not lo < hi:
        raise UsageError(f"--value-range: LOW must be below HIGH, got {text!r}")
    return lo, hi


def run_checkpoint(args) -> int:
    from tqdm import tqdm

    from ldmkit.commands._common import class_labels, device, load_model, sampling_settings, save_samples_npz
    from ldmkit.metrics.evaluate import parse_metrics

    metrics = parse_metrics(args.metrics)  # before any work: a bad name fails fast
    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    cfg = loaded.config
    independence = check_extractor(args.extractor, cfg.first_stage, allow=args.allow_loss_extractor)
    s = sampling_settings(args, cfg.sample, loaded.process.num_timesteps)
    labels = class_labels(None, args.num_samples, cfg.unet.num_classes)  # class-balanced: image i gets i mod K
    with tqdm(total=args.num_samples, desc="sampling", unit="img", disable=args.json) as bar:
        images = loaded.generate(args.num_samples,
                                    sampler=s.sampler, steps=s.steps, eta=s.eta, seed=args.seed,
                                    labels=labels, guidance_scale=s.guidance_scale,
                                    batch_size=args.sample_batch_size, progress=bar.update)
    generation = {"checkpoint": str(loaded.path), "step": loaded.step, "weights": "raw" if args.no_ema else "ema",
                  "sampler": s.sampler, "steps": s.steps, "eta": s.eta,
                  "seeds": f"{args.seed}..{args.seed + args.num_samples - 1} (image i: seed + i)",
                  "guidance_scale": s.guidance_scale,
                  "labels": None if labels is None else f"i mod {cfg.unet.num_classes}",
                  "first_stage": cfg.first_stage, **independence}
    if args.save_samples:
        save_samples_npz(args.save_samples, images, labels=labels,
                         seeds=range(args.seed, args.seed + args.num_samples))
    return _score(images, args, metrics, generation)


def first_stage_config(first_stage: str | None) -> dict | None:
    """The stored run config of a model's first stage (``config.json`` ``config``), or None (pixel space)."""
    if not first_stage:
        return None
    from ldmkit.training.checkpoint import load_checkpoint_config, resolve_checkpoint

    return load_checkpoint_config(resolve_checkpoint(first_stage)).get("config")


def check_extractor(extractor: str, first_stage: str | None, *, allow: bool = False) -> dict:
    """Refuse (``ConfigError``, exit 2) an extractor that the first stage's perceptual loss used, unless
    ``allow``; returns what goes into the protocol (``loss_networks``, and a warning when allowed)."""
    import logging

    from ldmkit.metrics.features import check_independent, loss_networks
    from ldmkit.registry import ConfigError

    used = loss_networks(first_stage_config(first_stage))
    record: dict = {"first_stage_loss_networks": sorted(used)}
    try:
        check_independent(extractor, used, where=f"the first stage {first_stage}")
    except ConfigError as e:
        if not allow:
            raise
        logging.getLogger(__name__).warning("%s", e)
        record["extractor_warning"] = f"scored with {extractor}, a network the first stage's loss used"
    return record
