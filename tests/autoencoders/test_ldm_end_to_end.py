"""An LDM trains and samples end to end on a tiny config: train-ae -> ae-stats -> train -> sample."""

import json
from pathlib import Path

import numpy as np

from ldmkit.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
AE = ["--model.channels=8", "--model.channel_mult=[1,2]", "--model.z_channels=2", "--model.mid_attention=false",
      "--loss.perceptual=none", "--loss.disc_start=1000", "--train.batch_size=8", "--train.limit=256",
      "--train.max_steps=20", "--train.checkpoint_every=20", "--no-progress"]
UNET = ["--unet.in_channels=2", "--unet.model_channels=16", "--unet.channel_mult=[1,2]", "--unet.num_res_blocks=1",
        "--unet.attention_levels=[1]", "--unet.num_heads=2", "--unet.norm_groups=8", "--train.max_steps=4",
        "--train.batch_size=4", "--train.sample_every=0", "--train.checkpoint_every=4", "--train.warmup_steps=1",
        "--train.log_every=1", "--no-progress"]


def test_ldm_trains_and_samples_through_the_cli(tmp_path, capsys):
    ae_dir, ldm_dir = tmp_path / "ae", tmp_path / "ldm"
    assert main(["train-ae", str(CONFIGS / "ae_kl_f4_fmnist.yaml"), "--out", str(ae_dir), *AE]) == 0
    ldm = ["train", str(CONFIGS / "ldm_kl_f4_fmnist.yaml"), "--out", str(ldm_dir), f"--first_stage={ae_dir}", *UNET]
    # no scale_factor yet: the diffusion run refuses the autoencoder and says how to fix it
    assert main(ldm) != 0
    assert "ae-stats" in capsys.readouterr().err
    assert main(["ae-stats", str(ae_dir), "--num-images=32"]) == 0
    assert main(ldm) == 0
    cached = tmp_path / "ldm_cached"  # latent caching (data.cache_latents) through the same command
    assert main([*ldm[:3], str(cached), *ldm[4:], "--data.cache_latents=true"]) == 0
    assert (cached / "checkpoints").is_dir()
    out = tmp_path / "samples.npz"
    assert main(["sample", str(ldm_dir), "-n", "3", "--steps", "4", "--npz", str(out)]) == 0
    images = np.load(out)["images"]
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.uint8  # decoded back to the data's own size


    # re-measuring the first stage later must not silently change how this LDM decodes
    ae_config = max(ae_dir.rglob("config.json"))
    meta = json.loads(ae_config.read_text())

    def bump(d):
        for k, v in d.items():
            if k == "scale_factor" and isinstance(v, float):
                d[k] = v * 2
                return True
            if isinstance(v, dict) and bump(v):
                return True
        return False

    assert bump(meta)
    ae_config.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["sample", str(ldm_dir), "-n", "1", "--steps", "2", "--npz", str(out)]) != 0
    assert "was trained with" in capsys.readouterr().err
