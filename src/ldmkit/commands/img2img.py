"""``ldmkit img2img CKPT_DIR IMAGE... --strength s``: SDEdit image-to-image with any trained model."""

from __future__ import annotations

import shlex
from pathlib import Path

from ldmkit.commands._common import add_sampling_arguments


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "img2img", help="re-imagine images: noise them to a strength and denoise (SDEdit)",
        formatter_class=formatter_class,
        description="SDEdit (Meng et al. 2022): each image is noised to timestep ~ strength x T and denoised "
                    "by the model's sampler on the last round(strength x steps) entries of its grid (latent "
                    "models encode and decode through their first stage). Strength 0 returns the input, "
                    "strength 1 ignores it (plain sampling with the same seed). Images keep their size, "
                    "which must be a multiple of the model's factor (U-Net levels x first-stage factor).")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or WebP files (converted to the "
                                                               "model's channels)")
    p.add_argument("--strength", type=float, required=True, help="noise level in [0, 1]")
    p.add_argument("-o", "--out", default="img2img",
                   help="output folder (one NAME.png per IMAGE), or a .png file for a single IMAGE")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="IMAGE i uses seed + i")
    p.add_argument("--prompt", default=None, help="text-conditional models: the prompt for every image "
                   "(default: the empty prompt, i.e. unconditional)")
    p.add_argument("--labels", default=None,
                   help="class-conditional models: comma-separated classes, repeated over the images "
                        "(default: 0, 1, ..., K-1, 0, ...)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def output_paths(out: str, images: list[str]) -> list[Path]:
    """Where each result goes: ``out`` itself for one IMAGE and a ``.png`` ``out``, else ``out/STEM.png``."""
    from ldmkit.commands._common import UsageError

    if out.lower().endswith(".png"):
        if len(images) != 1:
            raise UsageError(f"-o/--out {out}: a .png file takes one IMAGE, got {len(images)}; name a folder")
        return [Path(out)]
    paths = [Path(out) / f"{Path(p).stem}.png" for p in images]
    seen: dict[Path, str] = {}
    for src, dst in zip(images, paths, strict=True):
        if dst in seen:
            raise UsageError(f"IMAGE {src} and {seen[dst]} would both be written to {dst}; rename one")
        seen[dst] = src
    return paths


def run(args) -> int:
    import math
    import time

    from tqdm.auto import tqdm

    from ldmkit import __version__, editing
    from ldmkit.commands._common import UsageError, class_labels, device, load_model, sampling_settings
    from ldmkit.images import save_png, to_uint8

    if not (0.0 <= args.strength <= 1.0) or math.isnan(args.strength):
        raise UsageError(f"--strength={args.strength}: must be in [0, 1] (0 returns the input, 1 ignores it)")
    paths = output_paths(args.out, args.images)
    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    cfg = loaded.config
    s = sampling_settings(args, cfg.sample, loaded.process.num_timesteps)
    images = [editing.load_image_tensor(p, loaded) for p in args.images]  # all checked before any work
    labels = class_labels(args.labels, len(images), cfg.unet.num_classes)
    results, run_info = [], None
    begin = time.perf_counter()
    with tqdm(total=len(images), unit="img", desc=f"img2img ({s.sampler})") as bar:
        for i, image in enumerate(images):
            out, run_info = editing.img2img(loaded, image, strength=args.strength, steps=s.steps,
                                            seed=args.seed + i, labels=None if labels is None else labels[i:i + 1],
                                            sampler=s.sampler, eta=s.eta, guidance_scale=s.guidance_scale,
                                            prompts=args.prompt)
            results.append(to_uint8(out[0]))
            bar.update(1)
    seconds = time.perf_counter() - begin
    for i, (src, dst) in enumerate(zip(args.images, paths, strict=True)):
        label = None if labels is None else int(labels[i])
        cmd = (f"ldmkit img2img {shlex.quote(str(loaded.path))} {shlex.quote(src)} --strength {args.strength} "
               f"--sampler {s.sampler} --steps {s.steps} --eta {s.eta} --seed {args.seed + i}"
               + ("" if label is None else f" --labels {label} --guidance-scale {s.guidance_scale}")
               + ("" if args.prompt is None else f" --prompt {shlex.quote(args.prompt)} --guidance-scale "
                                                 f"{s.guidance_scale}")
               + (" --no-ema" if args.no_ema else ""))
        meta = {"ldmkit_version": __version__, "method": "sdedit", "checkpoint": str(loaded.path),
                "step": loaded.step, "weights": "model" if args.no_ema else "ema", "image": src,
                "strength": args.strength, "sampler": s.sampler, "steps": s.steps, "steps_run": run_info.steps_run,
                "t_start": run_info.t_start, "eta": s.eta, "seed": args.seed + i, "label": label,
                "prompt": args.prompt, "reproduce": cmd}
        save_png(dst, results[i], meta)
    where = str(paths[0]) if len(paths) == 1 else f"{args.out}/ ({len(paths)} PNGs)"
    start = "the input returned" if run_info.t_start is None else f"from t={run_info.t_start} of T={loaded.process.num_timesteps}"
    print(f"img2img: {len(images)} image(s), strength {args.strength}: ran {run_info.steps_run} of {s.steps} "
          f"{s.sampler} denoising steps per image ({start}; {seconds:.1f} s) -> {where}")
    return 0
