#!/usr/bin/env python
"""Quality at a wall-clock budget: ldmkit's recipe vs diffusers vs denoising-diffusion-pytorch (issue 11).

Each system trains on Fashion-MNIST (padded to 32x32) for the same number of minutes, alone on the machine,
one after another (each in its own process), then draws ``--samples`` images with its own fast sampler; all
sample sets are scored by the same command, ``ldmkit eval-images SAMPLES.npz --metrics fid,kid,pr --json``
(default extractor fmnist-eval-v2, reference fashion-mnist:test), so one protocol covers every row.

* ``ldmkit``: ``ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes M`` (autoencoder + scale factor +
  latent diffusion + samples, the minutes covering everything), at each of ``--ldmkit-minutes``;
* ``diffusers``: UNet2DModel + DDPMScheduler following its ``train_unconditional`` example (linear betas,
  T = 1000, eps, AdamW 1e-4 betas (0.95, 0.999) wd 1e-6, 500 warm-up steps then cosine to the deadline,
  random flips, batch 16, EMA with warm-up (inv_gamma 1, power 3/4, max 0.9999)), widths scaled to this
  machine; sampled with DDIMScheduler (``--peer-steps``);
* ``ddp``: denoising-diffusion-pytorch's Unet + GaussianDiffusion with their defaults (sigmoid schedule,
  v objective, T = 1000) and its Trainer's optimizer and EMA (Adam 1e-4 betas (0.9, 0.99), EMA 0.995 every
  10 steps, batch 16), ``dim`` scaled to this machine; sampled with its DDIM (``sampling_timesteps``).

    python benchmarks/quality_at_budget.py --minutes 30 --samples 1000 --out /work/runs/quality_at_budget
    python benchmarks/quality_at_budget.py --minutes 1 --samples 50 --ldmkit-minutes 1 --out /tmp/qab   # smoke

Prints a Markdown table (FID, KID, precision, recall, images seen, train img/s, seconds per 1000 samples),
writes ``OUT/results.json`` and plots FID against training minutes to ``OUT/fid_vs_minutes.png``. Peers are
the ``bench`` extra; a missing one is reported and skipped. On a CPU-only torch without a matching
torchvision wheel, denoising-diffusion-pytorch is imported with an empty ``torchvision`` stand-in (its Unet
and GaussianDiffusion do not use torchvision; only its Trainer and FID code do, which are not run here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("diffusers", "ddp")


# ------------------------------------------------------------------------------------------ shared worker
def fmnist_32():
    """Fashion-MNIST train images as float [N, 1, 32, 32] in [-1, 1] (padded with the background -1)."""
    import torch

    from ldmkit.data import load_fashion_mnist_arrays

    x, _ = load_fashion_mnist_arrays("train")
    x = torch.from_numpy(x.copy())[:, None].float().div(127.5).sub(1.0)
    return torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)


def batches(x, batch_size: int, flip: bool, seed: int):
    """Endless shuffled batches (random horizontal flips when ``flip``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            b = x[perm[i:i + batch_size]]
            if flip:
                mask = torch.rand(len(b), generator=g) < 0.5
                b = torch.where(mask[:, None, None, None], b.flip(-1), b)
            yield b


def train_until(step_fn, data, minutes: float) -> tuple[int, int, float]:
    """Run ``step_fn(batch, step)`` until ``minutes`` pass; returns (steps, images seen, seconds)."""
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * minutes
    steps = seen = 0
    for batch in data:
        step_fn(batch, steps)
        steps += 1
        seen += len(batch)
        if time.perf_counter() >= deadline:
            break
    return steps, seen, time.perf_counter() - t0


def save_samples(out: Path, images_01, info: dict) -> None:
    """uint8 [N, H, W, 1] samples + the worker's figures (``info.json``)."""
    import numpy as np
    import torch

    arr = (images_01.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples.npz", images=arr, seeds=np.arange(len(arr)))
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")


def ema_decay_warmup(step: int, inv_gamma: float = 1.0, power: float = 0.75, max_decay: float = 0.9999) -> float:
    """The EMA warm-up of diffusers' EMAModel (used by train_unconditional): 1 - (1 + step / inv_gamma)^-power."""
    if step <= 0:
        return 0.0
    return min(max_decay, 1.0 - (1.0 + step / inv_gamma) ** -power)


def worker_diffusers(args) -> None:
    import copy

    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    torch.manual_seed(args.seed)
    model = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
                        block_out_channels=(32, 64, 64),
                        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    est_steps = [None]

    def lr_at(step: int) -> float:  # 500 warm-up steps, then cosine to the deadline's step estimate
        if step < 500:
            return (step + 1) / 500
        total = est_steps[0] or 10 ** 9
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 500) / max(1, total - 500))))

    t_start = time.perf_counter()

    def step_fn(x0, step):
        if step == 20:  # estimate the steps that fit before the deadline (for the cosine schedule)
            est_steps[0] = int(20 * 60.0 * args.minutes / (time.perf_counter() - t_start))
        for group in opt.param_groups:
            group["lr"] = 1e-4 * lr_at(step)
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (len(x0),))
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = ema_decay_warmup(step)
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)

    steps, seen, secs = train_until(step_fn, batches(fmnist_32(), 16, True, args.seed), args.minutes)
    ddim = DDIMScheduler.from_config(sched.config)
    ddim.set_timesteps(args.peer_steps)
    ema.eval()
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for start in range(0, args.samples, 250):
            n = min(250, args.samples - start)
            x = torch.randn((n, 1, 32, 32), generator=torch.Generator().manual_seed(args.seed + start))
            for t in ddim.timesteps:
                x = ddim.step(ema(x, t).sample, t, x).prev_sample
            out.append((x.clamp(-1, 1) + 1) / 2)
    sample_s = time.perf_counter() - t0
    save_samples(Path(args.out), torch.cat(out), {
        "system": "diffusers", "steps": steps, "images_seen": seen, "train_seconds": secs,
        "params": sum(p.numel() for p in model.parameters()), "sampler": f"DDIMScheduler {args.peer_steps}",
        "sample_seconds": sample_s})


def import_ddp():
    """denoising-diffusion-pytorch's Unet and GaussianDiffusion (an empty torchvision stand-in if needed)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - no torchvision, or one built for another torch: it is not used here
        import types
        for name in ("torchvision", "torchvision.transforms", "torchvision.utils"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision"].utils = sys.modules["torchvision.utils"]
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    return Unet, GaussianDiffusion


def worker_ddp(args) -> None:
    import torch
    from ema_pytorch import EMA

    Unet, GaussianDiffusion = import_ddp()
    torch.manual_seed(args.seed)
    model = Unet(dim=32, dim_mults=(1, 2, 2), channels=1, flash_attn=False)
    diffusion = GaussianDiffusion(model, image_size=32, timesteps=1000, sampling_timesteps=args.peer_steps)
    ema = EMA(diffusion, beta=0.995, update_every=10)
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step_fn(x0, step):
        loss = diffusion((x0 + 1) / 2)  # it normalizes [0, 1] data to [-1, 1] itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        ema.update()

    steps, seen, secs = train_until(step_fn, batches(fmnist_32(), 16, True, args.seed), args.minutes)
    ema.ema_model.eval()
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for start in range(0, args.samples, 250):
            torch.manual_seed(args.seed + start)
            out.append(ema.ema_model.sample(batch_size=min(250, args.samples - start)))
    sample_s = time.perf_counter() - t0
    save_samples(Path(args.out), torch.cat(out), {
        "system": "ddp", "steps": steps, "images_seen": seen, "train_seconds": secs,
        "params": sum(p.numel() for p in model.parameters()), "sampler": f"DDIM {args.peer_steps}",
        "sample_seconds": sample_s})


# ------------------------------------------------------------------------------------------------ driver
def run_ldmkit(minutes: float, args, out: Path) -> dict:
    """``ldmkit train-ldm`` for ``minutes``; its samples.npz is rescored like the peers'."""
    cmd = [sys.executable, "-m", "ldmkit.cli", "train-ldm", args.config, "--minutes", str(minutes), "--out", str(out),
           "--no-progress", f"--evaluation.num_samples={args.samples}", *args.ldmkit_override]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env(args))
    state = json.loads((out / "train_ldm.json").read_text())
    ev = json.loads((out / "eval.json").read_text())
    batch = _ldm_batch(out)
    step = state["results"]["diffusion"]["step"]
    return {"system": "ldmkit", "minutes": minutes, "steps": step, "images_seen": step * batch,
            "train_seconds": state["results"]["diffusion"]["train_seconds"],
            "sample_seconds": ev["protocol"]["generation"]["sampling_seconds"],
            "sampler": f"{ev['protocol']['generation']['sampler']} {ev['protocol']['generation']['steps']}",
            "wall_seconds": sum(state["spent"].values())}


def _ldm_batch(out: Path) -> int:
    import yaml
    return int(yaml.safe_load((out / "diffusion" / "config.yaml").read_text())["train"]["batch_size"])


def run_peer(name: str, args, out: Path) -> dict | None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", name, "--minutes", str(args.minutes), "--samples", str(args.samples),
           "--peer-steps", str(args.peer_steps), "--seed", str(args.seed), "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, check=False, env=env(args))
    if r.returncode != 0:
        print(f"{name}: failed (exit {r.returncode}); is the bench extra installed? skipped", flush=True)
        return None
    info = json.loads((out / "info.json").read_text())
    return {**info, "minutes": args.minutes}


def score(samples: Path, args) -> dict:
    cmd = [sys.executable, "-m", "ldmkit.cli", "eval-images", str(samples), "--metrics", "fid,kid,pr", "--json",
           "--kid-subset-size", str(min(1000, args.samples))]
    r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env(args))
    return json.loads(r.stdout)


def env(args) -> dict:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", str(args.threads))
    return e


def plot(rows: list[dict], path: Path, extractor: str) -> None:
    """FID against training minutes, one polyline (or point) per system, drawn with Pillow."""
    from PIL import Image, ImageDraw

    W, H, M = 640, 400, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [(r["minutes"], r["fid"]) for r in rows]
    if not pts:
        return
    xmax = max(p[0] for p in pts) * 1.1
    ymax = max(p[1] for p in pts) * 1.1 or 1.0
    def xy(m, f):
        return M + (W - 2 * M) * m / xmax, H - M - (H - 2 * M) * f / ymax
    d.line([(M, H - M), (W - M, H - M)], fill="black")
    d.line([(M, M), (M, H - M)], fill="black")
    d.text((W // 2 - 60, H - M + 20), "training minutes", fill="black")
    d.text((5, M - 20), f"FID ({extractor}, N = samples)", fill="black")
    for i in range(5):
        m, f = xmax * i / 4, ymax * i / 4
        d.text((xy(m, 0)[0] - 8, H - M + 4), f"{m:.0f}", fill="black")
        d.text((8, xy(0, f)[1] - 6), f"{f:.1f}", fill="black")
    colours = {"ldmkit": "red", "diffusers": "blue", "ddp": "green"}
    others = iter(["orange", "purple", "brown", "grey", "black"])  # relabelled --include rows
    for r in rows:
        if r["system"] not in colours:
            colours[r["system"]] = next(others, "black")
    for k, system in enumerate(colours):
        series = sorted((r["minutes"], r["fid"]) for r in rows if r["system"] == system)
        if not series:
            continue
        p = [xy(*s) for s in series]
        if len(p) > 1:
            d.line(p, fill=colours[system], width=2)
        for x, y in p:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colours[system])
        d.text((W - M - 170, M + 16 * k), system, fill=colours[system])
    img.save(path)


def sample_strips(rows: list[dict], path: Path, n: int = 12) -> None:
    """The first ``n`` samples (seeds 0..n-1) of every row, one labelled strip per row, drawn with Pillow."""
    import numpy as np
    from PIL import Image, ImageDraw

    S = 32
    label = 8 + max([int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(f"{r['system']} {r['minutes']:g} min"))
                     for r in rows] + [112])
    img = Image.new("L", (label + n * (S + 2), len(rows) * (S + 2)), 255)
    d = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        images = np.load(row["samples"], allow_pickle=False)["images"][:n]  # uint8 [N, H, W, C]
        for i, x in enumerate(images):
            img.paste(Image.fromarray(np.ascontiguousarray(x[..., 0])).resize((S, S)), (label + i * (S + 2), r * (S + 2)))
        d.text((4, r * (S + 2) + 10), f"{row['system']} {row['minutes']:g} min", fill=0)
    img.resize((2 * img.width, 2 * img.height), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="training budget of each peer (and ldmkit's last)")
    p.add_argument("--ldmkit-minutes", default=None, help="ldmkit budgets, e.g. 5,10,20,30 (default: --minutes)")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--peer-steps", type=int, default=25, help="DDIM steps of the peers' samplers")
    p.add_argument("--systems", default="ldmkit,diffusers,ddp")
    p.add_argument("--config", default=str(ROOT / "configs" / "ldm_fast_fmnist.yaml"))
    p.add_argument("--ldmkit-override", action="append", default=[], help="extra --key=value for train-ldm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every process (unless set)")
    p.add_argument("--out", default="/work/runs/quality_at_budget")
    p.add_argument("--include", action="append", default=[], metavar="RESULTS_JSON[=LABEL]",
                   help="add the rows of an earlier run's results.json (their samples are scored again with this "
                        "run's protocol; =LABEL renames their system, e.g. an earlier recipe); with --systems '' "
                        "this only rescores and tabulates")
    p.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", args.threads)))
        {"diffusers": worker_diffusers, "ddp": worker_ddp}[args.worker](args)
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    rows = []
    for inc in args.include:
        inc, _, label = inc.partition("=")
        try:
            earlier = json.loads(Path(inc).read_text())["rows"]
        except (OSError, ValueError, KeyError) as e:
            p.error(f"--include {inc}: not a results.json of this benchmark ({e})")
        for r in earlier:
            if not Path(r["samples"]).is_file():
                p.error(f"--include {inc}: its samples file {r['samples']} is missing")
            rows.append({k: v for k, v in r.items() if k not in ("fid", "kid", "precision", "recall", "protocol")}
                        | ({"system": label} if label else {}))
    if "ldmkit" in systems:
        budgets = [float(m) for m in (args.ldmkit_minutes or str(args.minutes)).split(",")]
        for m in budgets:
            d = out / f"ldmkit_{m:g}min"
            rows.append({**run_ldmkit(m, args, d), "samples": str(d / "samples.npz")})
    for name in (s for s in systems if s in PEERS):
        d = out / name
        r = run_peer(name, args, d)
        if r is not None:
            rows.append({**r, "samples": str(d / "samples.npz")})
    for r in rows:  # scored after all training, one protocol for every row
        ev = score(Path(r["samples"]), args)
        r.update(fid=ev["fid"], kid=ev["kid"], precision=ev["precision"], recall=ev["recall"],
                 protocol=ev["protocol"])
    print("\n| system | minutes | FID | KID x 1e3 | precision | recall | images seen | train img/s | "
          "s / 1000 samples | sampler |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ips = r["images_seen"] / max(r["train_seconds"], 1e-9)
        per1000 = r["sample_seconds"] * 1000 / args.samples
        print(f"| {r['system']} | {r['minutes']:g} | {r['fid']:.2f} | {1e3 * r['kid']:.2f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['images_seen']} | {ips:.1f} | {per1000:.1f} | {r['sampler']} |")
    if rows:
        prot = rows[0]["protocol"]
        print(f"\nprotocol: extractor {prot['extractor']} ({prot['extractor_sha256'][:12]}), reference "
              f"{prot['reference']} (n {prot['n_reference']}), n_generated {args.samples}")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    plot(rows, out / "fid_vs_minutes.png", rows[0]["protocol"]["extractor"] if rows else "")
    if rows:
        sample_strips(rows, out / "samples.png")
        print(f"wrote {out / 'results.json'}, {out / 'fid_vs_minutes.png'} and {out / 'samples.png'}")
    else:
        print(f"no rows (no system ran or was included); wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
