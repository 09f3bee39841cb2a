"""Run under ``torchrun --nproc_per_node=2`` by test_distributed.py: a few DDP steps on gloo (CPU)."""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _training_helpers import loss_trainer, plain_loss, toy_data, toy_model, train_cfg
from torch.nn.parallel import DistributedDataParallel

from ldmkit.training.distributed import init_distributed, shutdown

info = init_distributed("cpu")
assert info.world_size == 2, info
cfg = train_cfg(max_steps=6, checkpoint_every=3, grad_accum=int(sys.argv[2]))
trainer = loss_trainer(toy_model(), plain_loss, toy_data(), cfg, sys.argv[1], config={"x": 1}, dist=info, progress=False)
trainer.run()
gc.collect()
# no DDP wrapper (which holds the process group) outlives run(), while the trainer lives on: a group left to
# the collector at interpreter exit aborts gloo's threads (SIGABRT, seen in about 1 run in 15)
assert not any(isinstance(o, DistributedDataParallel) for o in gc.get_objects()), "a DDP wrapper outlived run()"
shutdown(info)
