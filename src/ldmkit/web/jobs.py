"""Jobs of the web server: one worker thread per model runs its jobs one at a time from a bounded queue.

A job's work function calls :meth:`Job.tick` after each denoiser evaluation (see ``ops.watched``); ``tick``
raises :class:`JobCancelled` once the job was cancelled, which ends the sampling loop between two steps.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

FINISHED = ("done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a running job when it has been cancelled."""


class QueueFull(Exception):
    """The model already runs one job and has ``max_queue`` waiting; the message says so."""


@dataclass
class Result:
    """One output image: PNG bytes (with the reproduction metadata inside) and that metadata."""

    png: bytes
    metadata: dict[str, Any]


@dataclass
class Job:
    """One request's work: its state, progress (``done`` of ``total`` denoiser evaluations) and results."""

    model: str
    kind: str
    total: int
    params: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    state: str = "queued"  # queued -> running -> done | failed | cancelled
    done: int = 0
    error: str | None = None
    results: list[Result] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    seconds: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def tick(self, k: int = 1) -> None:
        """Count ``k`` denoiser evaluations; raise :class:`JobCancelled` when a cancel was asked for."""
        if self.cancel_requested.is_set():
            raise JobCancelled(self.id)
        self.done += k

    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        return min(self.done / self.total, 0.99) if self.total else 0.0


class JobManager:
    """Runs jobs, one at a time per model, with at most ``max_queue`` waiting per model; keeps the last
    ``max_kept`` finished jobs for their results."""

    def __init__(self, max_queue: int = 4, max_kept: int = 32):
        if max_queue < 0 or max_kept < 1:
            raise ValueError(f"max_queue must be >= 0 and max_kept >= 1, got {max_queue}, {max_kept}")
        self.max_queue, self.max_kept = max_queue, max_kept
        self._lock = threading.Condition()
        self._pending: dict[str, deque[tuple[Job, Callable[[Job], list[Result]]]]] = {}
        self._running: dict[str, Job | None] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, job: Job, work: Callable[[Job], list[Result]]) -> Job:
        """Queue ``job``; ``work(job)`` runs later on the model's worker thread and returns the results.

        Raises:
            QueueFull: the model already has a running job and ``max_queue`` waiting.
        """
        with self._lock:
            pending = self._pending.setdefault(job.model, deque())
            running = int(self._running.get(job.model) is not None)
            if running + len(pending) >= 1 + self.max_queue:  # one runs, max_queue wait
                raise QueueFull(f"model {job.model} is busy: {running} job running and {len(pending)} waiting "
                                f"(at most 1 runs and {self.max_queue} wait); retry when one has finished")
            pending.append((job, work))
            self._jobs[job.id] = job
            self._evict()
            if job.model not in self._workers:
                worker = threading.Thread(target=self._serve, args=(job.model,), daemon=True,
                                          name=f"ldmkit-web-{job.model}")
                self._workers[job.model] = worker
                worker.start()
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        """The jobs kept (waiting, running and the last finished ones), oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop: a waiting one is dropped at once, a running one stops at its next step."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINISHED:
                return job
            job.cancel_requested.set()
            pending = self._pending.get(job.model, deque())
            for entry in list(pending):
                if entry[0] is job:
                    pending.remove(entry)
                    self._finish(job, "cancelled")
            return job

    def queue_length(self, model: str) -> tuple[int, int]:
        """(running, waiting) jobs of ``model``."""
        with self._lock:
            return int(self._running.get(model) is not None), len(self._pending.get(model, ()))

    def _evict(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in FINISHED]
        for k in finished[: max(0, len(finished) - self.max_kept)]:
            del self._jobs[k]

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error = state, error
        job.finished.set()

    def _serve(self, model: str) -> None:
        while True:
            with self._lock:
                while not self._pending.get(model):
                    self._lock.wait()
                job, work = self._pending[model].popleft()
                self._running[model] = job
                job.state = "running"
            start = time.perf_counter()
            try:
                results = work(job)
                state, error = "done", None
            except JobCancelled:
                results, state, error = [], "cancelled", None
            except Exception as e:  # a bug or a runtime failure: the job fails, the server goes on
                logger.exception("job %s (%s on %s) failed", job.id, job.kind, model)
                results, state, error = [], "failed", f"{type(e).__name__}: {e}"
            with self._lock:
                job.results = results
                job.seconds = time.perf_counter() - start
                self._running[model] = None
                self._finish(job, state, error)
                self._evict()
