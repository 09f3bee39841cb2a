"""Classifier-free guidance sweep: FID and class accuracy against the guidance scale (Ho & Salimans 2022).

For every model and scale, ``--num-samples`` images are drawn class-balanced (image i: class i mod 10):
a class-conditional model gets the class label; a text model gets a HELD-OUT paraphrase of that class
(``ldmkit.data.captions.held_out_prompts``: templates and synonyms never used in training). Each set is
scored with FID against the Fashion-MNIST test split and with the accuracy of the evaluation classifier
(the default extractor of ``ldmkit.metrics.features``, never a training loss) on the requested class.

    python benchmarks/guidance_sweep.py --model class=runs/ldm_class_fmnist --model minilm=runs/ldm_text_fmnist \
        --model scratch=runs/ldm_text_scratch --scales 1,1.5,2,3,5 --num-samples 2000 --steps 50 \
        --json docs/results/guidance_sweep.json --plot docs/images/guidance_sweep.png

Prints one table row per (model, scale): FID, accuracy, seconds of sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPT_SETS = ("held-out", "validation", "train", "held-out-known-words", "held-out-unseen-words")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=RUN",
                   help="a checkpoint or run folder, named (repeat for several models)")
    p.add_argument("--scales", default="1,1.5,2,3,5", help="comma-separated guidance scales")
    p.add_argument("--num-samples", type=int, default=1000, help="images per (model, scale); a multiple of 10")
    p.add_argument("--steps", default="50", help="sampler steps; comma-separated for an FID-vs-steps table")
    p.add_argument("--samplers", default="ddim", help="comma-separated samplers (ddim, dpmpp_2m, ddpm)")
    p.add_argument("--prompt-set", choices=PROMPT_SETS, default="held-out",
                   help="text models: held-out paraphrases (evaluation), validation paraphrases or training "
                        "captions (for choosing a setting without looking at the held-out set); "
                        "held-out-known-words / held-out-unseen-words split the held-out paraphrases by whether "
                        "their class word has a WordPiece token that some training caption has (a diagnostic "
                        "of what an encoder trained only on the training captions can know)")
    p.add_argument("--reference", default="fashion-mnist:test",
                   help="FID reference (choose settings against fashion-mnist:train, report against :test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--extractor", default=None, help="feature extractor (default: the evaluation default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--plot", default=None, help="write the FID / accuracy curves here (PNG)")
    return p.parse_args(argv)


def unseen_class_words() -> set[str]:
    """The held-out synonyms made only of WordPiece tokens that no training caption contains ("jeans",
    "parka", ...): an encoder trained on the training captions alone has never updated their embeddings."""
    from ldmkit.data.captions import HELD_OUT_SYNONYMS, train_captions
    from ldmkit.networks.text_encoder import WordPieceTokenizer

    tok = WordPieceTokenizer(max_tokens=64)
    seen: set[int] = set()
    for k in range(len(HELD_OUT_SYNONYMS)):
        ids, mask = tok.encode(train_captions(k), truncate=True)
        seen |= set(ids[mask].tolist())
    unseen = set()
    for synonyms in HELD_OUT_SYNONYMS:
        for _, noun in synonyms:
            ids, mask = tok.encode([noun], truncate=True)
            if not any(i in seen for i in ids[0][mask[0]].tolist()[1:-1]):  # [1:-1]: not [CLS] / [SEP]
                unseen.add(noun)
    return unseen


def word_split_prompts(n: int, seed: int, known: bool) -> tuple[list[str], torch.Tensor]:
    """``n`` held-out paraphrases whose class word is known (some token seen in training) or unseen, cycling
    over the classes that have any (image i: the i-th of them mod their count), and the requested classes."""
    from ldmkit.data.captions import held_out_captions

    unseen = unseen_class_words()
    pools = {k: [c for c in held_out_captions(k) if any(w in c for w in unseen) != known] for k in range(10)}
    classes = [k for k, pool in pools.items() if pool]
    rng = np.random.default_rng(seed)
    labels = torch.tensor([classes[i % len(classes)] for i in range(n)], dtype=torch.int64)
    return [pools[int(k)][rng.integers(len(pools[int(k)]))] for k in labels], labels


def request(loaded, n: int, seed: int, prompt_set: str = "held-out") -> tuple[dict, torch.Tensor, str]:
    """The sampling request of a model (labels, or held-out / training prompts) and the requested class of
    each image."""
    from ldmkit.data.captions import held_out_prompts, train_prompts, validation_prompts

    accepts = loaded.conditioner.accepts
    if "prompts" in accepts:
        if loaded.config.data.name != "fashion-mnist":
            raise SystemExit(f"{loaded.path}: the sweep's prompts are Fashion-MNIST captions")
        if prompt_set.startswith("held-out-"):
            prompts, labels = word_split_prompts(n, seed, known=prompt_set == "held-out-known-words")
            return {"prompts": prompts}, labels, f"{prompt_set} prompts"
        prompts, labels = {"held-out": held_out_prompts, "validation": validation_prompts,
                           "train": train_prompts}[prompt_set](n // 10, seed=seed)
        order = torch.arange(n).view(10, n // 10).t().reshape(-1)  # interleave: image i is class i mod 10
        return {"prompts": [prompts[i] for i in order]}, labels[order], f"{prompt_set} prompts"
    if "labels" in accepts:
        labels = torch.arange(n) % loaded.config.unet.num_classes
        return {"labels": labels}, labels, "class labels"
    raise SystemExit(f"{loaded.path}: the model is unconditional; the sweep needs class labels or prompts")


def sweep_model(name: str, path: str, args, extractor) -> list[dict]:
    from ldmkit.metrics import evaluate_images
    from ldmkit.pipelines import load_model

    loaded = load_model(path, device=args.device)
    req, labels, kind = request(loaded, args.num_samples, args.seed, args.prompt_set)
    cond = loaded.make_cond(args.num_samples, **req)
    rows = []
    grid = [(sampler, int(steps), float(scale)) for sampler in args.samplers.split(",")
            for steps in str(args.steps).split(",") for scale in args.scales.split(",")]
    for sampler, steps, scale in grid:
        t0 = time.perf_counter()
        images = loaded.generate(args.num_samples, cond=cond, sampler=sampler, steps=steps, seed=args.seed,
                                 guidance_scale=scale, batch_size=args.batch_size)
        seconds = time.perf_counter() - t0
        logits = extractor.extract(images).logits
        hits = (torch.from_numpy(np.argmax(logits, axis=1)) == labels).float()
        accuracy = float(hits.mean())
        per_class = [round(float(hits[labels == k].mean()), 3) if (labels == k).any() else None
                     for k in range(int(labels.max()) + 1)]
        fid = float(evaluate_images(images, reference=args.reference, metrics=("fid",),
                                    extractor=extractor)["fid"])
        row = {"model": name, "checkpoint": str(loaded.path), "step": loaded.step, "condition": kind,
               "guidance_scale": scale, "fid": round(fid, 3), "accuracy": round(accuracy, 4), "per_class_accuracy": per_class,
               "num_samples": args.num_samples, "reference": args.reference, "sampler": sampler, "steps": steps, "extractor": extractor.name,
               "sample_s": round(seconds, 1),
               "params": sum(p.numel() for p in loaded.denoiser.parameters())}
        print(f"{name:>10} {kind:>16} {sampler:>8} {steps:>3} steps s={scale:<4g} FID {fid:8.3f}  accuracy {accuracy:6.1%}  ({seconds:.0f} s)",
              flush=True)
        rows.append(row)
    return rows


COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def plot(rows: list[dict], path: str) -> None:
    """FID and accuracy against the guidance scale, one curve per model, as a PNG drawn with Pillow."""
    from PIL import Image, ImageDraw

    names = list(dict.fromkeys(r["model"] for r in rows))
    scales = sorted({r["guidance_scale"] for r in rows})
    img = Image.new("RGB", (900, 380), "white")
    draw = ImageDraw.Draw(img)
    panels = [("fid", "FID (lower is better)", (70, 40, 420, 320)), ("accuracy", "class accuracy", (520, 40, 870, 320))]
    for key, title, (left, top, right, bottom) in panels:
        values = [r[key] for r in rows]
        lo, hi = min(values), max(values)
        lo, hi = (lo - 1, hi + 1) if hi == lo else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        if key == "accuracy":
            lo, hi = 0.0, 1.0
        s_lo, s_hi = scales[0], max(scales[-1], scales[0] + 1e-9)

        def px(s, v, left=left, right=right, top=top, bottom=bottom, lo=lo, hi=hi, s_lo=s_lo, s_hi=s_hi):
            return left + (s - s_lo) / (s_hi - s_lo) * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top)

        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text(((left + right) / 2, top - 20), title, fill="black", anchor="mm")
        draw.text(((left + right) / 2, bottom + 28), "guidance scale", fill="black", anchor="mt")
        for s in scales:
            draw.text((px(s, lo)[0], bottom + 6), f"{s:g}", fill="black", anchor="mt")
        for i in range(5):
            v = lo + (hi - lo) * i / 4
            draw.text((left - 6, px(s_lo, v)[1]), f"{v:.3g}", fill="black", anchor="rm")
        for k, name in enumerate(names):
            pts = [px(r["guidance_scale"], r[key]) for r in rows if r["model"] == name]
            color = COLORS[k % len(COLORS)]
            if len(pts) > 1:
                draw.line(pts, fill=color, width=2)
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
            if key == "accuracy":
                draw.text((right - 8, bottom - 12 - 16 * k), name, fill=color, anchor="rb")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main(argv=None) -> int:
    from ldmkit.metrics.features import DEFAULT_EXTRACTOR, get_extractor

    args = parse_args(argv)
    if args.num_samples % 10:
        raise SystemExit("--num-samples must be a multiple of 10 (class-balanced)")
    extractor = get_extractor(args.extractor or DEFAULT_EXTRACTOR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            name, path = Path(spec).name, spec
        rows += sweep_model(name, path, args, extractor)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
