"""Layout boxes through the JSON API: a tiny layout model (``layout_model``, trained in the session for 2 steps on
``shapes``) lists its labels and ``max_boxes``, a generate request with a layout equals the library's
``generate(layouts=...)`` pixel for pixel, and bad boxes are 4xx answers naming the value."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _web_helpers import LOCAL, decode_png, wait_done
from fastapi.testclient import TestClient

from ldmkit.images import to_uint8
from ldmkit.web.app import create_app

BOXES = [{"label": "red circle", "x0": 0.1, "y0": 0.1, "x1": 0.5, "y1": 0.45},
         {"label": "blue square", "x0": 0.5, "y0": 0.4, "x1": 0.9, "y1": 0.9}]


@pytest.fixture(scope="module")
def layout_client(layout_model, demo):
    return TestClient(create_app({"layout": layout_model, "demo": demo}), base_url=LOCAL)


def _post(client, **body):
    return client.post("/api/generate", json={"model": "layout", "n": 2, "steps": 2, **body})


def test_models_lists_the_layout_labels_and_max_boxes(layout_client):
    by_id = {m["id"]: m for m in layout_client.get("/api/models").json()["models"]}
    cond = by_id["layout"]["conditioning"]
    assert cond["layout"] is True and cond["accepts"] == ["layouts"] and cond["max_boxes"] == 3
    assert len(cond["layout_labels"]) == 18
    assert cond["layout_labels"][:4] == ["red circle", "red square", "red triangle", "green circle"]
    assert by_id["layout"]["task"].startswith("layout-to-image image generation (pixel space, shapes)")
    demo = by_id["demo"]["conditioning"]
    assert demo["layout"] is False and demo["layout_labels"] is None and demo["max_boxes"] is None


def test_generate_with_a_layout_equals_the_library(layout_client, layout_model):
    r = _post(layout_client, layout=BOXES, seed=3, guidance_scale=2.0)
    assert r.status_code == 202, r.text
    status = wait_done(layout_client, r.json()["job_id"])
    assert status["state"] == "done", status
    assert status["params"]["layout"] == [{"label": b["label"], "box": [b["x0"], b["y0"], b["x1"], b["y1"]]}
                                          for b in BOXES]
    layouts = [[{"label": b["label"], "box": [b["x0"], b["y0"], b["x1"], b["y1"]]} for b in BOXES]]
    direct = to_uint8(layout_model.generate(2, sampler="ddim", steps=2, seed=3, layouts=layouts,
                                            guidance_scale=2.0))  # [2, 16, 16, 3]
    for k in range(2):
        np.testing.assert_array_equal(decode_png(status["images"][k]["png_base64"]), direct[k])
    meta = status["images"][0]["metadata"]
    stored = meta["layout"] if isinstance(meta["layout"], list) else json.loads(meta["layout"])
    assert [b["label"] for b in stored] == ["red circle", "blue square"] and "--layout" in meta["reproduce"]
    # another layout gives other images: the boxes reach the model
    other = wait_done(layout_client, _post(layout_client, layout=BOXES[1:], seed=3, guidance_scale=2.0).json()["job_id"])
    assert not np.array_equal(decode_png(other["images"][0]["png_base64"]), direct[0])


@pytest.mark.parametrize(("layout", "status", "words"), [
    ([{**BOXES[0], "label": "pink circle"}], 422, "label='pink circle': unknown label; valid: 0 'red circle'"),
    ([{**BOXES[0], "x0": 0.6, "x1": 0.2}], 422, "box 0 [0.6, 0.1, 0.2, 0.45]: needs x1 > x0 and y1 > y0"),
    ([{**BOXES[0], "y1": 0.1}], 422, "needs x1 > x0 and y1 > y0 (got x1-x0=0.4, y1-y0=0)"),
    ([BOXES[0]] * 4, 422, "4 boxes, more than this model's max_boxes=3"),
    ([{**BOXES[0], "x1": 1.5}], 422, "x1: Input should be less than or equal to 1"),
    ([{"label": "red circle", "x0": 0.1, "y0": 0.1}], 422, "x1: Field required"),
])
def test_bad_layouts_are_refused_naming_the_value(layout_client, layout, status, words):
    r = _post(layout_client, layout=layout)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_layout_to_a_model_without_layouts_is_400(layout_client):
    r = layout_client.post("/api/generate", json={"model": "demo", "n": 1, "steps": 1, "layout": BOXES})
    assert r.status_code == 400 and "does not take layout boxes" in r.json()["detail"]
