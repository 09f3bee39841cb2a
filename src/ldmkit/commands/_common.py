"""What every CLI command shares: the exit-code policy, model loading, ``--steps``, and the samples ``.npz``.

Exit codes, one policy for every command (applied by :func:`run_command`, which ``ldmkit.cli.main``
wraps around each command's ``run``; a command only raises):

- ``0``: success.
- ``2``: usage error: a bad argument (:class:`UsageError`, argparse), a bad config key or value
  (:class:`ldmkit.registry.ConfigError` and other ``ValueError``), an input the user named that does not
  exist or is not of the kind expected (``FileNotFoundError``, a path that is no checkpoint), a run folder
  that already holds checkpoints (``RunFolderError``), an unreadable or hostile image file
  (``BadImageError``, named in the message).
- ``1``: runtime error: training failed or went non-finite (``TrainingError``), a checkpoint's content is
  corrupted or does not fit its config (``CheckpointError``), and any other ``RuntimeError`` / ``OSError``.
- ``130``: interrupted (Ctrl-C).

Any other exception is a bug in ldmkit and keeps its traceback.

Heavy imports (torch, the library) happen inside the functions, so ``ldmkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

STEPS_HELP = ("number of denoiser evaluations, i.e. the length of the sampler's timestep grid, for every "
              "sampler (ddpm respaces its chain to it); default: the checkpoint config's sample.steps, "
              "where null means all T timesteps")
SAMPLER_HELP = "ddpm, ddim or dpmpp_2m (default: the checkpoint config's sample.sampler)"


class UsageError(ValueError):
    """A bad command-line argument or input path; the message names the argument and what is allowed."""


def exit_code(error: BaseException) -> int | None:
    """The exit code of the policy above for ``error``, or ``None`` for an unexpected exception (a bug)."""
    from ldmkit.data import BadImageError
    from ldmkit.training import CheckpointError, RunFolderError, TrainingError

    policy: list[tuple[tuple[type[BaseException], ...], int]] = [
        ((KeyboardInterrupt,), EXIT_INTERRUPTED),
        ((RunFolderError, BadImageError), EXIT_USAGE),  # a folder / image file the user named does not fit
        ((TrainingError, CheckpointError), EXIT_RUNTIME),
        ((ValueError, FileNotFoundError, NotADirectoryError, argparse.ArgumentError), EXIT_USAGE),
        ((RuntimeError, OSError), EXIT_RUNTIME),
    ]
    for types, code in policy:  # first match wins: subclasses are listed before their bases
        if isinstance(error, types):
            return code
    return None


def run_command(func: Callable[[Any], int | None], args: Any) -> int:
    """Run a command's ``func(args)`` under the exit-code policy and return the exit code.

    A command signals failure by raising: ``raise UsageError("--num: must be >= 1, got 0")`` exits 2, a
    ``CheckpointError`` exits 1 (see the module docstring); the message goes to stderr as ``error: ...``.
    A command may still return a non-zero code itself (e.g. ``data info`` on a folder with bad files).
    ``ldmkit.cli.main`` applies this to every command, so a command's ``run`` needs no ``try``/``except``.
    """
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # e.g. `ldmkit info RUN | head`: the reader went away, not an error of ours
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # mapped by the policy; unknown types re-raise below
        code = exit_code(e)
        if code is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return code


# ----------------------------------------------------------------------------------------- arguments
def positive_int(text: str) -> int:
    """argparse ``type=`` for counts: an integer >= 1 (argparse names the argument in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_sampling_arguments(p: argparse.ArgumentParser, *, eta: bool = True, guidance: bool = True) -> None:
    """``--sampler`` and ``--steps`` (and ``--eta``, ``--guidance-scale``), each defaulting to the checkpoint
    config's ``sample`` section; resolve them with :func:`sampling_settings`."""
    p.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    p.add_argument("--steps", type=positive_int, default=None, help=STEPS_HELP)
    if eta:
        p.add_argument("--eta", type=float, default=None,
                       help="DDIM stochasticity in [0, 1] (default: the config's sample.eta)")
    if guidance:
        p.add_argument("--guidance-scale", type=float, default=None,
                       help="classifier-free guidance scale (default: the config's sample.guidance_scale)")


@dataclass(frozen=True)
class Sampling:
    """Resolved sampling settings: ``steps`` is the grid length, always an explicit count in ``[1, T]``."""

    sampler: str
    steps: int
    eta: float
    guidance_scale: float


def sampling_settings(args: Any, sample_cfg: Any, num_timesteps: int, *, conditional: bool | None = None) -> Sampling:
    """The arguments of :func:`add_sampling_arguments`, falling back to ``sample_cfg`` (a config's
    ``sample`` section); ``steps`` of ``None`` in the config means all ``num_timesteps``.

    Args:
        conditional: whether the model is conditional (``LoadedModel.conditioner.is_conditional``: class
            labels or a context); when ``False``, a ``--guidance-scale`` other than 1 is refused (guidance needs
            a condition). ``None`` skips that check.

    Raises:
        UsageError: unknown ``--sampler``; ``--steps`` outside [1, T]; ``--eta`` outside [0, 1];
            ``--guidance-scale`` below 0, or other than 1 for an unconditional model.
    """
    import math

    from ldmkit.registry import ConfigError, lookup
    from ldmkit.samplers import SAMPLERS

    sampler = args.sampler or sample_cfg.sampler
    try:
        lookup(SAMPLERS, sampler, "sampler")
    except ConfigError as e:
        raise UsageError(f"--sampler: {e}") from None
    # `is None`, not `or`: a stored steps of 0 must not silently become all T steps
    steps = args.steps if args.steps is not None else (num_timesteps if sample_cfg.steps is None else sample_cfg.steps)
    if not 1 <= steps <= num_timesteps:
        raise UsageError(f"--steps={steps}: must be in [1, {num_timesteps}] (the model's T)")
    eta = getattr(args, "eta", None)
    if eta is not None and not 0.0 <= eta <= 1.0:
        raise UsageError(f"--eta={eta}: must be in [0, 1]")
    scale = getattr(args, "guidance_scale", None)
    if scale is not None:
        if not (math.isfinite(scale) and scale >= 0.0):
            raise UsageError(f"--guidance-scale={scale}: must be >= 0 (1 = no guidance)")
        if conditional is False and scale != 1.0:
            raise UsageError(f"--guidance-scale={scale}: this model is not class-conditional nor "
                             "prompt-conditional, so the only allowed value is 1 (no guidance)")
    return Sampling(sampler, steps, sample_cfg.eta if eta is None else eta,
                    sample_cfg.guidance_scale if scale is None else scale)


def class_labels(text: str | None, n: int, num_classes: int | None, option: str = "--labels"):
    """Labels ``[n]`` int64 for a class-conditional model: ``text`` ("3,1,4") repeated to ``n``, or
    class-balanced ``i mod K`` without it; ``None`` for an unconditional model."""
    import torch

    if num_classes is None:
        if text:
            raise UsageError(f"{option}: this model is not class-conditional")
        return None
    if not text:
        return torch.arange(n, dtype=torch.int64) % num_classes
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(not 0 <= v < num_classes for v in values):
        raise UsageError(f"{option}: classes must lie in [0, {num_classes - 1}], got {values}")
    return torch.tensor([values[i % len(values)] for i in range(n)], dtype=torch.int64)


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str] | None:
    """The prompts of ``--prompt TEXT`` or ``--prompts FILE`` (one per line, blank lines skipped), or None.

    Raises:
        UsageError: both given, or the file is missing, unreadable or holds no prompt.
    """
    if prompt is not None and prompts_file is not None:
        raise UsageError("--prompt and --prompts: give one of them")
    if prompts_file is None:
        return None if prompt is None else [prompt]
    try:
        lines = Path(prompts_file).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"--prompts {prompts_file}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompts {prompts_file}: cannot read it as UTF-8 text ({e})") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UsageError(f"--prompts {prompts_file}: the file holds no prompt (one per line)")
    return prompts


REQUEST_OPTIONS = {"labels": "--class", "prompts": "--prompt/--prompts", "layouts": "--layout"}


def request_cond(loaded: Any, n: int, **request: Any):
    """``loaded.make_cond(n, **request)`` with a bad request (a prompt for a model without text, an unknown
    class, ...) as a :class:`UsageError` naming the option (exit 2)."""
    given = [k for k, v in request.items() if v is not None]
    try:
        return loaded.make_cond(n, **request)
    except ValueError as e:
        option = next((REQUEST_OPTIONS.get(k, k) for k in given if str(e).startswith(k)), None)
        if option is None:
            option = "/".join(REQUEST_OPTIONS.get(k, k) for k in given) or "condition"
        raise UsageError(f"{option}: {e}") from None


def device(name: str, option: str = "--device"):
    """``torch.device`` of a ``--device`` value (``auto`` = the accelerator if any, else CPU)."""
    import torch

    from ldmkit.training.distributed import pick_device

    try:
        chosen = pick_device(name)
    except RuntimeError as e:  # torch: "Expected one of cpu, cuda, ... device type at start of ..."
        raise UsageError(f"{option}={name!r}: {e}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{option}={name!r}: CUDA is not available on this machine; use cpu or auto")
    return chosen


# ------------------------------------------------------------------------------------------- loading
def checkpoint_folder(path: str | Path, option: str = "CKPT_DIR") -> Path:
    """The checkpoint folder of a path the user named (a checkpoint, or a run folder -> its latest).

    Raises:
        UsageError: the path does not exist or is no checkpoint (e.g. a pickle file); exit 2.
    """
    from ldmkit.training.checkpoint import CheckpointError, resolve_checkpoint

    try:
        return resolve_checkpoint(path)
    except CheckpointError as e:
        raise UsageError(f"{option}: {e}") from None


def load_model(path: str | Path, *, ema: bool = True, device: Any = "cpu"):
    """A diffusion checkpoint as ``pipelines.LoadedModel``, or one clear error.

    Raises:
        UsageError: ``path`` is not a checkpoint (exit 2).
        CheckpointError: its content is corrupted, or it no longer fits its first stage (exit 1).
    """
    from ldmkit import pipelines
    from ldmkit.training.checkpoint import CheckpointError

    ckpt = checkpoint_folder(path)
    try:
        return pipelines.load_model(ckpt, ema=ema, device=device)
    except CheckpointError:
        raise
    except (ValueError, KeyError, OSError, RuntimeError) as e:  # the stored config or weights are unusable
        raise CheckpointError(f"{ckpt}: cannot load the model: {e}") from e


def load_autoencoder(path: str | Path, device: Any = "cpu"):
    """A first-stage checkpoint as ``(autoencoder, config.json contents)``, or one clear error (as
    :func:`load_model`)."""
    from ldmkit.autoencoders.checkpoint import load_autoencoder as load
    from ldmkit.training.checkpoint import CheckpointError

    ckpt = checkpoint_folder(path)
    try:
        return load(ckpt, device)
    except CheckpointError:
        raise
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt}: cannot load the autoencoder: {e}") from e


# ----------------------------------------------------------------------------------------- outputs
def save_samples_npz(path: str | Path, images: Any, *, labels: Any = None, seeds: Any = None) -> Path:
    """Write samples in the one ``.npz`` layout of every command: ``images`` uint8 ``[N, H, W, C]``, and
    ``labels`` int64 ``[N]`` / ``seeds`` int64 ``[N]`` when given (``ldmkit eval-images`` reads it).

    Args:
        images: float ``[N, C, H, W]`` in [-1, 1] (tensor or array), or uint8 ``[N, H, W, C]``.
    """
    import numpy as np

    from ldmkit.images import to_uint8

    arrays = {"images": to_uint8(images)}
    if arrays["images"].ndim != 4:
        raise ValueError(f"save_samples_npz: expected a batch of images, got shape {arrays['images'].shape}")
    for name, value in (("labels", labels), ("seeds", seeds)):
        if value is not None:
            arrays[name] = np.asarray(value.cpu() if hasattr(value, "cpu") else value, dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def report_training(result, command: str, args, out: Path, next_step: str = "") -> int:
    """Print how a training command ended: a stop by a signal or the time budget (with the command that
    continues it), or the final step, time, throughput and checkpoint."""
    if result.stopped_by is not None:
        import shlex

        # the overrides that shaped the model (--first_stage=DIR ...) must be repeated, or resume refuses
        extra = "".join(f" {shlex.quote(o)}" for o in getattr(args, "overrides", None) or [])
        print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint {result.checkpoint}; continue "
              f"with: ldmkit {command} {shlex.quote(str(args.config))} --out {shlex.quote(str(out))}{extra} --resume")
        return EXIT_OK
    print(f"done: step {result.step}, {result.elapsed_s:.0f} s of training; checkpoint {result.checkpoint}"
          + (f"\nnext: {next_step}" if next_step else ""))
    return EXIT_OK
