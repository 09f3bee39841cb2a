"""One torchrun worker of test_elastic.py and benchmarks/soak.py: ``ldmkit train`` with a self-kill hook.

Usage (under torchrun): ``_elastic_worker.py CONFIG OUT KILL_STEP KILL_RANK LOG``.

The worker runs the real CLI, ``ldmkit train CONFIG --out OUT``, adding ``--resume`` when OUT already holds a
checkpoint (what an elastic restart needs: "resume if there is a checkpoint, else start"; the CLI has no flag
for it yet). The kill hook lives here, in the test, not in the library: on the first attempt only
(``TORCHELASTIC_RESTART_COUNT`` = 0), rank KILL_RANK SIGKILLs itself right after finishing step KILL_STEP,
while its peer waits in the next collective; KILL_STEP = 0 never kills. Each attempt appends one JSON line
to LOG (attempt, rank, the step it resumed from, the steps it ran), so the test can see the restart happen.
"""

import faulthandler
import json
import os
import signal
import sys
from pathlib import Path

from ldmkit.cli import main
from ldmkit.training import latest_checkpoint
from ldmkit.training import loop as loop_mod

faulthandler.register(signal.SIGUSR1)  # a hung worker prints its stack on SIGUSR1
config, out, kill_step, kill_rank, log_path = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    Path(sys.argv[5])
attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
rank = int(os.environ.get("RANK", "0"))
latest = latest_checkpoint(out)
record = {"attempt": attempt, "rank": rank, "resumed_from": None if latest is None else int(latest.name.split("_")[1]),
          "steps_run": 0}
real_step = loop_mod.Trainer._train_step


def step_then_maybe_die(self):
    logs = real_step(self)
    record["steps_run"] += 1
    if attempt == 0 and rank == kill_rank and self.step == kill_step:
        _write_record(killed_at=self.step)
        os.kill(os.getpid(), signal.SIGKILL)
    return logs


def _write_record(**extra) -> None:
    with open(log_path, "a") as f:
        f.write(json.dumps({**record, **extra}) + "\n")


loop_mod.Trainer._train_step = step_then_maybe_die
code = main(["train", config, "--out", str(out), "--no-progress"] + (["--resume"] if latest is not None else []))
_write_record(exit_code=code)
sys.exit(code)
