"""``ldmkit inpaint CKPT_DIR IMAGE [MASK]``: fill the white part of a mask (or a --box): with a trained
inpainting model (``cond.concat: inpainting``) in one sampling run, with any other model by RePaint."""

from __future__ import annotations

import shlex
from pathlib import Path

from ldmkit.commands._common import positive_int


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "inpaint", help="fill a masked region of an image (trained inpainting model, or RePaint with any model)",
        formatter_class=formatter_class,
        description="A checkpoint trained for inpainting (cond.concat: inpainting, Rombach et al. 2022) fills "
                    "the mask in one run of its sampler (--steps; the RePaint options do not apply). Any "
                    "other unconditional or class-conditional checkpoint uses RePaint (Lugmayr et al. 2022): the "
                    "known region is re-noised from the input at every step, and --resample R > 1 jumps back "
                    "--jump-length steps R - 1 times to harmonise the fill. The known region of the output "
                    "equals the input exactly. The image keeps its size, which must be a multiple of the "
                    "model's factor (U-Net levels x first-stage factor).")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("image", help="the image to complete (PNG, JPEG, WebP; converted to the model's channels)")
    p.add_argument("mask", nargs="?", default=None,
                   help="mask image of the same size: white (255) = fill, black (0) = keep; or use --box")
    p.add_argument("--box", default=None, help="fill the box x0,y0,x1,y1 (pixels, x1 and y1 exclusive) instead of a MASK")
    p.add_argument("--threshold", type=int, default=None,
                   help="binarise a gray mask on purpose: values >= T (1-255) are filled (default: the mask "
                        "must hold only 0 and 255)")
    p.add_argument("-o", "--out", default="inpainted.png", help="output PNG (with the settings as metadata)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="length of the uniform timestep grid T' (default: the checkpoint config's sample.steps, "
                        "null: all T); with resampling the denoiser runs more often (printed)")
    p.add_argument("--resample", type=positive_int, default=1, help="RePaint's R: resamplings per jump (1: none)")
    p.add_argument("--jump-length", type=positive_int, default=None,
                   help="RePaint's jump length j (default: min(10, steps - 1))")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.add_argument("--labels", default=None, help="class-conditional models: the class (default 0)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the config's sample.guidance_scale)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from tqdm.auto import tqdm

    from ldmkit import __version__, editing
    from ldmkit.commands._common import UsageError, class_labels, device, load_model
    from ldmkit.images import save_png, to_uint8

    if (args.mask is None) == (args.box is None):
        raise UsageError("inpaint: give either a MASK image or --box x0,y0,x1,y1 (exactly one)")
    if args.box is not None and args.threshold is not None:
        raise UsageError("--threshold: applies to a MASK image, not to --box")
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"-o/--out {args.out}: must be a .png file")
    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    cfg = loaded.config
    image = editing.load_image_tensor(args.image, loaded)
    size = tuple(image.shape[-2:])
    if args.box is not None:
        mask = editing.box_mask(editing.parse_box(args.box, size), size)
    else:
        mask = editing.load_mask(args.mask, size, args.threshold)
    if editing.concat_task(loaded) == "inpainting":
        return run_concat(args, loaded, image, mask)
    steps = args.steps or cfg.sample.steps or loaded.process.num_timesteps
    if steps > loaded.process.num_timesteps:
        raise UsageError(f"--steps={steps}: must be in [1, {loaded.process.num_timesteps}] (the model's T)")
    jump = args.jump_length
    if args.resample > 1 and jump is not None and jump >= steps:
        raise UsageError(f"--jump-length={jump}: must be below --steps={steps}")
    if args.resample > 1 and steps < 2:
        raise UsageError(f"--resample={args.resample}: needs --steps >= 2 to jump back")
    labels = class_labels(args.labels, 1, cfg.unet.num_classes)
    scale = cfg.sample.guidance_scale if args.guidance_scale is None else args.guidance_scale
    total = editing.inpaint_evaluations(steps, args.resample, jump)
    start = time.perf_counter()
    with tqdm(total=total, unit="step", desc="inpainting (RePaint)") as bar:
        out = editing.inpaint(loaded, image, mask, steps=steps, resample=args.resample, seed=args.seed,
                              jump_length=jump, labels=labels, guidance_scale=scale, progress=bar.update)
    seconds = time.perf_counter() - start
    where = _where(args)
    cmd = (f"ldmkit inpaint {shlex.quote(str(loaded.path))} {shlex.quote(str(args.image))} {where} "
           f"--steps {steps} --resample {args.resample} --seed {args.seed}"
           + ("" if jump is None else f" --jump-length {jump}")
           + ("" if labels is None else f" --labels {int(labels[0])} --guidance-scale {scale}")
           + (" --no-ema" if args.no_ema else ""))
    meta = {"ldmkit_version": __version__, "method": "repaint", "checkpoint": str(loaded.path),
            "step": loaded.step, "weights": "model" if args.no_ema else "ema", "image": str(args.image),
            "mask": None if args.mask is None else str(args.mask), "box": args.box, "threshold": args.threshold,
            "steps": steps, "resample": args.resample, "jump_length": jump, "seed": args.seed,
            "label": None if labels is None else int(labels[0]), "denoiser_evaluations": total, "reproduce": cmd}
    save_png(Path(args.out), to_uint8(out[0]), meta)
    filled = int(mask.sum())
    print(f"inpainted {filled} of {mask.numel()} pixels of {args.image} ({size[0]}x{size[1]}) with {loaded.path} "
          f"(RePaint, {steps} steps, R={args.resample}: {total} denoiser evaluations, {seconds:.1f} s) -> {args.out}")
    return 0


def _where(args) -> str:
    return f"--box {args.box}" if args.box is not None else shlex.quote(str(args.mask)) + (
        "" if args.threshold is None else f" --threshold {args.threshold}")


def run_concat(args, loaded, image, mask) -> int:
    """The trained-inpainting-model path: :func:`ldmkit.editing.inpaint_concat` (one sampling run)."""
    import time

    from ldmkit import __version__, editing
    from ldmkit.commands._common import UsageError
    from ldmkit.images import save_png, to_uint8

    refused = [o for o, given in (("--resample", args.resample != 1), ("--jump-length", args.jump_length is not None),
                                  ("--labels", args.labels is not None),
                                  ("--guidance-scale", args.guidance_scale is not None)) if given]
    if refused:
        raise UsageError(f"{', '.join(refused)}: {loaded.path} is a trained inpainting model (cond.concat: "
                         "inpainting), which fills the mask in one sampling run; these options are for RePaint")
    cfg = loaded.config
    steps = args.steps or cfg.sample.steps or loaded.process.num_timesteps
    if steps > loaded.process.num_timesteps:
        raise UsageError(f"--steps={steps}: must be in [1, {loaded.process.num_timesteps}] (the model's T)")
    start = time.perf_counter()
    out = editing.inpaint_concat(loaded, image, mask, steps=steps, seed=args.seed)
    seconds = time.perf_counter() - start
    cmd = (f"ldmkit inpaint {shlex.quote(str(loaded.path))} {shlex.quote(str(args.image))} {_where(args)} "
           f"--steps {steps} --seed {args.seed}" + (" --no-ema" if args.no_ema else ""))
    meta = {"ldmkit_version": __version__, "method": "concat", "checkpoint": str(loaded.path),
            "step": loaded.step, "weights": "model" if args.no_ema else "ema", "image": str(args.image),
            "mask": None if args.mask is None else str(args.mask), "box": args.box, "threshold": args.threshold,
            "sampler": cfg.sample.sampler, "steps": steps, "eta": cfg.sample.eta, "seed": args.seed,
            "denoiser_evaluations": steps, "reproduce": cmd}
    save_png(Path(args.out), to_uint8(out[0]), meta)
    size = tuple(image.shape[-2:])
    print(f"inpainted {int(mask.sum())} of {mask.numel()} pixels of {args.image} ({size[0]}x{size[1]}) with "
          f"{loaded.path} (trained inpainting model, {cfg.sample.sampler}, {steps} steps: {steps} denoiser "
          f"evaluations, {seconds:.1f} s) -> {args.out}")
    return 0
