"""``ldmkit train-ae CONFIG``: train a KL or VQ first-stage autoencoder (perceptual + PatchGAN losses)."""

from __future__ import annotations

DESCRIPTION = """\
Train a first-stage autoencoder for latent diffusion. CONFIG is a YAML file with sections model, loss,
data, train (see configs/ae_kl_f4_fmnist.yaml); dotted overrides such as --train.max_steps=500 or
--model.channel_mult=[1,2] follow it. Checkpoints go to OUT/checkpoints/step_*/ (model.safetensors +
config.json). Afterwards run 'ldmkit ae-stats OUT' to measure the latent scale factor."""


def add_parser(sub, formatter_class):
    p = sub.add_parser("train-ae", help="train a KL/VQ autoencoder (first stage of an LDM)",
                       description=DESCRIPTION, formatter_class=formatter_class)
    p.add_argument("config", help="autoencoder YAML config")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--resume-if-any", action="store_true",
                   help="continue if --out holds a checkpoint, else start (for torchrun --max-restarts)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args) -> int:
    """Errors rise to ``cli.main``'s exit-code policy (usage 2, runtime 1)."""
    import os
    from pathlib import Path

    from ldmkit import pipelines
    from ldmkit.autoencoders.config import load_config
    from ldmkit.commands._common import report_training

    cfg = load_config(args.config, list(args.overrides or []))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = pipelines.train_autoencoder(cfg, out, resume="auto" if args.resume_if_any else args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports
        return 0
    return report_training(result, "train-ae", args, out, next_step=f"ldmkit ae-stats {out}")
