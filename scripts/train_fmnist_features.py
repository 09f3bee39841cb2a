#!/usr/bin/env python
"""Train the Fashion-MNIST feature network shipped as ``ldmkit/assets/fmnist_features.safetensors``.

Deterministic on CPU (fixed seed, one thread): rerunning the command gives the same weights and accuracy.

    OMP_NUM_THREADS=1 python scripts/train_fmnist_features.py --out src/ldmkit/assets

writes ``fmnist_features.safetensors`` (float16 tensors, ~0.5 MB) and ``fmnist_features.json`` (architecture,
version, test accuracy measured with the stored float16 weights, sha256, the command). The accuracy written to
the JSON is measured after the float16 round trip, i.e. it is the accuracy of exactly the shipped file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ldmkit.data import load_fashion_mnist_arrays
from ldmkit.metrics.fmnist_cnn import (
    ARCHITECTURE,
    CHANNELS,
    FEATURE_DIM,
    FINAL_POOL,
    VERSION,
    FMNISTClassifier,
)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> float [N,1,28,28] in [-1, 1]."""
    return torch.from_numpy(images.copy())[:, None].float().div(127.5).sub(1.0)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero = background -1) and random horizontal flip."""
    n, _, h, w = x.shape
    if pad == 0:
        flip = torch.rand(n, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    out = xp[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i:i + batch])[1].argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="src/ldmkit/assets", help="output directory")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle AdamW schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels", default=None, help="experiments only (not loadable by ldmkit): conv channels")
    p.add_argument("--no-final-pool", action="store_true", help="(no effect: the shipped network already keeps 7x7)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-shift", type=int, default=1, help="random translation in pixels (0 = flip only)")
    p.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke tests)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)

    x_train_u8, y_train = load_fashion_mnist_arrays("train")
    x_test_u8, y_test = load_fashion_mnist_arrays("test")
    x_train, y_train = to_float(x_train_u8), torch.from_numpy(y_train)
    x_test, y_test = to_float(x_test_u8), torch.from_numpy(y_test)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else CHANNELS
    final_pool = FINAL_POOL and not args.no_final_pool
    model = FMNISTClassifier(channels, final_pool, args.dropout)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.2)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            xb = augment(x_train[idx], gen, args.max_shift)
            loss = torch.nn.functional.cross_entropy(model(xb)[1], y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
        acc = accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss_sum / steps_per_epoch:.4f} test acc {acc:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "fmnist_features.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    save_file(state, str(weights), metadata={"version": VERSION})
    # Accuracy of exactly what is shipped: reload the float16 file into a fresh float32 model.
    reloaded = FMNISTClassifier(channels, final_pool)
    reloaded.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=False)
    test_acc = accuracy(reloaded, x_test, y_test)
    train_acc = accuracy(reloaded, x_train, y_train)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = {
        "version": VERSION,
        "architecture": ARCHITECTURE,
        "channels": list(channels),
        "final_pool": final_pool,
        "feature_dim": FEATURE_DIM,
        "num_classes": 10,
        "input": "[N,1,28,28] float in [-1,1] (uint8 v -> v/127.5 - 1)",
        "test_accuracy": round(test_acc, 4),
        "train_accuracy": round(train_acc, 4),
        "weights_file": weights.name,
        "sha256": sha,
        "dtype": "float16",
        "training": {
            "command": "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in sys.argv),
            "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "optimizer": "AdamW + OneCycleLR (pct_start 0.2)",
            "augmentation": f"random translation <= {args.max_shift} px, horizontal flip", "dropout": args.dropout, "label_smoothing": 0.05,
            "threads": args.threads, "seconds": round(time.time() - t0, 1), "torch": torch.__version__,
            "machine": platform.platform(),
        },
    }
    (out / "fmnist_features.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"test accuracy (shipped float16 weights): {test_acc:.4f}; wrote {weights} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
