#!/usr/bin/env python
"""Train a Fashion-MNIST feature network shipped in ``ldmkit/assets``: ``--arch cnn-v1`` or ``--arch eval-v2``.

* ``cnn-v1`` (``fmnist_features.*``, the perceptual loss's network, ``ldmkit/metrics/fmnist_cnn.py``):
      OMP_NUM_THREADS=1 python scripts/train_fmnist_features.py --arch cnn-v1 --out src/ldmkit/assets
* ``eval-v2`` (``fmnist_eval_v2.*``, the default evaluation network, ``ldmkit/metrics/fmnist_eval.py``):
      OMP_NUM_THREADS=1 python scripts/train_fmnist_features.py --arch eval-v2 --out src/ldmkit/assets --batch-size 256

Deterministic on CPU for a fixed seed and thread count. ``--val-size`` images of the training split (a seeded
draw) are held out and used for the per-epoch report; the test split is scored exactly once, after training,
with the stored float16 weights (so the JSON's accuracy is that of the shipped file) and chooses nothing.
Writes ``NAME.safetensors`` (float16 tensors) and ``NAME.json`` (architecture, version, accuracies, sha256, the
command).
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
from ldmkit.metrics import fmnist_cnn, fmnist_eval

#: --arch -> (module, default output name, default seed, default epochs, default held-out size)
ARCHS = {
    "cnn-v1": (fmnist_cnn, "fmnist_features", 0, 15, 0),
    "eval-v2": (fmnist_eval, "fmnist_eval_v2", 1, 12, 5000),
}


def build(arch: str, channels: tuple[int, ...] | None, dropout: float) -> torch.nn.Module:
    if arch == "cnn-v1":
        return fmnist_cnn.FMNISTClassifier(channels or fmnist_cnn.CHANNELS, fmnist_cnn.FINAL_POOL, dropout)
    return fmnist_eval.FMNISTEvalClassifier(channels or fmnist_eval.CHANNELS, dropout)


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="cnn-v1", help="network to train (see above)")
    p.add_argument("--name", default=None, help="output file stem (default: fmnist_features / fmnist_eval_v2)")
    p.add_argument("--out", default="src/ldmkit/assets", help="output directory")
    p.add_argument("--epochs", type=int, default=None, help="default 15 (cnn-v1) / 12 (eval-v2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle AdamW schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=None, help="default 0 (cnn-v1) / 1 (eval-v2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels", default=None, help="experiments only (not loadable by ldmkit): conv channels")
    p.add_argument("--no-final-pool", action="store_true", help="(no effect: the shipped network already keeps 7x7)")
    p.add_argument("--dropout", type=float, default=None, help="default 0.2 (cnn-v1) / 0.1 (eval-v2)")
    p.add_argument("--max-shift", type=int, default=1, help="random translation in pixels (0 = flip only)")
    p.add_argument("--val-size", type=int, default=None,
                   help="training images held out for validation (default 0 (cnn-v1) / 5000 (eval-v2))")
    p.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke tests)")
    args = p.parse_args(argv)
    _, name, seed, epochs, val = ARCHS[args.arch]
    args.name = args.name or name
    args.seed = seed if args.seed is None else args.seed
    args.epochs = epochs if args.epochs is None else args.epochs
    args.val_size = val if args.val_size is None else args.val_size
    args.dropout = (0.2 if args.arch == "cnn-v1" else 0.1) if args.dropout is None else args.dropout
    return args


def split_train(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int):
    """A seeded held-out part of the training split: (x_train, y_train, x_val, y_val)."""
    if not val_size:
        return x, y, x[:0], y[:0]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(10_000 + seed))
    val, train = perm[:val_size], perm[val_size:]
    return x[train], y[train], x[val], y[val]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    module = ARCHS[args.arch][0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)

    x_all_u8, y_all = load_fashion_mnist_arrays("train")
    x_train, y_train, x_val, y_val = split_train(to_float(x_all_u8), torch.from_numpy(y_all), args.val_size,
                                                 args.seed)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
    model = build(args.arch, channels, args.dropout)
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
        val = f"val acc {accuracy(model, x_val, y_val):.4f} " if len(x_val) else ""
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss_sum / steps_per_epoch:.4f} {val}"
              f"({time.time() - t0:.0f} s)", flush=True)
    seconds = time.time() - t0
    return write_asset(args, module, model, channels, (x_train, y_train, x_val, y_val), seconds)


def write_asset(args, module, model, channels, data, seconds: float) -> int:
    """Save float16 weights, reload them, score train/val/test once, write the JSON sidecar."""
    x_train, y_train, x_val, y_val = data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{args.name}.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    save_file(state, str(weights), metadata={"version": module.VERSION})
    # Accuracy of exactly what is shipped: reload the float16 file into a fresh float32 model.
    reloaded = build(args.arch, channels, args.dropout)
    reloaded.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=False)
    x_test_u8, y_test = load_fashion_mnist_arrays("test")
    test_acc = accuracy(reloaded, to_float(x_test_u8), torch.from_numpy(y_test))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = {
        "version": module.VERSION,
        "architecture": module.ARCHITECTURE,
        "channels": list(channels or module.CHANNELS),
        **({"final_pool": module.FINAL_POOL} if args.arch == "cnn-v1" else {}),
        "feature_dim": module.FEATURE_DIM,
        "num_classes": 10,
        "input": "[N,1,28,28] float in [-1,1] (uint8 v -> v/127.5 - 1)",
        "test_accuracy": round(test_acc, 4),
        "train_accuracy": round(accuracy(reloaded, x_train, y_train), 4),
        **({"val_accuracy": round(accuracy(reloaded, x_val, y_val), 4), "val_size": len(x_val),
            "val_split": f"torch.randperm(60000, seed {10_000 + args.seed})[:{len(x_val)}] of the train split"}
           if len(x_val) else {}),
        "weights_file": weights.name,
        "sha256": sha,
        "dtype": "float16",
        "training": {
            "command": f"OMP_NUM_THREADS={args.threads} python " + " ".join(shlex.quote(a) for a in sys.argv),
            "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "optimizer": "AdamW + OneCycleLR (pct_start 0.2)",
            "augmentation": f"random translation <= {args.max_shift} px, horizontal flip", "dropout": args.dropout,
            "label_smoothing": 0.05, "threads": args.threads, "seconds": round(seconds, 1),
            "torch": torch.__version__, "machine": platform.platform(),
        },
    }
    (out / f"{args.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"test accuracy (shipped float16 weights): {test_acc:.4f}; wrote {weights} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
