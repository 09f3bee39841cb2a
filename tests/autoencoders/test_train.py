import json
from pathlib import Path

import pytest
import torch

from ldmkit.autoencoders.checkpoint import load_ae_training_state, load_autoencoder
from ldmkit.autoencoders.config import load_config
from ldmkit.autoencoders.train import forward_ae, load_images, train_autoencoder
from ldmkit.cli import main
from ldmkit.latent import LatentSpace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["--model.channels=8", "--model.channel_mult=[1,2]", "--model.z_channels=2", "--model.mid_attention=false",
        "--loss.perceptual=none", "--loss.disc_channels=8", "--train.batch_size=8", "--train.log_every=10",
        "--data.pad_to=null", "--train.lr=1e-3"]


@torch.no_grad()
def _l1(ae, x):
    ae.eval()
    recon, _ = forward_ae(ae, x, sample_posterior=False)
    return (recon - x).abs().mean().item()


@pytest.mark.parametrize("kind,steps", [("kl", 200), ("vq", 100)])
def test_a_few_hundred_steps_beat_the_untrained_autoencoder(tmp_path, kind, steps):
    cfg = load_config(None, data={}, overrides=TINY + [f"--model.type={kind}", f"--train.max_steps={steps}",
                                                          f"--loss.disc_start={steps - 20}",
                                                          f"--train.checkpoint_every={steps}"])
    images = load_images(cfg, limit=2048)
    test = load_images(cfg, split="test", limit=256)
    torch.manual_seed(cfg.train.seed)
    from ldmkit.autoencoders import build_autoencoder
    untrained = _l1(build_autoencoder(cfg.model), test)
    ckpt = train_autoencoder(cfg, tmp_path, images=images)
    ae, _ = load_autoencoder(ckpt)
    trained = _l1(ae, test)
    print(kind, "untrained", untrained, "trained", trained)
    assert trained < 0.5 * untrained, (trained, untrained)
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == steps and logs[-1]["d_loss"] > 0 and logs[0]["d_loss"] == 0
    if kind == "vq":
        assert logs[-1]["perplexity"] > 1.0 and 0 < logs[-1]["codebook_usage"] <= 1


def test_cli_train_resume_is_exact_and_ae_stats_stores_scale_factor(tmp_path, capsys):
    common = ["train-ae", str(CONFIGS / "ae_kl_f4_fmnist.yaml"), *TINY, "--train.limit=256", "--loss.disc_start=5",
              "--train.checkpoint_every=6", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "a"), "--train.max_steps=12"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--train.max_steps=6"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--train.max_steps=12", "--resume"]) == 0
    a = load_ae_training_state(tmp_path / "a" / "checkpoints" / "step_0000012")
    b = load_ae_training_state(tmp_path / "b" / "checkpoints" / "step_0000012")
    for part in ("model", "discriminator"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=f"{part}.{k}")
    # refusing to overwrite, and refusing a different model on resume
    assert main(common + ["--out", str(tmp_path / "a"), "--train.max_steps=12"]) == 2
    assert main(common + ["--out", str(tmp_path / "a"), "--train.max_steps=14", "--resume",
                          "--model.z_channels=3"]) == 2
    assert "different model" in capsys.readouterr().err
    # ae-stats writes the scale factor; the latent space then has unit-std latents on that sample
    with pytest.raises(ValueError, match="ae-stats"):
        LatentSpace.from_checkpoint(tmp_path / "a")
    assert main(["ae-stats", str(tmp_path / "a"), "--num-images=64", "--posterior=mode"]) == 0
    meta = json.loads((tmp_path / "a" / "checkpoints" / "step_0000012" / "config.json").read_text())
    assert meta["scale_factor"] > 0 and meta["latent_stats"]["num_images"] == 64
    space = LatentSpace.from_checkpoint(tmp_path / "a")
    assert space.posterior == "mode" and space.factor == 2
    assert main(["ae-stats", str(tmp_path / "nowhere")]) == 2
