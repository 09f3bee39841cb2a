"""``ldmkit sample CKPT_DIR``: draw images from a trained model (grid PNG, one PNG each, or an .npz)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ldmkit.commands._common import add_sampling_arguments, positive_int


def add_parser(sub, formatter_class):
    p = sub.add_parser("sample", help="sample images from a trained checkpoint", formatter_class=formatter_class,
                       description="Sample from a checkpoint (EMA weights by default). Image i uses its own "
                                   "noise seeded by --seed + i, so any image can be reproduced alone.")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("-n", "--num", type=positive_int, default=64, help="number of images")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--labels", default=None,
                   help="class-conditional models: comma-separated class indices, repeated to -n "
                        "(default: 0, 1, ..., K-1, 0, ...)")
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
    import math

    from tqdm.auto import tqdm

    from ldmkit import __version__
    from ldmkit.commands._common import class_labels, device, load_model, sampling_settings, save_samples_npz
    from ldmkit.images import make_grid, save_png, to_uint8

    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    cfg = loaded.config
    settings = sampling_settings(args, cfg.sample, loaded.process.num_timesteps)
    sampler, steps, eta, scale = settings.sampler, settings.steps, settings.eta, settings.guidance_scale
    labels = class_labels(args.labels, args.num, cfg.unet.num_classes)
    shape = None
    if args.size:  # --size HxW: the same flow at another size (checked against the model's factor)
        from ldmkit import editing

        shape = editing.shape_at(loaded, *editing.parse_size(args.size), what="--size")
    with tqdm(total=args.num, unit="img", desc=f"sampling ({sampler})") as bar:
        images = loaded.generate(args.num, shape=shape, sampler=sampler, steps=steps, eta=eta, seed=args.seed,
                                 labels=labels, guidance_scale=scale, batch_size=args.batch_size,
                                 progress=bar.update)
    uint8 = to_uint8(images)
    wrote = []
    if args.npz:
        save_samples_npz(args.npz, uint8, labels=labels, seeds=range(args.seed, args.seed + args.num))
        wrote.append(args.npz)
    if args.out_dir:
        common = {"ldmkit_version": __version__, "checkpoint": str(loaded.path), "step": loaded.step,
                  "weights": "model" if args.no_ema else "ema", "sampler": sampler, "steps": steps,
                  "eta": eta, "guidance_scale": scale}
        for i in range(args.num):
            label = None if labels is None else int(labels[i])
            cmd = (f"ldmkit sample {shlex.quote(str(loaded.path))} -n 1 --sampler {sampler} --steps {steps} "
                   f"--eta {eta} --seed {args.seed + i}" + ("" if label is None else f" --labels {label}")
                   + (" --no-ema" if args.no_ema else "") + (f" --guidance-scale {scale}" if label is not None else "")
                   + (f" --size {args.size}" if args.size else ""))
            meta = {**common, "seed": args.seed + i, "index": i, "label": label, "reproduce": cmd}
            save_png(Path(args.out_dir) / f"{i:05d}.png", uint8[i], meta)
        wrote.append(f"{args.out_dir}/ ({args.num} PNGs)")
    if args.grid or not wrote:
        grid_path = args.grid or "samples.png"
        save_png(grid_path, make_grid(uint8, nrow=math.ceil(math.sqrt(args.num))),
                 {"checkpoint": str(loaded.path), "step": loaded.step, "sampler": sampler, "steps": steps,
                  "eta": eta, "seed": args.seed, "n": args.num})
        wrote.append(grid_path)
    print(f"{args.num} images from {loaded.path} (step {loaded.step}, {sampler}, {steps} steps) -> "
          + ", ".join(wrote))
    return 0
