"""``ldmkit visualize CKPT --what noising|trajectory|schedules``: teaching figures of a model, one PNG each."""

from __future__ import annotations

import shlex

from ldmkit.commands._common import UsageError, add_sampling_arguments, positive_int

WHATS = ("noising", "trajectory", "schedules")
DEFAULT_T = "0,42,100,250,500,999"


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "visualize", help="draw the forward process, a sampler's trajectory or the noise schedule to a PNG",
        formatter_class=formatter_class,
        description="Teaching figures, as the papers draw them. noising: real images (rows) under q(x_t | x_0) "
                    "at the --t timesteps (columns); trajectory: per sample, x_t and the predicted x0 every "
                    "--every steps of the sampler; schedules: alpha-bar_t and log10 SNR_t of the model's "
                    "schedule. Latent models are noised and sampled in latent space, and every x_t shown is "
                    "decoded through the first stage. The PNG's metadata holds the command that redraws it.")
    p.add_argument("checkpoint", metavar="CKPT_OR_NAME", help="checkpoint folder, run folder (its latest checkpoint) "
                                                              "or the name of a shipped model")
    p.add_argument("--what", required=True, metavar="WHAT", help="noising, trajectory or schedules")
    p.add_argument("-o", "--output", default=None, help="PNG to write (default: visualize_<what>.png)")
    p.add_argument("--seed", type=int, default=0, help="row/sample i uses seed + i")
    g = p.add_argument_group("noising")
    g.add_argument("--t", default=DEFAULT_T, metavar="T1,T2,...",
                   help="comma-separated timesteps, each in [0, T-1]")
    g.add_argument("--num", type=positive_int, default=4,
                   help="how many test-split images of the model's dataset (without --image)")
    g.add_argument("--image", nargs="+", default=None, metavar="FILE",
                   help="noise these image files instead (PNG/JPEG/WebP, the same size, as for img2img)")
    g = p.add_argument_group("trajectory")
    g.add_argument("-n", type=positive_int, default=2, dest="n", help="number of samples (two rows each)")
    g.add_argument("--every", type=int, default=None, metavar="K",
                   help="show every K-th sampler step and the last (default: about 8 columns)")
    add_sampling_arguments(g)
    g.add_argument("--class", dest="classes", default=None, metavar="NAMES",
                   help="class-conditional models: comma-separated class names or indices, repeated to -n")
    g.add_argument("--prompt", default=None, metavar="TEXT", help="text-conditional models: the prompt of every "
                                                                  "sample")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="text-conditional models: a text file with one prompt per line, repeated to -n")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def parse_timesteps(text: str, num_timesteps: int) -> list[int]:
    """``--t "0,42,999"`` -> ``[0, 42, 999]``, each in ``[0, T-1]``; a :class:`UsageError` names a bad value."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise UsageError(f"--t: {part!r} is not an integer timestep") from None
        values.append(value)
    if not values:
        raise UsageError(f"--t: no timestep in {text!r}; e.g. --t {DEFAULT_T}")
    bad = [v for v in values if not 0 <= v < num_timesteps]
    if bad:
        raise UsageError(f"--t: {', '.join(map(str, bad))} {'is' if len(bad) == 1 else 'are'} outside "
                         f"[0, {num_timesteps - 1}] (this model's T = {num_timesteps})")
    return values


def run(args) -> int:
    from ldmkit import __version__
    from ldmkit.commands._common import device, load_model

    if args.what not in WHATS:
        raise UsageError(f"--what={args.what!r}: valid: {', '.join(WHATS)}")
    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=device(args.device))
    output = args.output or f"visualize_{args.what}.png"
    base = f"ldmkit visualize {shlex.quote(str(args.checkpoint))} --what {args.what}"
    meta = {"ldmkit_version": __version__, "what": args.what, "checkpoint": str(loaded.path), "step": loaded.step,
            "weights": "model" if args.no_ema else "ema"}
    image, extra, cmd, summary = {"noising": _noising, "trajectory": _trajectory,
                                  "schedules": _schedules}[args.what](args, loaded)
    from ldmkit.images import save_png

    reproduce = base + cmd + (" --no-ema" if args.no_ema else "") + f" -o {shlex.quote(output)}"
    path = save_png(output, image, {**meta, **extra, "reproduce": reproduce})
    print(f"{args.what}: {summary} -> {path}")
    return 0


def _noising(args, loaded):
    import torch

    from ldmkit import editing, visualize

    timesteps = parse_timesteps(args.t, loaded.process.num_timesteps)
    if args.image:
        images = [editing.load_image_tensor(p, loaded) for p in args.image]
        sizes = sorted({tuple(im.shape[-2:]) for im in images})
        if len(sizes) > 1:
            raise UsageError(f"--image: the files differ in size ({', '.join(f'{h}x{w}' for h, w in sizes)}); "
                             "give images of one size")
        images, source = torch.cat(images), [str(p) for p in args.image]
    else:
        images = visualize.dataset_images(loaded, args.num)
        source = f"{loaded.config.data.name} test split, first {len(images)}"
    noising = visualize.forward_noising(loaded, images, timesteps, seed=args.seed)
    space = "decoded latents (noised in the first stage's latent space)" if noising.latent else "pixels"
    extra = {"timesteps": timesteps, "images": source, "seed": args.seed, "shown": space}
    t_arg = ",".join(map(str, timesteps))
    cmd = (f" --t {t_arg} --seed {args.seed}"
           + (" --image " + " ".join(shlex.quote(p) for p in args.image) if args.image else f" --num {args.num}"))
    summary = f"{len(images)} image(s) x {len(timesteps)} timesteps ({space})"
    return visualize.noising_figure(noising), extra, cmd, summary


def _trajectory(args, loaded):
    from ldmkit import visualize
    from ldmkit.commands._common import read_prompts, request_cond, sampling_settings

    s = sampling_settings(args, loaded.config.sample, loaded.process.num_timesteps,
                          conditional=loaded.conditioner.is_conditional)
    if args.every is not None and not 1 <= args.every <= s.steps:
        raise UsageError(f"--every={args.every}: must be in [1, {s.steps}] (the number of sampler steps)")
    prompts = read_prompts(args.prompt, args.prompts)
    cond = request_cond(loaded, args.n, labels=args.classes, prompts=prompts)
    every = visualize.default_every(s.steps) if args.every is None else args.every
    traj = visualize.reverse_trajectory(loaded, args.n, sampler=s.sampler, steps=s.steps, eta=s.eta, seed=args.seed,
                                        cond=cond, guidance_scale=s.guidance_scale, every=every)
    labels = None if cond is None or cond.class_labels is None else cond.class_labels.cpu().tolist()
    extra = {"sampler": s.sampler, "steps": s.steps, "eta": s.eta, "guidance_scale": s.guidance_scale,
             "seed": args.seed, "n": args.n, "every": every, "shown_steps": traj.steps,
             "shown_timesteps": traj.timesteps, "labels": labels, "prompts": prompts,
             "shown": "decoded latents" if traj.latent else "pixels"}
    cmd = (f" -n {args.n} --sampler {s.sampler} --steps {s.steps} --eta {s.eta} --every {every} --seed {args.seed}"
           + ("" if args.classes is None else f" --class {shlex.quote(args.classes)}")
           + ("" if args.prompt is None else f" --prompt {shlex.quote(args.prompt)}")
           + ("" if args.prompts is None else f" --prompts {shlex.quote(args.prompts)}")
           + (f" --guidance-scale {s.guidance_scale}" if loaded.conditioner.is_conditional else ""))
    summary = f"{args.n} sample(s), {len(traj.steps)} of {s.steps} {s.sampler} steps shown"
    return visualize.trajectory_figure(traj), extra, cmd, summary


def _schedules(args, loaded):
    from ldmkit import visualize

    d = loaded.config.diffusion
    curves = visualize.schedule_curves(loaded.process)
    extra = {"schedule": d.schedule, "num_timesteps": d.num_timesteps,
             "alphas_cumprod_first": float(curves["alphas_cumprod"][0]),
             "alphas_cumprod_last": float(curves["alphas_cumprod"][-1])}
    summary = (f"{d.schedule} schedule, T={d.num_timesteps}, alpha-bar {curves['alphas_cumprod'][0]:.6f} -> "
               f"{curves['alphas_cumprod'][-1]:.3e}")
    return visualize.schedule_figure(loaded.process, label=f"{d.schedule} (this model)"), extra, "", summary
