"""SIGTERM / SIGINT during training: the current step finishes, a checkpoint is saved, the process exits 0,
and resuming gives the same weights, bit for bit, as a run that was never interrupted.

Guards ``Trainer._stop_on_signals`` and the ``stop_now`` branch of ``Trainer._run`` in
``ldmkit/training/loop.py``, ``StopRequest.installed`` in ``ldmkit/training/signals.py`` (the second signal),
and ``run_command`` in ``ldmkit/commands/_common.py`` (exit 0 after a clean stop, 130 on KeyboardInterrupt).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _reliability_helpers import loss_trainer, noisy_loss, state_equal, toy_data, toy_model, train_cfg

from ldmkit.training import checkpoint as ck

SCRIPT = Path(__file__).with_name("_signal_script.py")
CLI_SCRIPT = Path(__file__).with_name("_signal_cli_script.py")
CFG = {"max_steps": 10, "checkpoint_every": 100, "keep_last": 2}  # as in _signal_script.py


def _run_signalled(out: Path, marker: Path, sig: signal.Signals, stop_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), str(marker), str(stop_at)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the training script ended early: {proc.stdout.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training script never reached the step to interrupt")
            time.sleep(0.02)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


def _final_state(trainer) -> dict:
    opt = ck.optimizer_to_tensors(trainer.optimizers["optimizer"].state_dict())[0]
    return {**{f"model.{k}": v for k, v in trainer.model.state_dict().items()},
            **{f"ema.{k}": v for k, v in trainer.ema.state_dict().items()}, **{f"opt.{k}": v for k, v in opt.items()}}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_after_the_step_saves_and_resumes_bit_exactly(tmp_path, sig):
    out, stop_at = tmp_path / "run", 4
    done = _run_signalled(out, tmp_path / "marker", sig, stop_at)
    assert done.returncode == 0, done.stdout[-2000:]
    assert f"stopped_by={sig.name} step={stop_at}" in done.stdout
    assert f"stopped by {sig.name} at step {stop_at} of 10" in done.stdout and "--resume" in done.stdout
    assert [p.name for p in ck.list_checkpoints(out)] == [ck.checkpoint_name(stop_at)]

    resumed = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(**CFG), out, config={}, progress=False)
    assert resumed.run(resume=True).step == 10
    straight = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(**CFG), tmp_path / "straight", config={},
                            progress=False)
    straight.run()
    assert state_equal(_final_state(resumed), _final_state(straight))


def test_handlers_are_restored_and_only_installed_on_the_main_thread(tmp_path):
    """The previous SIGTERM/SIGINT handlers come back after ``run()``; a run on another thread (where Python
    cannot install handlers) trains normally instead of failing."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=2, checkpoint_every=2), tmp_path / "a",
                 config={}, progress=False).run()
    assert {s: signal.getsignal(s) for s in before} == before

    errors, results = [], []

    def target():
        try:
            results.append(loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=2, checkpoint_every=2),
                                        tmp_path / "b", config={}, progress=False).run())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    assert not errors and results[0].step == 2 and results[0].stopped_by is None


# ----------------------------------------------------------------------------------- the real command
TINY = {  # checkpoints every 2 steps, and more steps than the test ever waits for
    "train": """
data: {name: shapes, image_size: 16, length: 64}
unet: {in_channels: 3, model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [],
       num_heads: 2, norm_groups: 4}
diffusion: {schedule: linear, num_timesteps: 40}
train: {lr: 1.0e-3, batch_size: 4, max_steps: 100000, log_every: 1, checkpoint_every: 2, sample_every: 0,
        keep_last: 2, device: cpu, seed: 0}
""",
    "train-ae": """
model: {type: kl, in_channels: 3, channels: 8, channel_mult: [1, 2], num_res_blocks: 1, z_channels: 2,
        mid_attention: false}
loss: {perceptual: none}
data: {name: shapes, image_size: 16, length: 64, hflip: false}
train: {lr: 1.0e-3, batch_size: 4, max_steps: 100000, log_every: 1, checkpoint_every: 2, sample_every: 0,
        keep_last: 2, device: cpu, seed: 0}
""",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(command: str, config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ldmkit.cli", command, str(config), "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("command", ["train", "train-ae"])
def test_sigterm_to_the_real_train_command_exits_0_with_a_checkpoint_that_resumes(tmp_path, command):
    """``python -m ldmkit.cli train TINY.yaml`` (and ``train-ae``) signalled with SIGTERM once its first
    checkpoint is on disk: guards the whole path from ``StopRequest``'s handler through ``Trainer._run``'s
    ``stop_now`` save to ``run_command``'s exit code: exit 0, the latest checkpoint is the step it stopped at
    (complete, loadable), and ``--resume`` continues from that step instead of restarting."""
    config, out = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(TINY[command])
    proc = subprocess.Popen(_cli(command, config, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        while not ck.list_checkpoints(out):
            if proc.poll() is not None:
                pytest.fail(f"{command} ended early: {proc.stdout.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{command} wrote no checkpoint in 90 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    stopped = re.search(r"stopped by SIGTERM at step (\d+) of 100000; saved (\S+);", output)
    assert stopped, output[-2000:]
    step = int(stopped.group(1))
    latest = ck.latest_checkpoint(out)
    assert latest.name == ck.checkpoint_name(step) and Path(stopped.group(2)).name == latest.name
    assert ck.load_training_state(latest)["step"] == step  # complete: every file read and checked
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]

    resumed = subprocess.run(_cli(command, config, out, "--resume", f"--train.max_steps={step + 2}"), check=False,
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert f"resumed from {latest} (step {step})" in resumed.stdout, resumed.stdout[-2000:]
    assert ck.latest_checkpoint(out).name == ck.checkpoint_name(step + 2)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, step + 3))  # continued, not restarted


def test_a_second_signal_while_stopping_exits_130_without_saving(tmp_path):
    """Guards the ``if self.name is not None: raise KeyboardInterrupt`` branch of ``StopRequest.installed``'s
    handler (``ldmkit/training/signals.py``) and ``run_command``'s ``except KeyboardInterrupt`` -> 130
    (``ldmkit/commands/_common.py``): the real ``train`` command (``_signal_cli_script.py`` holds step 3 open
    until both signals have arrived) exits 130, prints "interrupted", and saves nothing after the checkpoint of
    step 2: no step 3 checkpoint, no temporary folder."""
    config, out = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(TINY["train"])
    first, second = tmp_path / "first", tmp_path / "second"
    proc = subprocess.Popen([sys.executable, str(CLI_SCRIPT), str(config), str(out), str(first), str(second), "3"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for marker in (first, second):
            deadline = time.monotonic() + 90
            while not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(f"train ended early: {proc.stdout.read()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"train never reached {marker.name}")
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output[-2000:]
    assert "interrupted" in output and "Traceback" not in output, output[-2000:]
    assert "SIGTERM received" in output and "stopped by SIGTERM" not in output, output[-2000:]
    assert [p.name for p in ck.list_checkpoints(out)] == [ck.checkpoint_name(2)]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
