"""Subprocess of test_crash.py: trains a toy model and hangs inside a chosen checkpoint phase.

The slow hook lives here, in the test, not in the library: it patches ldmkit's file writer (mode ``write``:
writes a torn file, then hangs) or its folder removal (mode ``prune``: hangs while deleting an old
checkpoint) and touches ``MARKER`` so that the parent knows when to SIGKILL.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _training_helpers import loss_trainer, noisy_loss, toy_data, toy_model, train_cfg

from ldmkit.training import checkpoint as ck

out, mode, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])


def hang():
    marker.touch()
    time.sleep(120)


if mode == "write":
    real_write = ck.write_tensors

    def torn_write(path, tensors):
        if ck.list_checkpoints(out):  # the first checkpoint is written normally, the second hangs
            Path(path).write_bytes(b"\x00" * 100)
            hang()
        real_write(path, tensors)

    ck.write_tensors = torn_write
elif mode == "prune":
    ck.shutil.rmtree = lambda path, ignore_errors=False: hang()

loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=10, checkpoint_every=2, keep_last=1), out,
        config={}, progress=False).run()
