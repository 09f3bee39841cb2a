"""The file layer of checkpoints: durable writes (fsync), safetensors and JSON read with named errors, the
size + sha256 record that catches truncated or bit-flipped files, and the NaN/Inf check of weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ldmkit.weights import sha256_file


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, of an unknown format, or does not fit the run."""


class NonFiniteWeightsError(CheckpointError):
    """Tensors holding NaN/Inf: never written by :func:`save_checkpoint`, never loaded for sampling."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (e.g. a full disk); the temporary folder was removed and the previous
    checkpoint is untouched."""


# --------------------------------------------------------------------------------------- file helpers
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save tensors to a safetensors file (contiguous CPU copies; shared storage is fine)."""
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))
    os.chmod(path, 0o644)  # safetensors creates files owner-only; checkpoints are meant to be shared
    _fsync_file(path)


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with the layout of a would-be safetensors file, or ``None``: pickle/zip, empty,
    truncated header or data, a header that is not JSON. Reads only the header."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(9)
        # A safetensors file is an 8-byte little-endian header length, then a JSON header. Its first byte is
        # the length's low byte and may well be 0x80 (a pickle's first byte), so test the JSON brace first.
        if head[8:9] != b"{":
            if head[:1] == b"\x80" or head[:2] == b"PK":
                return "a pickle/zip file; only safetensors are loaded (pickle is never unpickled)"
            if len(head) < 9:
                return f"truncated ({size} bytes; a safetensors file starts with an 8-byte header length)"
            return "not a safetensors file (no JSON header); only safetensors are loaded"
        header_len = int.from_bytes(head[:8], "little")
        if 8 + header_len > size:
            return f"truncated: the header says {header_len} bytes but the file has {size} bytes in all"
        f.seek(8)
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        return f"corrupt header ({type(e).__name__}: {e})"
    data_end = 8 + header_len + max(ends, default=0)
    if data_end > size:
        return f"truncated: the tensors end at byte {data_end} but the file has {size} bytes"
    return None


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file, refusing anything else (pickle in particular) with a clear message.

    Raises:
        CheckpointError: naming the file and what is wrong (missing, empty, truncated, corrupt, pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file missing")
    problem = _safetensors_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def verify_file(ckpt: Path, name: str, meta: dict | None) -> None:
    """Check ``ckpt/name`` against ``config.json["files"]`` (size, then sha256); checkpoints written before
    files were recorded are not checked.

    Raises:
        CheckpointError: the file is missing, of the wrong size (truncated) or its content changed (corrupt).
    """
    path = ckpt / name
    record = ((meta or {}).get("files") or {}).get(name)
    if not path.is_file():
        raise CheckpointError(f"{path}: file missing")
    problem = _safetensors_problem(path)  # first: a pickle, an empty or truncated file gets its own words
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    if not isinstance(record, dict):
        return
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes; config.json records {record.get('bytes')})")
    if size != record.get("bytes"):
        raise CheckpointError(f"{path}: {size} bytes, but config.json records {record.get('bytes')} "
                              "(truncated or replaced file)")
    actual = sha256_file(path)
    if actual != record.get("sha256"):
        raise CheckpointError(f"{path}: corrupt content (sha256 {actual[:16]}..., config.json records "
                              f"{str(record.get('sha256'))[:16]}...)")


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf, each with its count of bad values."""
    bad = []
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            n = int(t.numel() - torch.isfinite(t.detach()).sum())
            if n:
                bad.append(f"{name} ({n} of {t.numel()} values NaN/Inf)")
    return bad


def require_finite(tensors: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Refuse tensors holding NaN/Inf, naming ``where`` (the file) and the tensors.

    Raises:
        NonFiniteWeightsError
    """
    bad = non_finite(tensors)
    if bad:
        raise NonFiniteWeightsError(f"{where}: non-finite weights in tensor {bad[0]}"
                                    + (f" and {len(bad) - 1} more ({', '.join(b.split(' ')[0] for b in bad[1:4])}"
                                       f"{', ...' if len(bad) > 4 else ''})" if len(bad) > 1 else "")
                                    + "; refusing to use them (the training run diverged or the file is damaged)")


def read_checkpoint_tensors(ckpt: Path, name: str, meta: dict | None = None, *,
                            finite: bool = False) -> dict[str, torch.Tensor]:
    """``ckpt/name`` verified against ``config.json["files"]`` (see :func:`verify_file`) and loaded; with
    ``finite`` also refused if any tensor holds NaN/Inf (loading for sampling)."""
    verify_file(ckpt, name, meta)
    tensors = read_tensors(ckpt / name)
    if finite:
        require_finite(tensors, ckpt / name)
    return tensors


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file missing") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
