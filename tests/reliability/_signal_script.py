"""Subprocess of test_signals.py: a tiny Trainer run that waits inside step ``STOP_AT`` to be signalled.

``python _signal_script.py OUT MARKER STOP_AT``: during step ``STOP_AT`` (1-based) the loss function
touches ``MARKER`` and waits (up to 60 s) until the Trainer has received the signal, so the parent's
SIGTERM/SIGINT lands mid-step; the Trainer then finishes that step, saves and returns. The hook lives
here, in the test, not in the library. Prints ``stopped_by=... step=... checkpoint=...``.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _reliability_helpers import loss_trainer, noisy_loss, toy_data, toy_model, train_cfg

out, marker, stop_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
CFG = {"max_steps": 10, "checkpoint_every": 100, "keep_last": 2}
trainer = None


def waiting_loss(model, batch):
    if trainer.step + 1 == stop_at:
        marker.touch()
        deadline = time.monotonic() + 60
        while trainer._stop.name is None and time.monotonic() < deadline:
            time.sleep(0.01)
    return noisy_loss(model, batch)


trainer = loss_trainer(toy_model(), waiting_loss, toy_data(), train_cfg(**CFG), out, config={}, progress=False)
result = trainer.run()
print(f"stopped_by={result.stopped_by} step={result.step} checkpoint={result.checkpoint}", flush=True)
