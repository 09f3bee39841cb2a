// ldmkit serve: the page's logic. Plain JS, no build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], limits: {}, samplers: [], model: null, job: null, editors: {}, layout: null };

// The token travels in the URL fragment (#token=...), which browsers never send to the server.
(function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("ldmkit-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
})();

async function api(path, body) {
  const headers = {};
  const token = sessionStorage.getItem("ldmkit-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const opts = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const detail = data && data.detail ? data.detail : r.statusText;
    throw new Error(`${r.status}: ${detail}`);
  }
  return data;
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = String(err.message || err);
}

const num = (id) => Number($(id).value);

// ---------------------------------------------------------------------------------- models
async function loadModels() {
  const data = await api("/api/models");
  state.models = data.models;
  state.limits = data.limits;
  state.samplers = data.samplers;
  const select = $("model");
  select.innerHTML = "";
  for (const m of state.models) select.add(new Option(m.id, m.id));
  const sampler = $("sampler");
  sampler.innerHTML = "";
  for (const s of state.samplers) sampler.add(new Option(s, s));
  select.addEventListener("change", () => pickModel(select.value));
  pickModel(select.value);
}

function pickModel(id) {
  const m = state.models.find((x) => x.id === id);
  state.model = m;
  const f = m.figures, size = m.image_size, L = state.limits;
  $("model-info").textContent = `${m.task} · ${size.height}x${size.width}x${size.channels} · T=${f.num_timesteps} · ` +
    `trained ${f.trained_steps} steps · ${(f.parameters / 1e6).toFixed(2)} M parameters · ${f.schedule}, ${f.prediction_type}` +
    (m.shipped ? ` · shipped ${m.shipped.name} (${m.shipped.task}; measured: ${m.shipped.measured})` : "");
  const classes = m.conditioning.classes;
  const cls = $("class");
  cls.innerHTML = "";
  $("class-row").hidden = !classes;
  if (classes) {
    cls.add(new Option("all classes in turn", ""));
    classes.forEach((name, i) => cls.add(new Option(`${i}: ${name}`, String(i))));
  }
  const prompts = m.conditioning.prompts;
  $("prompt").disabled = !prompts;
  $("prompt-note").hidden = prompts;
  const kind = classes ? "class-conditional" : m.conditioning.layout ? "conditioned on layout boxes" : "unconditional";
  $("prompt-note").textContent = prompts ? "" : `Model ${m.id} is ${kind} and does not take prompts.`;
  if (state.layout) state.layout.setModel(m);
  $("sampler").value = m.defaults.sampler;
  const steps = Math.min(m.defaults.steps, L.max_steps, f.num_timesteps);
  for (const s of ["steps", "inpaint-steps", "img2img-steps"]) {
    $(s).value = steps;
    $(s).max = Math.min(L.max_steps, f.num_timesteps);
  }
  $("guidance").value = m.defaults.guidance_scale;
  $("guidance").disabled = !(classes || prompts || m.conditioning.layout);
  $("guidance").max = L.max_guidance;
  $("n").max = L.max_n;
  $("resample").max = L.max_resample;
  const can = (task) => m.endpoints.includes(task);
  $("generate").disabled = !can("generate");
  $("inpaint").disabled = !can("inpaint");
  $("img2img").disabled = !can("img2img");
  $("upscale").disabled = !can("upscale");
  $("upscale-file").disabled = !can("upscale");
  $("upscale-note").textContent = can("upscale") ? "Upload an image to super-resolve." : m.unsupported.upscale;
  for (const e of Object.values(state.editors)) e.resize(size.width, size.height);
}

// ---------------------------------------------------------------------------------- editors
// An image at the model's size (drawn scaled up), optionally with a mask painted over it.
class Editor {
  constructor(canvasId, withMask) {
    this.view = $(canvasId);
    this.image = document.createElement("canvas");
    this.mask = withMask ? document.createElement("canvas") : null;
    this.hasImage = false;
    if (withMask) this.listen();
  }

  resize(w, h) {
    for (const c of [this.image, this.mask]) if (c) { c.width = w; c.height = h; }
    this.view.width = 280;
    this.view.height = Math.round(280 * h / w);
    this.view.style.height = this.view.height + "px";
    this.hasImage = false;
    this.clearMask();
  }

  clearMask() {
    if (!this.mask) return this.draw();
    const g = this.mask.getContext("2d");
    g.fillStyle = "#000";
    g.fillRect(0, 0, this.mask.width, this.mask.height);
    this.draw();
  }

  async load(url) {
    const img = new Image();
    await new Promise((ok, bad) => { img.onload = ok; img.onerror = () => bad(new Error("cannot read that image")); img.src = url; });
    const g = this.image.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, this.image.width, this.image.height);
    g.drawImage(img, 0, 0, this.image.width, this.image.height);  // resized to the model's size
    this.hasImage = true;
    this.clearMask();
  }

  draw() {
    const g = this.view.getContext("2d");
    g.imageSmoothingEnabled = false;
    g.fillStyle = "#fafafa";
    g.fillRect(0, 0, this.view.width, this.view.height);
    if (this.hasImage) g.drawImage(this.image, 0, 0, this.view.width, this.view.height);
    if (this.mask) {
      const tint = document.createElement("canvas");
      tint.width = this.mask.width; tint.height = this.mask.height;
      const t = tint.getContext("2d");
      const src = this.mask.getContext("2d").getImageData(0, 0, tint.width, tint.height);
      for (let i = 0; i < src.data.length; i += 4) {
        const v = src.data[i];
        src.data[i] = 230; src.data[i + 1] = 40; src.data[i + 2] = 40; src.data[i + 3] = v > 127 ? 150 : 0;
      }
      t.putImageData(src, 0, 0);
      g.drawImage(tint, 0, 0, this.view.width, this.view.height);
    }
  }

  listen() {
    let down = false;
    const paint = (ev) => {
      const r = this.view.getBoundingClientRect();
      const x = (ev.clientX - r.left) / r.width * this.mask.width;
      const y = (ev.clientY - r.top) / r.height * this.mask.height;
      const g = this.mask.getContext("2d");
      g.fillStyle = "#fff";
      g.beginPath();
      g.arc(x, y, num("brush") / 2, 0, 2 * Math.PI);
      g.fill();
      this.draw();
    };
    this.view.addEventListener("pointerdown", (ev) => { down = true; this.view.setPointerCapture(ev.pointerId); paint(ev); });
    this.view.addEventListener("pointermove", (ev) => { if (down) paint(ev); });
    this.view.addEventListener("pointerup", () => { down = false; });
    this.view.addEventListener("pointercancel", () => { down = false; });
  }

  imageURL() { return this.image.toDataURL("image/png"); }
  maskURL() { return this.mask.toDataURL("image/png"); }
}

// Layout boxes (layout-to-image models): drag on the canvas to draw a box with the picked label. Coordinates are
// fractions of the image (0 = left / top, 1 = right / bottom), as POST /api/generate takes them.
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#1a9ba8", "#f032e6", "#9a6324", "#000075",
                 "#808000", "#800000", "#469990"];
const MIN_BOX = 0.02;  // a click (or a drag shorter than this fraction) draws no box

class LayoutEditor {
  constructor() {
    this.view = $("layout-canvas");
    this.labels = [];
    this.maxBoxes = 0;
    this.boxes = [];
    this.drag = null;
    this.listen();
  }

  setModel(m) {
    const c = m.conditioning;
    $("layout-box").hidden = !c.layout;
    this.model = m.id;
    this.labels = c.layout_labels || [];
    this.maxBoxes = c.max_boxes || 0;
    const select = $("layout-label");
    select.innerHTML = "";
    this.labels.forEach((name, i) => select.add(new Option(name, name)));
    this.view.width = 280;
    this.view.height = Math.round(280 * m.image_size.height / m.image_size.width);
    this.view.style.height = this.view.height + "px";
    $("layout-note").textContent = `Drag on the canvas to draw up to ${this.maxBoxes} boxes; each takes the label ` +
      "picked below (change it in the list). With no box the model draws its default layouts.";
    this.clear();
  }

  clear() {
    this.boxes = [];
    this.drag = null;
    this.message(null);
    this.render();
  }

  message(text) {
    $("layout-msg").hidden = !text;
    $("layout-msg").textContent = text || "";
  }

  color(label) { return PALETTE[Math.max(0, this.labels.indexOf(label)) % PALETTE.length]; }

  point(ev) {
    const r = this.view.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((ev.clientX - r.left) / r.width), clamp((ev.clientY - r.top) / r.height)];
  }

  listen() {
    this.view.addEventListener("pointerdown", (ev) => {
      if (this.boxes.length >= this.maxBoxes) {
        this.message(`Model ${this.model} takes at most ${this.maxBoxes} boxes: delete one first.`);
        return;
      }
      this.message(null);
      const [x, y] = this.point(ev);
      this.drag = { x, y, x1: x, y1: y };
      this.view.setPointerCapture(ev.pointerId);
    });
    this.view.addEventListener("pointermove", (ev) => {
      if (!this.drag) return;
      [this.drag.x1, this.drag.y1] = this.point(ev);
      this.draw();
    });
    this.view.addEventListener("pointerup", (ev) => {
      if (!this.drag) return;
      const d = this.drag;
      [d.x1, d.y1] = this.point(ev);
      this.drag = null;
      const r4 = (v) => Math.round(v * 1e4) / 1e4;
      const box = { label: $("layout-label").value, x0: r4(Math.min(d.x, d.x1)), y0: r4(Math.min(d.y, d.y1)),
                    x1: r4(Math.max(d.x, d.x1)), y1: r4(Math.max(d.y, d.y1)) };
      if (box.x1 - box.x0 >= MIN_BOX && box.y1 - box.y0 >= MIN_BOX) this.boxes.push(box);
      this.render();
    });
    this.view.addEventListener("pointercancel", () => { this.drag = null; this.draw(); });
  }

  render() { this.draw(); this.list(); }

  draw() {
    const g = this.view.getContext("2d"), W = this.view.width, H = this.view.height;
    g.fillStyle = "#fff";
    g.fillRect(0, 0, W, H);
    g.strokeStyle = "#e3e6ec";
    g.lineWidth = 1;
    for (let k = 1; k < 4; k++) {  // quarter lines, to place boxes by eye
      g.beginPath(); g.moveTo(Math.round(k * W / 4) + .5, 0); g.lineTo(Math.round(k * W / 4) + .5, H); g.stroke();
      g.beginPath(); g.moveTo(0, Math.round(k * H / 4) + .5); g.lineTo(W, Math.round(k * H / 4) + .5); g.stroke();
    }
    g.font = "12px system-ui, sans-serif";
    g.textBaseline = "top";
    this.boxes.forEach((b, i) => {
      const c = this.color(b.label), x = b.x0 * W, y = b.y0 * H, w = (b.x1 - b.x0) * W, h = (b.y1 - b.y0) * H;
      g.globalAlpha = 0.15; g.fillStyle = c; g.fillRect(x, y, w, h); g.globalAlpha = 1;
      g.strokeStyle = c; g.lineWidth = 2; g.strokeRect(x + 1, y + 1, w - 2, h - 2);
      const text = `${i + 1} ${b.label}`;
      const tw = g.measureText(text).width + 6;
      g.fillStyle = c; g.fillRect(x, y, Math.min(tw, W - x), 16);
      g.fillStyle = "#fff"; g.fillText(text, x + 3, y + 2);
    });
    if (this.drag) {
      const d = this.drag;
      g.setLineDash([4, 3]); g.strokeStyle = this.color($("layout-label").value); g.lineWidth = 2;
      g.strokeRect(Math.min(d.x, d.x1) * W, Math.min(d.y, d.y1) * H, Math.abs(d.x1 - d.x) * W, Math.abs(d.y1 - d.y) * H);
      g.setLineDash([]);
    }
  }

  list() {
    const ol = $("layout-list");
    ol.innerHTML = "";
    this.boxes.forEach((b, i) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = this.color(b.label);
      const select = document.createElement("select");
      select.setAttribute("aria-label", `label of box ${i + 1}`);
      for (const name of this.labels) select.add(new Option(name, name));
      select.value = b.label;
      select.addEventListener("change", () => { b.label = select.value; this.render(); });
      const coords = document.createElement("span");
      coords.className = "coords";
      coords.textContent = [b.x0, b.y0, b.x1, b.y1].map((v) => v.toFixed(2)).join(", ");
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "Delete";
      del.dataset.delete = String(i);
      del.addEventListener("click", () => { this.boxes.splice(i, 1); this.message(null); this.render(); });
      li.append(swatch, select, coords, del);
      ol.append(li);
    });
  }

  request() { return this.boxes.map((b) => ({ label: b.label, x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1 })); }
}

function fileInto(inputId, editor) {
  $(inputId).addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    if (file.size > state.limits.max_upload_bytes) {
      showError(`${file.name}: ${file.size} bytes is over the upload limit of ${state.limits.max_upload_bytes} bytes`);
      return;
    }
    const url = URL.createObjectURL(file);
    try { await editor.load(url); showError(null); } catch (e) { showError(e); } finally { URL.revokeObjectURL(url); }
  });
}

// ---------------------------------------------------------------------------------- jobs
function setBusy(busy) {
  for (const id of ["generate", "inpaint", "img2img"]) {
    if (busy) $(id).disabled = true;
  }
  if (!busy) pickButtons();
  $("progress-box").hidden = !busy;
}

function pickButtons() {
  const m = state.model;
  for (const task of ["generate", "inpaint", "img2img", "upscale"]) $(task).disabled = !m.endpoints.includes(task);
}

async function runJob(endpoint, body) {
  showError(null);
  let accepted;
  try {
    accepted = await api(endpoint, body);
  } catch (e) { showError(e); return; }
  state.job = accepted;
  setBusy(true);
  $("progress").value = 0;
  $("progress-text").textContent = "queued";
  try {
    for (;;) {
      const s = await api(`${accepted.status_url}?wait=0`);
      $("progress").value = s.progress;
      $("progress-text").textContent = `${s.state}: ${s.done} / ${s.total} steps`;
      if (["done", "failed", "cancelled"].includes(s.state)) {
        if (s.state === "done") showResults(s);
        else if (s.state === "failed") showError(`job failed: ${s.error}`);
        else $("progress-text").textContent = "cancelled";
        break;
      }
      await new Promise((ok) => setTimeout(ok, 150));
    }
  } catch (e) { showError(e); }
  state.job = null;
  setBusy(false);
}

function showResults(status) {
  const grid = $("results");
  status.images.forEach((im, k) => {
    const url = "data:image/png;base64," + im.png_base64;
    const card = document.createElement("div");
    card.className = "card";
    const img = document.createElement("img");
    img.src = url;
    img.alt = `${status.kind} result ${k}`;
    img.title = im.metadata.reproduce || "";
    const meta = document.createElement("div");
    meta.className = "meta";
    const md = im.metadata;
    meta.textContent = `${status.kind} · ${md.model} · seed ${md.seed}` + (md.label !== null && md.label !== undefined ? ` · class ${md.label}` : "") + layoutText(md.layout);
    const actions = document.createElement("div");
    actions.className = "actions";
    const a = document.createElement("a");
    a.href = url;
    a.download = `ldmkit-${status.kind}-${status.job_id}-${k}.png`;
    a.textContent = "Download";
    actions.append(a);
    for (const [task, label] of [["inpaint", "Inpaint"], ["img2img", "Img2img"], ["upscale", "Upscale"]]) {
      const b = document.createElement("button");
      b.textContent = label;
      b.dataset.use = task;
      b.addEventListener("click", async () => { await state.editors[task].load(url); showTab(task); });
      actions.append(b);
    }
    card.append(img, meta, actions);
    grid.prepend(card);
  });
}

function layoutText(layout) {
  if (!layout) return "";
  try {
    const boxes = typeof layout === "string" ? JSON.parse(layout) : layout;
    return ` · layout: ${boxes.map((b) => b.label).join(", ")}`;
  } catch (e) { return ""; }
}

// ---------------------------------------------------------------------------------- wiring
function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "tab-" + name;
}

function classLabels() {
  const v = $("class").value;
  return state.model.conditioning.classes && v !== "" ? [Number(v)] : null;
}

function needImage(editor) {
  if (!editor.hasImage) { showError("pick an image first: upload one, or use a result as input"); return false; }
  return true;
}

window.addEventListener("DOMContentLoaded", async () => {
  state.editors = { inpaint: new Editor("inpaint-canvas", true), img2img: new Editor("img2img-canvas", false),
                    upscale: new Editor("upscale-canvas", false) };
  state.layout = new LayoutEditor();
  $("clear-layout").addEventListener("click", () => state.layout.clear());
  fileInto("inpaint-file", state.editors.inpaint);
  fileInto("img2img-file", state.editors.img2img);
  fileInto("upscale-file", state.editors.upscale);
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("clear-mask").addEventListener("click", () => state.editors.inpaint.clearMask());
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  $("generate").addEventListener("click", () => {
    const m = state.model;
    const body = { model: m.id, n: num("n"), sampler: $("sampler").value, steps: num("steps"), seed: num("seed"),
                   labels: classLabels() };
    if (!$("guidance").disabled) body.guidance_scale = num("guidance");
    if (m.conditioning.prompts && $("prompt").value) body.prompt = $("prompt").value;
    if (m.conditioning.layout && state.layout.boxes.length) body.layout = state.layout.request();
    runJob("/api/generate", body);
  });
  $("inpaint").addEventListener("click", () => {
    const e = state.editors.inpaint;
    if (!needImage(e)) return;
    runJob("/api/inpaint", { model: state.model.id, image: e.imageURL(), mask: e.maskURL(), steps: num("inpaint-steps"),
                             resample: num("resample"), seed: num("inpaint-seed"), labels: classLabels() });
  });
  $("img2img").addEventListener("click", () => {
    const e = state.editors.img2img;
    if (!needImage(e)) return;
    runJob("/api/img2img", { model: state.model.id, image: e.imageURL(), strength: num("strength"),
                             steps: num("img2img-steps"), seed: num("img2img-seed"), labels: classLabels() });
  });
  $("upscale").addEventListener("click", () => {
    const e = state.editors.upscale;
    if (!needImage(e)) return;
    runJob("/api/upscale", { model: state.model.id, image: e.imageURL() });
  });
  $("cancel").addEventListener("click", async () => {
    if (!state.job) return;
    try { await api(state.job.cancel_url, {}); } catch (e) { showError(e); }
  });
  try { await loadModels(); } catch (e) { showError(e); }
});
