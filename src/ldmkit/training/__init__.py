"""The training engine: a generic loop, EMA, atomic safetensors checkpoints, torchrun data parallelism."""

from ldmkit.training.checkpoint import CheckpointError, latest_checkpoint, resolve_checkpoint
from ldmkit.training.data_order import DataOrder, TensorData
from ldmkit.training.ema import EMA
from ldmkit.training.loop import NonFiniteError, Trainer, TrainingError, TrainResult, lr_at

__all__ = ["EMA", "CheckpointError", "DataOrder", "NonFiniteError", "TensorData", "TrainResult", "Trainer",
           "TrainingError", "latest_checkpoint", "lr_at", "resolve_checkpoint"]
