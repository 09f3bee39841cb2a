"""Generation through the web API vs the library / CLI: same model, same settings, one after the other.

    python benchmarks/web_latency.py [--n 16] [--steps 25] [--sampler ddim] [--repeats 5]

Prints, for torch's default thread count and for one thread (``--threads``), the median seconds of:
  library   ``LoadedModel.generate`` in this process's main thread (what ``ldmkit sample`` runs after loading);
  lib-thr   the same call on a worker thread, where the server runs its jobs;
  api       ``ldmkit serve`` in a subprocess: POST /api/generate, then GET /api/jobs/{id}?wait= until done
            (HTTP, queue, progress hooks, PNG encoding with metadata and base64 included), as the page does;
  job       the server's own time for that job (``seconds`` in the job status);
  cli       ``ldmkit sample`` as a process (start-up and model load included).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=600) as r:
        return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_library(args, threads: int, on_thread: bool) -> list[float]:
    import threading

    import torch

    from ldmkit.commands._common import load_model
    from ldmkit.commands.demo import DEMO_MODEL

    loaded = load_model(DEMO_MODEL)
    out: list[float] = []

    def run():
        torch.set_num_threads(threads)
        loaded.generate(args.n, sampler=args.sampler, steps=args.steps, seed=0)  # warm-up
        for r in range(args.repeats):
            start = time.perf_counter()
            loaded.generate(args.n, sampler=args.sampler, steps=args.steps, seed=r)
            out.append(time.perf_counter() - start)

    if on_thread:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    else:
        run()
    return out


def _env(threads: int) -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def time_api(args, threads: int) -> tuple[list[float], list[float]]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "ldmkit.cli", "serve", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(threads))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                _get(f"{base}/api/models")
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"ldmkit serve exited: {server.stderr.read().decode()}") from None
                time.sleep(0.1)
        body = {"model": "demo_ddpm_fmnist", "n": args.n, "sampler": args.sampler, "steps": args.steps}
        walls, jobs = [], []
        for r in range(args.repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            job = _post(f"{base}/api/generate", {**body, "seed": r})
            status = _get(f"{base}{job['status_url']}?wait=30")
            while status["state"] not in ("done", "failed", "cancelled"):
                status = _get(f"{base}{job['status_url']}?wait=30")
            wall = time.perf_counter() - start
            if status["state"] != "done" or len(status["images"]) != args.n:
                raise RuntimeError(f"job ended {status['state']}: {status.get('error')}")
            if r:
                walls.append(wall)
                jobs.append(status["seconds"])
        return walls, jobs
    finally:
        server.terminate()
        server.wait(10)


def time_cli(args, threads: int) -> list[float]:
    from ldmkit.commands.demo import DEMO_MODEL

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(max(1, args.repeats // 2)):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ldmkit.cli", "sample", str(DEMO_MODEL), "-n", str(args.n),
                            "--sampler", args.sampler, "--steps", str(args.steps), "--seed", str(r), "--device",
                            "cpu", "--out-dir", str(Path(tmp) / str(r))], check=True, capture_output=True,
                           env=_env(threads))
            out.append(time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch/OpenMP thread counts to measure (default: torch's default, then 1)")
    args = p.parse_args()
    import os

    import torch

    default = torch.get_num_threads()
    for threads in args.threads or sorted({default, 1}, reverse=True):
        rows = {"library": time_library(args, threads, on_thread=False),
                "lib-thr": time_library(args, threads, on_thread=True)}
        rows["api"], rows["job"] = time_api(args, threads)
        rows["cli"] = time_cli(args, threads)
        print(f"demo_ddpm_fmnist, {args.n} images, {args.sampler} {args.steps} steps, CPU, {threads} thread(s), "
              f"load average {os.getloadavg()[0]:.1f}, median of {args.repeats}:", flush=True)
        for name, xs in rows.items():
            print(f"  {name:8s} {statistics.median(xs):7.3f} s   (min {min(xs):.3f}, max {max(xs):.3f}, runs {len(xs)})")
        lm, tm, am = (statistics.median(rows[k]) for k in ("library", "lib-thr", "api"))
        print(f"  api / library = {am / lm:.3f}; api / lib-thr = {am / tm:.3f} (api - lib-thr = "
              f"{1000 * (am - tm):+.0f} ms)", flush=True)


if __name__ == "__main__":
    main()
