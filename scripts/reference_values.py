#!/usr/bin/env python
"""Reference values of ldmkit's metrics on real Fashion-MNIST, clean and degraded (docs/evaluation.md).

    OMP_NUM_THREADS=1 python scripts/reference_values.py --out /work/runs/metrics/reference_values.json
    OMP_NUM_THREADS=1 python scripts/reference_values.py --extractor fmnist-cnn-v1   # the perceptual-loss network

Every row scores a seeded random subset of the *train* split (default 10,000 images), possibly degraded
by Gaussian noise or blur, against the whole *test* split (10,000) with a shipped Fashion-MNIST feature
network (``--extractor``, default ldmkit's default evaluation extractor), printing a Markdown table and
writing all results (with protocols) as JSON. The ``N=...`` rows are the first N (by index) of the same seeded draw.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings

import numpy as np
import torch

from ldmkit.data import load_fashion_mnist_arrays
from ldmkit.metrics import SmallSampleWarning, evaluate_images, get_extractor
from ldmkit.metrics.degrade import add_gaussian_noise, gaussian_blur
from ldmkit.metrics.features import DEFAULT_EXTRACTOR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write all results as JSON here")
    p.add_argument("-n", type=int, default=10_000, help="train images per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", default="0.05,0.1,0.2,0.4,0.8", help="noise std levels (images in [-1, 1])")
    p.add_argument("--blur", default="0.5,1,1.5,2,3", help="blur sigma levels (pixels)")
    p.add_argument("--small-n", default="1000,5000", help="extra clean rows at these N (bias of FID at small N)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--extractor", default=DEFAULT_EXTRACTOR, help="registered extractor name")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", SmallSampleWarning)

    extractor = get_extractor(args.extractor)
    print(f"extractor {extractor.name} (sha256 {extractor.weights_sha256[:12]}...), subset seed {args.seed}")
    train, _ = load_fashion_mnist_arrays("train")
    idx = np.sort(np.random.default_rng(args.seed).choice(len(train), args.n, replace=False))
    clean = torch.from_numpy(train[idx])[:, None].float().div(127.5).sub(1.0)
    rows = [("real (train subset)", clean)]
    noise = [float(s) for s in args.noise.split(",") if s]
    blur = [float(s) for s in args.blur.split(",") if s]
    rows += [(f"noise std {s:g}", add_gaussian_noise(clean, s, seed=args.seed)) for s in noise]
    rows += [(f"blur sigma {s:g}", gaussian_blur(clean, s)) for s in blur]
    rows += [(f"real, N={n}", clean[:int(n)]) for n in args.small_n.split(",") if n]

    results = []
    print("| images (vs fashion-mnist:test, 10k) | N | FID | KID x 1e3 | IS | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    t0 = time.time()
    for name, images in rows:
        r = evaluate_images(images, "fashion-mnist:test", ("fid", "kid", "is", "pr"), extractor=extractor,
                            cache=args.cache_dir)
        r["row"] = name
        results.append(r)
        print(f"| {name} | {len(images)} | {r['fid']:.3f} | {1e3 * r['kid']:.3f} +- {1e3 * r['kid_std']:.3f} | "
              f"{r['is']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |", flush=True)
    test, _ = load_fashion_mnist_arrays("test")
    r = evaluate_images(test, "fashion-mnist:test", ("is",), extractor=extractor, cache=args.cache_dir)
    print(f"\nIS of the test split itself: {r['is']:.3f} +- {r['is_std']:.3f}")
    meta = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv), "seconds": round(time.time() - t0, 1),
            "extractor": extractor.name, "extractor_sha256": extractor.weights_sha256, "seed": args.seed,
            "machine": platform.platform(), "torch": torch.__version__, "test_split_is": [r["is"], r["is_std"]]}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": results}, f, indent=1)
    print(f"({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
