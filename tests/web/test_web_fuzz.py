"""Property-based run over the app's own OpenAPI schema: requests drawn from each operation's request body
schema (mostly valid, sometimes wrong-typed, out of range or with a real image) never get a 5xx answer."""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
import pytest
from _web_helpers import LOCAL, png_b64
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldmkit.web.app import create_app
from ldmkit.web.schemas import Limits

# tiny limits: a valid request runs at most 2 steps on 2 images
LIMITS = Limits(max_n=2, max_steps=2, max_side=32, max_queue=64, max_pixels=4096)
IMAGES = [png_b64(np.full((28, 28), 100, np.uint8)), png_b64(np.zeros((8, 8), np.uint8)),
          png_b64((np.arange(28 * 28).reshape(28, 28) % 2 * 255).astype(np.uint8))]


# a valid body per operation; the run mutates one of its fields at a time as well as drawing whole bodies
BASE = {"/api/generate": {"model": "demo", "n": 1, "steps": 1},
        "/api/img2img": {"model": "demo", "image": IMAGES[0], "strength": 0.5, "steps": 1},
        "/api/inpaint": {"model": "demo", "image": IMAGES[0], "mask": IMAGES[2], "steps": 1},
        "/api/upscale": {"model": "demo", "image": IMAGES[0]}}


def value_strategy(schema: dict, components: dict, depth: int = 0) -> st.SearchStrategy:
    """A strategy for JSON values matching ``schema`` (the subset FastAPI emits), with small sizes."""
    if "$ref" in schema:
        return value_strategy(components[schema["$ref"].rsplit("/", 1)[1]], components, depth)
    if "anyOf" in schema:
        return st.one_of([value_strategy(s, components, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "integer":
        lo, hi = schema.get("minimum", -(2**40)), schema.get("maximum", 2**40)
        return st.one_of(st.integers(lo, min(hi, lo + 2)), st.integers(lo, min(hi, lo + 8)), st.integers(lo, hi))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e6), schema.get("maximum", 1e6), allow_nan=False)
    if kind == "string":
        return st.text(max_size=min(schema.get("maxLength", 20), 20))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(value_strategy(schema.get("items", {}), components, depth + 1), max_size=3)
    if kind == "object" and depth < 3:
        return object_strategy(schema, components, depth + 1)
    return st.none()


def object_strategy(schema: dict, components: dict, depth: int = 0) -> st.SearchStrategy:
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fields = {}
    for name, sub in props.items():
        good = value_strategy(sub, components, depth)
        if name == "model":
            good = st.sampled_from(["demo", "demo", "cond", "nope"])
        elif name in ("image", "mask"):
            good = st.one_of(st.sampled_from(IMAGES), good)
        junk = st.one_of(st.none(), st.integers(-5, 10**12), st.text(max_size=5), st.lists(st.integers(), max_size=2))
        fields[name] = st.one_of(*[good] * 9, junk)
    return st.fixed_dictionaries({k: v for k, v in fields.items() if k in required},
                                 optional={k: v for k, v in fields.items() if k not in required})


@pytest.fixture(scope="module")
def fuzz_client(demo, cond):
    return TestClient(create_app({"demo": demo, "cond": cond}, limits=LIMITS), base_url=LOCAL)


def operations(client) -> list[tuple[str, str, dict]]:
    schema = client.get("/api/openapi.json").json()
    components = schema["components"]["schemas"]
    ops = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            ops.append((method.upper(), path, body and components[body["$ref"].rsplit("/", 1)[1]]))
    return ops, components


def test_the_schema_lists_every_post_operation_with_a_body(fuzz_client):
    ops, _ = operations(fuzz_client)
    with_body = {p for m, p, b in ops if m == "POST" and b is not None}
    assert with_body == {"/api/generate", "/api/inpaint", "/api/img2img", "/api/upscale"}


def test_no_request_drawn_from_the_openapi_schema_gets_a_5xx(fuzz_client):
    ops, components = operations(fuzz_client)
    job_ids = st.one_of(st.text(max_size=40), st.sampled_from(["abc", "x" * 33, "..", "%2e%2e"]))

    def request(op):
        method, path, body = op
        params = {"job_id": job_ids, "index": st.integers(-3, 5000)}
        filled = st.fixed_dictionaries({k: v for k, v in params.items() if "{" + k + "}" in path})
        payload = st.none()
        if body:
            whole = object_strategy(body, components)
            one = object_strategy(body, components).map(lambda d: dict(list(d.items())[:1]))
            payload = st.one_of(whole, one.map(lambda d: {**BASE[path], **d}), st.just(BASE[path]))
        return st.tuples(st.just(method), st.just(path), filled, payload)

    seen = {"codes": set()}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.sampled_from(ops).flatmap(request))
    def run(drawn):
        method, path, params, payload = drawn
        for k, v in params.items():
            path = path.replace("{" + k + "}", quote(str(v), safe="") or "x")
        r = fuzz_client.request(method, path, json=payload)
        seen["codes"].add(r.status_code)
        assert r.status_code < 500, (method, path, payload, r.text)

    run()
    assert {202, 422} <= seen["codes"], seen  # the run reached both valid and invalid requests
    jobs = fuzz_client.app.state.jobs.all()
    for job in jobs:
        assert job.finished.wait(30), job
    failed = [(j.kind, j.params, j.error) for j in jobs if j.state == "failed"]
    assert not failed, failed  # an accepted request must not fail inside its job either
