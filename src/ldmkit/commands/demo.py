"""``ldmkit demo``: generate a grid of Fashion-MNIST images with the pretrained model shipped in the package."""

from __future__ import annotations

import time
from pathlib import Path

from ldmkit.commands._common import add_sampling_arguments, positive_int

DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_ddpm_fmnist"


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "demo", help="generate images with the shipped pretrained model (no training, no download)",
        formatter_class=formatter_class,
        description="Samples a grid from the small DDPM (Ho et al. 2020 settings) that ships inside ldmkit, "
                    "trained on Fashion-MNIST on a 2-core CPU. See docs/benchmarks.md for how it was trained.")
    p.add_argument("--out", default="outputs/demo.png", help="where to write the grid PNG")
    p.add_argument("--model", default=str(DEMO_MODEL), help="checkpoint folder to sample from")
    p.add_argument("-n", "--num", type=positive_int, default=36, help="number of images")
    add_sampling_arguments(p, eta=False, guidance=False)  # the shipped model's config: ddim, 25 steps
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.set_defaults(func=run)


def run(args) -> int:
    import math

    from tqdm.auto import tqdm

    from ldmkit.commands._common import UsageError, load_model, sampling_settings
    from ldmkit.images import make_grid, save_png
    from ldmkit.training.checkpoint import CheckpointError

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        msg = (f"{model_dir}: no pretrained model here (expected config.json + ema.safetensors). Reinstall "
               "ldmkit, or train one with 'ldmkit train configs/ddpm_fmnist.yaml --out runs/ddpm' and pass "
               "--model runs/ddpm.")
        # a --model the user named is a usage error; the shipped model missing is a broken install
        raise UsageError(f"--model: {msg}") if model_dir != DEMO_MODEL else CheckpointError(msg)
    loaded = load_model(model_dir)
    s = sampling_settings(args, loaded.config.sample, loaded.process.num_timesteps)
    print(f"ldmkit demo: sampling {args.num} images from the shipped model {model_dir.name} "
          f"(trained {loaded.step} steps; {s.sampler}, {s.steps} steps, seed {args.seed})")
    start = time.perf_counter()
    with tqdm(total=args.num, unit="img", desc=f"sampling ({s.sampler})") as bar:
        images = loaded.generate(args.num,
                                    sampler=s.sampler, steps=s.steps, seed=args.seed, progress=bar.update)
    seconds = time.perf_counter() - start
    grid = make_grid(images, nrow=math.ceil(math.sqrt(args.num)))
    out = save_png(args.out, grid, {"ldmkit": "demo", "model": model_dir.name, "step": loaded.step,
                                    "sampler": s.sampler, "steps": s.steps, "seed": args.seed, "n": args.num})
    print(f"wrote {out.resolve()} ({args.num} images in {seconds:.1f} s)")
    return 0
