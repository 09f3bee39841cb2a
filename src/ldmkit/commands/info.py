"""``ldmkit info CKPT_DIR``: the config, parameter count and training step of a checkpoint."""

from __future__ import annotations


def add_parser(sub, formatter_class):
    p = sub.add_parser("info", help="show a checkpoint's config, parameter count and step",
                       formatter_class=formatter_class)
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ldmkit.commands._common import checkpoint_folder
    from ldmkit.config import ConfigError, config_from_data, dump_yaml
    from ldmkit.training import checkpoint as ckpt_io

    ckpt = checkpoint_folder(args.checkpoint)
    meta = ckpt_io.load_checkpoint_config(ckpt)
    try:
        cfg = config_from_data(meta["config"], source=str(ckpt / "config.json"))
    except ConfigError as e:  # the stored config, not the user's: a checkpoint problem (exit 1)
        raise ckpt_io.CheckpointError(str(e)) from e
    # a shipped model (ldmkit models) keeps only its EMA weights; an autoencoder only model.safetensors
    name = "model.safetensors" if (ckpt / "model.safetensors").is_file() else "ema.safetensors"
    weights = ckpt_io.read_checkpoint_tensors(ckpt, name, meta)
    state = ckpt_io.read_json(ckpt / "state.json") if (ckpt / "state.json").is_file() else {}
    train = state.get("train", {})
    params = sum(t.numel() for t in weights.values())
    size = sum(p.stat().st_size for p in ckpt.iterdir() if p.is_file())
    print(f"checkpoint: {ckpt}")
    print(f"format version: {meta['format_version']} (ldmkit {meta.get('ldmkit_version', '?')})")
    print(f"step: {meta['step']} of {cfg.train.max_steps}; images seen: {train.get('images_seen', '?')}; "
          f"data position: epoch {train.get('epoch', '?')}, batch {train.get('batch_in_epoch', '?')} (0-based); "
          f"training time {train.get('elapsed_s', 0.0):.0f} s")
    print(f"parameters: {params:,} ({params / 1e6:.2f}M); folder size {size / 2**20:.1f} MiB; "
          f"EMA weights: {'yes' if (ckpt / 'ema.safetensors').is_file() else 'no'}"
          + ("" if name == "model.safetensors" else " (only: the raw weights are not kept)"))
    others = [p.name for p in ckpt_io.list_checkpoints(ckpt.parent.parent)] if ckpt.parent.name == "checkpoints" else []
    if others:
        print(f"checkpoints in this run: {', '.join(others)}")
    print("config:")
    print("  " + dump_yaml(cfg).rstrip().replace("\n", "\n  "))
    return 0
