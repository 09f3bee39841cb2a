"""End to end in real headless Chromium (Debian's ``chromium``, driven by PyPI ``playwright`` through
``executable_path``; no ``playwright install``): the page against a uvicorn server with the demo model and a tiny
layout model (boxes drawn on the layout canvas).

The set-up installs ``chromium`` with apt when it is missing and this runs as root; the test is skipped, saying
why, only where no browser can be had.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"


def _install_chromium() -> str | None:
    """Path of a Chromium binary, installing Debian's package when missing; None with no way to get one."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=900)
        if os.path.exists(CHROMIUM):
            return CHROMIUM
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    path = _install_chromium()
    if path is None:
        pytest.skip("no Chromium: /usr/bin/chromium is missing and 'apt-get install -y chromium' is not possible here")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(demo, layout_model):
    import uvicorn

    from ldmkit.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app({"demo_ddpm_fmnist": demo, "layout_shapes": layout_model}), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


def _not_blank(png: bytes, what: str, min_std: float = 8.0) -> np.ndarray:
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert arr.std() > min_std, f"{what}: the screenshot is blank (pixel std {arr.std():.2f})"
    return arr


def test_generate_inpaint_img2img_cancel_in_a_real_browser(browser, server, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("#model option[value=demo_ddpm_fmnist]", state="attached")
    assert "unconditional image generation" in page.inner_text("#model-info")
    # this model takes no prompt: the box is disabled and says so
    assert page.is_disabled("#prompt")
    assert "does not take prompts" in page.inner_text("#prompt-note")

    page.fill("#steps", "4")
    page.fill("#n", "4")
    page.click("#generate")
    page.wait_for_selector("#results .card:nth-child(4) img")
    page.wait_for_selector("#progress-box", state="hidden")
    grid = page.locator("#results").screenshot(path=str(tmp_path / "generate.png"))
    _not_blank(grid, "result grid")
    first = page.locator("#results .card img").first.screenshot()
    _not_blank(first, "a generated image", min_std=3.0)
    href = page.locator("#results .card a").first.get_attribute("href")
    assert href.startswith("data:image/png;base64,")
    assert page.locator("#results .card a").first.get_attribute("download").endswith(".png")

    # "use as input": the first result goes to the inpainting editor; paint a mask and inpaint
    page.locator("#results .card").first.locator("button[data-use=inpaint]").click()
    expect(page.locator("#tab-inpaint")).to_be_visible()
    before = page.locator("#inpaint-canvas").screenshot()
    box = page.locator("#inpaint-canvas").bounding_box()
    page.mouse.move(box["x"] + 90, box["y"] + 90)
    page.mouse.down()
    page.mouse.move(box["x"] + 190, box["y"] + 190, steps=8)
    page.mouse.up()
    painted = page.locator("#inpaint-canvas").screenshot(path=str(tmp_path / "mask.png"))
    assert _not_blank(painted, "mask editor").tolist() != _not_blank(before, "editor").tolist()
    page.fill("#inpaint-steps", "4")
    page.click("#inpaint")
    page.wait_for_selector("#results .card:nth-child(5)")
    page.wait_for_selector("#progress-box", state="hidden")
    assert page.locator("#results .card .meta").first.inner_text().startswith("inpaint")
    _not_blank(page.locator("#results .card img").first.screenshot(), "inpainted image", min_std=3.0)

    # image to image from a result, with the strength slider
    page.locator("#results .card").nth(1).locator("button[data-use=img2img]").click()
    expect(page.locator("#tab-img2img")).to_be_visible()
    page.fill("#strength", "0.5")
    page.fill("#img2img-steps", "4")
    page.click("#img2img")
    page.wait_for_selector("#results .card:nth-child(6)")
    page.wait_for_selector("#progress-box", state="hidden")
    assert page.locator("#results .card .meta").first.inner_text().startswith("img2img")

    # no super-resolution model: upscaling is disabled, with the reason
    page.click("nav button[data-tab=upscale]")
    assert page.is_disabled("#upscale")
    assert "no upscale task" in page.inner_text("#upscale-note")

    # a long generation is cancelled from the page
    page.click("nav button[data-tab=generate]")
    page.fill("#steps", "1000")
    page.fill("#n", "1")
    page.click("#generate")
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"^running"), timeout=20000)
    page.click("#cancel")
    expect(page.locator("#progress-text")).to_have_text("cancelled", timeout=20000)
    assert page.locator("#results .card").count() == 6
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert not errors, errors


def test_layout_boxes_drawn_on_a_canvas_in_a_real_browser(browser, server, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    errors, sent = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: sent.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith("/api/generate") else None)
    page.goto(server)
    page.wait_for_selector("#model option[value=layout_shapes]", state="attached")
    assert page.is_hidden("#layout-box")  # the demo model takes no layout
    page.select_option("#model", "layout_shapes")
    expect(page.locator("#layout-box")).to_be_visible()
    assert "layout-to-image" in page.inner_text("#model-info")
    assert "conditioned on layout boxes and does not take prompts" in page.inner_text("#prompt-note")
    labels = page.locator("#layout-label option").all_inner_texts()
    assert len(labels) == 18 and labels[0] == "red circle"
    assert "up to 3 boxes" in page.inner_text("#layout-note")

    canvas = page.locator("#layout-canvas")
    blank = canvas.screenshot()
    r = canvas.bounding_box()

    def drag(x0, y0, x1, y1):
        page.mouse.move(r["x"] + x0 * r["width"], r["y"] + y0 * r["height"])
        page.mouse.down()
        page.mouse.move(r["x"] + x1 * r["width"], r["y"] + y1 * r["height"], steps=5)
        page.mouse.up()

    page.select_option("#layout-label", "red circle")
    drag(0.1, 0.1, 0.5, 0.5)
    page.select_option("#layout-label", "blue square")
    drag(0.9, 0.9, 0.5, 0.45)  # dragged up and left: the same box
    page.select_option("#layout-label", "green triangle")
    drag(0.6, 0.1, 0.9, 0.3)
    page.mouse.click(r["x"] + 20, r["y"] + 250)  # a click draws no box
    assert page.locator("#layout-list li").count() == 3
    drag(0.05, 0.6, 0.3, 0.9)  # a fourth box is over this model's max_boxes=3
    expect(page.locator("#layout-msg")).to_be_visible()
    assert "at most 3 boxes" in page.inner_text("#layout-msg")
    assert page.locator("#layout-list li").count() == 3
    page.locator("#layout-list li").nth(2).locator("button[data-delete]").click()
    assert page.locator("#layout-list li").count() == 2 and page.is_hidden("#layout-msg")
    page.locator("#layout-list li").nth(1).locator("select").select_option("yellow square")
    drawn = canvas.screenshot(path=str(tmp_path / "layout.png"))
    assert _not_blank(drawn, "layout canvas", min_std=3.0).tolist() != _not_blank(blank, "empty canvas", 1.0).tolist()

    page.fill("#steps", "2")
    page.fill("#n", "2")
    page.click("#generate")
    page.wait_for_selector("#results .card:nth-child(2) img")
    page.wait_for_selector("#progress-box", state="hidden")
    assert page.is_hidden("#error")
    layout = sent[-1]["layout"]
    assert [b["label"] for b in layout] == ["red circle", "yellow square"]
    want = [[0.1, 0.1, 0.5, 0.5], [0.5, 0.45, 0.9, 0.9]]
    for b, w in zip(layout, want, strict=True):
        assert np.allclose([b["x0"], b["y0"], b["x1"], b["y1"]], w, atol=0.02), (b, w)
    meta = page.locator("#results .card .meta").first.inner_text()
    assert "layout: red circle, yellow square" in meta
    assert "--layout" in page.locator("#results .card img").first.get_attribute("title")
    _not_blank(page.locator("#results .card img").first.screenshot(), "a layout-generated image", min_std=3.0)
    page.screenshot(path=str(tmp_path / "layout-page.png"), full_page=True)

    page.click("#clear-layout")
    assert page.locator("#layout-list li").count() == 0
    assert not errors, errors
