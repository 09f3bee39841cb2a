"""The one training engine: it runs any *train step* (:mod:`ldmkit.training.steps`) and knows nothing else.

Every run gets: linear warm-up then constant or cosine learning rate (scaling each optimizer's own base
rate); gradient accumulation and clipping; an EMA if the step keeps one; optional bf16 autocast and
``torch.compile``; a guard that stops before the optimizer step on a NaN/Inf loss or gradient;
``metrics.jsonl``, a loss-curve PNG and periodic preview grids (drawn by a callback, from the EMA weights
when there are any); a wall-clock budget; atomic checkpoints with keep-last-N; torchrun data parallelism;
a clean stop on SIGTERM/SIGINT (finish the step, save, return) and all-or-nothing resume.

Exact resume: the data order is a pure function of ``(seed, epoch)`` and the loop re-seeds torch's global
RNG before every micro-batch from ``(seed, step, micro-batch, rank)``, so whatever the loss function draws
(timesteps, noise, dropout) depends only on where the run is, never on what happened before. Together with
the saved weights, EMA and optimizer tensors, a resumed CPU run reproduces the uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ldmkit.training import checkpoint as ckpt_io
from ldmkit.training.config import TrainConfig, lr_at
from ldmkit.training.data_order import DataOrder, as_batch_source, mix_seed, to_device
from ldmkit.training.distributed import DistInfo, any_rank, barrier, max_over_ranks, wrap_model
from ldmkit.training.logbook import MetricsWindow, append_row, truncate_after
from ldmkit.training.plot import plot_loss_curve
from ldmkit.training.signals import StopRequest
from ldmkit.training.steps import TrainStep
from ldmkit.types import Batch

log = logging.getLogger(__name__)

SampleFn = Callable[[torch.nn.Module, int], Any]


class TrainingError(RuntimeError):
    """The run cannot start or continue (existing checkpoints, changed model config, bad batch split)."""


class RunFolderError(TrainingError):
    """The run folder does not fit the request: checkpoints without ``--resume``, ``--resume`` without
    checkpoints, or a resumed run whose model config changed (a usage error: the user picks another folder)."""


class NonFiniteError(TrainingError):
    """A NaN/Inf loss or gradient; raised before the optimizer step, so the weights are unchanged."""


@dataclass
class TrainResult:
    """``stopped_by``: why the run ended before ``max_steps`` ("SIGTERM", "SIGINT", "max_minutes"), or None."""

    step: int
    checkpoint: Path | None
    elapsed_s: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    stopped_by: str | None = None


class Trainer:
    """Runs ``cfg.max_steps`` steps of ``train_step`` on ``data``, writing to ``out_dir``.

    Args:
        train_step: a :class:`~ldmkit.training.steps.TrainStep` (its modules are moved to the device).
        data: a :class:`~ldmkit.training.data_order.BatchSource` or a map-style dataset of (image, label).
        cfg: the ``train`` section.
        out_dir: run folder: ``checkpoints/``, ``samples/``, ``metrics.jsonl``, ``loss.png``.
        config: the full run config (JSON-able), stored in every checkpoint's ``config.json``.
        sample_fn: ``sample_fn(module, step) -> PIL image or uint8 array`` for periodic preview grids; gets
            the EMA module if the step keeps one, else ``modules["model"]``.
        model_sections: dotted config keys a resumed run may not change.
        checkpoint_meta: more top-level keys of every checkpoint's ``config.json``.
    """

    def __init__(self, train_step: TrainStep, data: Any, cfg: TrainConfig, out_dir: str | Path, *,
                 config: dict, sample_fn: SampleFn | None = None, dist: DistInfo | None = None,
                 progress: bool = True, model_sections: tuple[str, ...] = (), checkpoint_meta: dict | None = None,
                 config_defaults: dict | None = None, resume_hint: str | None = None):
        self.dist = dist or DistInfo()
        # how the user continues a run that stopped early (logged then); callers such as train-ldm pass their own
        self.resume_hint = resume_hint or "the same command plus --resume"
        self.cfg, self.train_step = cfg, train_step
        self.config = json.loads(json.dumps(config))  # as stored (tuples -> lists), for resume comparisons
        # what a key missing from an older checkpoint's config means (its default when it was written)
        self.config_defaults = None if config_defaults is None else json.loads(json.dumps(config_defaults))
        self.data = as_batch_source(data)
        self.out_dir = Path(out_dir)
        self.sample_fn, self.progress, self.model_sections = sample_fn, progress, model_sections
        self.checkpoint_meta = dict(checkpoint_meta or {})
        self.device = self.dist.device
        world = self.dist.world_size
        if cfg.batch_size % (cfg.grad_accum * world):
            raise TrainingError(f"train.batch_size={cfg.batch_size} must be divisible by train.grad_accum "
                                f"({cfg.grad_accum}) x processes ({world})")
        self.order = DataOrder(len(self.data), cfg.batch_size // cfg.grad_accum, cfg.seed,
                               self.dist.rank, world)
        self.modules = train_step.modules
        for module in self.modules.values():
            module.to(self.device)  # in place: the step's optimizers keep their parameters
        self.wrapped: dict[str, torch.nn.Module] = {}  # filled for the length of run()
        self.ema = train_step.ema
        if self.ema is not None:
            self.ema.module.to(self.device)
        self.optimizers = train_step.optimizers
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.autocast = cfg.bf16
        if cfg.bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            log.warning("train.bf16: this GPU has no bfloat16 support; training in float32")
            self.autocast = False
        self.step, self.consumed, self.elapsed = 0, 0, 0.0
        self.time_progress = 0.0  # spent fraction of the max_minutes budget (cosine_deadline), shared by all ranks
        self.lr_used = cfg.lr  # the learning rate of the last update (logged)
        self.last_checkpoint: Path | None = None
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self._batches: dict[int, Batch] = {}
        self._indices: dict[int, torch.Tensor] = {}
        self._phase = 0
        self.grad_norms: dict[str, float] = {}
        self._stop = StopRequest()

    def _wrap(self) -> None:
        """The trainable modules as the train step calls them during ``run()``: DDP-wrapped on several
        processes (DDP broadcasts rank 0's weights here), compiled when ``train.compile``."""
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.wrapped[name] = wrap_model(module, self.dist)
        if self.cfg.compile and "model" in self.wrapped:
            self.wrapped["model"] = torch.compile(self.wrapped["model"])

    @property
    def model(self) -> torch.nn.Module:
        """The step's main module (``modules["model"]``)."""
        return self.modules["model"]

    # ------------------------------------------------------------------------------------ set-up
    def _prepare(self, resume: bool | str) -> None:
        latest = ckpt_io.latest_checkpoint(self.out_dir)
        if resume == "auto":  # an elastic restart runs the same command every attempt
            resume = latest is not None
        if latest is not None and not resume:
            raise RunFolderError(f"{self.out_dir} already holds checkpoint {latest.name}; pass --resume to "
                                "continue that run, or choose another --out")
        if resume:
            if latest is None:
                raise RunFolderError(f"--resume: no complete checkpoint under {self.out_dir / ckpt_io.CHECKPOINTS}")
            self._load(latest)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            truncate_after(self.metrics_path, self.step)
        barrier(self.dist)

    def _load(self, ckpt: Path) -> None:
        saved = ckpt_io.load_checkpoint_config(ckpt)["config"]
        changed = ckpt_io.config_differences(saved, self.config, self.model_sections, self.config_defaults)
        if changed:
            raise RunFolderError(f"cannot resume {ckpt}: the model config changed ({'; '.join(changed)}); "
                                "restore these keys or start a new run in another --out")
        other = ckpt_io.config_differences(saved, self.config, defaults=self.config_defaults)
        if other:
            log.info("resuming with changed settings: %s", "; ".join(other))
        state = ckpt_io.load_training_state(ckpt)  # reads and checks every file; applies nothing
        self._check_complete(ckpt, state)
        snapshot = self._snapshot()
        try:  # apply all or nothing: a piece that does not fit puts every earlier piece back
            for name, module in self.modules.items():
                module.load_state_dict(state[name])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            self.train_step.load_state_dict(state)
            ckpt_io.restore_rng(*state["rng"])
        except Exception as e:
            self._restore(snapshot)
            why = " ".join(str(e).split())  # torch's load_state_dict message spans lines
            raise ckpt_io.CheckpointError(f"cannot resume from {ckpt}: {why}; nothing was loaded") from e
        self.step = state["step"]
        train = state["train"]
        self.elapsed = float(train.get("elapsed_s", 0.0))
        consumed, old_gb = int(train.get("consumed_batches", 0)), int(train.get("global_micro_batch", 0))
        if old_gb and old_gb != self.order.global_batch:
            log.warning("the per-micro-step batch changed (%d -> %d): the data order restarts at the next "
                        "epoch and the resume is not exact", old_gb, self.order.global_batch)
            epoch = consumed * old_gb // (self.order.batches_per_epoch * self.order.global_batch) + 1
            consumed = epoch * self.order.batches_per_epoch
        self.consumed = consumed
        self.last_checkpoint = ckpt
        log.info("resumed from %s (step %d)", ckpt, self.step)

    def _check_complete(self, ckpt: Path, state: dict) -> None:
        """Every piece this run needs is in the checkpoint: one group per module, the EMA, each optimizer,
        the RNG states and the data position (a missing piece is an error, never a silent default)."""
        needed = [*self.modules, *(["ema"] if self.ema is not None else [])]
        for name in needed:
            if name not in state:
                raise ckpt_io.CheckpointError(f"{ckpt / (name + '.safetensors')}: file missing (needed to resume)")
        for name in self.optimizers:
            if name not in state["optimizers"]:
                raise ckpt_io.CheckpointError(f"{ckpt / 'state.json'}: no state for optimizer {name!r} "
                                              f"(has {sorted(state['optimizers'])}; needed to resume)")
        missing = [k for k in ("consumed_batches", "global_micro_batch", "elapsed_s") if k not in state["train"]]
        if missing:
            raise ckpt_io.CheckpointError(f"{ckpt / 'state.json'}: missing train.{missing[0]} (the data position "
                                          "and time of the run, needed to resume exactly)")
        if "torch_cpu" not in state["rng"][0] or "numpy_keys" not in state["rng"][0]:
            raise ckpt_io.CheckpointError(f"{ckpt / 'rng.safetensors'}: missing the torch/numpy RNG states "
                                          f"(has {sorted(state['rng'][0])}; needed to resume exactly)")

    def _snapshot(self) -> dict:
        """Copies of everything :meth:`_load` changes, for putting back when a piece does not fit."""
        clone = (lambda sd: {k: v.detach().clone() for k, v in sd.items()})
        return {"modules": {n: clone(m.state_dict()) for n, m in self.modules.items()},
                "ema": clone(self.ema.state_dict()) if self.ema is not None else None,
                "optimizers": {n: copy.deepcopy(o.state_dict()) for n, o in self.optimizers.items()},
                "step": copy.deepcopy(self.train_step.state_dict()), "rng": ckpt_io.capture_rng()}

    def _restore(self, snapshot: dict) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(snapshot["modules"][name])
        if self.ema is not None:
            self.ema.load_state_dict(snapshot["ema"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(snapshot["optimizers"][name])
        with contextlib.suppress(Exception):  # best effort: a step without state may refuse an empty dict
            self.train_step.load_state_dict(snapshot["step"])
        ckpt_io.restore_rng(*snapshot["rng"])

    # ---------------------------------------------------------------------------------- one step
    def _micro_batch(self, m: int, phase: int) -> Batch:
        """Micro-batch ``m`` of the current step, with the global RNG seeded from where the run is.

        The first fetch seeds from ``(seed, step, m, rank)`` (random transforms then depend only on the
        position), and the first update's loss continues that stream; later updates of the same step
        (a GAN's discriminator) reseed with their phase number.
        """
        if m not in self._batches:
            torch.manual_seed(mix_seed(self.cfg.seed, self.step, m, self.dist.rank))
            idx = self.order.indices(self.consumed + m)
            self._batches[m] = to_device(self.data.batch(idx), self.device)
            self._indices[m] = idx
        elif phase > 0:
            torch.manual_seed(mix_seed(self.cfg.seed, self.step, m, self.dist.rank, phase))
        return self._batches[m]

    def optimize(self, optimizer: str, module: str, loss_of) -> tuple[float, dict[str, float]]:
        """One update of ``optimizers[optimizer]`` on ``loss_of(modules[module], batch, m)`` over the
        ``grad_accum`` micro-batches: backward each, clip, check finiteness on every rank, step.

        A loss without a graph on every micro-batch (e.g. a discriminator not started yet) skips the update.
        Returns the mean loss and the mean of each logged value.
        """
        cfg, dist = self.cfg, self.dist
        opt = self.optimizers[optimizer]
        net = self.wrapped.get(module, self.modules[module])
        self.lr_used = lr_at(self.step, cfg, self.time_progress)
        factor = self.lr_used / cfg.lr
        for group, base in zip(opt.param_groups, self.base_lrs[optimizer]):
            group["lr"] = base * factor
        opt.zero_grad(set_to_none=True)
        phase, self._phase = self._phase, self._phase + 1
        total = torch.zeros((), dtype=torch.float64)
        logs_sum: dict[str, float] = {}
        bad_loss, has_graph = False, False
        for m in range(cfg.grad_accum):
            batch = self._micro_batch(m, phase)
            last = m == cfg.grad_accum - 1
            ddp = isinstance(net, torch.nn.parallel.DistributedDataParallel)
            sync = net.no_sync() if (ddp and not last) else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    loss, logs = loss_of(net, batch, m)
                bad_loss |= not bool(torch.isfinite(loss.detach()).all())
                if loss.requires_grad:  # backward even on a bad loss: under DDP every rank must all-reduce
                    (loss.float() / cfg.grad_accum).backward()
                    has_graph = True
            total += loss.detach().double().cpu()
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v)
        mean_loss = total.item() / cfg.grad_accum
        grad_norm = 0.0
        if has_graph:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        if any_rank(bad_loss or not math.isfinite(grad_norm), dist):
            self._raise_non_finite(optimizer, bad_loss, mean_loss, grad_norm)
        if has_graph:
            opt.step()
        self.grad_norms[optimizer] = grad_norm
        return mean_loss, {k: v / cfg.grad_accum for k, v in logs_sum.items()}

    def _train_step(self) -> dict[str, float]:
        """One step of the train step; then the data position, step counter and EMA advance."""
        self._batches, self._indices, self._phase, self.grad_norms = {}, {}, 0, {}
        logs = self.train_step(self, self.step)
        self.consumed += self.cfg.grad_accum
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return {k: float(v) for k, v in logs.items()}

    def _raise_non_finite(self, optimizer: str, bad_loss: bool, loss: float, grad_norm: float) -> None:
        idx = torch.cat(list(self._indices.values()))
        if self.dist.distributed:  # every rank's sample indices, so the message names the culprit
            gathered = [torch.empty_like(idx) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(gathered, idx.contiguous())
            idx = torch.cat(gathered)
        what = "loss" if bad_loss or not math.isfinite(loss) else "gradient"
        kept = f"the last checkpoint ({self.last_checkpoint}) is intact" if self.last_checkpoint else \
            "no checkpoint had been written yet"
        raise NonFiniteError(f"non-finite {what} at step {self.step + 1} ({optimizer}: loss {loss}, gradient "
                             f"norm {grad_norm}); batch sample indices {idx.tolist()}; training stopped before "
                             f"the optimizer step, so the weights are unchanged and {kept}")

    # --------------------------------------------------------------------------- bookkeeping
    def _save(self) -> None:
        if self.dist.is_main:
            epoch, in_epoch = self.order.position(self.consumed)
            train_state = {"consumed_batches": self.consumed, "global_micro_batch": self.order.global_batch,
                           "epoch": epoch, "batch_in_epoch": in_epoch, "elapsed_s": self.elapsed,
                           "images_seen": self.step * self.cfg.batch_size}
            tensors = {name: m.state_dict() for name, m in self.modules.items()}
            if self.ema is not None:
                tensors["ema"] = self.ema.state_dict()
            tensors.update(self.train_step.state_dict())
            self.last_checkpoint = ckpt_io.save_checkpoint(
                self.out_dir, self.step, config=self.config, tensors=tensors,
                optimizers={name: o.state_dict() for name, o in self.optimizers.items()},
                train_state=train_state, meta=self.checkpoint_meta, keep_last=self.cfg.keep_last)
            plot_loss_curve(self.metrics_path, self.out_dir / "loss.png")
        barrier(self.dist)

    def _sample(self) -> None:
        if self.dist.is_main and self.sample_fn is not None:
            from ldmkit.images import to_pil

            module = self.ema.module if self.ema is not None else self.model
            with torch.no_grad():
                image = to_pil(self.sample_fn(module, self.step))
            for m in self.modules.values():
                m.train()  # a preview may switch to eval mode
            path = self.out_dir / "samples" / f"step_{self.step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            log.info("wrote %s", path)
        barrier(self.dist)

    # ---------------------------------------------------------------------------------- main
    def run(self, resume: bool | str = False) -> TrainResult:
        """Train until ``cfg.max_steps``; returns the final step, checkpoint and logged losses.

        ``resume``: ``True`` continues the latest checkpoint of ``out_dir`` (one must exist), ``False``
        starts a new run (``out_dir`` must hold none), ``"auto"`` continues if there is one, else starts.

        SIGTERM or SIGINT (Ctrl-C) stops the run cleanly after the current step, with a checkpoint that
        ``--resume`` continues bit for bit; the result's ``stopped_by`` names the signal.
        """
        self._wrap()
        try:
            with self._stop.installed():
                return self._run(resume)
        finally:
            # DDP wrappers hold the process group; dropped here (the plain modules stay), so the group is
            # torn down by distributed.shutdown while the interpreter is alive, not by a garbage collection
            # at exit, where gloo's threads abort the process ("terminate called without an active exception")
            self.wrapped.clear()

    def _stop_now(self, deadline: float | None, budget: float | None) -> bool:
        """The time budget is decided on rank 0 and a signal on any rank; both are shared (one all-reduce),
        so all ranks stop at the same step. With ``budget`` (the run's whole training time in seconds: those
        before this invocation plus ``max_minutes``) the spent fraction of it is shared too
        (``self.time_progress``, which the ``cosine_deadline`` schedule reads), so all ranks use the same
        learning rate."""
        now = time.monotonic()
        timed_out = deadline is not None and self.dist.is_main and now > deadline
        stop = timed_out or self._stop.name is not None
        if budget is None:
            return any_rank(stop, self.dist)
        frac = 1.0 - (deadline - now) / budget if self.dist.is_main else 0.0
        shared = max_over_ranks([1.0 if stop else 0.0, frac], self.dist)
        self.time_progress = shared[1]
        return shared[0] > 0

    def _run(self, resume: bool | str) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._prepare(resume)
        for module in self.modules.values():
            module.train()
        losses: list[tuple[int, float]] = []
        bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        window = MetricsWindow()
        deadline = None if cfg.max_minutes is None else time.monotonic() + 60.0 * cfg.max_minutes
        budget = None  # the run's whole training time, which the cosine_deadline schedule anneals over
        if deadline is not None and cfg.lr_schedule == "cosine_deadline":
            budget = self.elapsed + 60.0 * cfg.max_minutes
            self.time_progress = self.elapsed / budget  # the same on all ranks (elapsed is the checkpoint's)
        stopped_by = None
        while self.step < cfg.max_steps:
            t0 = time.perf_counter()
            logs = self._train_step()
            self.elapsed += time.perf_counter() - t0
            window.add(logs.pop("loss"), logs)
            stop_now = self._stop_now(deadline, budget)
            last = self.step == cfg.max_steps or stop_now
            if self.step % cfg.log_every == 0 or last:
                norms = {("grad_norm" if name == "optimizer" else f"{name}_grad_norm"): v
                         for name, v in self.grad_norms.items()}
                row = window.row(self.step, cfg.batch_size, self.dist, lr=self.lr_used, **norms,
                                 elapsed_s=self.elapsed)
                losses.append((self.step, row["loss"]))
                if self.dist.is_main:
                    append_row(self.metrics_path, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['img_per_s']:.1f}")
            bar.update(1)
            if cfg.sample_every > 0 and (self.step % cfg.sample_every == 0 or last):
                self._sample()
                window.restart_clock()
            if self.step % cfg.checkpoint_every == 0 or last:
                self._save()
                window.restart_clock()
            if stop_now:
                stopped_by = self._stop.name or "max_minutes"
                log.warning("stopped by %s at step %d of %d; saved %s; to continue: %s", stopped_by, self.step,
                            cfg.max_steps, self.last_checkpoint, self.resume_hint)
                break
        bar.close()
        if self.dist.is_main:
            plot_loss_curve(self.metrics_path, self.out_dir / "loss.png")
        return TrainResult(step=self.step, checkpoint=self.last_checkpoint, elapsed_s=self.elapsed, losses=losses,
                           stopped_by=stopped_by)
