"""Safety defaults: token, Host and Origin checks, body and upload limits, one job at a time with a bounded
queue, cancel, the serve command's refusals, and that importing ldmkit does not import the web stack."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _web_helpers import LOCAL, png_b64, wait_done
from fastapi.testclient import TestClient

from ldmkit.web.app import create_app
from ldmkit.web.schemas import Limits

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def token_app(demo):
    return create_app({"demo": demo}, token=TOKEN)


def test_with_a_token_every_api_request_needs_it(token_app):
    c = TestClient(token_app, base_url=LOCAL)
    r = c.get("/api/models")
    assert r.status_code == 401 and "request had no token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = c.get("/api/models", headers={"Authorization": "Bearer wrong-token"})
    assert r.status_code == 401 and "a wrong token" in r.json()["detail"]
    assert c.post("/api/generate", json={"model": "demo", "n": 1, "steps": 1}).status_code == 401
    assert c.get("/api/openapi.json").status_code == 401
    assert c.get("/api/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    r = c.post("/api/generate", json={"model": "demo", "n": 1, "steps": 1}, headers={"X-Ldmkit-Token": TOKEN})
    assert r.status_code == 202
    assert wait_done(c, r.json()["job_id"], headers={"X-Ldmkit-Token": TOKEN})["state"] == "done"
    # the page and its files hold no data: they load without the token (which the page reads from #token=)
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200


def test_without_a_token_the_api_is_open_on_loopback(client):
    assert client.get("/api/models").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "127.0.0.1.nip.io", "10.0.0.1"])
def test_foreign_host_headers_are_refused(client, host):
    """DNS rebinding: a foreign name pointed at 127.0.0.1 arrives with its own Host header."""
    for path in ("/", "/api/models"):
        r = client.get(path, headers={"Host": host})
        assert r.status_code == 403 and "is not allowed" in r.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost:8000", "[::1]:7860", "LOCALHOST"])
def test_loopback_host_headers_pass(client, host):
    assert client.get("/api/models", headers={"Host": host}).status_code == 200


def test_allowed_hosts_extend_the_list(demo):
    c = TestClient(create_app({"demo": demo}, allowed_hosts=["box.lan"]), base_url="http://box.lan:7860")
    assert c.get("/api/models").status_code == 200
    assert c.get("/api/models", headers={"Host": "127.0.0.1"}).status_code == 403


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://127.0.0.1", True), ("http://evil.example", False), ("http://127.0.0.1:9999", False),
    ("null", False), ("file://", False)])
def test_origin_must_be_this_server(client, origin, ok):
    r = client.post("/api/generate", json={"model": "demo", "n": 1, "steps": 1}, headers={"Origin": origin})
    assert (r.status_code == 202) == ok, r.text
    if not ok:
        assert r.status_code == 403 and "cross-origin requests are refused" in r.json()["detail"]


def test_cross_site_fetches_are_refused(client):
    r = client.get("/api/models", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert client.get("/api/models", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_body_and_upload_limits(demo):
    c = TestClient(create_app({"demo": demo}, limits=Limits(max_body_bytes=2000, max_upload_bytes=300,
                                                            max_pixels=500)), base_url=LOCAL)
    big = {"model": "demo", "image": "A" * 3000, "mask": "A", "steps": 1}
    r = c.post("/api/inpaint", json=big)
    assert r.status_code == 413 and "over the limit of 2000 bytes (max_body_bytes)" in r.json()["detail"]

    def chunks():  # no Content-Length: the guard counts the streamed bytes
        for _ in range(5):
            yield b"x" * 1000

    r = c.post("/api/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "more than" in r.json()["detail"]
    noisy = png_b64(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))  # > 300 bytes
    r = c.post("/api/img2img", json={"model": "demo", "image": noisy, "strength": 0.5, "steps": 1})
    assert r.status_code == 413 and "upload limit of 300 bytes" in r.json()["detail"]
    r = c.post("/api/img2img", json={"model": "demo", "image": png_b64(np.zeros((28, 28), np.uint8)),
                                     "strength": 0.5, "steps": 1})
    assert r.status_code == 413 and "784 pixels exceeds the limit of 500 pixels" in r.json()["detail"]


def _running(client, job_id):
    for _ in range(200):
        if client.get(f"/api/jobs/{job_id}").json()["state"] == "running":
            return
        time.sleep(0.02)
    raise AssertionError("job never started")


def test_one_job_at_a_time_per_model_then_a_bounded_queue_then_busy(gated):
    loaded, gate = gated
    c = TestClient(create_app({"gated": loaded}, limits=Limits(max_queue=1)), base_url=LOCAL)
    body = {"model": "gated", "n": 1, "steps": 2}
    first = c.post("/api/generate", json=body).json()
    assert gate.entered.wait(10)
    _running(c, first["job_id"])
    second = c.post("/api/generate", json=body)
    assert second.status_code == 202
    assert c.get(second.json()["status_url"]).json()["state"] == "queued"  # waits: one at a time
    third = c.post("/api/generate", json=body)
    assert third.status_code == 429 and third.headers["retry-after"] == "1"
    assert third.json()["detail"] == ("model gated is busy: 1 job running and 1 waiting (at most 1 runs and 1 "
                                      "wait); retry when one has finished")
    gate.release.set()
    assert wait_done(c, first["job_id"])["state"] == "done"
    assert wait_done(c, second.json()["job_id"])["state"] == "done"
    assert c.post("/api/generate", json=body).status_code == 202  # room again


def test_cancel_stops_a_running_job_and_drops_a_waiting_one(gated):
    loaded, gate = gated
    c = TestClient(create_app({"gated": loaded}), base_url=LOCAL)
    running = c.post("/api/generate", json={"model": "gated", "n": 1, "steps": 50}).json()
    waiting = c.post("/api/generate", json={"model": "gated", "n": 1, "steps": 50}).json()
    assert gate.entered.wait(10)
    _running(c, running["job_id"])
    r = c.post(waiting["cancel_url"])
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["done"] == 0
    threading.Timer(0.3, gate.release.set).start()  # the sampler reaches its next step only after cancel
    r = c.post(running["cancel_url"])
    status = r.json()
    assert status["state"] == "cancelled", status
    assert status["done"] < status["total"] == 50 and status["images"] == []
    after = c.post("/api/generate", json={"model": "gated", "n": 1, "steps": 2}).json()
    assert wait_done(c, after["job_id"])["state"] == "done"
    assert c.post(running["cancel_url"]).json()["state"] == "cancelled"  # cancelling twice is harmless


def test_serve_refuses_other_hosts_without_a_token_and_unknown_models(capsys):
    from ldmkit.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--host 0.0.0.0: serving beyond this machine needs --token" in capsys.readouterr().err
    assert main(["serve", "--token", "short"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["serve", "--model", "no_such_model"]) == 2
    assert "unknown model name or checkpoint folder 'no_such_model'; valid: " in (err := capsys.readouterr().err)
    assert "demo-ddpm-fmnist" in err and "fmnist-text" in err and "fmnist-ae-kl-f4" not in err
    assert main(["serve", "--no-demo"]) == 2
    assert "no model left to serve" in capsys.readouterr().err


def test_model_sources_and_allowed_hosts(cond_ckpt, tmp_path):
    from ldmkit.commands.serve import allowed_hosts, is_loopback, model_sources

    run = cond_ckpt.parents[1]  # the run folder "cond"
    from ldmkit import zoo

    sources = model_sources([str(run), "demo-ddpm-fmnist", str(run)])
    shipped = [n for n in zoo.available() if n not in zoo.FIRST_STAGES]
    assert "demo-ddpm-fmnist" in shipped and list(sources) == [*shipped, "cond"]
    other = tmp_path / "cond"
    other.mkdir()
    assert list(model_sources([str(run), str(other)], demo=False)) == ["cond", "cond-2"]
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert allowed_hosts("0.0.0.0", ["box.lan"]) == ["127.0.0.1", "localhost", "::1", "box.lan"]
    assert allowed_hosts("10.1.2.3", []) == ["127.0.0.1", "localhost", "::1", "10.1.2.3"]


def test_importing_ldmkit_and_its_cli_does_not_import_the_web_stack():
    code = ("import sys, ldmkit, ldmkit.cli; ldmkit.cli.build_parser(); bad = [m for m in ('fastapi', 'uvicorn', 'starlette', 'ldmkit.web') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
