"""Multi-process data-parallel training under ``torchrun`` (torch.distributed DDP).

``torchrun --nproc_per_node=K ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed`
reads them and joins the process group with gloo on CPU or NCCL on CUDA (on a store prefix of its own for
each elastic restart, so a group restarted by ``--max-restarts`` never meets its killed predecessor's keys). Every rank walks the same
deterministic data order (:mod:`ldmkit.training.data_order`) and takes its own slice of each global
batch, like ``DistributedSampler``; only rank 0 logs, samples and writes checkpoints.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> the current accelerator (one per local rank) if any, else CPU; otherwise ``name``."""
    if name == "auto":
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        if acc is None:
            return torch.device("cpu")
        return torch.device(acc.type, local_rank)
    device = torch.device(name)
    if device.type != "cpu" and device.index is None:
        device = torch.device(device.type, local_rank)
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=_attempt_store(int(restart)), rank=rank,
                                    world_size=world_size)
        log.info("rank %d/%d joined the %s process group on %s%s", rank, world_size, backend, dev,
                 f" (elastic restart {restart})" if restart not in (None, "0") else "")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _attempt_store(restart: int) -> dist.Store:
    """torchrun's store with a key prefix of its own for each elastic attempt.

    torchrun (c10d rendezvous) hands every attempt the same agent-hosted TCPStore, so the keys a process
    group writes there (gloo's peer addresses, NCCL's unique id) outlive a killed attempt: a restarted rank
    may read its dead peer's address and fail ("connectFullMesh failed ... Connection refused") or hang.
    A fresh prefix per ``TORCHELASTIC_RESTART_COUNT`` makes each attempt see only its own keys.
    """
    store, _, _ = next(dist.rendezvous("env://"))
    return dist.PrefixStore(f"ldmkit/attempt_{restart}/", store)


def shutdown(info: DistInfo) -> None:
    """Leave the process group. Modules that still hold it (a DDP wrapper in a reference cycle) are
    collected first, so its gloo threads end now and not during interpreter exit, where they abort."""
    if info.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP-wrap ``model`` when running on several processes (identity otherwise)."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks of a float tensor (returns a new tensor; identity on one process)."""
    if not info.distributed:
        return values
    out = values.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def max_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    """The element-wise maximum of ``values`` over ranks (one all-reduce; identity on one process)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on at least one rank (so all ranks take the same branch)."""
    return max_over_ranks([1.0 if flag else 0.0], info)[0] > 0


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
