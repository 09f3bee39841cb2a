"""The one verified-weights loader: a local safetensors file whose sha256 is checked before it is read.

ldmkit never downloads weights and never unpickles anything. Every pretrained network it uses (the perceptual
loss's feature networks, the metrics' feature extractors) loads its tensors through
:func:`load_verified_safetensors`, which

1. refuses a missing file (the error names it and tells how to obtain one, ``howto``),
2. refuses a pickle / ``torch.save`` file by its suffix or its first bytes (whatever its suffix),
3. hashes the file in 1 MiB chunks and refuses a digest other than the expected one (the error names the file,
   the expected and the actual hash); without an expected hash it refuses too, showing the digest to pin,
   unless ``allow_unverified`` (then it logs a warning and the caller records the digest),
4. reads the tensors with ``safetensors`` (a malformed file is a ``ValueError`` naming it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format: a pickle inside
_PICKLE_PROTOCOL = b"\x80"  # pickle protocols 2-5 start with PROTO (0x80)
PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".bin")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _refuse_non_safetensors(path: Path, what: str, howto: str) -> None:
    """Pickle (raw or inside torch's zip) and anything without a safetensors header are refused unread."""
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix.lower() in PICKLE_SUFFIXES or head.startswith((_ZIP_MAGIC, _PICKLE_PROTOCOL)):
        raise ValueError(f"{what}: {path} is a pickle / torch.save file; ldmkit never loads pickle. Convert it to "
                         f"safetensors first.\n{howto}".rstrip())
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > path.stat().st_size:
        raise ValueError(f"{what}: {path} is not a safetensors file (no safetensors header).\n{howto}".rstrip())


def load_verified_safetensors(path: str | os.PathLike, sha256: str | None, what: str, *, howto: str = "",
                              allow_unverified: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a safetensors file whose sha256 is ``sha256`` (case-insensitive), and that digest.

    Args:
        path: the local ``.safetensors`` file.
        sha256: expected hex digest; ``None`` refuses the file (the message shows its digest) unless
            ``allow_unverified``.
        what: what the weights are, for messages ("LPIPS-VGG", "FID Inception weights" ...).
        howto: how to obtain or convert the file; appended to every error.
        allow_unverified: with ``sha256=None``, load anyway and log a warning (the caller records the digest).

    Returns:
        ``(tensors on the CPU, actual sha256 hex digest)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: pickle file, not safetensors, no expected hash, or a hash mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weights file {path} not found.\n{howto}".rstrip())
    _refuse_non_safetensors(path, what, howto)
    actual = sha256_file(path)
    if sha256 is None:
        if not allow_unverified:
            raise ValueError(f"{what}: no sha256 given for {path}; its sha256 is {actual}. After checking that "
                             f"this is the file you meant, pass that digest.\n{howto}".rstrip())
        log.warning("%s %s not verified (no expected sha256 given); its sha256 is %s", what, path, actual)
    elif actual != sha256.strip().lower():
        raise ValueError(f"{what}: sha256 mismatch for {path}: expected {sha256.strip().lower()}, file has "
                         f"{actual}. Wrong or damaged file.\n{howto}".rstrip())
    try:
        return load_file(str(path)), actual
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({e}).\n{howto}".rstrip()) from e
