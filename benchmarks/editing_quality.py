#!/usr/bin/env python
"""Quality of image-conditioned tasks on the Fashion-MNIST test split: super-resolution, inpainting, SDEdit.

``sr``: the first N test images are degraded exactly as the model's training degraded them (its
``cond.sr``: x4 antialiased bicubic or area, rounded to 8-bit levels; noise with seed 0 if ``noise_std``),
then upscaled by bicubic interpolation (the baseline of Rombach et al., Table 5) and by the model at each
``--steps``. Table: PSNR and SSIM against the truth (``ldmkit.metrics.reconstruction``, data range 2, mean
over images) and FID of the N upscaled images against the N true ones.

``inpaint``: the same N test images with two mask sets: ``half`` (image i loses its left, right, top or
bottom half for i mod 4: 50% of the pixels) and ``brush`` (``conditioning.concat.random_masks`` with
``box_prob=0``, seed ``--seed``). Methods: the dataset's mean image pasted into the hole (baseline), the
trained concat model (``--model``, ``editing.inpaint_concat``), RePaint (``--repaint MODEL``, an
unconditional model; ``editing.inpaint``, R = ``--resample``). Table: PSNR inside the hole (MSE pooled over all holes), the largest
change outside it (0 = the known region is exact), FID of the completed images against the N true
ones, seconds per image.

``sdedit``: SDEdit (``editing.img2img``) of the same N test images at each ``--strengths`` value; a model
that takes class names is asked for the input's own class (guidance ``--guidance-scale``). Table: steps
actually run, RMS distance and PSNR to the input, the fraction still classified as the input's class, FID
of the edits against the N inputs, seconds per image.

FID uses ``--extractor`` (default ``ldmkit.metrics.features.DEFAULT_EXTRACTOR``, the evaluation-only
network); an extractor that a first stage's perceptual loss used is refused, as in ``ldmkit eval``. All
outputs are rounded to 8-bit levels (as saved PNGs) before scoring. Sample i uses seed ``--seed + i``.

    python benchmarks/editing_quality.py sr --model runs/ldm_sr_fmnist --num 1000 --steps 20 100
    python benchmarks/editing_quality.py inpaint --model runs/ldm_inpaint_fmnist --repaint runs/ldm_kl_f4_fmnist \
        --num 1000 --steps 50
    python benchmarks/editing_quality.py sdedit --model fmnist-text --num 1000 --steps 50
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the nearest of the 256 levels a PNG holds."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def test_images(n: int) -> torch.Tensor:
    from ldmkit.data.fashion_mnist import load_fashion_mnist_arrays

    x, _ = load_fashion_mnist_arrays("test")
    if n > len(x):
        raise SystemExit(f"--num {n}: the test split has {len(x)} images")
    return torch.from_numpy(np.array(x[:n])).float().div(127.5).sub(1.0)[:, None]


def fid_against(extractor, truth_features: np.ndarray, images: torch.Tensor) -> float:
    from ldmkit.metrics.fid import fid_from_features

    return fid_from_features(truth_features, extractor.extract(images).features)


def in_batches(fn, images: torch.Tensor, batch: int, *rest) -> tuple[torch.Tensor, float]:
    """``fn(images[i:j], *rest[i:j], seed=i)`` over batches; returns the outputs and seconds per image."""
    outs, start = [], time.perf_counter()
    for i in range(0, len(images), batch):
        outs.append(fn(images[i:i + batch], *(r[i:i + batch] for r in rest), seed=i))
    return torch.cat(outs), (time.perf_counter() - start) / len(images)


def extractor_for(args, *models):
    from ldmkit.commands.eval import check_extractor
    from ldmkit.metrics.features import get_extractor

    for m in models:
        check_extractor(args.extractor, m.config.first_stage)
    return get_extractor(args.extractor)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# ------------------------------------------------------------------------------------------- SR
def run_sr(args) -> None:
    from ldmkit import editing
    from ldmkit.conditioning.concat import degrade, upsample
    from ldmkit.metrics.reconstruction import psnr, ssim
    from ldmkit.pipelines import load_model

    model = load_model(args.model, device=args.device)
    sr = editing.concat_part(model, "super_resolution", "benchmarks/editing_quality.py sr").cfg
    truth = test_images(args.num)
    low = degrade(truth, sr, torch.Generator().manual_seed(args.seed))
    extractor = extractor_for(args, model)
    truth_features = extractor.extract(truth).features
    rows, columns = [], {"low-res": torch.nn.functional.interpolate(low, scale_factor=sr.factor, mode="nearest")}

    def score(name: str, images: torch.Tensor, seconds: float | None) -> None:
        images = quantize(images)
        columns[name] = images
        rows.append([name, f"{float(psnr(images, truth).mean()):.2f}", f"{float(ssim(images, truth).mean()):.4f}",
                     f"{fid_against(extractor, truth_features, images):.2f}",
                     "-" if seconds is None else f"{seconds:.3f}"])

    score("bicubic", upsample(low, sr.factor), None)
    for steps in args.steps:
        out, sec = in_batches(lambda lo, seed, s=steps: editing.upscale(model, lo, steps=s, seed=args.seed + seed),
                              low, args.batch_size)
        score(f"SR model, {steps} DDIM steps" if model.config.sample.sampler == "ddim" else
              f"SR model, {steps} {model.config.sample.sampler} steps", out, sec)
    print(f"super-resolution x{sr.factor} ({sr.downsample}, noise_std {sr.noise_std}), Fashion-MNIST test "
          f"images 0..{args.num - 1}, model {args.model}, seeds {args.seed}+i, FID extractor {args.extractor}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}")
    header = ["method", "PSNR (dB)", "SSIM", f"FID (N={args.num})", "s / image"]
    print(table(header, rows))
    write_json(args, header, rows)
    if args.picture:
        picture(args.picture, [columns["low-res"], columns["bicubic"], columns[list(columns)[-1]], truth],
                "low-res (nearest), bicubic, ours, truth")


# ------------------------------------------------------------------------------------------- inpainting
def half_masks(n: int, size: tuple[int, int]) -> torch.Tensor:
    """Image i loses its left, right, top or bottom half (i mod 4): exactly 50% of the pixels."""
    h, w = size
    m = torch.zeros(n, 1, h, w, dtype=torch.bool)
    for i in range(n):
        side = i % 4
        if side == 0:
            m[i, :, :, : w // 2] = True
        elif side == 1:
            m[i, :, :, w // 2:] = True
        elif side == 2:
            m[i, :, : h // 2] = True
        else:
            m[i, :, h // 2:] = True
    return m


def masked_psnr(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> float:
    """``10 log10(4 / MSE)`` with the MSE pooled over every pixel where ``m`` is True (all images together).

    Pooled, not a mean of per-image PSNRs: a small brush stroke that falls on the always-black border can be
    filled exactly (the dataset mean is -1 there), and one infinite per-image PSNR would make the mean inf."""
    se = ((x.double() - y.double()).pow(2) * m).sum()
    return float(10 * torch.log10(4.0 / (se / m.sum().clamp_min(1))))


def run_inpaint(args) -> None:
    from ldmkit import editing
    from ldmkit.conditioning.concat import InpaintConfig, random_masks
    from ldmkit.data.fashion_mnist import load_fashion_mnist_arrays
    from ldmkit.pipelines import load_model

    model = load_model(args.model, device=args.device) if args.model else None
    repaint = load_model(args.repaint, device=args.device) if args.repaint else None
    truth = test_images(args.num)
    extractor = extractor_for(args, *[m for m in (model, repaint) if m is not None])
    truth_features = extractor.extract(truth).features
    train = load_fashion_mnist_arrays("train")[0]
    mean = torch.from_numpy(np.mean(train, axis=0, dtype=np.float64)).float().div(127.5).sub(1)  # [28, 28]
    masks = {"half": half_masks(args.num, (28, 28)),
             "brush": random_masks(args.num, (28, 28), InpaintConfig(box_prob=0.0), seed=args.seed)}
    rows = []
    for mask_name, mask in masks.items():
        methods = {"dataset mean": (lambda x, m, seed: torch.where(m, mean.expand_as(x), x))}
        if model is not None:
            methods[f"trained concat, {args.steps} steps"] = lambda x, m, seed: editing.inpaint_concat(
                model, x, m, steps=args.steps, seed=args.seed + seed)
        if repaint is not None:
            methods[f"RePaint R={args.resample}, {args.steps} steps"] = lambda x, m, seed: editing.inpaint(
                repaint, x, m, steps=args.steps, resample=args.resample, seed=args.seed + seed)
        for name, fn in methods.items():
            out, sec = in_batches(fn, truth, args.batch_size, mask)
            out = quantize(out)
            outside = float((out - truth).abs().masked_fill(mask, 0).max()) * 127.5
            rows.append([mask_name, f"{float(mask.float().mean()):.2f}", name, f"{masked_psnr(out, truth, mask):.2f}",
                         f"{outside:.0f}", f"{fid_against(extractor, truth_features, out):.2f}", f"{sec:.3f}"])
    print(f"inpainting, Fashion-MNIST test images 0..{args.num - 1}, concat model {args.model}, RePaint model "
          f"{args.repaint}, seeds {args.seed}+i, FID extractor {args.extractor}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}")
    header = ["masks", "hole fraction", "method", "PSNR in hole (dB)", "max change outside (of 255)",
              f"FID (N={args.num})", "s / image"]
    print(table(header, rows))
    write_json(args, header, rows)


def write_json(args, header: list[str], rows: list[list[str]]) -> None:
    """``--json FILE``: the table as ``{"task", "model", "num", "seed", "extractor", "rows": [{column: value}]}``."""
    if args.json:
        out = {"task": args.task, "model": args.model, "num": args.num, "seed": args.seed,
               "extractor": args.extractor, "rows": [dict(zip(header, r)) for r in rows]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


# ------------------------------------------------------------------------------------------- SDEdit
def run_sdedit(args) -> None:
    """SDEdit strength sweep: distance to the input against realism (FID) and, for models that take class
    names, whether the edit keeps the input's class (evaluation classifier on the requested = true class)."""
    from ldmkit import editing
    from ldmkit.data.fashion_mnist import load_fashion_mnist_arrays
    from ldmkit.metrics.reconstruction import psnr
    from ldmkit.pipelines import load_model

    model = load_model(args.model, device=args.device)
    truth = test_images(args.num)
    labels = torch.from_numpy(np.array(load_fashion_mnist_arrays("test")[1][: args.num])).long()
    extractor = extractor_for(args, model)
    truth_features = extractor.extract(truth).features
    takes_labels = "labels" in model.conditioner.accepts
    scale = args.guidance_scale if takes_labels else 1.0
    rows, columns = [], [truth]
    for strength in [float(v) for v in args.strengths.split(",")]:
        def edit(x, lab, seed, strength=strength):
            kw = {"prompts": [model.conditioner.parts["context"].default_prompts[k] for k in lab.tolist()]} \
                if takes_labels and "prompts" in model.conditioner.accepts else \
                ({"labels": lab} if takes_labels else {})
            return editing.img2img(model, x, strength=strength, steps=args.steps, seed=args.seed + seed,
                                   guidance_scale=scale, **kw)[0]

        out, sec = in_batches(edit, truth, args.batch_size, labels)
        out = quantize(out)
        columns.append(out)
        logits = extractor.extract(out).logits
        kept = float((torch.from_numpy(np.argmax(logits, axis=1)) == labels).float().mean())
        l2 = float((out - truth).flatten(1).pow(2).mean(1).sqrt().mean())
        rows.append([f"{strength:g}", str(editing.steps_run(strength, args.steps)), f"{l2:.3f}",
                     f"{float(psnr(out, truth).mean()):.2f}", f"{100 * kept:.1f}",
                     f"{fid_against(extractor, truth_features, out):.2f}", f"{sec:.3f}"])
    print(f"SDEdit, Fashion-MNIST test images 0..{args.num - 1}, model {args.model}, {args.steps}-step grid, "
          f"guidance {scale} ({'class name of the input as prompt' if takes_labels else 'unconditional'}), seeds "
          f"{args.seed}+i, extractor {args.extractor}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}")
    header = ["strength", "steps run", "RMS distance to input", "PSNR to input (dB)", "class kept (%)",
              f"FID (N={args.num})", "s / image"]
    print(table(header, rows))
    write_json(args, header, rows)
    if args.picture:
        picture(args.picture, columns, "input, then strength " + ", ".join(args.strengths.split(",")))


def picture(path: str, columns: list[torch.Tensor], what: str, rows: int = 8) -> None:
    from ldmkit.images import make_grid, save_png

    stack = torch.stack([c[:rows] for c in columns], dim=1).flatten(0, 1)
    grid = make_grid(stack, nrow=len(columns)).repeat(3, axis=0).repeat(3, axis=1)
    save_png(path, grid, {"columns": what})
    print(f"picture ({what}) -> {path}")


def main(argv: list[str] | None = None) -> None:
    from ldmkit.metrics.features import DEFAULT_EXTRACTOR

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="task", required=True)
    for name in ("sr", "inpaint", "sdedit"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=name != "inpaint", help="the trained concat model (run or checkpoint folder)")
        s.add_argument("--num", type=int, default=1000, help="test images 0 .. N-1")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--batch-size", type=int, default=100)
        s.add_argument("--extractor", default=DEFAULT_EXTRACTOR)
        s.add_argument("--device", default="cpu")
        s.add_argument("--json", default=None, help="also write the table here as JSON")
    sub.choices["sr"].add_argument("--steps", type=int, nargs="+", default=[20, 100])
    sub.choices["sr"].add_argument("--picture", default=None, help="PNG: low-res, bicubic, ours, truth (8 rows)")
    sub.choices["inpaint"].add_argument("--repaint", default=None, help="an unconditional model for RePaint")
    sub.choices["inpaint"].add_argument("--steps", type=int, default=50)
    sub.choices["inpaint"].add_argument("--resample", type=int, default=1)
    sub.choices["sdedit"].add_argument("--strengths", default="0.2,0.4,0.6,0.8,1.0")
    sub.choices["sdedit"].add_argument("--steps", type=int, default=50)
    sub.choices["sdedit"].add_argument("--guidance-scale", type=float, default=3.0)
    sub.choices["sdedit"].add_argument("--picture", default=None, help="PNG: input, then each strength (8 rows)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    {"sr": run_sr, "inpaint": run_inpaint, "sdedit": run_sdedit}[args.task](args)


if __name__ == "__main__":
    main()
