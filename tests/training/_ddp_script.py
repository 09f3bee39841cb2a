"""Run under ``torchrun --nproc_per_node=2`` by test_distributed.py: a few DDP steps on gloo (CPU)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _training_helpers import loss_trainer, plain_loss, toy_data, toy_model, train_cfg

from ldmkit.training.distributed import init_distributed, shutdown

info = init_distributed("cpu")
assert info.world_size == 2, info
cfg = train_cfg(max_steps=6, checkpoint_every=3, grad_accum=int(sys.argv[2]))
loss_trainer(toy_model(), plain_loss, toy_data(), cfg, sys.argv[1], config={"x": 1}, dist=info, progress=False).run()
shutdown(info)
