"""Checkpoints as safetensors plus JSON, written atomically; pickle is never written nor loaded.

A run directory holds ``checkpoints/step_0000100/`` folders, each complete on its own:

- ``config.json``: ``{"format_version", "ldmkit_version", "step", "config": {...}}``; rebuilds the model.
- one ``NAME.safetensors`` per tensor group of the train step: ``model.safetensors`` (rebuilds the model
  with ``config.json`` alone), ``ema.safetensors``, ``discriminator.safetensors``, ``loss_fn.safetensors``
  (e.g. a timestep sampler's loss history), ...
- one ``NAME.safetensors`` per optimizer (``optimizer``, ``disc_optimizer``) + its entry in
  ``state.json["optimizers"]``: optimizer tensors and hyper-parameters.
- ``rng.safetensors`` + ``state.json``: step, data position, elapsed time, RNG states (torch, numpy, python).

``config.json["files"]`` records each other file's size and sha256, so a truncated or bit-flipped file is
named on load (:func:`read_checkpoint_tensors`) instead of loading wrong numbers. Weights with NaN/Inf are
never written (:func:`save_checkpoint` refuses them) and a write error (a full disk) removes the temporary
folder and says that the previous checkpoint is intact.

A checkpoint folder is written under a temporary name and renamed into place only once every file is
flushed to disk, so a folder named ``step_*`` is always complete: a crash mid-write leaves only a
``.tmp-*`` folder, which the next save removes. Old checkpoints beyond ``keep_last`` are first renamed
away (atomically) and then deleted, and only after the new one is in place.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldmkit.training.files import (  # noqa: F401 (the checkpoint API re-exports the file layer)
    CheckpointError,
    CheckpointWriteError,
    NonFiniteWeightsError,
    _file_record,
    _fsync_dir,
    _fsync_file,
    _safetensors_problem,
    non_finite,
    read_checkpoint_tensors,
    read_json,
    read_tensors,
    require_finite,
    verify_file,
    write_json,
    write_tensors,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


# ----------------------------------------------------------------------------------------------- paths
def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (temporary and half-deleted ones are skipped)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint folder or a run folder (-> its latest checkpoint), or a shipped model's registry
    name (``ldmkit.zoo``)."""
    from ldmkit.zoo import resolve

    p = resolve(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if p.is_file():
        if p.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(f"{p}: pickle checkpoints are not loaded (security); ldmkit reads "
                                  "checkpoint folders with model.safetensors + config.json")
        raise CheckpointError(f"{p}: expected a checkpoint folder (with config.json) or a run folder")
    if (p / "config.json").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        pickles = sorted(q.name for q in p.iterdir() if q.suffix in PICKLE_SUFFIXES)
        hint = f" (found {pickles}: pickle checkpoints are not loaded)" if pickles else ""
        raise CheckpointError(f"{p}: neither a checkpoint folder (no config.json) nor a run folder with "
                              f"complete checkpoints under {CHECKPOINTS}/{hint}")
    return latest


# ----------------------------------------------------------------------------- optimizer / rng states
def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into flat tensors and JSON-able hyper-parameters."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """RNG states of torch (CPU and accelerator), numpy and Python's ``random``."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
    if acc is not None and acc.type == "cuda" and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    npm = meta["numpy"]
    np.random.set_state((npm["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), npm["pos"],
                         npm["has_gauss"], npm["cached"]))
    pym = meta["python"]
    random.setstate((pym["version"], tuple(pym["state"]), pym["gauss"]))


# -------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    config: dict,
    tensors: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, dict] | None = None,
    train_state: dict | None = None,
    meta: dict | None = None,
    keep_last: int = 3,
) -> Path:
    """Write ``run_dir/checkpoints/step_XXXXXXX`` atomically, then prune to the ``keep_last`` newest.

    Args:
        config: the full run configuration (JSON-able); stored in ``config.json``.
        tensors: named tensor groups, each saved as ``NAME.safetensors`` when not empty (``model`` is required:
            it rebuilds the model with ``config.json`` alone; ``ema``, ``discriminator``, ``loss_fn``, ...).
        optimizers: named ``optimizer.state_dict()``s: tensors in ``NAME.safetensors``, the rest in
            ``state.json["optimizers"][NAME]``.
        train_state: JSON-able loop state (data position, elapsed time, ...); RNG states are added here.
        meta: more top-level keys of ``config.json`` (e.g. an autoencoder's ``kind`` and ``scale_factor``).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 (never zero checkpoints), got {keep_last}")
    if not tensors.get("model"):
        raise ValueError("save_checkpoint: the 'model' tensor group is required")
    clash = sorted(set(tensors) & (set(optimizers or {}) | {"rng"}))
    if clash:
        raise ValueError(f"save_checkpoint: names {clash} are used twice (tensor groups, optimizers, 'rng')")
    from ldmkit import __version__

    root = Path(run_dir) / CHECKPOINTS
    previous = latest_checkpoint(run_dir)
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    opt_tensors = {name: optimizer_to_tensors(o) for name, o in (optimizers or {}).items()}
    bad = [f"{group}: {t}" for group, ts in [*tensors.items(), *((n, ot[0]) for n, ot in opt_tensors.items())]
           for t in non_finite(ts or {})]
    if bad:  # never write weights that cannot be sampled from nor resumed
        raise NonFiniteWeightsError(f"refusing to save {checkpoint_name(step)}: non-finite weights in "
                                    f"{bad[0]}{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''}; "
                                    f"{kept}")
    root.mkdir(parents=True, exist_ok=True)
    _remove_debris(root)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        _write_folder(tmp, step, config, tensors, opt_tensors, train_state, meta, __version__)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written folder behind
        if isinstance(e, OSError):
            why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "a write failed"
            raise CheckpointWriteError(f"cannot write checkpoint {final} ({why}: {e}); nothing was saved "
                                       f"and {kept}") from e
        raise
    if final.exists():  # re-saving the same step (e.g. after a resume): move the old one out of the way
        _discard(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        _discard(old)
    return final


def _write_folder(tmp: Path, step: int, config: dict, tensors: dict, opt_tensors: dict, train_state: dict | None,
                  meta: dict | None, version: str) -> None:
    """Every file of one checkpoint into ``tmp``, ``config.json`` (with each other file's record) last."""
    tmp.mkdir()
    for name, group in tensors.items():
        if group:
            write_tensors(tmp / f"{name}.safetensors", group)
    state_json: dict[str, Any] = {"step": step, "format_version": FORMAT_VERSION, "optimizers": {}}
    for name, (o_tensors, o_meta) in opt_tensors.items():
        state_json["optimizers"][name] = o_meta
        write_tensors(tmp / f"{name}.safetensors", o_tensors)
    rng_tensors, state_json["rng"] = capture_rng()
    write_tensors(tmp / "rng.safetensors", rng_tensors)
    state_json["train"] = train_state or {}
    write_json(tmp / "state.json", state_json)
    files = {p.name: _file_record(p) for p in sorted(tmp.iterdir())}
    # config.json last: a reader that finds it knows the rest is there even without the rename guarantee.
    write_json(tmp / "config.json", {**(meta or {}), "format_version": FORMAT_VERSION, "ldmkit_version": version,
                                     "step": step, "config": config, "files": files})
    _fsync_dir(tmp)


def _discard(path: Path) -> None:
    """Rename away first (atomic), so a half-deleted folder never carries a ``step_*`` name."""
    trash = path.with_name(f".del-{path.name}-{os.getpid()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_debris(root: Path) -> None:
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".del-")):
            shutil.rmtree(p, ignore_errors=True)


def _check_version(path: Path, version: Any) -> None:
    if version == FORMAT_VERSION:
        return
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version} is not supported: it is newer than the "
                              f"version this ldmkit reads ({FORMAT_VERSION}); upgrade ldmkit to load it")
    raise CheckpointError(f"{path}: format_version {version!r} is not supported "
                          f"(this ldmkit reads version {FORMAT_VERSION})")


def load_checkpoint_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a checkpoint (folder or run folder), format version checked."""
    ckpt = resolve_checkpoint(path)
    meta = read_json(ckpt / "config.json")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{ckpt / 'config.json'}: expected a JSON object, got {type(meta).__name__}")
    _check_version(ckpt / "config.json", meta.get("format_version"))
    if "config" not in meta:
        raise CheckpointError(f"{ckpt / 'config.json'}: missing key 'config'")
    return meta


def load_training_state(ckpt: Path) -> dict:
    """Everything needed to resume: ``{"step", "train", "rng", "optimizers": {NAME: state_dict}, GROUP: tensors}``
    with one entry per tensor group written by :func:`save_checkpoint` (``model``, ``ema``, ...).

    Every file is read (and checked against ``config.json["files"]``) before anything is returned, so a
    caller that applies the result only after this returns never loads part of a checkpoint.

    Raises:
        CheckpointError: naming the file and key that is missing, truncated or corrupt.
    """
    meta = read_json(ckpt / "config.json") if (ckpt / "config.json").is_file() else {}
    state = read_json(ckpt / "state.json")
    where = ckpt / "state.json"
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(state).__name__}")
    _check_version(where, state.get("format_version"))
    for key in ("step", "rng"):
        if key not in state:
            raise CheckpointError(f"{where}: missing key {key!r} (needed to resume)")
    for name in sorted((meta.get("files") or {}) if isinstance(meta, dict) else {}):
        if not (ckpt / name).is_file():
            raise CheckpointError(f"{ckpt / name}: file missing (config.json records it; needed to resume)")
    opt_meta = dict(state.get("optimizers", {}))
    if "optimizer" in state:  # written before optimizers were named (ldmkit <= 0.1 diffusion runs)
        opt_meta["optimizer"] = state["optimizer"]

    def tensors(name: str) -> dict[str, torch.Tensor]:
        return read_checkpoint_tensors(ckpt, name, meta if isinstance(meta, dict) else None)

    try:
        out: dict[str, Any] = {"step": int(state["step"]), "train": state.get("train", {}),
                               "rng": (tensors("rng.safetensors"), state["rng"]),
                               "optimizers": {name: optimizer_from_tensors(tensors(f"{name}.safetensors"), m)
                                              for name, m in opt_meta.items()}}
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: malformed entry ({type(e).__name__}: {e})") from e
    for path in sorted(ckpt.glob("*.safetensors")):
        if path.stem not in opt_meta and path.stem != "rng":
            out[path.stem] = tensors(path.name)
    if "model" not in out:
        raise CheckpointError(f"{ckpt / 'model.safetensors'}: file missing")
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists are leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_differences(old: dict, new: dict, sections: tuple[str, ...] | None = None,
                       defaults: dict | None = None) -> list[str]:
    """Dotted keys whose values differ (``"unet.channels: 32 -> 64"``), restricted to keys equal to or
    under one of ``sections`` (dotted prefixes such as ``"unet"`` or ``"data.pad_to"``). A key that ``old``
    lacks (a checkpoint written before the key existed) counts as its value in ``defaults``, if given."""
    fo, fn = flatten(old), flatten(new)
    if defaults is not None:
        fo = {**{k: v for k, v in flatten(defaults).items() if not _has_prefix(fo, k)}, **fo}
    keys = sorted(set(fo) | set(fn))
    if sections is not None:
        keys = [k for k in keys if any(k == s or k.startswith(s + ".") for s in sections)]
    missing = object()
    diffs = []
    for k in keys:
        a, b = fo.get(k, missing), fn.get(k, missing)
        if a != b:
            fa = "(absent)" if a is missing else json.dumps(a)
            fb = "(absent)" if b is missing else json.dumps(b)
            diffs.append(f"{k}: {fa} -> {fb}")
    return diffs


def _has_prefix(flat: dict, key: str) -> bool:
    """Whether ``flat`` holds ``key`` or a key above it (``"cond"`` set to null covers ``"cond.text.width"``)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in flat for i in range(1, len(parts) + 1))
