"""Helpers of the web tests: PNG uploads and waiting for a job."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

LOCAL = "http://127.0.0.1"


def png_b64(array: np.ndarray) -> str:
    """uint8 [H, W] or [H, W, C] -> base64 PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_png(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.array(im)


def wait_done(client, job_id: str, headers=None) -> dict:
    r = client.get(f"/api/jobs/{job_id}", params={"wait": 20}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()
