"""The autoencoder trains through the one engine (GAN train step): it learns, resumes bit-exactly, and gets the
engine's time budget, NaN guard, keep-last-N, logs, previews and torchrun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldmkit.autoencoders.checkpoint import load_autoencoder
from ldmkit.autoencoders.config import load_config
from ldmkit.cli import main
from ldmkit.latent import LatentSpace
from ldmkit.pipelines import autoencoder_images, train_autoencoder
from ldmkit.training import NonFiniteError
from ldmkit.training import checkpoint as ck

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["--model.channels=8", "--model.channel_mult=[1,2]", "--model.z_channels=2", "--model.mid_attention=false",
        "--loss.perceptual=none", "--loss.disc_channels=8", "--train.batch_size=8", "--train.log_every=10",
        "--data.pad_to=null", "--train.lr=1e-3", "--train.sample_every=0"]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@torch.no_grad()
def _l1(ae, x):
    ae.eval()
    recon, _ = ae(x, sample_posterior=False)
    return (recon - x).abs().mean().item()


@pytest.mark.parametrize("kind,steps", [("kl", 200), ("vq", 100)])
def test_a_few_hundred_steps_beat_the_untrained_autoencoder(tmp_path, kind, steps):
    cfg = load_config(None, data={}, overrides=TINY + [f"--model.type={kind}", f"--train.max_steps={steps}",
                                                          f"--loss.disc_start={steps - 20}",
                                                          f"--train.checkpoint_every={steps}"])
    images = autoencoder_images(cfg, limit=2048)
    test = autoencoder_images(cfg, split="test", limit=256)
    torch.manual_seed(cfg.train.seed)
    from ldmkit.autoencoders import build_autoencoder
    untrained = _l1(build_autoencoder(cfg.model), test)
    result = train_autoencoder(cfg, tmp_path, images=images, progress=False)
    ae, _ = load_autoencoder(result.checkpoint)
    trained = _l1(ae, test)
    print(kind, "untrained", untrained, "trained", trained)
    assert trained < 0.5 * untrained, (trained, untrained)
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == steps and logs[-1]["d_loss"] > 0 and logs[0]["d_loss"] == 0
    assert logs[-1]["disc_optimizer_grad_norm"] > 0 and logs[0]["disc_optimizer_grad_norm"] == 0
    if kind == "vq":
        assert logs[-1]["perplexity"] > 1.0 and 0 < logs[-1]["codebook_usage"] <= 1


def _tensors_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=0, msg=f"{what}.{k}")


def test_cli_resume_is_bit_exact_mid_epoch_and_ae_stats_stores_scale_factor(tmp_path, capsys):
    """The preset with tiny overrides: 10 steps, then --resume to 20 == 20 in one go (256 images / batch 8:
    step 10 is mid-epoch; the discriminator starts at step 5, before the interruption)."""
    common = ["train-ae", str(CONFIGS / "ae_kl_f4_fmnist.yaml"), *TINY, "--train.limit=256", "--loss.disc_start=5",
              "--train.checkpoint_every=5", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "a"), "--train.max_steps=20"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--train.max_steps=10"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--train.max_steps=20", "--resume"]) == 0
    a = ck.load_training_state(tmp_path / "a" / "checkpoints" / "step_0000020")
    b = ck.load_training_state(tmp_path / "b" / "checkpoints" / "step_0000020")
    for part in ("model", "discriminator"):
        _tensors_equal(a[part], b[part], part)
    for name in ("optimizer", "disc_optimizer"):
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert sa.keys() == sb.keys() and sa
        for pid in sa:
            _tensors_equal({k: v for k, v in sa[pid].items() if torch.is_tensor(v)},
                           {k: v for k, v in sb[pid].items() if torch.is_tensor(v)}, f"{name}.{pid}")
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in la] == [json.loads(x)["step"] for x in lb] == [10, 20]
    assert (tmp_path / "a" / "loss.png").is_file()
    assert [p.name for p in ck.list_checkpoints(tmp_path / "a")] == ["step_0000015", "step_0000020"]  # keep_last 2
    capsys.readouterr()
    # refusing to overwrite, and refusing a different model on resume: usage errors
    assert main(common + ["--out", str(tmp_path / "a"), "--train.max_steps=12"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "a"), "--train.max_steps=24", "--resume",
                          "--model.z_channels=3"]) == 2
    assert "model.z_channels: 2 -> 3" in capsys.readouterr().err
    # ae-stats writes the scale factor; the latent space then has unit-std latents on that sample
    with pytest.raises(ValueError, match="ae-stats"):
        LatentSpace.from_checkpoint(tmp_path / "a")
    assert main(["ae-stats", str(tmp_path / "a"), "--num-images=64", "--posterior=mode"]) == 0
    meta = json.loads((tmp_path / "a" / "checkpoints" / "step_0000020" / "config.json").read_text())
    assert meta["kind"] == "autoencoder" and meta["scale_factor"] > 0 and meta["latent_stats"]["num_images"] == 64
    space = LatentSpace.from_checkpoint(tmp_path / "a")
    assert space.posterior == "mode" and space.factor == 2
    assert main(["ae-stats", str(tmp_path / "nowhere")]) == 2


def test_time_budget_preview_and_nan_guard(tmp_path):
    cfg = load_config(None, data={}, overrides=TINY + ["--train.max_steps=1000", "--train.max_minutes=1e-6",
                                                          "--train.sample_every=500"])
    images = autoencoder_images(cfg, limit=64)
    result = train_autoencoder(cfg, tmp_path / "budget", images=images, progress=False)
    assert result.step == 1 and result.checkpoint.name == "step_0000001"  # stopped, checkpointed
    preview = tmp_path / "budget" / "samples" / "step_0000001.png"  # originals over reconstructions
    from PIL import Image
    assert Image.open(preview).size[0] > Image.open(preview).size[1] > 28

    bad = images.clone()
    bad[13] = float("nan")
    cfg = load_config(None, data={}, overrides=TINY + ["--train.max_steps=10", "--train.checkpoint_every=2"])
    with pytest.raises(NonFiniteError, match="non-finite loss") as e:
        train_autoencoder(cfg, tmp_path / "nan", images=bad, progress=False)
    assert "13" in str(e.value).split("indices")[1]
    last = ck.latest_checkpoint(tmp_path / "nan")
    assert last is not None and int(last.name.split("_")[1]) < 10
    ck.load_training_state(last)  # intact


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_train_ae_under_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [str(TORCHRUN) if TORCHRUN.exists() else "torchrun", "--standalone", "--nproc_per_node=2", "-m",
           "ldmkit.cli", "train-ae", str(CONFIGS / "ae_kl_f4_fmnist.yaml"), *TINY, "--train.limit=64",
           "--train.max_steps=4", "--train.log_every=1", "--train.checkpoint_every=2", "--loss.disc_start=2",
           "--train.device=cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    assert rows[-1]["d_loss"] > 0
    assert [p.name for p in ck.list_checkpoints(out)] == ["step_0000002", "step_0000004"]
