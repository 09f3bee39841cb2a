"""torchrun with 2 CPU processes (gloo) matches one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _training_helpers import loss_trainer, metric_losses, plain_loss, toy_data, toy_model, train_cfg

from ldmkit.training import checkpoint as ck

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun not installed")
@pytest.mark.parametrize("grad_accum", [2])  # 2 also covers no_sync() on the first micro-batch
def test_two_processes_match_one(tmp_path, grad_accum):
    out = tmp_path / "ddp"
    script = Path(__file__).with_name("_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else "torchrun"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), str(out), str(grad_accum)],
                          check=False, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = loss_trainer(toy_model(), plain_loss, toy_data(), train_cfg(max_steps=6, checkpoint_every=3), tmp_path / "one",
                     config={"x": 1}, progress=False)
    single.run()
    ddp_losses, one_losses = metric_losses(out), metric_losses(tmp_path / "one")
    assert [s for s, _ in ddp_losses] == [1, 2, 3, 4, 5, 6]  # rank 0 alone wrote the log
    for (_, a), (_, b) in zip(ddp_losses, one_losses):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b))
    assert ddp_losses[-1][1] < ddp_losses[0][1]  # and it trains
    ddp_weights = ck.load_training_state(ck.latest_checkpoint(out))["model"]
    for k, v in single.model.state_dict().items():
        assert (ddp_weights[k] - v).abs().max() <= 1e-5
    assert [p.name for p in ck.list_checkpoints(out)] == ["step_0000003", "step_0000006"]
