"""``ldmkit ae-stats CKPT_DIR``: measure the latent scale factor (1 / std) and store it in config.json."""

from __future__ import annotations

from ldmkit.commands._common import positive_int

DESCRIPTION = """\
Encode a sample of the autoencoder's training data, compute scale_factor = 1 / std of all latent
elements (Rombach et al.), and write it with the statistics into the checkpoint's config.json. A diffusion
config can then name the checkpoint as first_stage. CKPT_DIR is a checkpoint folder or a run folder (its
latest checkpoint)."""


def add_parser(sub, formatter_class):
    p = sub.add_parser("ae-stats", help="measure and store an autoencoder's latent scale factor",
                       description=DESCRIPTION, formatter_class=formatter_class)
    p.add_argument("ckpt", metavar="CKPT_DIR", help="autoencoder checkpoint folder or run folder")
    p.add_argument("--num-images", type=positive_int, default=5000, help="images encoded for the statistics")
    p.add_argument("--split", default=None, help="data split (default: the config's training split)")
    p.add_argument("--posterior", choices=("sample", "mode"), default="sample",
                   help="KL models: statistics of posterior samples (Rombach et al.) or of the mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset and posterior samples")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    import torch

    from ldmkit.autoencoders.checkpoint import write_scale_factor
    from ldmkit.autoencoders.config import load_config
    from ldmkit.commands._common import device, load_autoencoder
    from ldmkit.latent import measure_scale_factor
    from ldmkit.pipelines import autoencoder_images

    dev = device(args.device)
    ae, meta = load_autoencoder(args.ckpt, dev)
    cfg = load_config(None, data=meta["config"])
    images = autoencoder_images(cfg, args.split)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(images), generator=g)[: args.num_images]
    scale, stats = measure_scale_factor(ae, images[idx], args.posterior, args.batch_size, generator=g, device=dev)
    stats.update({"split": args.split or cfg.data.split, "seed": args.seed})
    write_scale_factor(Path(meta["folder"]), scale, stats)
    print(json.dumps({"checkpoint": meta["folder"], "scale_factor": scale, **stats}, indent=2))
    return 0
