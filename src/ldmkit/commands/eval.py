"""``ldmkit eval CKPT_DIR`` and ``ldmkit eval-images DIR_OR_NPZ``: FID, KID, IS, precision/recall with protocol.

``eval-images`` scores images made anywhere (a folder of PNGs, or an .npz/.npy array), so peers' outputs
are scored exactly like ldmkit's. ``eval`` first samples ``-n`` images from a checkpoint through
``ldmkit.pipelines.generate`` (seeds ``seed .. seed+n-1``, recorded), then scores them the same way.
"""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  ldmkit eval-images samples.npz --reference fashion-mnist:test --metrics fid,kid,is,pr --json
  ldmkit eval runs/ddpm_fmnist --metrics fid,kid -n 10000 --sampler ddim --steps 50 --json
  ldmkit eval-images pngs/ --extractor inception-fid --inception-weights fid_inception_v3.safetensors \\
      --inception-sha256 HASH

The default feature space is ldmkit's Fashion-MNIST classifier (fmnist-cnn, shipped with ldmkit); its FIDs
are not comparable to Inception FIDs. Every result prints its protocol; see docs/evaluation.md."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", default="fashion-mnist:test",
                   help="fashion-mnist:test, fashion-mnist:train, or a reference-statistics .npz")
    p.add_argument("--metrics", default="fid,kid,is,pr", help="comma-separated subset of fid,kid,is,pr")
    p.add_argument("--n-reference", type=int, default=None, help="seeded random subset of the reference split")
    p.add_argument("--reference-seed", type=int, default=0, help="seed of the reference subset draw")
    p.add_argument("--extractor", default="fmnist-cnn", help="feature extractor: fmnist-cnn or inception-fid")
    p.add_argument("--inception-weights", default=None,
                   help="safetensors file of the FID Inception-v3 (or $LDMKIT_INCEPTION_WEIGHTS)")
    p.add_argument("--inception-sha256", default=None, help="expected sha256 (or $LDMKIT_INCEPTION_SHA256)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--kid-seed", type=int, default=0)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=500, help="feature-extraction batch size")
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
    q.add_argument("-n", "--num-samples", type=int, default=10_000)
    q.add_argument("--sampler", default="ddim", help="ddpm, ddim or dpmpp_2m")
    q.add_argument("--steps", type=int, default=50, help="sampling steps (0 = all T)")
    q.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    q.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    q.add_argument("--guidance-scale", type=float, default=1.0)
    q.add_argument("--sample-batch-size", type=int, default=250)
    q.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    q.add_argument("--save-samples", default=None, help="also write the samples (uint8) and seeds to this .npz")
    _add_common(q)
    q.set_defaults(func=run_checkpoint)


def _extractor_options(args) -> dict:
    if args.extractor == "inception-fid":
        return {"weights": args.inception_weights, "sha256": args.inception_sha256, "device": args.device}
    return {"device": args.device}


def _score(images, args, generation: dict | None, value_range=None) -> int:
    from ldmkit.metrics.evaluate import evaluate_images
    result = evaluate_images(
        images, reference=args.reference, metrics=args.metrics, extractor=args.extractor,
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


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


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
    try:
        args.metrics = parse_metrics(args.metrics)
        value_range = None
        if args.value_range:
            lo, hi = (float(v) for v in args.value_range.split(","))
            value_range = (lo, hi)
        images, info = load_images(args.path, args.key)
        if args.save_reference:
            return _save_reference(images, args, value_range)
        return _score(images, args, info, value_range)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))


def run_checkpoint(args) -> int:
    import numpy as np
    import torch

    from ldmkit import pipelines
    from ldmkit.metrics.evaluate import parse_metrics
    try:
        args.metrics = parse_metrics(args.metrics)
        loaded = pipelines.load_model(args.checkpoint, ema=not args.no_ema, device=args.device)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        return _fail(str(e))
    cfg = loaded.config
    labels = None
    if cfg.unet.num_classes is not None:   # class-balanced labels: image i gets class i mod K
        labels = torch.arange(args.num_samples) % cfg.unet.num_classes
    from tqdm import tqdm
    with tqdm(total=args.num_samples, desc="sampling", unit="img", disable=args.json) as bar:
        images = pipelines.generate(loaded.denoiser, loaded.process, cfg, n=args.num_samples, space=loaded.space,
                                    sampler=args.sampler, steps=args.steps or None, eta=args.eta, seed=args.seed,
                                    labels=labels, guidance_scale=args.guidance_scale,
                                    batch_size=args.sample_batch_size, progress=bar.update)
    generation = {"checkpoint": str(loaded.path), "step": loaded.step, "weights": "raw" if args.no_ema else "ema",
                  "sampler": args.sampler, "steps": args.steps or loaded.process.num_timesteps, "eta": args.eta,
                  "seeds": f"{args.seed}..{args.seed + args.num_samples - 1} (image i: seed + i)",
                  "guidance_scale": args.guidance_scale,
                  "labels": None if labels is None else f"i mod {cfg.unet.num_classes}"}
    if args.save_samples:
        u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        np.savez_compressed(args.save_samples, images=u8, seeds=np.arange(args.seed, args.seed + args.num_samples))
    try:
        return _score(images, args, generation)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
