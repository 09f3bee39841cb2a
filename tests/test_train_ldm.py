"""``ldmkit train-ldm`` end to end on a tiny recipe (shapes, tiny autoencoder and U-Net, max_steps caps):
outputs, skip/resume on rerun, --first_stage reuse, and exit 2 with a clear message for bad budgets and keys."""

from __future__ import annotations

import json
import logging
import logging.handlers

import pytest
from PIL import Image

from ldmkit.autoencoders.config import LossConfig
from ldmkit.autoencoders.losses import GAN_SETTLE_STEPS, short_gan_warning
from ldmkit.cli import main
from ldmkit.recipe import BudgetConfig, stage_minutes
from ldmkit.registry import ConfigError

TINY = """
data: {name: shapes, length: 64, image_size: 16, cache_latents: true}
autoencoder:
  model: {type: kl, in_channels: 3, channels: 8, channel_mult: [1, 2], num_res_blocks: 1, z_channels: 2,
          mid_attention: false}
  loss: {perceptual: none, disc_channels: 8, disc_start: 2}
  train: {max_steps: 4, batch_size: 8, lr: 1.0e-3, log_every: 2, checkpoint_every: 2, sample_every: 0}
ldm:
  unet: {model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [], num_heads: 2,
         norm_groups: 4}
  diffusion: {schedule: linear, num_timesteps: 40}
  train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 4, log_every: 1, checkpoint_every: 2,
          sample_every: 0, keep_last: 5, ema_decay: 0.9}
  sample: {sampler: ddim, steps: 2, num_images: 4}
budget: {autoencoder: 0.3, diffusion: 0.6}
scale: {num_images: 32, batch_size: 16}
evaluation: {num_samples: 16, steps: 2, eta: 0.5, batch_size: 8, metrics: [fid, pr], reference: "data:test",
             n_reference: 32}
"""


RUN_WARNINGS: list[str] = []  # what the autoencoder stage logged during the module's run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_ldm")
    (root / "tiny.yaml").write_text(TINY)
    cmd = ["train-ldm", str(root / "tiny.yaml"), "--minutes", "5", "--out", str(root / "run"), "--no-progress"]
    records = logging.handlers.BufferingHandler(capacity=10_000)
    logger = logging.getLogger("ldmkit.pipelines")
    logger.addHandler(records)
    try:
        assert main(cmd) == 0
    finally:
        logger.removeHandler(records)
    RUN_WARNINGS[:] = [r.getMessage() for r in records.buffer]
    return root, cmd


def _state(out):
    return json.loads((out / "train_ldm.json").read_text())


def test_outputs_of_every_stage(run):
    root, _ = run
    out = root / "run"
    assert sorted(p.name for p in (out / "autoencoder" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    assert sorted(p.name for p in (out / "diffusion" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    ae_meta = json.loads((out / "autoencoder" / "checkpoints" / "step_0000004" / "config.json").read_text())
    scale = ae_meta["scale_factor"]
    assert scale is not None and scale > 0 and ae_meta["latent_stats"]["seed"] == 0
    ldm_meta = json.loads((out / "diffusion" / "checkpoints" / "step_0000004" / "config.json").read_text())
    assert ldm_meta["config"]["first_stage_scale_factor"] == scale
    assert ldm_meta["config"]["first_stage"] == str((out / "autoencoder" / "checkpoints" / "step_0000004").resolve())
    assert ldm_meta["config"]["unet"]["in_channels"] == 2  # filled in from autoencoder.model.z_channels
    assert ldm_meta["config"]["data"]["cache_latents"] is True  # the recipe's data section reaches the diffusion stage
    with Image.open(out / "samples.png") as im:
        assert im.size[0] > 16 and im.mode == "RGB"  # a 2x2 grid of 16x16 RGB samples with padding
    ev = json.loads((out / "eval.json").read_text())
    assert ev["fid"] > 0 and 0 <= ev["precision"] <= 1
    p = ev["protocol"]
    assert p["extractor"] == "fmnist-eval-v2" and p["n_generated"] == 16 and p["n_reference"] == 32
    assert p["generation"]["steps"] == 2 and p["generation"]["first_stage_loss_networks"] == []
    assert p["generation"]["sampler"] == "ddim" and p["generation"]["eta"] == 0.5
    state = _state(out)
    assert state["done"] == ["autoencoder", "scale", "diffusion", "grid", "evaluation"]
    assert state["results"]["scale"]["scale_factor"] == scale
    # each training stage ran under a train.max_minutes from the budget (stored in its config)
    assert 0 < ldm_meta["config"]["train"]["max_minutes"] <= 0.9 * 5


def test_a_gan_switched_on_at_the_end_of_the_autoencoder_stage_is_warned_about(run):
    # TINY's autoencoder: 4 steps, the adversarial term from step 2 on
    warnings = [m for m in RUN_WARNINGS if "adversarial loss" in m]
    assert len(warnings) == 1 and "disc_start=2) was on for only the last 2 of 4 steps" in warnings[0]
    assert "disc_weight=0" in warnings[0]


@pytest.mark.parametrize("loss, step, warned", [
    (LossConfig(disc_start=2500, disc_weight=0.5), 2662, True),                       # the 30-minute case
    (LossConfig(disc_start=2500, disc_weight=0.5), 2500 + GAN_SETTLE_STEPS - 1, True),
    (LossConfig(disc_start=2500, disc_weight=0.5), 2500 + GAN_SETTLE_STEPS, False),   # ran long enough
    (LossConfig(disc_start=2500, disc_weight=0.5), 2500, False),                      # never on (steps 0..2499)
    (LossConfig(disc_start=2500, disc_weight=0.0), 2662, False),                      # no GAN term
])
def test_short_gan_warning(loss, step, warned):
    assert (short_gan_warning(loss, step) is not None) == warned


def test_evaluation_samples_with_its_own_eta(run):
    """evaluation.eta (0.5) overrides the sample section's (0.0): the saved samples are exactly the checkpoint's
    DDIM samples at eta 0.5 with the recorded seeds, and differ from eta 0's."""
    import numpy as np

    from ldmkit.commands._common import load_model
    from ldmkit.images import to_uint8

    root, _ = run
    out = root / "run"
    gen = json.loads((out / "eval.json").read_text())["protocol"]["generation"]
    saved = np.load(out / "samples.npz")
    assert saved["seeds"].tolist() == list(range(16))
    loaded = load_model(gen["checkpoint"])
    assert loaded.config.sample.eta == 0.0
    for eta, same in ((0.5, True), (0.0, False)):
        images = to_uint8(loaded.generate(16, sampler="ddim", steps=2, eta=eta, seed=0, batch_size=8))
        assert np.array_equal(images, saved["images"]) is same, eta


def test_rerun_skips_finished_stages(run, capsys):
    root, cmd = run
    out = root / "run"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "train_ldm.json"}
    capsys.readouterr()
    assert main(cmd) == 0
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "train_ldm.json"}
    assert after == before  # nothing retrained, resampled or rescored
    assert "done:" in capsys.readouterr().out


def test_an_unfinished_stage_resumes_from_its_checkpoint(run):
    root, cmd = run
    out = root / "run"
    state = _state(out)
    state["done"] = ["autoencoder", "scale"]  # as if the diffusion stage had been interrupted at step 4
    (out / "train_ldm.json").write_text(json.dumps(state))
    assert main(cmd + ["--ldm.train.max_steps=6"]) == 0
    names = sorted(p.name for p in (out / "diffusion" / "checkpoints").iterdir())
    assert names == ["step_0000002", "step_0000004", "step_0000006"]
    rows = [json.loads(line) for line in (out / "diffusion" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # continued, not restarted
    assert sorted(p.name for p in (out / "autoencoder" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    assert _state(out)["done"][-1] == "evaluation"


def test_first_stage_reuses_an_autoencoder(run):
    root, cmd = run
    ae = root / "run" / "autoencoder"
    out = root / "reuse"
    args = ["train-ldm", cmd[1], "--minutes", "5", "--out", str(out), "--first_stage", str(ae), "--no-progress",
            "--evaluation.num_samples=0"]
    assert main(args) == 0
    assert not (out / "autoencoder").exists()
    state = _state(out)
    assert state["results"]["autoencoder"] == {"reused": str(ae.resolve())}
    assert state["results"]["scale"]["measured"] is False  # it already had a scale factor
    assert (out / "samples.png").is_file() and not (out / "eval.json").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--budget.autoencoder=0.5", "--budget.diffusion=0.5"], "budget.autoencoder + budget.diffusion = 1"),
    (["--budget.diffusion=1.5"], "budget.diffusion=1.5"),
    (["--budget.autoencodr=0.2"], "budget.autoencodr: unknown key (did you mean 'autoencoder'?)"),
    (["--ldm.train.max_stepz=3"], "train.max_stepz: unknown key"),
    (["--autoencoder.model.chanels=3"], "model.chanels: unknown key"),
    (["--trian.lr=1"], "unknown section(s) ['trian']"),
    (["--ldm.first_stage=x"], "ldm.first_stage is not allowed"),
    (["--autoencoder.data.name=shapes"], "autoencoder.data is not allowed"),
    (["--evaluation.steps=0"], "evaluation.steps=0"),
    (["--evaluation.eta=1.5"], "evaluation.eta=1.5 must be in [0, 1]"),
])
def test_bad_recipe_exits_2_naming_the_key(tmp_path, capsys, extra, needle):
    (tmp_path / "tiny.yaml").write_text(TINY)
    rc = main(["train-ldm", str(tmp_path / "tiny.yaml"), "--minutes", "1", "--out", str(tmp_path / "r"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert not (tmp_path / "r" / "autoencoder").exists()  # refused before any training


@pytest.mark.parametrize("minutes", ["0", "-3", "nan"])
def test_bad_minutes_exit_2(tmp_path, capsys, minutes):
    (tmp_path / "tiny.yaml").write_text(TINY)
    rc = main(["train-ldm", str(tmp_path / "tiny.yaml"), "--minutes", minutes, "--out", str(tmp_path / "r")])
    assert rc == 2 and "--minutes" in capsys.readouterr().err


def test_stage_minutes_pass_unused_time_on():
    b = BudgetConfig(autoencoder=0.25, diffusion=0.65)
    assert stage_minutes("autoencoder", 40, b, {}) == pytest.approx(10.0)
    assert stage_minutes("autoencoder", 40, b, {"autoencoder": 240.0}) == pytest.approx(6.0)
    # the autoencoder used 4 of its 10 minutes and the scale 1: the diffusion gets 36 - 5 = 31
    assert stage_minutes("diffusion", 40, b, {"autoencoder": 240.0, "scale": 60.0}) == pytest.approx(31.0)
    assert stage_minutes("diffusion", 1, b, {"autoencoder": 600.0}) == pytest.approx(5 / 60)  # floor: save + end


def test_stage_minutes_reserve_seconds_replaces_the_diffusion_fraction():
    b = BudgetConfig(autoencoder=0.25, reserve_seconds=60)
    assert stage_minutes("autoencoder", 40, b, {}) == pytest.approx(10.0)  # unchanged
    # 40 min = 2400 s, less 60 s reserved, less 240 + 60 s spent: 2040 s = 34 minutes (not 31 as with 0.65)
    assert stage_minutes("diffusion", 40, b, {"autoencoder": 240.0, "scale": 60.0}) == pytest.approx(34.0)
    assert stage_minutes("diffusion", 40, b, {"autoencoder": 240.0, "scale": 60.0, "diffusion": 2000.0}) \
        == pytest.approx(40 / 60)
    with pytest.raises(ConfigError, match="budget.reserve_seconds=-1"):
        BudgetConfig(reserve_seconds=-1)
    BudgetConfig(autoencoder=0.5, diffusion=0.65, reserve_seconds=30)  # the fraction sum is not checked then


FMNIST_PERCEPTUAL = """
data: {name: fashion-mnist}
autoencoder:
  model: {type: kl, in_channels: 1, channels: 8, channel_mult: [1, 2], num_res_blocks: 1, z_channels: 2,
          mid_attention: false}
  loss: {perceptual: fmnist, disc_channels: 8, disc_start: 1000}
  train: {max_steps: 2, batch_size: 8, lr: 1.0e-3, log_every: 1, checkpoint_every: 2, sample_every: 0, limit: 64}
ldm:
  unet: {model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [], num_heads: 2,
         norm_groups: 4}
  diffusion: {schedule: linear, num_timesteps: 40}
  train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 2, log_every: 1, checkpoint_every: 2,
          sample_every: 0, ema_decay: 0.9}
  sample: {sampler: ddim, steps: 2, num_images: 4}
scale: {num_images: 32, batch_size: 16}
evaluation: {num_samples: 8, steps: 2, batch_size: 8, metrics: [fid], n_reference: 100, extractor: fmnist-cnn-v1}
"""


def test_evaluation_refuses_the_first_stage_perceptual_network(tmp_path, capsys):
    """The autoencoder trained with the fmnist perceptual loss (fmnist-cnn-v1): train-ldm's evaluation and
    ``ldmkit eval`` refuse v1 with exit 2; ``eval --allow-loss-extractor`` scores and records a warning."""
    (tmp_path / "r.yaml").write_text(FMNIST_PERCEPTUAL)
    out = tmp_path / "run"
    rc = main(["train-ldm", str(tmp_path / "r.yaml"), "--minutes", "5", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "'fmnist-cnn-v1' (fmnist-cnn-v1) is the perceptual-loss network" in err, err
    assert _state(out)["done"] == ["autoencoder", "scale", "diffusion", "grid"]
    common = ["eval", str(out / "diffusion"), "-n", "8", "--steps", "2", "--metrics", "fid", "--n-reference", "100",
              "--json", "--cache-dir", str(tmp_path / "cache")]
    assert main(common + ["--extractor", "fmnist-cnn"]) == 2
    assert "perceptual-loss network" in capsys.readouterr().err
    assert main(common + ["--extractor", "fmnist-cnn-v1", "--allow-loss-extractor"]) == 0
    g = json.loads(capsys.readouterr().out)["protocol"]["generation"]
    assert g["first_stage_loss_networks"] == ["fmnist-cnn-v1"] and "extractor_warning" in g
    assert main(common) == 0  # the default, fmnist-eval-v2, is independent of every loss
    p = json.loads(capsys.readouterr().out)["protocol"]
    assert p["extractor"] == "fmnist-eval-v2" and "extractor_warning" not in p["generation"]
    # the recipe then finishes with the independent extractor
    assert main(["train-ldm", str(tmp_path / "r.yaml"), "--minutes", "5", "--out", str(out), "--no-progress",
                 "--evaluation.extractor=fmnist-eval-v2"]) == 0
    assert json.loads((out / "eval.json").read_text())["protocol"]["extractor"] == "fmnist-eval-v2"
