"""``ldmkit demo``: one example of every task from the models shipped in the package, into ``outputs/``.

No training, no download: text-to-image (``fmnist-text``), super-resolution x4 (``fmnist-sr4``), inpainting
(``fmnist-inpaint``), layout-to-image (``collage-layout``), a reverse trajectory, and the unconditional pixel
DDPM (``demo-ddpm-fmnist``). The upscale and inpainting inputs are Fashion-MNIST *test* images shipped in
``ldmkit/assets/examples`` (read through the same checked loader as ``ldmkit upscale`` / ``inpaint``).
"""

from __future__ import annotations

import time
from pathlib import Path

from ldmkit import zoo
from ldmkit.commands._common import positive_int

DEMO_MODEL = zoo.folder("demo-ddpm-fmnist")  # milestone 1's pixel DDPM (web tests and benchmarks use it)
EXAMPLES = zoo.ASSETS / "examples"
PROMPTS = ("a pair of sneakers", "a photo of a handbag", "a summer dress", "an ankle boot", "some trousers")
LAYOUTS = (
    [{"label": "bag", "box": [0.05, 0.1, 0.45, 0.5]}, {"label": "sneaker", "box": [0.5, 0.55, 0.95, 0.95]}],
    [{"label": "trouser", "box": [0.1, 0.05, 0.5, 0.7]}, {"label": "ankle boot", "box": [0.55, 0.5, 0.95, 0.95]}],
    [{"label": "dress", "box": [0.3, 0.05, 0.7, 0.5]}, {"label": "sandal", "box": [0.05, 0.6, 0.4, 0.95]},
     {"label": "coat", "box": [0.55, 0.55, 0.95, 0.95]}],
    [{"label": "t-shirt/top", "box": [0.05, 0.05, 0.45, 0.45]}, {"label": "pullover", "box": [0.55, 0.05, 0.95, 0.45]},
     {"label": "shirt", "box": [0.05, 0.55, 0.45, 0.95]}, {"label": "bag", "box": [0.55, 0.55, 0.95, 0.95]}],
)


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "demo", help="one example of every task from the shipped pretrained models (no training, no download)",
        formatter_class=formatter_class, description=__doc__)
    p.add_argument("--out-dir", default="outputs", help="folder for the PNGs")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("-n", "--num", type=positive_int, default=8, help="images per prompt / example row")
    p.set_defaults(func=run)


def _examples(kind: str, loaded) -> torch.Tensor:  # noqa: F821
    import torch

    from ldmkit import editing

    files = sorted((EXAMPLES / kind).glob("*.png"))
    if not files:
        from ldmkit.training.checkpoint import CheckpointError

        raise CheckpointError(f"{EXAMPLES / kind}: the shipped example images are missing; reinstall ldmkit")
    return torch.cat([editing.to_tensor(editing.read_uint8(f, editing.image_channels(loaded))) for f in files])


def big(grid, scale: int = 3):
    """A grid enlarged ``scale`` x by pixel repetition (28-pixel images are hard to see at 1x)."""
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def run(args) -> int:
    import torch

    with torch.no_grad():  # a context, not set_grad_enabled: run() may be called in-process (tests, scripts)
        return _run(args)


def _run(args) -> int:
    import torch

    from ldmkit import editing
    from ldmkit.commands._common import load_model
    from ldmkit.images import boxed_grid, make_grid, save_png

    out = Path(args.out_dir)
    n, seed, wrote = args.num, args.seed, []
    start = time.perf_counter()

    def done(name: str, path: Path, what: str, t0: float) -> None:
        wrote.append((path, what))
        print(f"  {path}  {what} ({time.perf_counter() - t0:.1f} s)", flush=True)

    print(f"ldmkit demo: the shipped models ({', '.join(zoo.available())}) -> {out}/")

    t0 = time.perf_counter()  # 1. text-to-image: one row per prompt
    text = load_model("fmnist-text")
    s = text.config.sample
    images = text.generate(n * len(PROMPTS), prompts=[p for p in PROMPTS for _ in range(n)], sampler=s.sampler,
                           steps=s.steps, guidance_scale=s.guidance_scale, seed=seed)
    path = save_png(out / "generate.png", big(make_grid(images, nrow=n)),
                    {"model": "fmnist-text", "prompts (rows)": " | ".join(PROMPTS), "sampler": s.sampler,
                     "steps": s.steps, "guidance_scale": s.guidance_scale, "seed": seed})
    done("generate", path, "text-to-image, rows: " + ", ".join(repr(p) for p in PROMPTS), t0)

    t0 = time.perf_counter()  # 2. reverse trajectory of one prompt
    from ldmkit.visualize import reverse_trajectory, trajectory_figure

    traj = reverse_trajectory(text, 1, sampler=s.sampler, steps=s.steps, seed=seed, guidance_scale=s.guidance_scale,
                              cond=text.make_cond(1, prompts=["an ankle boot"]))
    path = out / "trajectory.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    trajectory_figure(traj).save(path)
    done("trajectory", path, "reverse process for 'an ankle boot': x_t and predicted x0", t0)

    t0 = time.perf_counter()  # 3. super-resolution x4 of shipped 7x7 test images
    sr = load_model("fmnist-sr4")
    low = _examples("lowres", sr)[:n]
    up = editing.upscale(sr, low, seed=seed)
    nearest = torch.nn.functional.interpolate(low, scale_factor=4, mode="nearest")
    path = save_png(out / "upscale.png", big(make_grid(torch.stack([nearest, up], 1).flatten(0, 1), nrow=2)),
                    {"model": "fmnist-sr4", "columns": "7x7 input (nearest), x4 output", "seed": seed})
    done("upscale", path, "super-resolution 7x7 -> 28x28 (left: input, right: output)", t0)

    t0 = time.perf_counter()  # 4. inpainting: the left half of shipped test images
    inp = load_model("fmnist-inpaint")
    x = _examples("images", inp)[:n]
    mask = editing.box_mask((0, 0, 14, 28), (28, 28)).expand(len(x), -1, -1, -1)
    filled = editing.inpaint_concat(inp, x, mask, seed=seed)
    holed = torch.where(mask, torch.zeros_like(x), x)
    path = save_png(out / "inpaint.png", big(make_grid(torch.stack([x, holed, filled], 1).flatten(0, 1), nrow=3)),
                    {"model": "fmnist-inpaint", "columns": "input, left half removed (gray), filled", "seed": seed})
    done("inpaint", path, "inpainting (input, hole, filled)", t0)

    t0 = time.perf_counter()  # 5. layout-to-image, the requested boxes drawn
    layout = load_model("collage-layout")
    ls = layout.config.sample
    images = layout.generate(len(LAYOUTS), layouts=list(LAYOUTS), sampler=ls.sampler, steps=ls.steps,
                             guidance_scale=ls.guidance_scale, seed=seed)
    boxes = [[item["box"] for item in lay] for lay in LAYOUTS]
    labels = [[item["label"] for item in lay] for lay in LAYOUTS]
    path = out / "layout.png"
    boxed_grid(images, boxes, labels, nrow=len(LAYOUTS), scale=3).save(path)
    done("layout", path, "layout-to-image (collage-layout), the requested boxes drawn", t0)

    t0 = time.perf_counter()  # 6. the unconditional pixel-space DDPM of milestone 1
    ddpm = load_model("demo-ddpm-fmnist")
    d = ddpm.config.sample
    images = ddpm.generate(n * 2, sampler=d.sampler, steps=d.steps, seed=seed)
    path = save_png(out / "unconditional.png", big(make_grid(images, nrow=n)),
                    {"model": "demo-ddpm-fmnist", "sampler": d.sampler, "steps": d.steps, "seed": seed})
    done("unconditional", path, "unconditional pixel DDPM", t0)

    print(f"ldmkit demo: {len(wrote)} pictures in {time.perf_counter() - start:.1f} s; `ldmkit models` lists the "
          "models, `ldmkit generate \"a coat\"` makes more")
    return 0
