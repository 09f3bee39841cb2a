"""The ``train-ldm`` recipe file: one YAML for both stages of a latent diffusion model and their time budget.

    data:         # one dataset for both stages (a DataConfig: fashion-mnist, shapes or folder)
    autoencoder:  # an autoencoder run config without data (model, loss, train), as configs/ae_kl_f4_fmnist.yaml
    ldm:          # a diffusion run config without data and first_stage (unet, diffusion, train, sample)
    budget:       # fractions of --minutes: autoencoder, diffusion (or reserve_seconds: the diffusion stage
                  # runs until that long before the end; the rest: scale factor, grid, evaluation)
    scale:        # how the latent scale factor is measured (what ``ldmkit ae-stats`` does)
    evaluation:   # the closing evaluation (samples, sampler, metrics, reference)

This module holds the recipe's own sections, the budget arithmetic and the resumable state file; the two
stage sections are validated by their own loaders in ``ldmkit.commands.train_ldm``, which runs the flow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmkit.registry import ConfigError
from ldmkit.schema import apply_overrides, from_dict, to_dict

STAGES = ("autoencoder", "scale", "diffusion", "grid", "evaluation")
STATE_FILE = "train_ldm.json"


@dataclass
class BudgetConfig:
    """Fractions of the wall-clock budget ``--minutes``.

    Attributes:
        autoencoder: share of stage 1 (first-stage training); its unused time passes to the diffusion stage.
        diffusion: share of the diffusion training; ``1 - autoencoder - diffusion`` (> 0) is left for the
            scale factor, the sample grid and the evaluation.
        reserve_seconds: when set, replaces ``diffusion``: the diffusion stage runs until this many seconds
            before the end of ``--minutes`` (what the scale factor, grid and evaluation need: about 20 s for
            the Fashion-MNIST recipe), so a fixed cost does not take a fixed fraction of every budget.
    """

    autoencoder: float = 0.25
    diffusion: float = 0.65
    reserve_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("autoencoder", "diffusion"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ConfigError(f"budget.{name}={v} must be a fraction in (0, 1)")
        if self.reserve_seconds is not None:
            if not 0.0 <= self.reserve_seconds < 1e7:
                raise ConfigError(f"budget.reserve_seconds={self.reserve_seconds} must be >= 0 seconds "
                                  "(or null: use the budget.diffusion fraction)")
            return
        if self.autoencoder + self.diffusion >= 1.0:
            raise ConfigError(f"budget.autoencoder + budget.diffusion = {self.autoencoder + self.diffusion:g} "
                              "must be below 1 (the rest is left for the scale factor, grid and evaluation)")


@dataclass
class ScaleConfig:
    """The latent scale factor ``1 / std`` (Rombach et al.), measured like ``ldmkit ae-stats``."""

    num_images: int = 5000
    posterior: str = "sample"
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.batch_size < 1:
            raise ConfigError(f"scale.num_images={self.num_images} and scale.batch_size={self.batch_size} "
                              "must be >= 1")
        if self.posterior not in ("sample", "mode"):
            raise ConfigError(f"scale.posterior={self.posterior!r}: expected 'sample' or 'mode'")


@dataclass
class EvaluationConfig:
    """The closing evaluation: ``num_samples`` images (seeds ``seed..``) scored like ``ldmkit eval-images``.

    ``sampler`` / ``steps`` / ``eta``: None = the ldm's ``sample`` section. ``num_samples: 0`` skips the
    evaluation.
    ``reference``: a spec of ``ldmkit eval-images --reference`` (``fashion-mnist:test``, a statistics .npz),
    or ``data:SPLIT`` = the recipe's own data section at that split (first ``n_reference`` images, default
    10,000), for shapes and image folders.
    """

    num_samples: int = 1000
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int = 0
    batch_size: int = 250
    metrics: tuple[str, ...] = ("fid", "kid", "pr")
    reference: str = "fashion-mnist:test"
    n_reference: int | None = None
    extractor: str = "fmnist-eval-v2"

    def __post_init__(self) -> None:
        if self.num_samples < 0 or self.batch_size < 1:
            raise ConfigError(f"evaluation.num_samples={self.num_samples} must be >= 0 and "
                              f"evaluation.batch_size={self.batch_size} >= 1")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"evaluation.steps={self.steps} must be >= 1 (or null: the sample section's)")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"evaluation.eta={self.eta} must be in [0, 1] (or null: the sample section's)")


@dataclass
class RecipeSettings:
    """The recipe's own sections (the stage sections stay raw dicts for their loaders)."""

    budget: BudgetConfig = field(default_factory=BudgetConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


@dataclass
class Recipe:
    """A parsed recipe: the stage configs as dicts (``data`` merged in) and the recipe settings."""

    autoencoder: dict
    ldm: dict
    settings: RecipeSettings
    data: dict


SECTIONS = ("data", "autoencoder", "ldm", "budget", "scale", "evaluation")


def parse_recipe(data: Any, overrides: list[str] | None = None, source: str = "recipe") -> Recipe:
    """Split a recipe mapping into its stage configs and settings, strictly.

    ``data`` is copied into both stage configs (a stage section may not have its own); an ldm section
    without ``unet.in_channels`` gets the autoencoder's ``model.z_channels``.

    Raises:
        ConfigError: an unknown or missing section, a stage section with ``data`` / ``first_stage``, a bad
            budget; the message starts with ``source``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections ({', '.join(SECTIONS)})")
    try:
        data = apply_overrides(data, overrides or [])
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; valid sections: {', '.join(SECTIONS)}")
    for name in ("data", "autoencoder", "ldm"):
        if not isinstance(data.get(name), dict):
            raise ConfigError(f"{source}: section {name!r} is missing (or not a mapping); a recipe needs "
                              "data, autoencoder and ldm (see configs/ldm_fast_fmnist.yaml)")
    for name, banned in (("autoencoder", "data"), ("ldm", "data"), ("ldm", "first_stage")):
        if banned in data[name]:
            raise ConfigError(f"{source}: {name}.{banned} is not allowed: "
                              + ("the top-level data section feeds both stages" if banned == "data" else
                                 "train-ldm sets it (use --first_stage DIR to reuse an autoencoder)"))
    try:
        settings = from_dict(RecipeSettings, {k: data[k] for k in ("budget", "scale", "evaluation") if k in data})
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    ae = {**data["autoencoder"], "data": data["data"]}
    ldm = {**data["ldm"], "data": data["data"]}
    z = (data["autoencoder"].get("model") or {}).get("z_channels")
    unet = dict(ldm.get("unet") or {})
    if z is not None and "in_channels" not in unet and "preset" not in unet:
        ldm["unet"] = {**unet, "in_channels": z}
    return Recipe(ae, ldm, settings, data["data"])


def check_minutes(minutes: float) -> float:
    if not (minutes > 0 and minutes < 1e6):
        raise ConfigError(f"--minutes={minutes}: the wall-clock budget must be a positive number of minutes")
    return float(minutes)


def stage_minutes(stage: str, minutes: float, budget: BudgetConfig, spent: dict[str, float]) -> float:
    """``train.max_minutes`` of a training stage from the budget and the seconds already ``spent`` per stage.

    The autoencoder gets ``budget.autoencoder * minutes`` minus what it already used; the diffusion stage
    gets everything up to ``(autoencoder + diffusion) * minutes`` (or up to ``minutes`` less
    ``reserve_seconds``) that the stages before it left, so time the first stage did not use passes on.
    Never below a few seconds (a stage that resumes with its time spent still saves its checkpoint and ends).
    """
    if stage == "autoencoder":
        left = budget.autoencoder * minutes * 60.0 - spent.get("autoencoder", 0.0)
    elif stage == "diffusion":
        end = (minutes * 60.0 - budget.reserve_seconds if budget.reserve_seconds is not None
               else (budget.autoencoder + budget.diffusion) * minutes * 60.0)
        left = end - sum(spent.get(s, 0.0) for s in ("autoencoder", "scale", "diffusion"))
    else:
        raise ValueError(f"stage_minutes: {stage!r} is not a training stage")
    return max(left, 5.0) / 60.0


@dataclass
class RecipeState:
    """``DIR/train_ldm.json``: which stages are done, seconds spent per stage, the first stage used."""

    minutes: float
    done: list[str] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)
    first_stage: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path, minutes: float) -> RecipeState:
        path = out / STATE_FILE
        if not path.is_file():
            return cls(minutes=minutes)
        try:
            raw = json.loads(path.read_text())
            return from_dict(cls, raw, key=str(path))
        except (ValueError, ConfigError) as e:
            raise ConfigError(f"{path}: unreadable train-ldm state ({e}); remove it to start over") from None

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(to_dict(self), indent=2) + "\n")
        os.replace(tmp, out / STATE_FILE)

    def add_time(self, stage: str, seconds: float) -> None:
        self.spent[stage] = round(self.spent.get(stage, 0.0) + seconds, 3)

    def mark_done(self, stage: str, out: Path, result: Any = None) -> None:
        if stage not in self.done:
            self.done.append(stage)
        if result is not None:
            self.results[stage] = result
        self.save(out)
