"""What the endpoints run: request checks against the model and the server's limits, and the jobs' work.

Every check raises :class:`RequestError` (status + a message naming the field and what is allowed) before a
job is queued, so a bad request never occupies a model. The library is called in one function per task
(:func:`generate_images`, :func:`inpaint_image`, :func:`img2img_image`): when ``pipelines.generate``
changes its signature, only :func:`generate_images` changes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import shlex
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldmkit import editing
from ldmkit.images import save_png, to_uint8
from ldmkit.web.jobs import Job, Result
from ldmkit.web.models import ServedModel, class_names, is_conditional, takes_layout, takes_prompts, upscaler
from ldmkit.web.schemas import Limits

BATCH_SIZE = 64  # pipelines.generate's batch: progress totals count one grid per batch


class RequestError(Exception):
    """A request that cannot be served as asked; ``status`` is the HTTP code (400, 413, 422)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


# ------------------------------------------------------------------------------ progress + cancel
class Watch(torch.nn.Module):
    """A denoiser that calls ``tick()`` after each evaluation (``Job.tick`` raises there once cancelled);
    every other attribute (``null_class``, ``alphas_cumprod``, ...) is the wrapped denoiser's."""

    def __init__(self, denoiser: torch.nn.Module, tick):
        super().__init__()
        self.inner = denoiser
        self._tick = tick

    def forward(self, x_t, t, cond=None):
        out = self.inner(x_t, t, cond)
        self._tick(1)
        return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


def watched(loaded, job: Job):
    """``loaded`` with its denoiser reporting each evaluation to ``job`` (a shallow copy: weights shared)."""
    return dataclasses.replace(loaded, denoiser=Watch(loaded.denoiser, job.tick))


# --------------------------------------------------------------------------------------- checks
def check_steps(steps: int | None, served: ServedModel, limits: Limits) -> int:
    loaded = served.loaded
    T = loaded.process.num_timesteps
    steps = steps if steps is not None else (loaded.config.sample.steps or T)
    top = min(T, limits.max_steps)
    if not 1 <= steps <= top:
        raise RequestError(422, f"steps={steps}: must be in [1, {top}] (model {served.id} has T={T}; this "
                                f"server allows at most max_steps={limits.max_steps})")
    return steps


def check_guidance(scale: float | None, served: ServedModel, limits: Limits) -> float:
    cfg = served.loaded.config
    scale = cfg.sample.guidance_scale if scale is None else float(scale)
    if not is_conditional(served.loaded) and scale != 1.0:
        raise RequestError(422, f"guidance_scale={scale}: model {served.id} is unconditional, so the only "
                                "allowed value is 1 (no guidance)")
    if not 0.0 <= scale <= limits.max_guidance:
        raise RequestError(422, f"guidance_scale={scale}: must be in [0, {limits.max_guidance}] (1 = no guidance)")
    return scale


def check_labels(labels: list[int] | None, n: int, served: ServedModel) -> torch.Tensor | None:
    """``[n]`` int64 labels (given ones repeated to ``n``; default ``i mod K``), ``None`` when unconditional."""
    names = class_names(served.loaded)
    if names is None:
        if labels:
            raise RequestError(422, f"labels: model {served.id} is unconditional: it takes no class labels")
        return None
    k = len(names)
    if not labels:
        return torch.arange(n, dtype=torch.int64) % k
    bad = [v for v in labels if not 0 <= v < k]
    if bad:
        raise RequestError(422, f"labels {bad}: classes of model {served.id} lie in [0, {k - 1}] "
                                f"({', '.join(f'{i}={c}' for i, c in enumerate(names))})")
    return torch.tensor([labels[i % len(labels)] for i in range(n)], dtype=torch.int64)


def check_conditioning(served: ServedModel, prompt: str | None, layout: list | None) -> None:
    """400 for a prompt / layout that the model cannot take."""
    loaded = served.loaded
    kind = ("class-conditional (pick a class with labels)" if loaded.config.unet.num_classes
            else "conditioned on " + ", ".join(accepts_of(loaded)) if accepts_of(loaded) else "unconditional")
    if prompt and not takes_prompts(loaded):
        raise RequestError(400, f"prompt: model {served.id} is {kind} and does not take prompts")
    if layout and not takes_layout(loaded):
        raise RequestError(400, f"layout: model {served.id} is {kind} and does not take layout boxes")


def accepts_of(loaded) -> tuple[str, ...]:
    from ldmkit.web.models import accepts

    return accepts(loaded)


def request_cond(served: ServedModel, n: int, *, labels, prompt: str | None, layout: list | None):
    """The condition of a generate request through the model's own conditioner (``LoadedModel.make_cond``),
    built before queueing so that a value the model refuses is a 422 naming it; ``None`` when unconditional."""
    loaded = served.loaded
    request = {}
    if labels is not None:
        request["labels"] = labels
    if prompt and takes_prompts(loaded):
        request["prompts"] = [prompt]
    if layout and takes_layout(loaded):
        request["layouts"] = [[{"label": b.label, "box": [b.x0, b.y0, b.x1, b.y1]} for b in layout]]
    if not hasattr(loaded, "make_cond"):
        return None
    try:
        return loaded.make_cond(n, **request)
    except (ValueError, TypeError) as e:
        raise RequestError(422, f"model {served.id}: {e}") from None


def check_task(served: ServedModel, task: str) -> None:
    why = served.tasks.get(task)
    if why is not None:
        raise RequestError(400, why)


def decode_upload(text: str, what: str, channels: int, limits: Limits) -> np.ndarray:
    """A base64 image (or ``data:...;base64,`` URL) -> uint8 ``[H, W, channels]`` through ldmkit's checked
    image loader (format, truncation, decompression-bomb pixel limit)."""
    from ldmkit.data.image_folder import BadImageError, ImageTooLargeError, load_image

    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(400, f"{what}: a data: URL must be base64 (data:image/png;base64,...)")
    if len(text) > 4 * math.ceil(limits.max_upload_bytes / 3) + 4:
        raise RequestError(413, f"{what}: over the upload limit of {limits.max_upload_bytes} bytes (max_upload_bytes)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{what}: not valid base64") from None
    if len(data) > limits.max_upload_bytes:
        raise RequestError(413, f"{what}: {len(data)} bytes is over the upload limit of {limits.max_upload_bytes} "
                                "bytes (max_upload_bytes)")
    with tempfile.TemporaryDirectory(prefix="ldmkit-web-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        try:
            return load_image(path, channels=channels, max_pixels=limits.max_pixels)
        except ImageTooLargeError as e:
            raise RequestError(413, f"{what}: {e.reason}") from None
        except BadImageError as e:
            raise RequestError(400, f"{what}: {e.reason}") from None


def upload_tensor(text: str, what: str, served: ServedModel, limits: Limits, *, low_res: bool = False) -> torch.Tensor:
    """An uploaded image as ``[1, C, H, W]`` in [-1, 1] whose size the model takes (``low_res``: the input of
    a super-resolution model, whose *upscaled* size must fit)."""
    arr = decode_upload(text, what, editing.image_channels(served.loaded), limits)
    try:
        if low_res:
            editing.upscaled_size(served.loaded, arr.shape[:2])
        else:
            editing.check_size(served.loaded, arr.shape[0], arr.shape[1], what=f"{what}: size")
    except editing.EditInputError as e:
        raise RequestError(422, str(e)) from None
    return editing.to_tensor(arr)


def generation_shape(served: ServedModel, height: int | None, width: int | None, limits: Limits):
    """``(x_t shape or None for the training size, "HxW" or None)``."""
    if height is None and width is None:
        return None, None
    from ldmkit.pipelines import image_shape

    _, h0, w0 = image_shape(served.loaded.config)
    h, w = height or h0, width or w0
    if max(h, w) > limits.max_side:
        raise RequestError(422, f"size {h}x{w}: height and width must be at most {limits.max_side} (max_side)")
    try:
        return editing.shape_at(served.loaded, h, w, what="size"), f"{h}x{w}"
    except editing.EditInputError as e:
        raise RequestError(422, str(e)) from None


# ---------------------------------------------------------------------------------------- results
def png_bytes(image: np.ndarray, metadata: dict[str, Any]) -> bytes:
    """One uint8 ``[H, W, C]`` image as PNG bytes with ``metadata`` as text chunks (``images.save_png``)."""
    with tempfile.TemporaryDirectory(prefix="ldmkit-web-") as tmp:
        return save_png(Path(tmp) / "out.png", image, metadata).read_bytes()


def common_metadata(served: ServedModel, method: str) -> dict[str, Any]:
    from ldmkit import __version__

    loaded = served.loaded
    weights = "ema" if (Path(loaded.path) / "ema.safetensors").is_file() else "model"
    return {"ldmkit_version": __version__, "source": "ldmkit serve", "method": method, "model": served.id,
            "checkpoint": str(loaded.path), "step": loaded.step, "weights": weights}


# ------------------------------------------------------------------------------------------ work
def generate_images(loaded, *, n: int, shape, sampler: str, steps: int, eta: float, seed: int, cond,
                    guidance_scale: float) -> torch.Tensor:
    """The web server's one call into the library's generation: ``[n, C, H, W]`` in [-1, 1]."""
    return loaded.generate(n, shape=shape, sampler=sampler, steps=steps, eta=eta, seed=seed, cond=cond,
                           guidance_scale=guidance_scale, batch_size=BATCH_SIZE)


def generate_work(served: ServedModel, p: dict[str, Any], shape, labels, cond):
    """The job function of ``POST /api/generate`` (``p``: the checked settings)."""

    def work(job: Job) -> list[Result]:
        images = generate_images(watched(served.loaded, job), n=p["n"], shape=shape, sampler=p["sampler"],
                                 steps=p["steps"], eta=p["eta"], seed=p["seed"], cond=cond,
                                 guidance_scale=p["guidance_scale"])
        common = {**common_metadata(served, "generate"), "sampler": p["sampler"], "steps": p["steps"],
                  "eta": p["eta"], "guidance_scale": p["guidance_scale"], "size": p["size"]}
        if p.get("prompt"):
            common["prompt"] = p["prompt"]
        if p.get("layout"):
            common["layout"] = p["layout"]
        out = []
        for i, image in enumerate(to_uint8(images)):
            label = None if labels is None else int(labels[i])
            cmd = (f"ldmkit sample {shlex.quote(common['checkpoint'])} -n 1 --sampler {p['sampler']} "
                   f"--steps {p['steps']} --eta {p['eta']} --seed {p['seed'] + i}"
                   + ("" if label is None else f" --labels {label}")
                   + (f" --prompt {shlex.quote(p['prompt'])}" if p.get("prompt") else "")
                   + (f" --layout {shlex.quote(json.dumps(p['layout']))}" if p.get("layout") else "")
                   + (f" --guidance-scale {p['guidance_scale']}" if is_conditional(served.loaded) else "")
                   + ("" if common["weights"] == "ema" else " --no-ema")
                   + (f" --size {p['size']}" if p["size"] else ""))
            meta = {**common, "seed": p["seed"] + i, "index": i, "label": label, "reproduce": cmd}
            out.append(Result(png_bytes(image, meta), meta))
        return out

    return work


def inpaint_image(loaded, image, mask, *, steps, resample, jump_length, seed, labels, guidance_scale):
    """The one call into the library's inpainting: a model trained for it (``cond.concat: inpainting``) fills
    the hole in one sampling run (``editing.inpaint_concat``); any other model uses RePaint (``editing.inpaint``)."""
    if editing.concat_task(loaded) == "inpainting":
        if labels is not None:
            raise editing.EditInputError("labels: this inpainting model is not class-conditional")
        return editing.inpaint_concat(loaded, image, mask, steps=steps, seed=seed)
    return editing.inpaint(loaded, image, mask, steps=steps, resample=resample, jump_length=jump_length,
                           seed=seed, labels=labels, guidance_scale=guidance_scale)


def inpaint_work(served: ServedModel, p: dict[str, Any], image, mask, labels):
    def work(job: Job) -> list[Result]:
        out = inpaint_image(watched(served.loaded, job), image, mask, steps=p["steps"], resample=p["resample"],
                            jump_length=p["jump_length"], seed=p["seed"], labels=labels,
                            guidance_scale=p["guidance_scale"])
        meta = {**common_metadata(served, "repaint"), **{k: p[k] for k in ("steps", "resample", "jump_length",
                                                                            "seed", "mask_threshold")},
                "label": None if labels is None else int(labels[0]), "guidance_scale": p["guidance_scale"]}
        meta["reproduce"] = (f"ldmkit inpaint {shlex.quote(meta['checkpoint'])} IMAGE.png MASK.png --threshold "
                             f"{p['mask_threshold']} --steps {p['steps']} --resample {p['resample']} --seed {p['seed']}"
                             + ("" if p["jump_length"] is None else f" --jump-length {p['jump_length']}")
                             + ("" if labels is None else f" --labels {int(labels[0])} --guidance-scale "
                                                          f"{p['guidance_scale']}"))
        return [Result(png_bytes(to_uint8(out[0]), meta), meta)]

    return work


def img2img_image(loaded, image, *, strength, steps, sampler, eta, seed, labels, guidance_scale):
    """The one call into the library's SDEdit image-to-image (``editing.img2img``)."""
    return editing.img2img(loaded, image, strength=strength, steps=steps, sampler=sampler, eta=eta, seed=seed,
                           labels=labels, guidance_scale=guidance_scale)


def img2img_work(served: ServedModel, p: dict[str, Any], image, labels):
    def work(job: Job) -> list[Result]:
        out, run = img2img_image(watched(served.loaded, job), image, strength=p["strength"], steps=p["steps"],
                                 sampler=p["sampler"], eta=p["eta"], seed=p["seed"], labels=labels,
                                 guidance_scale=p["guidance_scale"])
        label = None if labels is None else int(labels[0])
        meta = {**common_metadata(served, "sdedit"), **{k: p[k] for k in ("strength", "sampler", "steps", "eta",
                                                                            "seed", "guidance_scale")},
                "steps_run": run.steps_run, "t_start": run.t_start, "label": label}
        meta["reproduce"] = (f"ldmkit img2img {shlex.quote(meta['checkpoint'])} IMAGE.png --strength {p['strength']} "
                             f"--sampler {p['sampler']} --steps {p['steps']} --eta {p['eta']} --seed {p['seed']}"
                             + ("" if label is None else f" --labels {label} --guidance-scale {p['guidance_scale']}"))
        return [Result(png_bytes(to_uint8(out[0]), meta), meta)]

    return work


def upscale_work(served: ServedModel, p: dict[str, Any], image):
    fn = upscaler(served.loaded)

    def work(job: Job) -> list[Result]:
        out = fn(watched(served.loaded, job), image, steps=p["steps"], seed=p["seed"], progress=None)
        meta = {**common_metadata(served, "upscale"), "steps": p["steps"], "seed": p["seed"]}
        return [Result(png_bytes(to_uint8(out[0]), meta), meta)]

    return work
