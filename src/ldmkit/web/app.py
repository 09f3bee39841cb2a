"""The FastAPI app of ``ldmkit serve``: a JSON API over the served models and one static page.

    from ldmkit.web.app import create_app
    app = create_app({"demo": "src/ldmkit/assets/demo_ddpm_fmnist"})   # id -> checkpoint folder (or model)

Endpoints (all under ``/api``; the schema is at ``/api/openapi.json``): ``GET /api/models``;
``POST /api/generate``, ``/api/inpaint``, ``/api/img2img``, ``/api/upscale`` (each answers 202 with a job
id); ``GET /api/jobs/{id}`` (``?wait=S`` waits up to S seconds for the end), ``GET /api/jobs/{id}/events``
(server-sent events), ``POST /api/jobs/{id}/cancel``, ``GET /api/jobs/{id}/images/{k}.png``.

Answers: 400 a request the model cannot serve (a prompt to an unconditional model, an upscale without a
super-resolution model, a bad upload); 401 token; 403 host/origin; 404 unknown model or job; 413 too large;
422 a value out of range (the message says what is allowed); 429 the model's queue is full.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ldmkit.registry import ConfigError, lookup
from ldmkit.samplers import SAMPLERS
from ldmkit.web import ops
from ldmkit.web.jobs import Job, JobManager, QueueFull
from ldmkit.web.models import ServedModel, load_models
from ldmkit.web.schemas import (
    GenerateRequest,
    Img2ImgRequest,
    InpaintRequest,
    JobAccepted,
    JobStatus,
    Limits,
    ModelsResponse,
    UpscaleRequest,
)
from ldmkit.web.security import LOOPBACK_HOSTS, RequestGuard

STATIC = Path(__file__).resolve().parent / "static"
JOB_ID = r"^[A-Za-z0-9_-]{1,32}$"


def create_app(models: Mapping[str, Any], token: str | None = None, limits: Limits | None = None, *,
               allowed_hosts: Iterable[str] = LOOPBACK_HOSTS, device: Any = "cpu") -> FastAPI:
    """The app over ``models`` (id -> checkpoint folder or ``pipelines.LoadedModel``); nothing is started.

    Args:
        token: when set, every ``/api`` request needs it (``Authorization: Bearer`` or ``X-Ldmkit-Token``).
        limits: request, upload, queue and parameter limits.
        allowed_hosts: host names the ``Host`` header may carry (DNS-rebinding guard).
    """
    limits = Limits() if limits is None else limits
    served = load_models(models, device=device)
    if not served:
        raise ValueError("create_app: no models to serve")
    jobs = JobManager(max_queue=limits.max_queue, max_kept=limits.max_jobs_kept)
    app = FastAPI(title="ldmkit", version=_version(), docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Generate and edit images with ldmkit's diffusion models (see docs/web.md).")
    app.state.models, app.state.jobs, app.state.limits = served, jobs, limits
    _add_error_handlers(app)

    def model(name: str) -> ServedModel:
        try:
            return lookup(served, name, "model")
        except ConfigError as e:
            raise ops.RequestError(404, str(e)) from None

    def submit(m: ServedModel, kind: str, total: int, params: dict[str, Any], work) -> JSONResponse:
        job = jobs.submit(Job(m.id, kind, total, params), work)
        base = f"/api/jobs/{job.id}"
        body = JobAccepted(job_id=job.id, model=m.id, kind=kind, total=total, status_url=base,
                           events_url=f"{base}/events", cancel_url=f"{base}/cancel")
        return JSONResponse(body.model_dump(), status_code=202)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/models", response_model=ModelsResponse, summary="The served models and the server's limits")
    def list_models() -> dict[str, Any]:
        return {"models": [m.info() for m in served.values()], "limits": limits.as_dict(),
                "samplers": list(SAMPLERS)}

    @app.post("/api/generate", status_code=202, response_model=JobAccepted, summary="Sample images (a job)")
    def generate(req: GenerateRequest) -> JSONResponse:
        m = model(req.model)
        ops.check_conditioning(m, req.prompt, req.layout)
        if req.n > limits.max_n:
            raise ops.RequestError(422, f"n={req.n}: must be in [1, {limits.max_n}] (max_n)")
        cfg = m.loaded.config
        steps = ops.check_steps(req.steps, m, limits)
        scale = ops.check_guidance(req.guidance_scale, m, limits)
        labels = ops.check_labels(req.labels, req.n, m)
        shape, size = ops.generation_shape(m, req.height, req.width, limits)
        layout = None if not req.layout else [{"label": b.label, "box": [b.x0, b.y0, b.x1, b.y1]} for b in req.layout]
        cond = ops.request_cond(m, req.n, labels=labels, prompt=req.prompt, layout=req.layout)
        p = {"n": req.n, "sampler": req.sampler or cfg.sample.sampler, "steps": steps,
             "eta": cfg.sample.eta if req.eta is None else req.eta, "seed": req.seed, "guidance_scale": scale,
             "labels": None if labels is None else labels.tolist(), "size": size, "prompt": req.prompt or None,
             "layout": layout}
        total = steps * -(-req.n // ops.BATCH_SIZE)
        return submit(m, "generate", total, p, ops.generate_work(m, p, shape, labels, cond))

    @app.post("/api/inpaint", status_code=202, response_model=JobAccepted,
              summary="Fill the white part of a mask (RePaint; a job)")
    def inpaint(req: InpaintRequest) -> JSONResponse:
        from ldmkit import editing

        m = model(req.model)
        ops.check_task(m, "inpaint")
        steps = ops.check_steps(req.steps, m, limits)
        if req.resample > limits.max_resample:
            raise ops.RequestError(422, f"resample={req.resample}: must be in [1, {limits.max_resample}] "
                                        "(max_resample)")
        if req.resample > 1 and (steps < 2 or (req.jump_length is not None and req.jump_length >= steps)):
            raise ops.RequestError(422, f"jump_length={req.jump_length}, resample={req.resample}: jumping back "
                                        f"needs steps >= 2 and jump_length in [1, steps - 1 = {steps - 1}]")
        scale = ops.check_guidance(req.guidance_scale, m, limits)
        labels = _one_label(req.labels, m)
        image = ops.upload_tensor(req.image, "image", m, limits)
        gray = ops.decode_upload(req.mask, "mask", 1, limits)[..., 0]
        if gray.shape != tuple(image.shape[-2:]):
            raise ops.RequestError(422, f"mask: size {gray.shape[0]}x{gray.shape[1]} (HxW) differs from the "
                                        f"image's {image.shape[-2]}x{image.shape[-1]}")
        try:
            mask = editing.binary_mask(gray, "mask", req.mask_threshold)
        except editing.EditInputError as e:
            raise ops.RequestError(422, str(e)) from None
        p = {"steps": steps, "resample": req.resample, "jump_length": req.jump_length, "seed": req.seed,
             "guidance_scale": scale, "mask_threshold": req.mask_threshold,
             "labels": None if labels is None else labels.tolist()}
        total = editing.inpaint_evaluations(steps, req.resample, req.jump_length)
        return submit(m, "inpaint", total, p, ops.inpaint_work(m, p, image, mask, labels))

    @app.post("/api/img2img", status_code=202, response_model=JobAccepted,
              summary="Noise an image to a strength and denoise it (SDEdit; a job)")
    def img2img(req: Img2ImgRequest) -> JSONResponse:
        from ldmkit import editing

        m = model(req.model)
        ops.check_task(m, "img2img")
        cfg = m.loaded.config
        steps = ops.check_steps(req.steps, m, limits)
        scale = ops.check_guidance(req.guidance_scale, m, limits)
        labels = _one_label(req.labels, m)
        image = ops.upload_tensor(req.image, "image", m, limits)
        p = {"strength": req.strength, "sampler": req.sampler or cfg.sample.sampler, "steps": steps,
             "eta": cfg.sample.eta if req.eta is None else req.eta, "seed": req.seed, "guidance_scale": scale,
             "labels": None if labels is None else labels.tolist()}
        total = editing.steps_run(req.strength, steps)
        return submit(m, "img2img", total, p, ops.img2img_work(m, p, image, labels))

    @app.post("/api/upscale", status_code=202, response_model=JobAccepted,
              summary="Super-resolve an image (super-resolution models only; a job)")
    def upscale(req: UpscaleRequest) -> JSONResponse:
        m = model(req.model)
        ops.check_task(m, "upscale")
        steps = ops.check_steps(req.steps, m, limits)
        image = ops.upload_tensor(req.image, "image", m, limits, low_res=True)
        p = {"steps": steps, "seed": req.seed}
        return submit(m, "upscale", steps, p, ops.upscale_work(m, p, image))

    def job_or_404(job_id: str) -> Job:
        job = jobs.get(job_id)
        if job is None:
            raise ops.RequestError(404, f"no job {job_id!r} (unknown, or finished long ago: the server keeps the "
                                        f"last {limits.max_jobs_kept} finished jobs)")
        return job

    @app.get("/api/jobs/{job_id}", response_model=JobStatus, summary="A job's state, progress and results")
    def job_status(job_id: str = PathParam(pattern=JOB_ID),
                   wait: float = Query(0.0, ge=0, le=30, description="wait up to this many seconds for the end")
                   ) -> dict[str, Any]:
        job = job_or_404(job_id)
        if wait > 0:
            job.finished.wait(wait)
        return status(job)

    @app.get("/api/jobs/{job_id}/events", summary="Server-sent events: the job's status until it ends",
             response_class=StreamingResponse)
    def job_events(job_id: str = PathParam(pattern=JOB_ID)) -> StreamingResponse:
        job = job_or_404(job_id)

        def stream():
            last = None
            while True:
                now = status(job, images=False)
                if now != last:
                    yield f"event: status\ndata: {json.dumps(now)}\n\n"
                    last = now
                if job.finished.is_set() and now["state"] == job.state:
                    return
                job.finished.wait(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/api/jobs/{job_id}/cancel", response_model=JobStatus, summary="Cancel a waiting or running job")
    def job_cancel(job_id: str = PathParam(pattern=JOB_ID)) -> dict[str, Any]:
        job_or_404(job_id)
        job = jobs.cancel(job_id)
        job.finished.wait(5.0)  # a running job stops at its next denoiser evaluation
        return status(job)

    @app.get("/api/jobs/{job_id}/images/{index}.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}}, summary="One result PNG (with its metadata)")
    def job_image(job_id: str = PathParam(pattern=JOB_ID), index: int = PathParam(ge=0, le=4096)) -> Response:
        job = job_or_404(job_id)
        if index >= len(job.results):
            raise ops.RequestError(404, f"job {job_id} has {len(job.results)} images (state {job.state}); no "
                                        f"image {index}")
        return Response(job.results[index].png, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="ldmkit-{job.kind}-{job.id}-{index}.png"'})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestGuard, allowed_hosts=tuple(allowed_hosts), token=token,
                       max_body_bytes=limits.max_body_bytes)
    return app


def status(job: Job, images: bool = True) -> dict[str, Any]:
    out = {"job_id": job.id, "model": job.model, "kind": job.kind, "state": job.state, "done": job.done,
           "total": job.total, "progress": round(job.progress(), 4), "seconds": job.seconds, "error": job.error,
           "params": job.params, "images": []}
    if images and job.state == "done":
        out["images"] = [{"url": f"/api/jobs/{job.id}/images/{k}.png", "metadata": r.metadata,
                          "png_base64": base64.b64encode(r.png).decode()} for k, r in enumerate(job.results)]
    return out


def _one_label(labels: list[int] | None, m: ServedModel):
    """Edits take one image: its class (class-conditional models; default class 0)."""
    if labels is not None and len(labels) > 1:
        raise ops.RequestError(422, f"labels {labels}: an edit takes one image, so at most one label")
    if m.loaded.config.unet.num_classes is not None and not labels:
        labels = [0]
    return ops.check_labels(labels, 1, m)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ops.RequestError)
    def request_error(request, exc: ops.RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(QueueFull)
    def queue_full(request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    def invalid(request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": detail or "invalid request", "errors": errors}, status_code=422)


def _version() -> str:
    from ldmkit import __version__

    return __version__


__all__ = ["Limits", "create_app", "status"]
