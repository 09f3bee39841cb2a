"""The training engine: one Trainer over train steps, EMA, atomic safetensors checkpoints, torchrun DDP."""

from ldmkit.training.checkpoint import CheckpointError, latest_checkpoint, resolve_checkpoint
from ldmkit.training.config import TrainConfig
from ldmkit.training.data_order import DataOrder, TensorData
from ldmkit.training.ema import EMA
from ldmkit.training.loop import NonFiniteError, RunFolderError, Trainer, TrainingError, TrainResult, lr_at
from ldmkit.training.steps import GANStep, LossStep, TrainStep

__all__ = ["EMA", "CheckpointError", "DataOrder", "GANStep", "LossStep", "NonFiniteError", "RunFolderError", "TensorData",
           "TrainConfig", "TrainResult", "TrainStep", "Trainer", "TrainingError", "latest_checkpoint", "lr_at",
           "resolve_checkpoint"]
