"""Subprocess of test_signals.py: the real ``ldmkit train`` command (``ldmkit.cli.main``), with a hook that
holds step ``STOP_AT`` open until two signals have arrived.

``python _signal_cli_script.py CONFIG OUT FIRST SECOND STOP_AT``: during step ``STOP_AT`` (1-based),
``Trainer._train_step`` (wrapped here, in the test, not in the library) touches ``FIRST`` and waits until the
Trainer has received a signal, then touches ``SECOND`` and waits (up to 30 s) for the parent's second signal,
which the library turns into ``KeyboardInterrupt``. Exits with ``main``'s code (130 expected).
"""

import sys
import time
from pathlib import Path

from ldmkit.cli import main
from ldmkit.training import loop

config, out, first, second, stop_at = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
real_step = loop.Trainer._train_step


def held_step(self):
    if self.step + 1 == stop_at:
        first.touch()
        deadline = time.monotonic() + 60
        while self._stop.name is None and time.monotonic() < deadline:
            time.sleep(0.01)
        second.touch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the second signal raises KeyboardInterrupt in here
            time.sleep(0.01)
    return real_step(self)


loop.Trainer._train_step = held_step
sys.exit(main(["train", config, "--out", out, "--no-progress"]))
