"""The small Fashion-MNIST classifier whose penultimate layer is ldmkit's default 28x28 feature space.

Trained by ``scripts/train_fmnist_features.py`` and shipped as ``ldmkit/assets/fmnist_features.safetensors``
with a JSON sidecar (architecture, version, test accuracy, training command). The architecture is fixed by
``ARCHITECTURE``; changing it means a new ``VERSION`` and a new asset, because FID values computed with
different feature networks cannot be compared.
"""

from __future__ import annotations

import torch
from torch import nn

VERSION = "fmnist-cnn-v1"
FEATURE_DIM = 128
NUM_CLASSES = 10
#: Channels of the three conv blocks (each conv3x3 -> BatchNorm -> ReLU -> maxpool 2).
CHANNELS = (16, 32, 64)
#: Whether the last block max-pools (7x7 -> 3x3) before the fully connected layer.
FINAL_POOL = False
ARCHITECTURE = (
    "input [N,1,28,28] in [-1,1]; 3 x (conv3x3 pad 1 (no bias) -> BatchNorm2d -> ReLU) with channels "
    f"{CHANNELS}, MaxPool2d 2 after the first two (28->14->7); flatten 64*7*7 -> Linear(3136,{FEATURE_DIM}) -> "
    f"ReLU = features; Dropout(0.2) -> Linear({FEATURE_DIM},{NUM_CLASSES}) = logits"
)


class FMNISTClassifier(nn.Module):
    """Three-block CNN; ``forward`` returns ``(features [N,128], logits [N,10])``.

    Inputs are ``[N, 1, 28, 28]`` images in ``[-1, 1]`` (the same scale the diffusion models use).
    """

    def __init__(self, channels: tuple[int, ...] = CHANNELS, final_pool: bool = FINAL_POOL,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if i < len(channels) - 1 or final_pool:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.body = nn.Sequential(*layers)
        side = 3 if final_pool else 7
        self.fc = nn.Linear(channels[-1] * side * side, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"FMNISTClassifier expects [N, 1, 28, 28] images, got shape {tuple(x.shape)}")
        h = self.body(x).flatten(1)
        features = torch.relu(self.fc(h))
        logits = self.head(self.dropout(features))
        return features, logits
