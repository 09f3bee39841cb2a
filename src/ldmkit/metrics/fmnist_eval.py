"""The evaluation-only Fashion-MNIST classifier (``fmnist-eval-v2``), ldmkit's default 28x28 feature space.

It differs from ``fmnist-cnn-v1`` (``fmnist_cnn.py``, the network the perceptual loss uses) in architecture,
seed and training data: a 5x5 stem, wider blocks (32/64/128) and an *average pool to 2x2* instead of a
flattened 7x7 map, so its features see coarse quadrants rather than every position; trained on 55,000
training images (5,000 held out for validation) with seed 1. Keeping evaluation on a network no loss ever saw means a first
stage cannot lower its own FID by fitting the feature space that scores it.

Trained by ``scripts/train_fmnist_features.py --arch eval-v2`` and shipped as
``ldmkit/assets/fmnist_eval_v2.safetensors`` with a JSON sidecar (architecture, accuracies, sha256, command).
"""

from __future__ import annotations

import torch
from torch import nn

VERSION = "fmnist-eval-v2"
FEATURE_DIM = 128
NUM_CLASSES = 10
#: Channels of the three conv blocks; the first uses a 5x5 kernel, the others 3x3.
CHANNELS = (32, 64, 128)
#: Side of the adaptive average pool after the last block (7x7 -> POOL x POOL).
POOL = 2
ARCHITECTURE = (
    "input [N,1,28,28] in [-1,1]; conv5x5 pad 2 (no bias) -> BatchNorm2d -> ReLU -> MaxPool2d 2 (28->14); "
    "conv3x3 -> BN -> ReLU -> MaxPool2d 2 (14->7); conv3x3 -> BN -> ReLU; channels "
    f"{CHANNELS}; AdaptiveAvgPool2d {POOL} (7->{POOL}), flatten -> Linear({CHANNELS[-1] * POOL * POOL},{FEATURE_DIM}) "
    "-> ReLU = features; "
    f"Dropout(0.1) -> Linear({FEATURE_DIM},{NUM_CLASSES}) = logits"
)


class FMNISTEvalClassifier(nn.Module):
    """Three conv blocks + a 2x2 average pool; ``forward`` returns ``(features [N,128], logits [N,10])``."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS, dropout: float = 0.1) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False), nn.BatchNorm2d(c3), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(POOL)
        self.fc = nn.Linear(c3 * POOL * POOL, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"FMNISTEvalClassifier expects [N, 1, 28, 28] images, got shape {tuple(x.shape)}")
        h = self.pool(self.body(x)).flatten(1)
        features = torch.relu(self.fc(h))
        return features, self.head(self.dropout(features))
