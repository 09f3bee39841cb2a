"""``ldmkit sample CKPT_DIR``: draw images from a trained model (grid PNG, one PNG each, or an .npz)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ldmkit.commands._common import UsageError, add_sampling_arguments, positive_int

# What --from-png takes from the PNG (argument: its default, which the user must leave as is).
FROM_PNG_ARGS = {"num": 64, "seed": 0, "sampler": None, "steps": None, "eta": None, "guidance_scale": None,
                 "labels": None, "classes": None, "prompt": None, "prompts": None, "layout": None, "no_ema": False,
                 "size": None}


def add_parser(sub, formatter_class):
    p = sub.add_parser("sample", help="sample images from a trained checkpoint", formatter_class=formatter_class,
                       description="Sample from a checkpoint (EMA weights by default). Image i uses its own "
                                   "noise seeded by --seed + i, so any image can be reproduced alone.")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint folder, or a run folder (its latest checkpoint); with --from-png, default: "
                        "the checkpoint named in the PNG")
    p.add_argument("--from-png", metavar="FILE", default=None,
                   help="regenerate one image written by `sample --out-dir`: its checkpoint, seed, sampler, steps, "
                        "eta, guidance scale, label, weights and size come from the PNG's metadata")
    p.add_argument("-n", "--num", type=positive_int, default=64, help="number of images")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--class", dest="classes", default=None, metavar="NAMES",
                   help='class-conditional models: comma-separated class names or indices, repeated to -n, e.g. '
                        '--class "ankle boot,sneaker" (default: 0, 1, ..., K-1, 0, ...)')
    p.add_argument("--labels", default=None,
                   help="class-conditional models: comma-separated class indices (as --class)")
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help='text-conditional models: the prompt of every image ("" = unconditional)')
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="text-conditional models: a text file with one prompt per line, repeated to -n")
    p.add_argument("--layout", default=None, metavar="FILE.json",
                   help='layout models: a JSON file (or inline JSON) with one layout [{"label": "sneaker", "box": '
                        '[x0, y0, x1, y1]}, ...] (coordinates in [0, 1]) or a list of layouts, cycled over -n '
                        "(default: fixed layouts cycling through the labels; [] = unconditional)")
    p.add_argument("--size", default=None, metavar="HxW",
                   help="sample at this image size instead of the training size (e.g. 56x112); H and W must be "
                        "multiples of the model's factor (U-Net levels x first-stage factor)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--grid", help="write a grid PNG here (default samples.png when no output is given)")
    p.add_argument("--out-dir", help="write one PNG per image, with the settings to reproduce it as metadata")
    p.add_argument("--npz", help="write the samples as .npz: uint8 images [N, H, W, C] (key images), labels, seeds")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import math

    from tqdm.auto import tqdm

    from ldmkit import __version__
    from ldmkit.commands._common import (
        class_labels,
        device,
        load_model,
        read_prompts,
        request_cond,
        sampling_settings,
        save_samples_npz,
    )
    from ldmkit.images import make_grid, save_png, to_uint8

    if args.from_png:
        settings_from_png(args)
    elif args.checkpoint is None:
        raise UsageError("CKPT_DIR: a checkpoint folder is required (or --from-png FILE)")
    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    cfg = loaded.config
    settings = sampling_settings(args, cfg.sample, loaded.process.num_timesteps,
                                 conditional=loaded.conditioner.is_conditional)
    sampler, steps, eta, scale = settings.sampler, settings.steps, settings.eta, settings.guidance_scale
    if args.labels and args.classes:
        raise UsageError("--labels and --class: give one of them")
    # `ldmkit generate` hands over its prompts already expanded to one per image (a row per prompt)
    prompts = getattr(args, "prompt_list", None) or read_prompts(args.prompt, args.prompts)
    # --labels keeps its index-only parsing (and messages); --class also takes names
    labels = class_labels(args.labels, args.num, cfg.unet.num_classes) if args.labels else args.classes
    layouts = None
    if args.layout is not None:
        from ldmkit.conditioning.layout import read_layout_arg

        layouts = read_layout_arg(args.layout)
    elif "layouts" in loaded.conditioner.accepts:  # the kind's defaults, spelled out for the PNG metadata
        layouts = loaded.conditioner.parts["context"].default_layouts_json(args.num)
    shape = None
    if args.size:  # --size HxW: the same flow at another size (checked against the model's factor)
        from ldmkit import editing

        shape = editing.shape_at(loaded, *editing.parse_size(args.size), what="--size")
        context = loaded.conditioner.parts.get("context")
        if getattr(context, "concat_channels", 0):  # a layout's box map is drawn on the requested canvas
            context.image_size = editing.parse_size(args.size)
    cond = request_cond(loaded, args.num, labels=labels, prompts=prompts, layouts=layouts)
    if layouts is not None:
        layouts = [layouts[i % len(layouts)] for i in range(args.num)]
    labels = None if cond is None or cond.class_labels is None else cond.class_labels.cpu()
    if prompts is not None:
        prompts = [prompts[i % len(prompts)] for i in range(args.num)]
    with tqdm(total=args.num, unit="img", desc=f"sampling ({sampler})") as bar:
        images = loaded.generate(args.num, shape=shape, sampler=sampler, steps=steps, eta=eta, seed=args.seed,
                                 cond=cond, guidance_scale=scale, batch_size=args.batch_size,
                                 progress=bar.update)
    uint8 = to_uint8(images)
    wrote = []
    if args.npz:
        save_samples_npz(args.npz, uint8, labels=labels, seeds=range(args.seed, args.seed + args.num))
        wrote.append(args.npz)
    if args.out_dir:
        common = {"ldmkit_version": __version__, "checkpoint": str(loaded.path), "step": loaded.step,
                  "weights": "model" if args.no_ema else "ema", "sampler": sampler, "steps": steps,
                  "eta": eta, "guidance_scale": scale, "size": args.size}
        for i in range(args.num):
            label = None if labels is None else int(labels[i])
            prompt = None if prompts is None else prompts[i]
            layout = None if layouts is None else layouts[i]
            guided = label is not None or prompt is not None or layout is not None
            cmd = (f"ldmkit sample {shlex.quote(str(loaded.path))} -n 1 --sampler {sampler} --steps {steps} "
                   f"--eta {eta} --seed {args.seed + i}" + ("" if label is None else f" --labels {label}")
                   + ("" if prompt is None else f" --prompt {shlex.quote(prompt)}")
                   + ("" if layout is None else f" --layout {shlex.quote(json.dumps(layout))}")
                   + (" --no-ema" if args.no_ema else "") + (f" --guidance-scale {scale}" if guided else "")
                   + (f" --size {args.size}" if args.size else ""))
            meta = {**common, "seed": args.seed + i, "index": i, "label": label, "prompt": json.dumps(prompt),
                    "layout": json.dumps(layout), "reproduce": cmd}
            save_png(Path(args.out_dir) / f"{i:05d}.png", uint8[i], meta)
        wrote.append(f"{args.out_dir}/ ({args.num} PNGs)")
    if args.grid or not wrote:
        grid_path = args.grid or "samples.png"
        nrow = getattr(args, "grid_nrow", None) or math.ceil(math.sqrt(args.num))
        save_png(grid_path, make_grid(uint8, nrow=nrow),
                 {"checkpoint": str(loaded.path), "step": loaded.step, "sampler": sampler, "steps": steps,
                  "eta": eta, "seed": args.seed, "n": args.num})
        wrote.append(grid_path)
    print(f"{args.num} images from {loaded.path} (step {loaded.step}, {sampler}, {steps} steps) -> "
          + ", ".join(wrote))
    return 0


def settings_from_png(args) -> None:
    """Fill ``args`` from the metadata of a PNG written by ``sample --out-dir`` (``--from-png``): one image,
    its seed, sampler, steps, eta, label (and guidance scale), weights and size; the positional checkpoint,
    when given, replaces the stored path (a moved checkpoint).

    Raises:
        UsageError: the file is no PNG, lacks those keys (e.g. a grid), or a sampling argument was also given.
    """
    import json

    from ldmkit.images import read_png_metadata

    given = [k for k, default in FROM_PNG_ARGS.items() if getattr(args, k) != default]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UsageError(f"--from-png: {names} come from the PNG's metadata; leave them out")
    try:
        meta = read_png_metadata(args.from_png)
    except FileNotFoundError:
        raise UsageError(f"--from-png {args.from_png}: no such file") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow: not a PNG, truncated, ...
        raise UsageError(f"--from-png {args.from_png}: cannot read it as a PNG ({e})") from None
    need = ("checkpoint", "seed", "sampler", "steps", "eta", "guidance_scale", "label", "weights")
    missing = [k for k in need if k not in meta]
    if missing:
        raise UsageError(f"--from-png {args.from_png}: no {', '.join(missing)} in its metadata; only the "
                         "one-image PNGs of `ldmkit sample --out-dir` can be regenerated (not a grid)")
    try:
        label = json.loads(meta["label"])
        args.seed, args.steps, args.eta = int(meta["seed"]), int(meta["steps"]), float(meta["eta"])
        scale = float(meta["guidance_scale"])
    except (ValueError, TypeError) as e:
        raise UsageError(f"--from-png {args.from_png}: unreadable metadata ({e})") from None
    if meta["weights"] not in ("ema", "model"):
        raise UsageError(f"--from-png {args.from_png}: weights={meta['weights']!r}, expected 'ema' or 'model'")
    args.checkpoint = args.checkpoint or meta["checkpoint"]
    args.num, args.sampler, args.no_ema = 1, meta["sampler"], meta["weights"] == "model"
    args.labels = None if label is None else str(int(label))
    prompt = json.loads(meta["prompt"]) if "prompt" in meta else None
    args.prompt = prompt
    layout = meta.get("layout")
    args.layout = None if layout in (None, "null") else layout  # inline JSON of the image's own layout
    guided = label is not None or prompt is not None or args.layout is not None
    args.guidance_scale = scale if guided else None  # guidance only acts on a labelled / prompted / laid-out image
    size = meta.get("size")
    args.size = None if size in (None, "null", "") else size
