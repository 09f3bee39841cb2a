"""A SIGKILL while a checkpoint is written or pruned leaves a loadable checkpoint and a resumable run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _training_helpers import (
    loss_trainer,
    metric_losses,
    noisy_loss,
    state_equal,
    toy_data,
    toy_model,
    train_cfg,
)

from ldmkit.training import checkpoint as ck

SCRIPT = Path(__file__).with_name("_kill_script.py")


def _run_and_kill(out: Path, mode: str, marker: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), mode, str(marker)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the training script ended early: {proc.stdout.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training script never reached the hook")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode, survivor", [("write", "step_0000002"), ("prune", "step_0000004")])
def test_sigkill_during_checkpointing_leaves_a_resumable_run(tmp_path, mode, survivor):
    out = tmp_path / "run"
    _run_and_kill(out, mode, tmp_path / "marker")
    debris = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert debris, "the kill should have left a temporary or half-deleted folder"
    # The survivor is complete and loads; the torn/half-deleted folder is not mistaken for a checkpoint.
    assert [p.name for p in ck.list_checkpoints(out)] == [survivor]
    state = ck.load_training_state(ck.latest_checkpoint(out))
    assert state["step"] == int(survivor.split("_")[1])
    # Resuming finishes the run exactly as an uninterrupted one.
    resumed = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=10, checkpoint_every=2, keep_last=1),
                      out, config={}, progress=False)
    resumed.run(resume=True)
    full = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=10, checkpoint_every=2, keep_last=1),
                   tmp_path / "full", config={}, progress=False)
    full.run()
    assert state_equal(resumed.model.state_dict(), full.model.state_dict())
    assert metric_losses(out) == metric_losses(tmp_path / "full")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000010"]  # debris cleaned
    assert torch.equal(ck.load_training_state(out / "checkpoints" / "step_0000010")["model"]["3.bias"],
                       full.model.state_dict()["3.bias"])
