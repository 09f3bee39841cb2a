"""The models ``ldmkit serve`` offers: model id -> checkpoint folder, and what each model can do.

A client only ever names a model id; the folders behind the ids come from the server's owner
(``ldmkit serve --model``: ``commands/serve.py: model_sources``, the one place a name or path becomes a
folder). Which tasks a model takes is decided by :func:`model_tasks`; an upscaler plugs in through
:func:`upscaler`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("generate", "inpaint", "img2img", "upscale")
_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


def accepts(loaded: Any) -> tuple[str, ...]:
    """The request arguments the model takes (``labels``, ``prompts``, ``layouts``, ``images``, ``masks``)."""
    conditioner = getattr(loaded, "conditioner", None)
    if conditioner is not None:
        return tuple(conditioner.accepts)
    return ("labels",) if loaded.config.unet.num_classes is not None else ()


def class_names(loaded: Any) -> list[str] | None:
    """Names of a class-conditional model's classes, else ``None``."""
    k = loaded.config.unet.num_classes
    if k is None:
        return None
    names = getattr(getattr(loaded, "conditioner", None), "class_names", None)
    if names:
        return list(names)
    if loaded.config.data.name == "fashion-mnist" and k == 10:
        from ldmkit.data import CLASS_NAMES

        return list(CLASS_NAMES)
    return [f"class {i}" for i in range(k)]


def takes_prompts(loaded: Any) -> bool:
    """Whether the model is conditioned on text prompts."""
    return "prompts" in accepts(loaded)


def takes_layout(loaded: Any) -> bool:
    """Whether the model is conditioned on layout boxes."""
    return "layouts" in accepts(loaded)


def layout_vocab(loaded: Any) -> dict[str, Any] | None:
    """A layout model's box labels (its conditioner's context part, ``LayoutContext.label_names``) and
    ``max_boxes``, else ``None``."""
    if not takes_layout(loaded):
        return None
    part = loaded.conditioner.parts.get("context")
    return {"labels": list(part.label_names), "max_boxes": int(part.cfg.max_boxes)}


def is_conditional(loaded: Any) -> bool:
    """Whether classifier-free guidance has anything to act on (class labels or a prompt / layout)."""
    return bool({"labels", "prompts", "layouts"} & set(accepts(loaded)))


def upscaler(loaded: Any) -> Callable[..., Any] | None:
    """The super-resolution function of a model, or ``None`` when it has no upscale task.

    A model trained with ``cond.concat: super_resolution`` (the low-resolution image as ``concat`` channels,
    DESIGN.md principle 13) upscales with ``editing.upscale(loaded, image [1, C, h, w] in [-1, 1], *, steps,
    seed, progress) -> [1, C, H, W]``; the endpoint, the job queue and the page handle the rest.
    """
    from ldmkit import editing

    return editing.upscale if editing.concat_task(loaded) == "super_resolution" else None


def model_tasks(model_id: str, loaded: Any) -> dict[str, str | None]:
    """Task -> ``None`` when the model takes it, else the reason it does not (shown to clients as is)."""
    from ldmkit.editing import image_channels

    channels = image_channels(loaded)
    edit = None if channels in (1, 3) else (f"model {model_id} works on {channels}-channel images; editing "
                                            "needs a 1- or 3-channel model")
    up = None if upscaler(loaded) is not None else (
        f"model {model_id} has no upscale task: it is not a super-resolution model (cond.concat: "
        "super_resolution)")
    return {"generate": None, "inpaint": edit, "img2img": edit, "upscale": up}


@dataclass
class ServedModel:
    """One model of the server: its id, the loaded model and what it offers."""

    id: str
    loaded: Any  # pipelines.LoadedModel
    tasks: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tasks:
            self.tasks = model_tasks(self.id, self.loaded)

    def info(self) -> dict[str, Any]:
        """What ``GET /api/models`` tells about the model."""
        from ldmkit.editing import image_channels, size_factor
        from ldmkit.pipelines import image_shape

        cfg, loaded = self.loaded.config, self.loaded
        names, layout = class_names(loaded), layout_vocab(loaded)
        c, h, w = image_shape(cfg)
        kind = ("text-to-image" if takes_prompts(loaded) else "layout-to-image" if takes_layout(loaded)
                else "class-conditional" if names is not None else "unconditional")
        space = "latent" if cfg.first_stage else "pixel"
        params = sum(p.numel() for p in loaded.denoiser.parameters())
        return {
            "id": self.id,
            "task": f"{kind} image generation ({space} space, {cfg.data.name})",
            "image_size": {"channels": c, "height": h, "width": w},
            "size_factor": size_factor(loaded),
            "image_channels": image_channels(loaded),
            "conditioning": {"type": "class" if names is not None else "none", "classes": names,
                             "accepts": list(accepts(loaded)),
                             "prompts": takes_prompts(loaded), "layout": layout is not None,
                             "layout_labels": layout and layout["labels"],
                             "max_boxes": layout and layout["max_boxes"]},
            "endpoints": [t for t in TASKS if self.tasks.get(t) is None],
            "unsupported": {t: why for t, why in self.tasks.items() if why is not None},
            "defaults": {"sampler": cfg.sample.sampler, "steps": cfg.sample.steps or loaded.process.num_timesteps,
                         "eta": cfg.sample.eta, "guidance_scale": cfg.sample.guidance_scale},
            "shipped": _shipped(loaded),
            "figures": {"num_timesteps": loaded.process.num_timesteps, "trained_steps": loaded.step,
                        "parameters": params, "schedule": cfg.diffusion.schedule,
                        "prediction_type": cfg.diffusion.prediction_type},
        }


def _shipped(loaded: Any) -> dict[str, Any] | None:
    """Registry name, task, training and measured headline figure of a shipped model (``ldmkit models``)."""
    from ldmkit import zoo

    card = zoo.card_of_folder(loaded.path) if getattr(loaded, "path", None) else {}
    if not card:
        return None
    return {"name": card["name"], "task": card.get("task", zoo.SHIPPED[card["name"]][1]),
            "train_minutes": card.get("train_minutes"), "measured": zoo.headline(card)}


def load_models(models: Mapping[str, Any], device: Any = "cpu") -> dict[str, ServedModel]:
    """Id -> :class:`ServedModel` from id -> checkpoint folder (loaded here) or an already loaded model."""
    from ldmkit.pipelines import load_model

    out = {}
    for model_id, source in models.items():
        if not isinstance(model_id, str) or not _ID.fullmatch(model_id):
            raise ValueError(f"model id {model_id!r}: use 1-100 letters, digits, '.', '_' or '-'")
        loaded = load_model(source, device=device) if isinstance(source, (str, Path)) else source
        out[model_id] = ServedModel(model_id, loaded)
    return out
