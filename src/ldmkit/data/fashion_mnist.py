"""Fashion-MNIST (Xiao et al. 2017) read from its four IDX ``.gz`` files."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ldmkit.data.transforms import center_padding
from ldmkit.registry import lookup

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
SIZE = 28  # the images' own side
ENV_VAR = "LDMKIT_FMNIST_DIR"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
INSTALL_HINT = (
    "Install it with 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or download the four IDX "
    "files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    f"t10k-labels-idx1-ubyte.gz) into a directory and set {ENV_VAR} to it (or the config's data.root)."
)


def resolve_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory holding the IDX files: ``root``, else ``$LDMKIT_FMNIST_DIR``, else the Debian path."""
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read IDX file ({e})") from e
    if len(data) < 4:
        raise ValueError(f"{path}: IDX file is truncated (only {len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expected_dims:
        raise ValueError(f"{path}: not an unsigned-byte IDX file with {expected_dims} dims "
                         f"(header: type 0x{dtype_code:02x}, {ndim} dims)")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: IDX body has {body.size} bytes, header promises shape {shape}")
    return body.reshape(shape)


def load_fashion_mnist_arrays(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as uint8 images ``[N, 28, 28]`` and int64 labels ``[N]``.

    Raises:
        FileNotFoundError: when a file is missing, with installation instructions.
        ValueError: for an unknown split or a malformed file.
    """
    img_name, lbl_name = lookup(FILES, split, "Fashion-MNIST split")
    directory = resolve_dir(root)
    for name in (img_name, lbl_name):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"Fashion-MNIST file {directory / name} not found. {INSTALL_HINT}")
    images = _read_idx(directory / img_name, 3)
    labels = _read_idx(directory / lbl_name, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{directory}: {len(images)} images but {len(labels)} labels in split {split!r}")
    return images, labels


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as float images in [-1, 1], shape ``[1, S, S]`` (S = 28, or 32 with ``pad_to=32``).

    ``pad_to`` centres the 28x28 images on a background (-1) canvas; ``padding`` says what was added.

    Items are ``(image, label)``. The whole split lives in memory (47 MB as uint8 for train).
    """

    class_names = CLASS_NAMES
    channels = 1

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, pad_to: int | None = None):
        images, labels = load_fashion_mnist_arrays(split, root)
        self.split = split
        self.images_uint8 = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels.copy())
        self.padding = center_padding(SIZE, pad_to)
        self.images_uint8 = dataclasses.replace(self.padding, value=0).pad(self.images_uint8)  # uint8 0 = -1
        self.size = self.images_uint8.shape[-1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images_uint8[i][None].float().div(127.5).sub(1.0), int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``[N, 1, S, S]`` in [-1, 1] and labels ``[N]`` at once (fast path for training)."""
        return self.images_uint8[:, None].float().div(127.5).sub(1.0), self.labels
