"""The CLI end to end on a tiny config: train, resume, sample (grid, PNGs with metadata, npz), nll, info."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil

import numpy as np
import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.images import read_png_metadata

TINY = """
data: {name: fashion-mnist}
unet: {in_channels: 1, model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [1],
       num_heads: 2, norm_groups: 4, num_classes: 10}
diffusion: {schedule: linear, num_timesteps: 40, cond_drop_prob: 0.2}
train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 4, log_every: 1, checkpoint_every: 2,
        sample_every: 4, keep_last: 2, ema_decay: 0.9}
sample: {sampler: ddim, steps: 3, num_images: 4}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--out", str(root / "run"), "--no-progress"]) == 0
    return root


def test_train_writes_a_run(run_dir):
    run = run_dir / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    ckpt = run / "checkpoints" / "step_0000004"
    assert {"config.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors",
            "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert not any(p.suffix in (".pt", ".pth", ".ckpt", ".pkl") for p in run.rglob("*"))
    assert json.loads((ckpt / "config.json").read_text())["format_version"] == 1
    assert (run / "samples" / "step_0000004.png").is_file() and (run / "loss.png").is_file()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)


def test_train_errors(run_dir, capsys):
    cfg = str(run_dir / "tiny.yaml")
    assert main(["train", cfg, "--out", str(run_dir / "run"), "--no-progress"]) == 2  # usage: pick --out/--resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", cfg, "--out", str(run_dir / "x"), "--train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "tiny.yaml: train.lrr: unknown key (did you mean 'lr'?)" in err
    assert main(["train", cfg, "--out", str(run_dir / "run"), "--resume", "--unet.model_channels=16",
                 "--no-progress"]) == 2
    assert "the model config changed (unet.model_channels: 8 -> 16)" in capsys.readouterr().err


def test_resume_extends_the_run(run_dir, capsys):
    run = run_dir / "run2"
    shutil.copytree(run_dir / "run", run)
    assert main(["train", str(run_dir / "tiny.yaml"), "--out", str(run), "--resume", "--train.max_steps=6",
                 "--no-progress"]) == 0
    assert "step 6" in capsys.readouterr().out
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "step: 6 of 6" in out and re.search(r"parameters: [\d,]+ \(0\.\d\dM\)", out)
    assert "num_classes: 10" in out and "step_0000004, step_0000006" in out


def test_a_run_saved_before_a_config_section_existed_still_resumes(run_dir, capsys):
    """A checkpoint whose stored config lacks a section added since (``cond``, new in stop 18) resumes: the
    absent keys count as their defaults (``training/checkpoint.py`` ``config_differences(defaults=)``, passed by
    ``pipelines.train``)."""
    run = run_dir / "old_run"
    shutil.copytree(run_dir / "run", run)
    for config_json in (run / "checkpoints").glob("*/config.json"):
        meta = json.loads(config_json.read_text())
        del meta["config"]["cond"]
        config_json.write_text(json.dumps(meta))
    assert main(["train", str(run_dir / "tiny.yaml"), "--out", str(run), "--resume", "--train.max_steps=6",
                 "--no-progress"]) == 0
    assert "step 6" in capsys.readouterr().out


def test_the_printed_continue_command_resumes_a_run_stopped_by_its_time_budget(run_dir, capsys, tmp_path):
    """The line printed when ``train.max_minutes`` stops a run repeats the model overrides (here
    ``--unet.model_channels=16``); run as printed, it resumes (``commands/_common.py`` ``report_training``)."""
    import shlex

    out = tmp_path / "budget"
    assert main(["train", str(run_dir / "tiny.yaml"), "--out", str(out), "--unet.model_channels=16",
                 "--train.max_minutes=1e-6", "--no-progress"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "continue with: " in x][-1]
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[0] == "ldmkit" and "--unet.model_channels=16" in command and command[-1] == "--resume"
    assert main(command[1:] + ["--train.max_minutes=60", "--no-progress"]) == 0
    assert "done: step 4" in capsys.readouterr().out


def test_sample_outputs(run_dir, capsys, tmp_path):
    run = str(run_dir / "run")
    npz, grid, out_dir = tmp_path / "s.npz", tmp_path / "g.png", tmp_path / "pngs"
    assert main(["sample", run, "-n", "5", "--sampler", "ddim", "--steps", "3", "--labels", "1,2", "--seed", "7",
                 "--batch-size", "3", "--npz", str(npz), "--grid", str(grid), "--out-dir", str(out_dir)]) == 0
    data = np.load(npz)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (5, 28, 28, 1)
    assert data["labels"].tolist() == [1, 2, 1, 2, 1]
    assert Image.open(grid).size[0] > 28 * 2
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 5
    meta = read_png_metadata(pngs[3])
    assert meta["seed"] == "10" and meta["label"] == "2" and meta["sampler"] == "ddim" and meta["steps"] == "3"
    assert np.array_equal(np.asarray(Image.open(pngs[3]))[..., None], data["images"][3])
    # The stored command reproduces image 3 on its own (per-sample seeds; batch size does not matter).
    args = shlex.split(meta["reproduce"])
    assert args[:2] == ["ldmkit", "sample"]
    again = tmp_path / "again.npz"
    assert main(args[1:] + ["--npz", str(again)]) == 0
    diff = np.abs(np.load(again)["images"][0].astype(int) - data["images"][3].astype(int))
    assert diff.max() <= 1


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m"])
def test_other_samplers(run_dir, tmp_path, sampler):
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run_dir / "run"), "-n", "2", "--sampler", sampler, "--steps", "4", "--npz",
                 str(npz)]) == 0
    assert np.load(npz)["images"].shape == (2, 28, 28, 1)


def test_sample_errors(run_dir, tmp_path, capsys):
    # usage errors (the user's arguments or paths) exit 2
    assert main(["sample", str(run_dir / "run"), "--sampler", "euler"]) == 2
    assert "--sampler: unknown sampler 'euler'; valid: ddim, ddpm, dpmpp_2m" in capsys.readouterr().err
    assert main(["sample", str(run_dir / "run"), "--labels", "12"]) == 2
    assert "--labels: classes must lie in [0, 9]" in capsys.readouterr().err
    assert main(["sample", str(run_dir / "run"), "--steps", "41"]) == 2
    assert "--steps=41: must be in [1, 40]" in capsys.readouterr().err
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04pickle")
    assert main(["sample", str(tmp_path / "model.ckpt")]) == 2
    assert "pickle checkpoints are not loaded" in capsys.readouterr().err
    # a checkpoint whose content is corrupted is a runtime error: exit 1
    bad = tmp_path / "bad"
    shutil.copytree(run_dir / "run" / "checkpoints" / "step_0000004", bad)
    (bad / "ema.safetensors").write_bytes(b"not a safetensors file")
    assert main(["sample", str(bad), "-n", "1"]) == 1
    assert "ema.safetensors" in capsys.readouterr().err


def test_nll(run_dir, capsys):
    assert main(["nll", str(run_dir / "run"), "-n", "3", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"test NLL: ([\d.]+) \+- ([\d.]+) bits/dim \(N=3, T=40", out)
    assert m, out
    assert 0.0 < float(m.group(1)) < 20.0 and float(m.group(2)) >= 0.0


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "CKPT_DIR: " in (err := capsys.readouterr().err) and "neither a checkpoint folder" in err


# One bad argument per subcommand (``test_the_bad_argument_walk_covers_every_command`` fails when a command in
# ``COMMAND_MODULES`` has none). {run}: the tiny run above; {cfg}: its config; {demo}: the shipped demo DDPM
# (28x28 gray, T = 1000, U-Net factor 4), usable wherever a checkpoint folder is (ldmkit.zoo).
BAD_ARGUMENTS = [
    (["demo", "-n", "0"], "argument -n/--num: must be >= 1, got 0"),
    (["generate", "a coat", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["generate"], "give prompts as arguments, --prompts FILE or --class NAMES (exactly one; got none)"),
    (["generate", "a coat", "-n", "0"], "argument -n/--num: must be >= 1, got 0"),
    (["generate", "a coat", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["generate", "a coat", "--model", "{demo}", "--guidance-scale", "-1"], "--guidance-scale=-1.0: must be >= 0"),
    (["generate", "a coat", "--model", "{tmp}/missing"], "missing: no such file or directory"),
    (["models", "--bogus"], "unrecognized arguments: --bogus"),
    (["data", "info", "shapes", "--n", "0"], "argument --n: must be >= 1"),
    (["train-ae", "configs/ae_kl_f4_fmnist.yaml", "--out", "{tmp}/ae", "--train.max_stepz=1"], "train.max_stepz"),
    (["ae-stats", "{run}", "--num-images", "0"], "argument --num-images: must be >= 1"),
    (["schedule", "plot", "linear", "-T", "0"], "argument -T/--num-timesteps: must be >= 1"),
    (["schedule", "plot", "lineer", "-o", "{tmp}/s.png"], "'lineer'"),
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.lrr=1"], "train.lrr: unknown key"),
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.lr=-1"], "lr=-1.0 must be positive"),
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.lr=fast"], "train.lr: expected float, got 'fast' (str)"),
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.batch_size=0"], "batch_size=0 must be positive"),
    (["train-ldm", "configs/ldm_kl_f4_fmnist.yaml", "--minutes", "0", "--out", "{tmp}/l"], "--minutes=0.0: the wall"),
    (["sample", "{run}", "--steps", "0"], "argument --steps: must be >= 1"),
    (["sample", "{run}", "--device", "cudx"], "--device='cudx'"),
    (["sample", "{demo}", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["sample", "{demo}", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["sample", "{demo}", "--guidance-scale", "-1"], "--guidance-scale=-1.0: must be >= 0"),
    (["sample", "{demo}", "--guidance-scale", "-0.5"], "--guidance-scale=-0.5: must be >= 0"),
    (["sample", "{demo}", "--size", "30x30"], "--size 30x30: height and width must be positive multiples of 4"),
    (["inpaint", "{demo}", "{tmp}/x.png", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["inpaint", "{demo}", "{tmp}/x.png", "--resample", "0"], "argument --resample: must be >= 1, got 0"),
    (["img2img", "{demo}", "{tmp}/x.png", "--strength", "2"], "--strength=2.0: must be in [0, 1]"),
    (["img2img", "{demo}", "{tmp}/x.png", "--strength", "-0.5"], "--strength=-0.5: must be in [0, 1]"),
    (["upscale", "{demo}", "{tmp}/x.png"], "upscale needs a model trained with cond.concat='super_resolution'"),
    (["visualize", "{demo}", "--what", "nonsense"], "--what='nonsense': valid: noising, trajectory, schedules"),
    (["visualize", "{demo}", "--what", "noising", "--t", "5000"], "--t: 5000 is outside [0, 999]"),
    (["visualize", "{demo}", "--what", "noising", "--t", "-1"], "--t: -1 is outside [0, 999]"),
    (["visualize", "{demo}", "--what", "noising", "--num", "0"], "argument --num: must be >= 1, got 0"),
    (["visualize", "{demo}", "--what", "trajectory", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["visualize", "{demo}", "--what", "trajectory", "--every", "0"], "--every=0: must be in [1, 25]"),
    (["visualize", "{demo}", "--what", "trajectory", "--guidance-scale", "-1"], "--guidance-scale=-1.0: must be >= 0"),
    (["nll", "{run}", "-n", "0"], "argument -n/--num: must be >= 1"),
    (["info", "{tmp}/missing"], "CKPT_DIR: "),
    (["eval-images", "{tmp}/x.npz", "--value-range", "1"], "--value-range: expected 'LOW,HIGH'"),
    (["eval", "{run}", "--sample-batch-size", "0"], "argument --sample-batch-size: must be >= 1"),
    (["eval", "{run}", "--sampler", "euler", "--metrics", "fid"], "--sampler: unknown sampler 'euler'"),
    (["bench", "{run}", "--warmup", "-1"], "argument --warmup: must be >= 0"),
    (["bench", "{run}", "--steps", "1000"], "--steps=1000: must be in [1, 40]"),
    (["serve", "--port", "-1"], "argument --port: must be >= 0, got -1"),
    (["serve", "--max-n", "0"], "argument --max-n: must be >= 1, got 0"),
    (["serve", "--host", "0.0.0.0"], "--host 0.0.0.0: serving beyond this machine needs --token"),
    (["serve", "--no-demo", "--model", "{tmp}/missing"], "--model: unknown model name or checkpoint folder"),
]


@pytest.mark.parametrize("argv, names", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_every_command_exits_2_on_a_bad_argument_and_names_it(run_dir, tmp_path, capsys, monkeypatch, argv, names):
    """Exit 2, exactly one ``error:`` line naming the argument or key and the value (argparse's usage lines
    aside), no traceback. Guards ``commands/_common.py`` (``positive_int`` / ``non_negative_int``, the argparse
    type of every count; ``sampling_settings``; ``run_command``/``exit_code``, which turn ``UsageError`` and
    ``ConfigError`` into one line and exit 2) and each command's own checks (``generate.rows``,
    ``visualize.run``'s ``--what`` and ``parse_timesteps``, ``editing.shape_at`` for ``--size``, ...)."""
    if argv[0] == "serve":  # a check that stopped refusing must fail the test, not serve forever
        uvicorn = pytest.importorskip("uvicorn")
        monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started despite a bad argument"))
    fill = {"run": str(run_dir / "run"), "cfg": str(run_dir / "tiny.yaml"), "tmp": str(tmp_path),
            "demo": "demo-ddpm-fmnist"}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert names in lines[0], err


def test_the_bad_argument_walk_covers_every_command():
    """Every subcommand the parser offers (each module of ``commands.COMMAND_MODULES``, ``eval`` and
    ``eval-images`` both) has at least one case in ``BAD_ARGUMENTS``: adding a command without one fails here."""
    import argparse

    from ldmkit.commands import COMMAND_MODULES

    commands = set()
    for module in COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        module.add_parser(sub, argparse.HelpFormatter)
        commands |= set(sub.choices)
    assert len(commands) >= len(COMMAND_MODULES)
    missing = commands - {argv[0] for argv, _ in BAD_ARGUMENTS}
    assert not missing, f"subcommands without a bad-argument case: {sorted(missing)}"


def test_exit_code_policy():
    from ldmkit.commands._common import UsageError, exit_code, run_command
    from ldmkit.data import BadImageError
    from ldmkit.registry import ConfigError
    from ldmkit.training import CheckpointError, NonFiniteError, RunFolderError, TrainingError

    usage = [UsageError("x"), ConfigError("x"), ValueError("x"), FileNotFoundError("x"), RunFolderError("x"),
             BadImageError("a.png", "x")]
    runtime = [CheckpointError("x"), TrainingError("x"), NonFiniteError("x"), RuntimeError("x"), OSError("x")]
    assert [exit_code(e) for e in usage] == [2] * len(usage)
    assert [exit_code(e) for e in runtime] == [1] * len(runtime)
    assert exit_code(TypeError("a bug")) is None

    def boom(args):
        raise TypeError("a bug")

    with pytest.raises(TypeError):  # bugs keep their traceback
        run_command(boom, None)


def test_steps_is_the_number_of_denoiser_calls_for_every_sampler(run_dir, tmp_path, monkeypatch, capsys):
    # TINY's sample.steps is 3 (T = 40): every sampler, ddpm included, makes 3 denoiser calls by default,
    # and --steps K makes K.
    from ldmkit.denoiser import Denoiser

    calls = []
    forward = Denoiser.forward
    monkeypatch.setattr(Denoiser, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):
        for steps, expected in ((None, 3), ("5", 5)):
            calls.clear()
            argv = ["sample", str(run_dir / "run"), "-n", "1", "--sampler", sampler, "--npz", str(tmp_path / "s.npz")]
            assert main(argv + ([] if steps is None else ["--steps", steps])) == 0
            assert len(calls) == expected, (sampler, steps)
            assert f"{sampler}, {expected} steps" in capsys.readouterr().out


def test_sample_npz_layout(run_dir, tmp_path):
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run_dir / "run"), "-n", "3", "--seed", "5", "--npz", str(npz)]) == 0
    with np.load(npz) as z:
        assert sorted(z.files) == ["images", "labels", "seeds"]
        assert z["images"].dtype == np.uint8 and z["images"].shape == (3, 28, 28, 1)
        assert z["labels"].tolist() == [0, 1, 2] and z["seeds"].tolist() == [5, 6, 7]


def test_nll_is_the_library_dataset_bits_per_dim(run_dir, capsys):
    import torch

    from ldmkit import pipelines
    from ldmkit.data import FashionMNIST
    from ldmkit.diffusion.likelihood import dataset_bits_per_dim
    from ldmkit.types import Cond

    assert main(["nll", str(run_dir / "run"), "-n", "3", "--batch-size", "2", "--seed", "1", "--device", "cpu",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    loaded = pipelines.load_model(run_dir / "run")
    images, labels = FashionMNIST("test").tensors()
    batches = [(images[:2], Cond(class_labels=labels[:2])), (images[2:3], Cond(class_labels=labels[2:3]))]
    expected = dataset_bits_per_dim(loaded.denoiser, loaded.process, batches, variance_type="fixed_large",
                                    generator=torch.Generator().manual_seed(1))
    assert out["num_examples"] == 3 and out["num_timesteps"] == 40
    assert out["bpd"] == pytest.approx(expected.bpd, rel=1e-12)
    assert out["bpd_stderr"] == pytest.approx(expected.bpd_stderr, rel=1e-12)
    assert out["prior_bpd"] == pytest.approx(expected.prior_bpd, rel=1e-12)
