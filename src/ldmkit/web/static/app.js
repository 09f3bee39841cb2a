// ldmkit serve: the page's logic. Plain JS, no build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], limits: {}, samplers: [], model: null, job: null, editors: {} };

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
  $("prompt-note").textContent = prompts ? "" :
    `Model ${m.id} is ${classes ? "class-conditional" : "unconditional"} and does not take prompts.`;
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
    meta.textContent = `${status.kind} · ${md.model} · seed ${md.seed}` + (md.label !== null && md.label !== undefined ? ` · class ${md.label}` : "");
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
