"""Train, measure and export one shipped pretrained model (issue 14): ``python scripts/train_pretrained.py NAME``.

Each NAME in ``RECIPES`` is trained with the ldmkit CLI into ``--workdir/NAME`` (resumable: rerun the same
command), then exported into the package (``src/ldmkit/assets/<folder>``, the folder ``ldmkit.zoo`` maps the
name to): the EMA weights (the autoencoder's own weights) stored as float16 safetensors, ``config.json`` with
the files' sizes and sha256, and ``model.json``, the registry card ``ldmkit models`` prints (task, parameters,
training steps and minutes, the commands, and the figures the ``eval`` stage measured). Stages:

    python scripts/train_pretrained.py fmnist-ae-kl-f4             # train + export + eval (all)
    python scripts/train_pretrained.py fmnist-text --stage eval    # only re-measure the exported model

The latent models train on the *exported* first stage (``--first_stage=fmnist-ae-kl-f4``, a registry name),
so what ships is exactly what they saw. The shipped models were trained with ``OMP_NUM_THREADS=1``, two
runs side by side on the 2-core machine (the autoencoder alone with 2 threads); each stage's budget is wall
clock (``train.max_minutes``), so a busier machine gives fewer steps. The card records the thread count,
the steps reached and the training minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ldmkit import zoo
from ldmkit.training import checkpoint as ck

SMALL_UNET = ["--unet.model_channels=32", "--unet.norm_groups=8"]  # ~3 M parameters: fits the 25 MB budget

# name -> training commands (RUN = the run folder), the evaluation command (JSON written to OUT), weights file
RECIPES: dict[str, dict] = {
    "fmnist-ae-kl-f4": {
        "train": [["train-ae", "configs/ae_kl_f4_fmnist.yaml", "--out", "RUN", "--train.max_minutes=10"],
                  ["ae-stats", "RUN"]],
        "eval": [sys.executable, "scripts/train_pretrained.py", "--ae-recon", "fmnist-ae-kl-f4", "--json", "OUT"],
        "weights": "model.safetensors",
        "threads": 2,
    },
    "fmnist-text": {
        # 8070 steps: what v1 (no pooled token) reached in 40 minutes; v2 was trained to the same step count
        "train": [["train", "configs/ldm_text_fmnist.yaml", "--first_stage=fmnist-ae-kl-f4", "--out", "RUN",
                   *SMALL_UNET, "--train.max_steps=8070", "--train.sample_every=0", "--no-progress"]],
        "eval": [sys.executable, "benchmarks/guidance_sweep.py", "--model", "text=fmnist-text", "--scales", "3",
                 "--samplers", "dpmpp_2m", "--steps", "10", "--num-samples", "10000", "--seed", "0", "--json", "OUT"],
        "weights": "ema.safetensors",
        # chosen from the FID-vs-steps table (docs/models.md): DPM-Solver++(2M) at 10 steps
        "sample": {"sampler": "dpmpp_2m", "steps": 10, "guidance_scale": 3.0},
    },
    "fmnist-sr4": {
        "train": [["train", "configs/ldm_sr_fmnist.yaml", "--first_stage=fmnist-ae-kl-f4", "--out", "RUN",
                   *SMALL_UNET, "--train.max_minutes=20", "--train.sample_every=0", "--train.max_steps=100000", "--no-progress"]],
        "eval": [sys.executable, "benchmarks/editing_quality.py", "sr", "--model", "fmnist-sr4", "--num", "1000",
                 "--steps", "20", "--json", "OUT"],
        "weights": "ema.safetensors",
        "sample": {"steps": 20},  # 20 DDIM steps score as 100 (docs/editing.md)
    },
    "fmnist-inpaint": {
        "train": [["train", "configs/ldm_inpaint_fmnist.yaml", "--first_stage=fmnist-ae-kl-f4", "--out", "RUN",
                   *SMALL_UNET, "--train.max_minutes=20", "--train.sample_every=0", "--train.max_steps=100000", "--no-progress"]],
        "eval": [sys.executable, "benchmarks/editing_quality.py", "inpaint", "--model", "fmnist-inpaint",
                 "--repaint", "demo-ddpm-fmnist", "--num", "1000", "--steps", "50", "--json", "OUT"],
        "weights": "ema.safetensors",
    },
    "collage-layout": {
        # stop 20: 75 minutes on one thread, then a 28-minute resume on two (OMP_NUM_THREADS=2)
        "train": [["train", "configs/ldm_layout_collage.yaml", "--first_stage=fmnist-ae-kl-f4", "--out", "RUN",
                   *SMALL_UNET, "--train.max_minutes=75", "--train.sample_every=0", "--train.max_steps=100000", "--no-progress"],
                  ["train", "configs/ldm_layout_collage.yaml", "--first_stage=fmnist-ae-kl-f4", "--out", "RUN",
                   *SMALL_UNET, "--train.max_minutes=28", "--train.sample_every=0", "--train.max_steps=100000", "--no-progress",
                   "--resume"]],
        "eval": [sys.executable, "benchmarks/layout_eval.py", "collage-layout", "--num", "300", "--steps", "20",
                 "--json", "OUT"],
        "weights": "ema.safetensors",
    },
    # milestone 1's pixel DDPM (docs/benchmarks.md, "The shipped demo model"): no training here; its float32
    # checkpoint is placed as RUN/checkpoints/step_0000612 and exported to float16 (export + eval stages)
    "demo-ddpm-fmnist": {
        "train": [],
        "eval": [sys.executable, "-m", "ldmkit.cli", "eval", "demo-ddpm-fmnist", "-n", "1000", "--sampler", "ddim",
                 "--steps", "25", "--seed", "0", "--metrics", "fid,kid,pr", "--reference", "fashion-mnist:test",
                 "--json"],  # prints the JSON: the stage keeps stdout
        "weights": "ema.safetensors",
        "threads": 2,
    },
}


def ldmkit(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "ldmkit.cli", *args]
    print("+ ldmkit " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def train(name: str, run: Path) -> dict:
    start = time.time()
    cmds = [[a.replace("RUN", str(run)) for a in c] for c in RECIPES[name]["train"]]
    for c in cmds:
        ldmkit(c)
    return {"commands": ["ldmkit " + shlex.join(c) for c in cmds], "wall_s_this_call": time.time() - start}


def training_record(run: Path, meta: dict) -> dict:
    """Steps and training minutes (the engine's own elapsed_s, summed over resumed segments); a run without
    its metrics.jsonl (milestone 1's demo model) reports its checkpoint step and its time budget."""
    if not (run / "metrics.jsonl").is_file():
        return {"steps": meta["step"], "train_minutes": meta["config"]["train"]["max_minutes"]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "elapsed_s" in r and "step" in r]
    seconds, last = 0.0, 0.0
    for r in rows:  # elapsed_s restarts at a resume: add each segment's final value
        if r["elapsed_s"] < last:
            seconds += last
        last = r["elapsed_s"]
    seconds += last
    return {"steps": rows[-1]["step"] if rows else 0, "train_minutes": round(seconds / 60, 1)}


def export(name: str, run: Path) -> Path:
    """Latest checkpoint of ``run`` -> the package's asset folder (float16 weights, verified records)."""
    src = ck.resolve_checkpoint(run)
    meta = ck.load_checkpoint_config(src)
    weights = RECIPES[name]["weights"]
    tensors = ck.read_checkpoint_tensors(src, weights, meta, finite=True)
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    dest = zoo.ASSETS / zoo.SHIPPED[name][0]
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.safetensors"):
        old.unlink()
    ck.write_tensors(dest / weights, half)
    meta["files"] = {weights: ck._file_record(dest / weights)}
    meta["exported_from"] = {"checkpoint": src.name, "dtype": "float16"}
    meta["config"]["sample"].update(RECIPES[name].get("sample", {}))  # the measured default sampler
    ck.write_json(dest / "config.json", meta)
    card = zoo.card(name) if (dest / "model.json").is_file() else {}
    card.update({"name": name, "task": zoo.SHIPPED[name][1], "weights": weights,
                 "sha256": meta["files"][weights]["sha256"], "bytes": meta["files"][weights]["bytes"],
                 "parameters": sum(v.numel() for v in tensors.values()), **training_record(run, meta),
                 "threads": RECIPES[name].get("threads", 1)})  # of the training run (OMP_NUM_THREADS)
    ck.write_json(dest / "model.json", card)
    print(f"exported {src} -> {dest} ({card['bytes'] / 1e6:.1f} MB, sha256 {card['sha256'][:12]})")
    if weights == "ema.safetensors":
        card["float16_check"] = float16_check(name, src)
        ck.write_json(dest / "model.json", card)
    return dest


def float16_check(name: str, src: Path, n: int = 16, steps: int = 20) -> dict:
    """What float16 storage costs: the same n samples (seeds 0..n-1, the model's default request, DDIM
    ``steps``) from the run's float32 EMA weights and from the exported float16 ones, compared in 8-bit
    levels after quantisation (as saved PNGs)."""
    from ldmkit import editing
    from ldmkit.images import to_uint8
    from ldmkit.pipelines import load_model

    out = []
    for path in (src, name):
        m = load_model(path)
        if m.conditioner.parts.get("concat") is not None:  # SR / inpainting: the shipped example inputs
            from ldmkit.commands.demo import _examples

            if editing.concat_task(m) == "super_resolution":
                images = editing.upscale(m, _examples("lowres", m)[:n], steps=steps)
            else:
                x = _examples("images", m)[:n]
                mask = editing.box_mask((0, 0, 14, 28), (28, 28)).expand(len(x), -1, -1, -1)
                images = editing.inpaint_concat(m, x, mask, steps=steps)
        else:
            images = m.generate(n, sampler="ddim", steps=steps, guidance_scale=m.config.sample.guidance_scale)
        out.append(to_uint8(images).astype(int))
    diff = abs(out[0] - out[1])
    return {"samples": len(diff), "steps": steps, "mean_abs_diff_8bit": round(float(diff.mean()), 4),
            "max_abs_diff_8bit": int(diff.max()), "pixels_changed": round(float((diff > 0).mean()), 4)}


def evaluate(name: str, work: Path) -> None:
    out = work / f"{name}.eval.json"
    cmd = [a.replace("OUT", str(out)) for a in RECIPES[name]["eval"]]
    print("+ " + shlex.join(cmd), flush=True)
    start = time.time()
    done = subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          stdout=None if "OUT" in RECIPES[name]["eval"] else subprocess.PIPE, text=True)
    if "OUT" not in RECIPES[name]["eval"]:  # the command printed its JSON
        print(done.stdout)
        out.write_text(done.stdout[done.stdout.index("{"):])
    card = zoo.card(name)
    card["evaluation"] = {"command": shlex.join(cmd[1:] if cmd[0] == sys.executable else cmd).replace(str(out), "OUT.json"),
                          "seconds": round(time.time() - start), "results": json.loads(out.read_text())}
    ck.write_json(zoo.folder(name) / "model.json", card)


def ae_reconstruction(name: str, json_out: Path, num: int = 1000) -> None:
    """PSNR / SSIM / rFID of the first stage on the first ``num`` Fashion-MNIST test images (posterior mode,
    the 28x28 area; rFID with the evaluation-only network fmnist-eval-v2, which no loss of the AE used)."""
    from ldmkit.data.fashion_mnist import load_fashion_mnist_arrays
    from ldmkit.latent import LatentSpace
    from ldmkit.metrics.reconstruction import psnr, rfid, ssim

    torch.manual_seed(0)
    space = LatentSpace.from_checkpoint(name, posterior="mode")
    x, _ = load_fashion_mnist_arrays("test")
    images = torch.tensor(x[:num]).float().div(127.5).sub(1.0)[:, None]
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), value=-1.0)
    with torch.no_grad():
        recon = torch.cat([space.autoencoder.decode(space.autoencoder.encode(b).mode())
                           for b in padded.split(250)])[:, :, 2:30, 2:30].clamp(-1, 1)
    recon = torch.round((recon + 1) * 127.5) / 127.5 - 1  # as a saved PNG holds it
    result = {"num": num, "psnr_db": float(psnr(images, recon).mean()), "ssim": float(ssim(images, recon).mean()),
              "rfid": rfid(images, recon)["rfid"],
              "extractor": "fmnist-eval-v2", "split": "fashion-mnist:test"}
    json_out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--stage", choices=["all", "train", "export", "eval"], default="all")
    p.add_argument("--workdir", default="/work/runs/pretrained", help="run folders (outside the repository)")
    p.add_argument("--ae-recon", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ae_recon:
        ae_reconstruction(args.name, Path(args.json))
        return 0
    work = Path(args.workdir)
    run = work / args.name
    if args.stage in ("all", "train"):
        record = train(args.name, run)
        print(json.dumps(record))
    if args.stage in ("all", "export"):
        export(args.name, run)
        card = zoo.card(args.name)
        card["train_commands"] = ["ldmkit " + shlex.join([a.replace("RUN", "RUN_DIR") for a in c])
                                  for c in RECIPES[args.name]["train"]]
        card["reproduce"] = f"python scripts/train_pretrained.py {args.name}"
        ck.write_json(zoo.folder(args.name) / "model.json", card)
    if args.stage in ("all", "eval"):
        evaluate(args.name, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
