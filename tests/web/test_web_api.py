"""The JSON API through FastAPI's TestClient: every endpoint, its validation errors, reproduction metadata."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from _web_helpers import decode_png, png_b64, wait_done

from ldmkit import editing
from ldmkit.images import to_uint8


def _generate(client, **body):
    r = client.post("/api/generate", json={"model": "demo", "n": 2, "steps": 3, **body})
    assert r.status_code == 202, r.text
    return wait_done(client, r.json()["job_id"])


def test_models_lists_task_size_conditioning_and_endpoints(client):
    data = client.get("/api/models").json()
    by_id = {m["id"]: m for m in data["models"]}
    demo, cond = by_id["demo"], by_id["cond"]
    assert demo["image_size"] == {"channels": 1, "height": 28, "width": 28}
    assert demo["conditioning"] == {"type": "none", "classes": None, "accepts": [], "prompts": False, "layout": False,
                                   "layout_labels": None, "max_boxes": None}
    assert demo["endpoints"] == ["generate", "inpaint", "img2img"]
    assert "no upscale task" in demo["unsupported"]["upscale"]
    assert demo["task"].startswith("unconditional image generation")
    assert demo["figures"]["num_timesteps"] == 1000 and demo["figures"]["trained_steps"] == 612
    assert cond["conditioning"]["classes"] == ["class 0", "class 1", "class 2"]
    assert cond["conditioning"]["accepts"] == ["labels"]
    assert cond["task"].startswith("class-conditional")
    assert data["limits"]["max_n"] == 16 and "ddim" in data["samplers"]


def test_generate_equals_the_library_and_its_png_metadata_regenerates_it(client, demo, tmp_path):
    status = _generate(client, seed=5, sampler="ddpm")
    assert status["state"] == "done" and status["done"] == status["total"] == 3 and status["progress"] == 1.0
    direct = to_uint8(demo.generate(2, sampler="ddpm", steps=3, seed=5))  # [2, 28, 28, 1]
    got = [decode_png(im["png_base64"]) for im in status["images"]]
    for k in range(2):
        np.testing.assert_array_equal(got[k], direct[k][..., 0])
    meta = status["images"][1]["metadata"]
    assert meta["seed"] == 6 and meta["sampler"] == "ddpm" and meta["steps"] == 3 and meta["model"] == "demo"
    # the PNG carries its metadata: `ldmkit sample --from-png` regenerates the very image
    png = base64.b64decode(status["images"][1]["png_base64"])
    (tmp_path / "web.png").write_bytes(png)
    from ldmkit.cli import main

    assert main(["sample", "--from-png", str(tmp_path / "web.png"), "--device", "cpu",
                 "--out-dir", str(tmp_path / "again")]) == 0
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again" / "00000.png")), got[1])


def test_image_download_is_the_png_with_its_metadata(client):
    status = _generate(client, n=1)
    r = client.get(status["images"][0]["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "attachment" in r.headers["content-disposition"]
    assert r.content == base64.b64decode(status["images"][0]["png_base64"])
    assert b"reproduce" in r.content  # the iTXt chunk
    assert client.get(status["images"][0]["url"].replace("/0.png", "/7.png")).status_code == 404
    assert client.get("/api/jobs/doesnotexist").status_code == 404
    assert client.get("/api/jobs/bad!id").status_code == 422


def test_class_conditional_generate_uses_the_labels_and_guidance(client, cond):
    status = _generate(client, model="cond", n=3, labels=[2], guidance_scale=3.0, steps=2)
    assert [im["metadata"]["label"] for im in status["images"]] == [2, 2, 2]
    direct = to_uint8(cond.generate(3, steps=2, sampler="ddim", labels=torch.tensor([2, 2, 2]), guidance_scale=3.0))
    np.testing.assert_array_equal(decode_png(status["images"][0]["png_base64"]), direct[0][..., 0])
    balanced = _generate(client, model="cond", n=4, steps=1)
    assert [im["metadata"]["label"] for im in balanced["images"]] == [0, 1, 2, 0]
    assert balanced["params"]["guidance_scale"] == 2.0  # the model's default


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"n": 17}, 422, "n=17: must be in [1, 16]"),
    ({"n": 0}, 422, "n: Input should be greater than or equal to 1"),
    ({"steps": 0}, 422, "steps: Input should be greater than or equal to 1"),
    ({"steps": 1001}, 422, "steps=1001: must be in [1, 1000]"),
    ({"guidance_scale": 3.0}, 422, "is unconditional, so the only allowed value is 1"),
    ({"model": "cond", "guidance_scale": 25.0}, 422, "must be in [0, 20.0]"),
    ({"model": "cond", "labels": [3]}, 422, "classes of model cond lie in [0, 2]"),
    ({"labels": [1]}, 422, "model demo is unconditional: it takes no class labels"),
    ({"sampler": "euler"}, 422, "sampler: Input should be 'ddpm', 'ddim' or 'dpmpp_2m'"),
    ({"seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    ({"eta": 2}, 422, "eta: Input should be less than or equal to 1"),
    ({"height": 30}, 422, "size 30x28: height and width must be positive multiples of 4"),
    ({"height": 512, "width": 512}, 422, "at most 256 (max_side)"),
    ({"colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ({"model": "nope"}, 404, "unknown model 'nope'; valid: cond, demo"),
    ({"prompt": "a red dress"}, 400, "model demo is unconditional and does not take prompts"),
    ({"model": "cond", "prompt": "a red dress"}, 400, ("model cond is class-conditional (pick a class with labels) and "
                                                      "does not take prompts")),
    ({"layout": [{"x0": 0, "y0": 0, "x1": 0.5, "y1": 0.5, "label": "bag"}]}, 400, "does not take layout boxes"),
])
def test_generate_refuses_bad_values_saying_what_is_allowed(client, body, status, words):
    r = client.post("/api/generate", json={"model": "demo", "n": 1, "steps": 2, **body})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_non_finite_and_malformed_json_are_422(client):
    r = client.post("/api/generate", content=b'{"model": "demo", "guidance_scale": NaN}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "guidance_scale" in r.json()["detail"]
    r = client.post("/api/generate", content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_generate_at_another_size(client):
    status = _generate(client, n=1, height=32, width=40, steps=1)
    assert decode_png(status["images"][0]["png_base64"]).shape == (32, 40)
    assert status["images"][0]["metadata"]["size"] == "32x40"


def _demo_image(client) -> np.ndarray:
    return decode_png(_generate(client, n=1, steps=2, seed=9)["images"][0]["png_base64"])


def test_inpaint_fills_the_mask_and_keeps_the_rest(client, demo):
    image = _demo_image(client)
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 8:20] = 255
    r = client.post("/api/inpaint", json={"model": "demo", "image": png_b64(image), "mask": png_b64(mask),
                                          "steps": 3, "seed": 1})
    assert r.status_code == 202, r.text
    assert r.json()["total"] == 3
    status = wait_done(client, r.json()["job_id"])
    assert status["state"] == "done", status
    out = decode_png(status["images"][0]["png_base64"])
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], image[keep])
    direct = editing.inpaint(demo, editing.to_tensor(image[..., None]), torch.from_numpy(mask == 255)[None, None],
                             steps=3, seed=1)
    np.testing.assert_array_equal(out, to_uint8(direct[0])[..., 0])
    assert status["images"][0]["metadata"]["method"] == "repaint"


def test_inpaint_data_url_and_gray_mask_threshold(client):
    image = _demo_image(client)
    mask = np.zeros((28, 28), np.uint8)
    mask[:, :10] = 200  # antialiased paint: gray, filled at the default threshold 128
    body = {"model": "demo", "image": "data:image/png;base64," + png_b64(image), "mask": png_b64(mask), "steps": 2}
    assert wait_done(client, client.post("/api/inpaint", json=body).json()["job_id"])["state"] == "done"
    r = client.post("/api/inpaint", json={**body, "mask_threshold": 201})
    assert r.status_code == 422 and "empty: no pixel to fill" in r.json()["detail"]


def _bomb_png() -> str:
    """A 4000x4000 gray PNG (16 M pixels) that compresses to a few kB."""
    return png_b64(np.zeros((4000, 4000), np.uint8))


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"image": "not base64!!"}, 400, "image: not valid base64"),
    ({"image": base64.b64encode(b"hello, not an image").decode()}, 400, "image: not a readable"),
    ({"image": "data:text/plain,hello"}, 400, "must be base64"),
    ({"mask": png_b64(np.zeros((28, 20), np.uint8))}, 422, "mask: size 28x20 (HxW) differs from the image's 28x28"),
    ({"mask": png_b64(np.zeros((28, 28), np.uint8))}, 422, "mask: empty: no pixel to fill"),
    ({"image": png_b64(np.zeros((30, 30), np.uint8))}, 422, ("image: size 30x30: height and width must be positive "
                                                            "multiples of 4")),
    ({"image": _bomb_png()}, 413, "16000000 pixels exceeds the limit of 1048576 pixels"),
    ({"resample": 11}, 422, "resample=11: must be in [1, 10]"),
    ({"resample": 2, "jump_length": 5, "steps": 3}, 422, "jump_length in [1, steps - 1 = 2]"),
    ({"steps": 2000}, 422, "steps=2000: must be in [1, 1000]"),
    ({"labels": [0]}, 422, "is unconditional: it takes no class labels"),
    ({"model": "cond", "labels": [0, 1]}, 422, "an edit takes one image, so at most one label"),
])
def test_inpaint_refuses_bad_inputs(client, change, status, words):
    mask = np.zeros((28, 28), np.uint8)
    mask[:5] = 255
    body = {"model": "demo", "image": png_b64(np.full((28, 28), 90, np.uint8)), "mask": png_b64(mask), "steps": 2,
            **change}
    r = client.post("/api/inpaint", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_img2img_strength_zero_returns_the_input_and_strength_is_checked(client, demo):
    image = _demo_image(client)
    body = {"model": "demo", "image": png_b64(image), "steps": 4, "seed": 3}
    same = wait_done(client, client.post("/api/img2img", json={**body, "strength": 0.0}).json()["job_id"])
    np.testing.assert_array_equal(decode_png(same["images"][0]["png_base64"]), image)
    r = client.post("/api/img2img", json={**body, "strength": 0.5})
    assert r.json()["total"] == 2
    half = wait_done(client, r.json()["job_id"])
    direct, run = editing.img2img(demo, editing.to_tensor(image[..., None]), strength=0.5, steps=4, seed=3)
    np.testing.assert_array_equal(decode_png(half["images"][0]["png_base64"]), to_uint8(direct[0])[..., 0])
    assert half["images"][0]["metadata"]["steps_run"] == run.steps_run == 2
    r = client.post("/api/img2img", json={**body, "strength": 1.5})
    assert r.status_code == 422 and "strength: Input should be less than or equal to 1" in r.json()["detail"]
    assert client.post("/api/img2img", json={"model": "demo", "image": png_b64(image)}).status_code == 422


def test_upscale_without_a_super_resolution_model_names_the_missing_task(client):
    r = client.post("/api/upscale", json={"model": "demo", "image": png_b64(np.zeros((28, 28), np.uint8))})
    assert r.status_code == 400
    assert r.json()["detail"] == ("model demo has no upscale task: it is not a super-resolution model (cond.concat: "
                                  "super_resolution)")


def test_events_stream_reports_progress_until_done(client):
    job = client.post("/api/generate", json={"model": "demo", "n": 1, "steps": 6}).json()
    with client.stream("GET", job["events_url"]) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert events[-1]["state"] == "done" and events[-1]["done"] == 6
    done = [e["done"] for e in events]
    assert done == sorted(done)


def test_openapi_schema_describes_the_api(client):
    schema = client.get("/api/openapi.json").json()
    for path in ("/api/models", "/api/generate", "/api/inpaint", "/api/img2img", "/api/upscale",
                 "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/cancel"):
        assert path in schema["paths"], path
    props = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"model", "n", "sampler", "steps", "guidance_scale", "seed", "labels", "prompt", "layout"} <= set(props)
    assert client.get("/docs").status_code == 404  # the Swagger page loads from a CDN: off (offline)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A tiny text-to-image model (scratch token transformer, random weights nudged off their init)."""
    pytest.importorskip("tokenizers", reason="text models need the text extra")
    from ldmkit import pipelines
    from ldmkit.config import config_from_data
    from ldmkit.training.checkpoint import save_checkpoint

    cfg = config_from_data({
        "data": {"name": "fashion-mnist", "captions": True},
        "unet": {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                 "attention_levels": [1], "num_heads": 2, "norm_groups": 4, "context_dim": 16},
        "cond": {"context": "text", "text": {"encoder": "scratch", "max_tokens": 16, "width": 16, "depth": 1,
                                             "heads": 2}},
        "diffusion": {"num_timesteps": 40}, "sample": {"sampler": "ddim", "steps": 2, "guidance_scale": 2.0}})
    torch.manual_seed(0)
    process = pipelines.build_process(cfg)
    den = pipelines.build_denoiser(cfg, process, pipelines.build_conditioner(cfg))
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tensors = {k: v.contiguous() for k, v in den.state_dict().items()}
    root = tmp_path_factory.mktemp("webtext")
    return pipelines.load_model(save_checkpoint(root / "text", 0, config=pipelines.config_dict(cfg),
                                                tensors={"model": tensors}))


def test_a_text_model_takes_prompts_through_its_conditioner(text_model):
    from fastapi.testclient import TestClient

    from ldmkit.web.app import create_app

    c = TestClient(create_app({"text": text_model}), base_url="http://127.0.0.1")
    info = c.get("/api/models").json()["models"][0]
    assert info["conditioning"]["prompts"] is True and info["task"].startswith("text-to-image")
    body = {"model": "text", "n": 1, "steps": 2, "seed": 0}
    a = wait_done(c, c.post("/api/generate", json={**body, "prompt": "an ankle boot"}).json()["job_id"])
    b = wait_done(c, c.post("/api/generate", json={**body, "prompt": "a pair of trousers"}).json()["job_id"])
    assert a["state"] == b["state"] == "done", (a["error"], b["error"])
    assert a["images"][0]["metadata"]["prompt"] == "an ankle boot"
    assert "--prompt 'an ankle boot'" in a["images"][0]["metadata"]["reproduce"]
    direct = to_uint8(text_model.generate(1, steps=2, sampler="ddim", prompts=["an ankle boot"], guidance_scale=2.0))
    np.testing.assert_array_equal(decode_png(a["images"][0]["png_base64"]), direct[0][..., 0])
    assert not np.array_equal(decode_png(a["images"][0]["png_base64"]), decode_png(b["images"][0]["png_base64"]))
    r = c.post("/api/generate", json={**body, "layout": [{"x0": 0, "y0": 0, "x1": 1, "y1": 1, "label": "bag"}]})
    assert r.status_code == 400 and "does not take layout boxes" in r.json()["detail"]


def test_a_super_resolution_model_upscales_through_the_api_as_the_library_does(tmp_path):
    """A model trained with ``cond.concat: super_resolution`` gets the upscale endpoint
    (``web/models.py`` ``upscaler``), and its answer equals ``editing.upscale`` pixel for pixel."""
    from fastapi.testclient import TestClient

    from ldmkit.cli import main
    from ldmkit.commands._common import load_model
    from ldmkit.web.app import create_app

    config = tmp_path / "sr.yaml"
    config.write_text(
        "data: {name: fashion-mnist, pad_to: 32}\ncond: {concat: super_resolution}\n"
        "unet: {in_channels: 1, concat_channels: 1, model_channels: 8, channel_mult: [1, 2, 2, 2],"
        " num_res_blocks: 1, attention_levels: [], num_heads: 2, norm_groups: 4}\n"
        "diffusion: {schedule: linear, num_timesteps: 40}\n"
        "train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 2, log_every: 1, checkpoint_every: 2,"
        " sample_every: 0, keep_last: 1, ema_decay: 0.9}\nsample: {sampler: ddim, steps: 3, num_images: 4}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    loaded = load_model(tmp_path / "run")
    client = TestClient(create_app({"sr": loaded}), base_url="http://127.0.0.1")
    info = client.get("/api/models").json()["models"][0]
    assert "upscale" in info["endpoints"] and "upscale" not in info.get("unsupported", {})
    low = np.random.default_rng(0).integers(0, 256, (7, 7)).astype(np.uint8)
    r = client.post("/api/upscale", json={"model": "sr", "image": png_b64(low), "steps": 3, "seed": 1})
    assert r.status_code == 202, r.text
    got = decode_png(wait_done(client, r.json()["job_id"])["images"][0]["png_base64"])
    x = torch.from_numpy(low).float().div(127.5).sub(1)[None, None]
    want = editing.upscale(loaded, x, steps=3, seed=1)
    assert got.shape == (28, 28)
    np.testing.assert_array_equal(got, to_uint8(want[0])[..., 0])
