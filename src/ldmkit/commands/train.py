"""``ldmkit train CONFIG [--out DIR] [--resume] [--section.key=value ...]``: train a diffusion model."""

from __future__ import annotations

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
    p.add_argument("--resume-if-any", action="store_true",
                   help="continue if --out holds a checkpoint, else start (for torchrun --max-restarts)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args) -> int:
    """Errors rise to ``cli.main``'s exit-code policy (usage 2, runtime 1)."""
    import dataclasses
    import os

    from ldmkit import pipelines
    from ldmkit.commands._common import report_training
    from ldmkit.config import load_config

    cfg = load_config(args.config, args.overrides)
    if cfg.first_stage is not None:  # stored absolute, so sampling works from any directory
        from ldmkit.zoo import resolve

        # a shipped first stage keeps its registry name (the package may move); resolve() leaves paths alone
        if resolve(cfg.first_stage) == Path(cfg.first_stage):
            cfg = dataclasses.replace(cfg, first_stage=str(Path(cfg.first_stage).resolve()))
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    result = pipelines.train(cfg, out, resume="auto" if args.resume_if_any else args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports
        return 0
    return report_training(result, "train", args, out)
