"""Request and response bodies of the JSON API (pydantic; FastAPI's OpenAPI schema is built from them).

The bounds here are hard caps that hold for every server; :class:`Limits` (set per server) and each model
(its ``T``, classes, size factor) narrow them, and the API answers 422 naming the allowed range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ldmkit.samplers import SAMPLERS

SamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
MAX_SEED = 2**31 - 1
_B64_CAP = 64 * 2**20  # characters; the body limit (Limits.max_body_bytes) is far lower


@dataclass(frozen=True)
class Limits:
    """Per-server limits (``create_app(limits=...)``); every request is checked against them."""

    max_n: int = 16  # images per generate request
    max_steps: int = 1000  # sampler steps (also capped by the model's T)
    max_side: int = 256  # generated image height / width in pixels
    max_guidance: float = 20.0
    max_resample: int = 10  # RePaint's R
    max_queue: int = 4  # jobs waiting per model (one more runs)
    max_jobs_kept: int = 32  # finished jobs whose results stay available
    max_body_bytes: int = 8 * 2**20  # whole request body
    max_upload_bytes: int = 4 * 2**20  # one decoded upload (PNG/JPEG/WebP/BMP file bytes)
    max_pixels: int = 1024 * 1024  # decoded pixels of one upload (decompression bombs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LayoutBox(_Strict):
    """A box of a layout (fractions of the image: 0 = left/top, 1 = right/bottom) and its label."""

    x0: float = Field(ge=0, le=1)
    y0: float = Field(ge=0, le=1)
    x1: float = Field(ge=0, le=1)
    y1: float = Field(ge=0, le=1)
    label: str = Field(max_length=100)


class _Sampling(_Strict):
    model: str = Field(min_length=1, max_length=200, description="a model id from GET /api/models")
    steps: int | None = Field(None, ge=1, le=10_000, description="sampler steps (default: the model's)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="image i uses seed + i")
    guidance_scale: float | None = Field(None, ge=0, le=1000,
                                         description="classifier-free guidance (1 = none; class-conditional only)")
    labels: list[int] | None = Field(None, max_length=1024,
                                     description="class-conditional models: class indices, repeated to n "
                                                 "(default: 0, 1, ..., K-1, 0, ...)")


class GenerateRequest(_Sampling):
    n: int = Field(4, ge=1, le=1024, description="number of images")
    sampler: SamplerName | None = Field(None, description="default: the model's")
    eta: float | None = Field(None, ge=0, le=1, description="DDIM stochasticity")
    height: int | None = Field(None, ge=1, le=65536, description="image height (default: the training size)")
    width: int | None = Field(None, ge=1, le=65536, description="image width (default: the training size)")
    prompt: str | None = Field(None, max_length=2000, description="text models only (none exists yet)")
    layout: list[LayoutBox] | None = Field(None, max_length=64,
                                           description="layout models only: boxes labelled from the model's "
                                                       "'layout_labels' in GET /api/models, at most its 'max_boxes'")


class _ImageInput(_Sampling):
    image: str = Field(min_length=1, max_length=_B64_CAP,
                       description="the input image file (PNG, JPEG, WebP or BMP), base64 or a data: URL")


class InpaintRequest(_ImageInput):
    mask: str = Field(min_length=1, max_length=_B64_CAP,
                      description="mask image of the image's size, base64 PNG: white = fill, black = keep")
    mask_threshold: int = Field(128, ge=1, le=255, description="mask gray levels >= this are filled")
    resample: int = Field(1, ge=1, le=1000, description="RePaint's R: resamplings per jump")
    jump_length: int | None = Field(None, ge=1, le=10_000, description="RePaint's jump length j")


class Img2ImgRequest(_ImageInput):
    strength: float = Field(ge=0, le=1, description="noise level: 0 returns the input, 1 ignores it")
    sampler: SamplerName | None = None
    eta: float | None = Field(None, ge=0, le=1)


class UpscaleRequest(_ImageInput):
    pass


class JobAccepted(BaseModel):
    job_id: str
    model: str
    kind: str
    total: int = Field(description="denoiser evaluations the job will run")
    status_url: str
    events_url: str
    cancel_url: str


class ImageResult(BaseModel):
    url: str = Field(description="the PNG (with its metadata) for download")
    png_base64: str
    metadata: dict[str, Any]


class JobStatus(BaseModel):
    job_id: str
    model: str
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    done: int
    total: int
    progress: float
    seconds: float | None = None
    error: str | None = None
    params: dict[str, Any]
    images: list[ImageResult] = []


class ModelsResponse(BaseModel):
    models: list[dict[str, Any]]
    limits: dict[str, Any]
    samplers: list[str]
