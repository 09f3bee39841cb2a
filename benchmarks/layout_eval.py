#!/usr/bin/env python
"""Layout-to-image accuracy of a trained layout model on held-out layouts (issue 12's done-when figures).

The requested layouts are those of the first ``--num`` items of the model's dataset's *test* split (same
generator seed as training; fashion-collage test canvases hold only Fashion-MNIST test items, shapes' test
split is an independent stream). ``--split validation`` takes them from the *train* split instead, at indices
``data.length ..`` that training never drew (fresh layouts of training items): choose samplers and guidance
there, not on the test split. Sample i uses layout i and seed ``--seed + i``. Each requested box is scored
by ``ldmkit.metrics.layout``:

* fashion-collage: the evaluation classifier (``--extractor``, default ``DEFAULT_EXTRACTOR``) on a square crop
  around the item found at the box, and the IoU of that item's own bounding box with the request;
* shapes: the colour / kind detector, and the IoU of the detected object's box with the request.

A box is correct when the class (shapes: colour and kind) is the requested one *and* IoU >= 0.5; the table
gives that fraction ("both"), its two parts, the mean IoU, and the same scores of the dataset's own images for
those layouts (the ceiling the measuring tools allow) and, for a latent model, of those images encoded and decoded
by its first stage (the ceiling that autoencoder allows). Samples are rounded to 8-bit levels (as saved PNGs)
before scoring. A grid of the first ``--grid-n`` samples with the requested boxes (and labels) drawn is written
to ``--grid`` (default ``docs/images/layout_<dataset>.png``).

    python benchmarks/layout_eval.py runs/ldm_layout_collage --num 500 --steps 50 --guidance-scale 2
    python benchmarks/layout_eval.py runs/ldm_layout_shapes --num 500
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the nearest of the 256 levels a PNG holds."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def held_out(cfg, n: int, split: str = "test"):
    """n items the model never trained on, of its dataset as configured for training (seed, size), and the index
    of the first: the test split's first n, or (``split="validation"``) the train split's items
    ``data.length .. data.length + n - 1`` (training drew indices below ``data.length`` only)."""
    from dataclasses import replace

    from ldmkit.data import build_dataset, collate

    first = 0 if split == "test" else cfg.data.length
    data = replace(cfg.data, split="test" if split == "test" else "train", hflip=False, length=first + max(n, 1))
    ds = build_dataset(data)
    return collate([ds[first + i] for i in range(n)]), first


def requested(batch, dataset: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(boxes, vocabulary labels) per item; shapes' vocabulary is colour * 3 + kind."""
    if dataset == "shapes":
        labels = [c * 3 + k for k, c in zip(batch.box_labels, batch.extra["box_colors"], strict=True)]
    else:
        labels = list(batch.box_labels)
    return list(zip(batch.boxes, labels, strict=True))


def reconstruct(space, images: torch.Tensor, batch_size: int, seed: int, device: str) -> torch.Tensor:
    """Encode (a posterior sample, as training saw) and decode the images through the model's first stage."""
    generator = torch.Generator(device).manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = space.pad(images[i:i + batch_size]).to(device)
            out.append(space.decode(space.encode(x, generator=generator)).cpu())
    return quantize(torch.cat(out))


def score(images, batch, dataset: str, extractor):
    from ldmkit.metrics.layout import score_collage, score_shapes

    if dataset == "shapes":
        return score_shapes(images, batch.boxes, batch.box_labels, batch.extra["box_colors"])
    return score_collage(images, batch.boxes, batch.box_labels, extractor)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="checkpoint or run folder of a layout model (cond.context: layout)")
    p.add_argument("--num", type=int, default=500, help="held-out layouts (one sample each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None, help="default: the model's sample.sampler")
    p.add_argument("--steps", type=int, default=None, help="default: the model's sample.steps")
    p.add_argument("--eta", type=float, default=None, help="DDIM stochasticity (default: the model's sample.eta)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the model's sample.guidance_scale")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="layouts of the test split, or unseen ones of the train split (for choosing settings)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--extractor", default=None, help="collage classifier (default: DEFAULT_EXTRACTOR)")
    p.add_argument("--grid", default=None, help="grid PNG (default docs/images/layout_<dataset>.png)")
    p.add_argument("--grid-n", type=int, default=16)
    p.add_argument("--scale", type=int, default=4, help="grid enlargement (labels are written from 4 on)")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--first-stage", action="append", default=[], metavar="DIR",
                   help="also score the held-out images encoded and decoded by this autoencoder (repeatable)")
    args = p.parse_args(argv)

    from ldmkit.conditioning.layout import DATASET_VOCABS, VOCABS
    from ldmkit.images import boxed_grid, save_png
    from ldmkit.latent import latent_space_for
    from ldmkit.metrics.features import DEFAULT_EXTRACTOR, get_extractor
    from ldmkit.metrics.layout import summarize
    from ldmkit.pipelines import load_model

    loaded = load_model(args.model, ema=not args.no_ema, device=args.device)
    cfg = loaded.config
    dataset = cfg.data.name
    if cfg.cond.context != "layout" or dataset not in DATASET_VOCABS:
        raise SystemExit(f"{args.model}: not a layout model on fashion-collage or shapes "
                         f"(cond.context={cfg.cond.context!r}, data.name={dataset!r})")
    sampler = args.sampler or cfg.sample.sampler
    steps = args.steps or cfg.sample.steps
    scale = cfg.sample.guidance_scale if args.guidance_scale is None else args.guidance_scale
    eta = cfg.sample.eta if args.eta is None else args.eta
    extractor_name = args.extractor or DEFAULT_EXTRACTOR
    extractor = get_extractor(extractor_name, device=args.device) if dataset == "fashion-collage" else None

    batch, first = held_out(cfg, args.num, args.split)
    which = f"{dataset} {args.split} layouts {first}..{first + args.num - 1}"
    layouts = requested(batch, dataset)
    start = time.perf_counter()
    images = []
    for i in range(0, args.num, args.batch_size):
        chunk = layouts[i:i + args.batch_size]
        images.append(loaded.generate(len(chunk), layouts=chunk, sampler=sampler, steps=steps, eta=eta,
                                      guidance_scale=scale, seed=args.seed + i, batch_size=args.batch_size).cpu())
    seconds = time.perf_counter() - start
    images = quantize(torch.cat(images))
    model = summarize(score(images, batch, dataset, extractor))
    reference = summarize(score(quantize(batch.images), batch, dataset, extractor))
    rows = [("samples", model), ("dataset's own (ceiling)", reference)]
    # a latent model can be no better than its first stage's reconstructions; --first-stage adds others
    spaces = [(None, loaded.space)] if loaded.space.factor > 1 else []
    spaces += [(path, latent_space_for(path, args.device, padding=loaded.space.padding)) for path in args.first_stage]
    reconstructed, others = None, {}
    for path, space in spaces:
        scores = summarize(score(reconstruct(space, batch.images, args.batch_size, args.seed, args.device),
                                 batch, dataset, extractor))
        if path is None:
            reconstructed = scores
        else:
            others[path] = scores
        rows.append(("first stage's reconstructions" if path is None else f"reconstructions by {path}", scores))

    names = VOCABS[DATASET_VOCABS[dataset]].names
    n = min(args.grid_n, args.num)
    grid_path = Path(args.grid or f"docs/images/layout_{dataset}.png")
    grid = boxed_grid(images[:n], batch.boxes[:n], [[names[k] for k in lab.tolist()] for _, lab in layouts[:n]],
                      nrow=math.ceil(math.sqrt(n)), scale=args.scale)
    save_png(grid_path, grid, {"model": str(loaded.path), "step": loaded.step, "sampler": sampler, "steps": steps,
                               "eta": eta, "guidance_scale": scale, "seed": args.seed, "layouts": which})

    print(f"# layout-to-image: {loaded.path} (step {loaded.step}), {which}")
    print(f"# {sampler} {steps} steps{f', eta {eta}' if sampler == 'ddim' else ''}, guidance {scale}, seeds {args.seed}..{args.seed + args.num - 1}; "
          f"{'classifier ' + extractor_name if extractor else 'shapes detector'}; "
          f"{platform.node()} {args.device}, {seconds:.1f} s ({seconds / args.num:.3f} s/image)")
    print("| images | boxes | class ok | IoU >= 0.5 | both | mean IoU |")
    print("|---|---|---|---|---|---|")
    for what, s in rows:
        print(f"| {what} | {s['boxes']} | {s['class_acc']:.3f} | {s['iou_ok']:.3f} | {s['both']:.3f} | "
              f"{s['mean_iou']:.3f} |")
    print(f"grid: {grid_path}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(loaded.path), "step": loaded.step, "dataset": dataset,
                                               "num": args.num, "layouts": which, "sampler": sampler,
                                               "steps": steps, "eta": eta,
                                               "guidance_scale": scale, "extractor": extractor_name if extractor
                                               else None, "seconds": seconds, "samples": model,
                                               "reference": reference,
                                               "reconstructed": reconstructed,
                                               "reconstructed_by": others}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
