"""``ldmkit upscale CKPT_DIR LOWRES... [-o OUT]``: super-resolution with a model trained for it (concat)."""

from __future__ import annotations

import shlex

from ldmkit.commands._common import add_sampling_arguments


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "upscale", help="upscale low-resolution images with a super-resolution model (cond.concat)",
        formatter_class=formatter_class,
        description="Super-resolution (Rombach et al. 2022, Sec. 4.4) with a checkpoint trained with "
                    "cond.concat: super_resolution: each low-res image is upsampled (bicubic), laid on the "
                    "model's latent grid and concatenated to x_t; the model samples an image cond.sr.factor "
                    "times larger (x4: 7x7 -> 28x28 for configs/ldm_sr_fmnist.yaml). Give the low-res image "
                    "as it is (already small): no degradation is applied.")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("images", nargs="+", metavar="LOWRES",
                   help="low-resolution PNG, JPEG or WebP files (converted to the model's channels)")
    p.add_argument("-o", "--out", default="upscaled",
                   help="output folder (one NAME.png per LOWRES), or a .png file for a single LOWRES")
    add_sampling_arguments(p, guidance=False)
    p.add_argument("--seed", type=int, default=0, help="LOWRES i uses seed + i")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from tqdm.auto import tqdm

    from ldmkit import __version__, editing
    from ldmkit.commands._common import device, load_model, sampling_settings
    from ldmkit.commands.img2img import output_paths
    from ldmkit.images import save_png, to_uint8

    paths = output_paths(args.out, args.images)
    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    editing.concat_part(loaded, "super_resolution", "upscale")  # a clear error for any other model
    s = sampling_settings(args, loaded.config.sample, loaded.process.num_timesteps)
    channels = editing.image_channels(loaded)
    lows = [editing.to_tensor(editing.read_uint8(p, channels, what="low-res image")) for p in args.images]
    for src, low in zip(args.images, lows, strict=True):  # every size checked before any work
        try:
            editing.upscaled_size(loaded, tuple(low.shape[-2:]))
        except editing.EditInputError as e:
            raise editing.EditInputError(f"low-res image {src}: {e}") from None
    outs = []
    begin = time.perf_counter()
    with tqdm(total=len(lows), unit="img", desc=f"upscale ({s.sampler})") as bar:
        for i, low in enumerate(lows):
            outs.append(editing.upscale(loaded, low, steps=s.steps, seed=args.seed + i, sampler=s.sampler,
                                        eta=s.eta))
            bar.update(1)
    seconds = time.perf_counter() - begin
    for i, (src, dst, out) in enumerate(zip(args.images, paths, outs, strict=True)):
        cmd = (f"ldmkit upscale {shlex.quote(str(loaded.path))} {shlex.quote(src)} --sampler {s.sampler} "
               f"--steps {s.steps} --eta {s.eta} --seed {args.seed + i}" + (" --no-ema" if args.no_ema else ""))
        meta = {"ldmkit_version": __version__, "method": "super_resolution", "checkpoint": str(loaded.path),
                "step": loaded.step, "weights": "model" if args.no_ema else "ema", "image": src,
                "low_res_size": list(lows[i].shape[-2:]), "sampler": s.sampler, "steps": s.steps, "eta": s.eta,
                "seed": args.seed + i, "reproduce": cmd}
        save_png(dst, to_uint8(out[0]), meta)
    h, w = outs[0].shape[-2:]
    where = str(paths[0]) if len(paths) == 1 else f"{args.out}/ ({len(paths)} PNGs)"
    print(f"upscaled {len(outs)} image(s) {lows[0].shape[-2]}x{lows[0].shape[-1]} -> {h}x{w} with {loaded.path} "
          f"({s.sampler}, {s.steps} steps, {seconds:.1f} s) -> {where}")
    return 0
