"""``ldmkit train-ldm CONFIG --minutes M --out DIR [--first_stage DIR]``: a latent diffusion model in M minutes.

The stages, each resumable (``DIR/train_ldm.json`` records what is done and the seconds spent):

1. ``autoencoder``: ``pipelines.train_autoencoder`` into ``DIR/autoencoder`` (skipped with ``--first_stage``),
   with ``train.max_minutes`` = its budget share;
2. ``scale``: the latent scale factor 1 / std (what ``ldmkit ae-stats`` does), written into the autoencoder
   checkpoint's config.json (kept when a reused autoencoder already has one);
3. ``diffusion``: ``pipelines.train`` on that first stage into ``DIR/diffusion``, with the time left;
4. ``grid``: ``DIR/samples.png`` from the EMA weights (the ldm's ``sample`` section);
5. ``evaluation``: ``evaluation.num_samples`` images -> ``DIR/samples.npz`` and ``DIR/eval.json`` (as
   ``ldmkit eval-images``, extractor fmnist-eval-v2, refused if the first stage's loss used it).

Rerunning the same command continues: finished stages are skipped, an interrupted training stage resumes
from its latest checkpoint. The budget counts wall clock over all invocations of the same DIR (seconds of a
stage killed by SIGKILL after its last record are not counted).
"""

from __future__ import annotations

import time
from pathlib import Path

from ldmkit.commands._common import UsageError

EPILOG = """examples:
  ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes 30 --out runs/fast
  ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes 30 --out runs/fast        # rerun: continues
  ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes 20 --out runs/fast2 --first_stage runs/fast/autoencoder
  ldmkit train-ldm configs/ldm_fast_fmnist.yaml --minutes 30 --out runs/shapes --data.name=shapes
overrides address the recipe's sections: --autoencoder.train.lr=1e-4 --ldm.unet.model_channels=32 --budget.autoencoder=0.3
"""


def add_parser(sub, formatter_class):
    p = sub.add_parser("train-ldm", help="train autoencoder + latent diffusion within a time budget, then evaluate",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter_class)
    p.add_argument("config", help="recipe YAML (sections data, autoencoder, ldm, budget, scale, evaluation)")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the whole run (all stages)")
    p.add_argument("--out", required=True, help="run folder (rerun with the same folder to continue)")
    p.add_argument("--first_stage", "--first-stage", dest="first_stage", default=None, metavar="DIR",
                   help="reuse this trained autoencoder (checkpoint or run folder) and skip stage 1")
    p.add_argument("--device", default="cpu", help="torch device for the scale factor, grid and evaluation")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run, accepts_overrides=True)


def load_recipe(path: str | Path, overrides: list[str]):
    """Recipe + both validated stage configs; every problem is a ``ConfigError`` naming the key (exit 2)."""
    import yaml

    from ldmkit.autoencoders.config import load_config as load_ae_config
    from ldmkit.config import config_from_data
    from ldmkit.data import image_shape
    from ldmkit.recipe import parse_recipe
    from ldmkit.registry import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    recipe = parse_recipe(data, overrides, source=str(path))
    ae_cfg = load_ae_config(None, data=recipe.autoencoder, source=f"{path}: autoencoder")  # a typo fails now
    image_shape(ae_cfg.data)  # e.g. a folder without data.image_size fails now, not after the first stage
    ldm_cfg = config_from_data(recipe.ldm, source=f"{path}: ldm")
    ev = recipe.settings.evaluation
    if ev.num_samples and ev.reference.startswith("fashion-mnist") and ae_cfg.data.name != "fashion-mnist":
        import logging
        logging.getLogger(__name__).warning(
            "%s: evaluation.reference=%s but data.name=%r: the samples will be scored against Fashion-MNIST; "
            "for other images set evaluation.reference=data:train (the recipe's own data) or a statistics .npz",
            path, ev.reference, ae_cfg.data.name)
    return recipe, ae_cfg, ldm_cfg


def _with_minutes(cfg, minutes: float):
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_minutes=minutes))


def _has_checkpoint(run_dir: Path) -> bool:
    from ldmkit.training import checkpoint as ckpt_io

    try:
        ckpt_io.resolve_checkpoint(run_dir)
        return True
    except (FileNotFoundError, ValueError, ckpt_io.CheckpointError):
        return False


def _train_stage(name: str, fn, cfg, run_dir: Path, state, out: Path, progress: bool) -> bool:
    """Run one training stage (fresh or resumed); True when it is finished (max_steps or its time is up)."""
    t0 = time.monotonic()
    try:
        result = fn(cfg, run_dir, resume=_has_checkpoint(run_dir), progress=progress,
                    resume_hint="nothing when the budget ended the stage (train-ldm goes on); after "
                                "an interruption, rerun the same train-ldm command")
    finally:
        state.add_time(name, time.monotonic() - t0)
        state.save(out)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        print(f"{name}: stopped by {result.stopped_by} at step {result.step}; rerun the same command to continue")
        return False
    state.mark_done(name, out, {"step": result.step, "checkpoint": str(result.checkpoint),
                                "stopped_by": result.stopped_by, "train_seconds": round(result.elapsed_s, 1)})
    print(f"{name}: step {result.step} ({result.stopped_by or 'max_steps'}), checkpoint {result.checkpoint}")
    return True


def _measure_scale(first_stage: Path, ae_cfg, settings, dev, state, out: Path, reused: bool) -> None:
    """Stage 2: the latent scale factor of ``first_stage`` (kept if a reused autoencoder has one)."""
    import torch

    from ldmkit.autoencoders.checkpoint import write_scale_factor
    from ldmkit.commands._common import load_autoencoder
    from ldmkit.latent import measure_scale_factor
    from ldmkit.pipelines import autoencoder_images

    t0 = time.monotonic()
    ae, meta = load_autoencoder(first_stage, dev)
    stored = meta.get("scale_factor")
    if reused and stored is not None:
        state.add_time("scale", time.monotonic() - t0)
        state.mark_done("scale", out, {"scale_factor": stored, "measured": False})
        return
    sc = settings.scale
    images = autoencoder_images(ae_cfg)
    g = torch.Generator().manual_seed(sc.seed)
    idx = torch.randperm(len(images), generator=g)[: sc.num_images]
    scale, stats = measure_scale_factor(ae, images[idx], sc.posterior, sc.batch_size, generator=g, device=dev)
    stats.update({"split": ae_cfg.data.split, "seed": sc.seed})
    write_scale_factor(Path(meta["folder"]), scale, stats)
    state.add_time("scale", time.monotonic() - t0)
    state.mark_done("scale", out, {"scale_factor": scale, "measured": True, **stats})
    print(f"scale: scale_factor {scale:.5g} (std of {len(idx)} images' latents)")


def _generate(loaded, n: int, sampler: str, steps: int | None, eta: float, seed: int, batch_size: int):
    """``n`` images; class-conditional models get labels ``i mod K``."""
    from ldmkit.commands._common import class_labels

    cfg = loaded.config
    kwargs = {}
    labels = class_labels(None, n, cfg.unet.num_classes)
    if labels is not None:
        kwargs["labels"] = labels
    return loaded.generate(n, sampler=sampler, steps=steps, eta=eta, seed=seed,
                           batch_size=batch_size, **kwargs), labels


def _grid(out: Path, dev, state) -> None:
    import math

    from ldmkit.commands._common import load_model
    from ldmkit.images import make_grid, save_png

    t0 = time.monotonic()
    loaded = load_model(out / "diffusion", device=dev)
    s = loaded.config.sample
    images, _ = _generate(loaded, s.num_images, s.sampler, s.steps, s.eta, s.seed, 64)
    path = save_png(out / "samples.png", make_grid(images, nrow=math.ceil(math.sqrt(s.num_images))),
                    metadata={"checkpoint": str(loaded.path), "sampler": s.sampler, "steps": s.steps,
                              "eta": s.eta, "seed": s.seed})
    state.add_time("grid", time.monotonic() - t0)
    state.mark_done("grid", out, {"png": str(path)})
    print(f"grid: {path}")


def _data_reference(out: Path, ae_cfg, ev) -> Path:
    """``DIR/reference_<split>.npz``: statistics of the recipe's data at ``ev.reference``'s split."""
    import dataclasses

    from ldmkit.metrics.features import get_extractor
    from ldmkit.metrics.reference import stats_from_images
    from ldmkit.pipelines import autoencoder_images

    split = ev.reference.split(":", 1)[1]
    path = out / f"reference_{split}_{ev.extractor}.npz"
    if not path.is_file():
        cfg = dataclasses.replace(ae_cfg, data=dataclasses.replace(ae_cfg.data, split=split))
        images = autoencoder_images(cfg, limit=ev.n_reference or 10_000)
        stats_from_images(images, get_extractor(ev.extractor), f"{ae_cfg.data.name}:{split} "
                          f"(first {len(images)})").save(path)
    return path


def _evaluate(out: Path, settings, ae_cfg, dev, state, progress: bool) -> None:
    import json

    from ldmkit.commands._common import load_model, save_samples_npz
    from ldmkit.commands.eval import check_extractor
    from ldmkit.metrics.evaluate import evaluate_images, parse_metrics

    ev = settings.evaluation
    t0 = time.monotonic()
    metrics = parse_metrics(list(ev.metrics))
    loaded = load_model(out / "diffusion", device=dev)
    independence = check_extractor(ev.extractor, loaded.config.first_stage)
    sampler = ev.sampler or loaded.config.sample.sampler
    steps = ev.steps if ev.steps is not None else loaded.config.sample.steps
    eta = ev.eta if ev.eta is not None else loaded.config.sample.eta
    t_sample = time.monotonic()
    images, labels = _generate(loaded, ev.num_samples, sampler, steps, eta, ev.seed, ev.batch_size)
    sample_s = time.monotonic() - t_sample
    save_samples_npz(out / "samples.npz", images, labels=labels, seeds=range(ev.seed, ev.seed + ev.num_samples))
    generation = {"checkpoint": str(loaded.path), "step": loaded.step, "weights": "ema", "sampler": sampler,
                  "steps": steps, "eta": eta, "seeds": f"{ev.seed}..{ev.seed + ev.num_samples - 1} (image i: seed + i)",
                  "sampling_seconds": round(sample_s, 2), "first_stage": loaded.config.first_stage,
                  **independence}
    reference, n_reference = ev.reference, ev.n_reference
    if reference.startswith("data:"):  # the recipe's own data: statistics saved once into DIR
        reference, n_reference = str(_data_reference(out, ae_cfg, ev).resolve()), None
    result = evaluate_images(images, reference=reference, metrics=metrics, extractor=ev.extractor,
                             n_reference=n_reference, generation=generation, progress=progress)
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    state.add_time("evaluation", time.monotonic() - t0)
    state.mark_done("evaluation", out, {k: v for k, v in result.items() if k != "protocol"})
    print("evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k != "protocol")
          + f" ({ev.num_samples} samples in {sample_s:.1f} s; {out / 'eval.json'})")


def _first_stage(args, state, out: Path) -> tuple[Path | None, bool]:
    """The autoencoder run folder to use and whether it is a reused one (``--first_stage``)."""
    from ldmkit.training import checkpoint as ckpt_io

    if args.first_stage is None:
        if state.first_stage is not None and Path(state.first_stage) != (out / "autoencoder").resolve():
            raise UsageError(f"--out {out} was started with --first_stage {state.first_stage}; pass it again")
        return (out / "autoencoder").resolve(), False
    path = Path(args.first_stage).resolve()
    try:  # the reason is kept: e.g. a .pt/.ckpt file is refused by name as a pickle
        ckpt_io.resolve_checkpoint(path)
    except (FileNotFoundError, ValueError, ckpt_io.CheckpointError) as e:
        raise UsageError(f"--first_stage {args.first_stage}: no autoencoder checkpoint there ({e})") from None
    if state.first_stage is not None and Path(state.first_stage) != path:
        raise UsageError(f"--out {out} was started with first stage {state.first_stage}, not {path}")
    return path, True


def run(args) -> int:
    """Errors rise to ``cli.main``'s exit-code policy (bad config/budget 2, runtime 1)."""
    import dataclasses

    from ldmkit import pipelines
    from ldmkit.commands._common import device
    from ldmkit.recipe import RecipeState, check_minutes, stage_minutes
    from ldmkit.training import checkpoint as ckpt_io

    minutes = check_minutes(args.minutes)
    recipe, ae_cfg, ldm_cfg = load_recipe(args.config, list(args.overrides or []))
    out = Path(args.out)
    dev = device(args.device)
    state = RecipeState.load(out, minutes)
    first_stage, reused = _first_stage(args, state, out)
    state.minutes, state.first_stage = minutes, str(first_stage)
    state.save(out)
    progress, budget = not args.no_progress, recipe.settings.budget
    if reused and "autoencoder" not in state.done:
        state.mark_done("autoencoder", out, {"reused": str(first_stage)})
    if "autoencoder" not in state.done:
        cfg = _with_minutes(ae_cfg, stage_minutes("autoencoder", minutes, budget, state.spent))
        if not _train_stage("autoencoder", pipelines.train_autoencoder, cfg, first_stage, state, out, progress):
            return 0
    ae_ckpt = ckpt_io.resolve_checkpoint(first_stage)
    if "scale" not in state.done:
        _measure_scale(ae_ckpt, ae_cfg, recipe.settings, dev, state, out, reused)
    if "diffusion" not in state.done:
        cfg = dataclasses.replace(_with_minutes(ldm_cfg, stage_minutes("diffusion", minutes, budget, state.spent)),
                                  first_stage=str(ae_ckpt.resolve()))
        if not _train_stage("diffusion", pipelines.train, cfg, out / "diffusion", state, out, progress):
            return 0
    if "grid" not in state.done:
        _grid(out, dev, state)
    if "evaluation" not in state.done and recipe.settings.evaluation.num_samples > 0:
        _evaluate(out, recipe.settings, ae_cfg, dev, state, progress)
    total = sum(state.spent.values())
    print(f"done: {total / 60:.2f} of {minutes:g} minutes ({', '.join(f'{k} {v:.0f} s' for k, v in state.spent.items())})"
          f"; {out}")
    return 0
