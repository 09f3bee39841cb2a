"""``ldmkit train CONFIG [--out DIR] [--resume] [--section.key=value ...]``: train a diffusion model."""

from __future__ import annotations

import sys
from pathlib import Path

EPILOG = """examples:
  ldmkit train configs/ddpm_fmnist.yaml --out runs/ddpm
  ldmkit train configs/ddpm_fmnist.yaml --out runs/ddpm --resume --train.max_steps=20000
  torchrun --nproc_per_node=2 -m ldmkit.cli train configs/ddpm_fmnist.yaml --out runs/ddp
"""


def add_parser(sub, formatter_class):
    p = sub.add_parser("train", help="train a diffusion model from a YAML config", epilog=EPILOG,
                       formatter_class=formatter_class,
                       description="Train a DDPM / Improved DDPM / LDM. Any config key can be overridden "
                                   "with --section.key=value (YAML scalars).")
    p.add_argument("config", help="YAML config file, e.g. configs/ddpm_fmnist.yaml")
    p.add_argument("--out", help="run folder (checkpoints/, samples/, metrics.jsonl); default runs/<config name>")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args) -> int:
    import torch

    from ldmkit import pipelines
    from ldmkit.config import MODEL_SECTIONS, ConfigError, dump_yaml, load_config
    from ldmkit.training import CheckpointError, Trainer, TrainingError, latest_checkpoint
    from ldmkit.training.distributed import init_distributed, shutdown

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.first_stage is not None:  # stored absolute, so sampling works from any directory
        cfg.first_stage = str(Path(cfg.first_stage).resolve())
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    latest = latest_checkpoint(out)
    if latest is not None and not args.resume:  # before touching anything in the folder
        print(f"error: {out} already holds checkpoint {latest.name}; pass --resume to continue that run, or "
              "choose another --out", file=sys.stderr)
        return 1
    info = init_distributed(cfg.train.device)
    try:
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        space = pipelines.build_space(cfg, info.device)
        if cfg.first_stage is not None and cfg.first_stage_scale_factor is None:
            cfg.first_stage_scale_factor = space.scale_factor  # recorded in the checkpoint, checked on load
        process = pipelines.build_process(cfg)
        model = pipelines.build_denoiser(cfg, process)
        trainer = Trainer(model, pipelines.make_loss_fn(cfg, process, space), pipelines.build_data(cfg),
                          cfg.train, out, config=pipelines.config_dict(cfg),
                          sample_fn=pipelines.make_grid_fn(cfg, process, space), dist=info,
                          progress=not args.no_progress, model_sections=MODEL_SECTIONS)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(dump_yaml(cfg))
            params = sum(p.numel() for p in model.parameters())
            print(f"training {Path(args.config).name}: {params / 1e6:.2f}M parameters, {cfg.train.max_steps} "
                  f"steps of batch {cfg.train.batch_size} on {info.device} x {info.world_size} -> {out}")
        result = trainer.run(resume=args.resume)
    except (TrainingError, CheckpointError, ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutdown(info)
    if info.is_main:
        rate = result.step * cfg.train.batch_size / max(result.elapsed_s, 1e-9)
        print(f"done: step {result.step}, {result.elapsed_s:.0f} s of training ({rate:.1f} img/s); "
              f"checkpoint {result.checkpoint}")
    return 0
