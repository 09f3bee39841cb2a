"""SIGTERM / SIGINT during training: the current step finishes, a checkpoint is saved, the process exits 0,
and resuming gives the same weights, bit for bit, as a run that was never interrupted.

Guards ``Trainer._stop_on_signals`` and the ``stop_now`` branch of ``Trainer._run`` in
``ldmkit/training/loop.py``.
"""

from __future__ import annotations

import os
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
