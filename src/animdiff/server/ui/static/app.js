// animdiff web UI: a form built from GET /api/v1/ui/schema (the settings model), driving the native
// API (/api/v1/jobs ...). No framework, no build step, nothing from a CDN.
"use strict";

const KEY = new URLSearchParams(location.search).get("api_key") || "";
const state = {
  schema: null,
  fields: {},        // name -> schema entry
  models: [],
  job: null,         // the job shown in the output panel
  source: null,      // its EventSource
  lastSeed: null,
  units: [],         // ControlNet unit cards: {root, get(), set(values)}
  historyLimit: 24,
  listKey: "",
};

// --- small helpers ----------------------------------------------------------------------------------
const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
function withKey(url) {
  return KEY ? url + (url.includes("?") ? "&" : "?") + "api_key=" + encodeURIComponent(KEY) : url;
}
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (KEY) headers["X-API-Key"] = KEY;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) data = await response.json();
  else if (type.startsWith("text/")) data = await response.text();
  else data = await response.blob();
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : `${response.status} ${response.statusText}`;
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return data;
}
function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.round(s));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}
const ANIMATED = ["gif", "webp"];
const VIDEOS = ["mp4", "webm"];

// --- the form, from the schema ----------------------------------------------------------------------
function modelsOfKind(kinds) {
  return state.models.filter((m) => m.kind && kinds.some((k) => m.kind.includes(k)));
}
function modelSelect(id, kinds, nullable, placeholder) {
  const select = el("select", { id });
  if (nullable) select.append(el("option", { value: "", text: `(${placeholder || "none"})` }));
  for (const m of modelsOfKind(kinds)) select.append(el("option", { value: m.name, text: `${m.name} — ${m.kind}` }));
  return select;
}
function fieldTitle(f) {
  const range = f.minimum !== undefined || f.maximum !== undefined
    ? ` [${f.minimum ?? ""}..${f.maximum ?? ""}]` : "";
  const def = f.default === null || f.default === undefined ? "" : ` (default ${JSON.stringify(f.default)})`;
  return `${f.name}: ${f.description}${range}${def}`;
}
function step(f) {
  if (f.step) return f.step;
  if (f.type === "integer") return ["width", "height"].includes(f.name) ? 8 : 1;
  return f.maximum !== undefined && f.maximum <= 2 ? 0.01 : 0.5;
}

function buildControl(f) {
  const id = `f-${f.name}`;
  switch (f.widget) {
    case "textarea":
      return el("textarea", { id, rows: f.name === "prompt" ? 5 : 3, placeholder: f.description });
    case "slider": {
      const range = el("input", { type: "range", min: f.minimum, max: f.maximum, step: step(f), tabindex: -1 });
      const number = el("input", { type: "number", id, min: f.minimum, max: f.maximum, step: step(f), placeholder: f.placeholder || (f.nullable ? "auto" : "") });
      range.addEventListener("input", () => { number.value = range.value; });
      number.addEventListener("input", () => { range.value = number.value; });
      number._range = range;
      return el("div", { class: "slider" }, range, number);
    }
    case "number":
      return el("input", { type: "number", id, min: f.minimum, max: f.maximum, step: step(f), placeholder: f.placeholder || (f.nullable ? "auto" : "") });
    case "select": {
      const select = el("select", { id });
      for (const c of f.choices || []) select.append(el("option", { value: c, text: c === "" ? "(default)" : c }));
      return select;
    }
    case "checkbox":
      return el("input", { type: "checkbox", id });
    case "formats":
      return el("div", { class: "checks", id },
        (f.choices || []).map((c) => el("label", {}, el("input", { type: "checkbox", value: c, "data-format": c }), c.toUpperCase())));
    case "model":
      return modelSelect(id, f.kinds || [], f.nullable, f.placeholder);
    case "upload": {
      const text = el("input", { type: "text", id, placeholder: "uploaded name or a server path" });
      const file = el("input", { type: "file", accept: f.accept || "" });
      file.addEventListener("change", async () => {
        if (!file.files.length) return;
        text.value = await uploadFiles(file.files, f.name);
      });
      return el("div", { class: "row" }, text, el("label", { class: "file-button" }, "Upload…", file));
    }
    case "motion_loras":
      return el("div", { id, class: "list" },
        el("div", { class: "rows" }),
        el("button", { type: "button", class: "small", onclick: () => addMotionLora(f) }, "+ motion LoRA"));
    case "controlnet_units":
      return el("div", { id },
        el("div", { class: "units" }),
        el("button", { type: "button", class: "small", id: "add-unit", onclick: () => addUnit() }, "+ ControlNet unit"));
    default:
      return el("input", { type: "text", id, maxlength: f.maxLength, placeholder: f.placeholder || "" });
  }
}

function buildField(f) {
  const control = buildControl(f);
  const label = el("label", { for: `f-${f.name}`, title: fieldTitle(f) }, el("span", { text: f.label }));
  const wrap = el("div", { class: "field", "data-field": f.name, title: fieldTitle(f) }, label, control,
    el("div", { class: "error", id: `err-${f.name}` }));
  if (["textarea", "formats", "motion_loras", "controlnet_units", "upload", "model"].includes(f.widget)) wrap.classList.add("wide");
  if (f.name === "prompt" || f.name === "negative_prompt") {
    label.append(el("span", { class: "tokens", id: `tokens-${f.name}`, title: "tokens per 75-token chunk" }, "0/75"));
  }
  if (f.name === "prompt") {
    wrap.append(el("div", { class: "row" },
      el("select", { id: "lora-pick" }, el("option", { value: "", text: "LoRA…" }),
        modelsOfKind(state.schema.model_kinds.lora).map((m) => el("option", { value: m.name, text: m.name }))),
      el("button", { type: "button", class: "small", id: "lora-insert", onclick: insertLora }, "Insert LoRA")),
    el("details", { class: "help" }, el("summary", {}, "Prompt travel"),
      el("div", {}, "Lines \"N: text\" are keyframes: frame N gets that text, frames between two keyframes blend " +
        "between them. Lines before the first keyframe are a head and lines after the last a tail, added to every " +
        "keyframe. Keyframe lines must be consecutive. The counter shows each keyframe's tokens."),
      el("pre", {}, "masterpiece, best quality\n0: a girl standing\n8: a girl jumping\noutdoors, sunny")));
  }
  if (f.name === "seed") {
    const input = $("input", wrap);
    wrap.replaceChild(el("div", { class: "row" }, input,
      el("button", { type: "button", class: "small", id: "seed-random", title: "random seed (-1)", onclick: () => { input.value = -1; } }, "-1"),
      el("button", { type: "button", class: "small", id: "seed-reuse", title: "re-use the last job's seed", onclick: reuseSeed }, "♻")), wrap.children[1]);
  }
  return wrap;
}

function buildForm() {
  const groups = $("#groups");
  const open = new Set(["Prompt", "Generation", "AnimateDiff"]);
  for (const group of state.schema.groups) {
    const fields = state.schema.fields.filter((f) => f.group === group);
    if (group === "Stable Diffusion") {
      $("#top-fields").append(...fields.map(buildField));
      continue;
    }
    const body = el("div", { class: "grid" }, fields.map(buildField));
    groups.append(el("details", { class: "group", open: open.has(group), "data-group": group }, el("summary", {}, group), body));
  }
  setValues(defaults(), true);
  $("#f-prompt").addEventListener("input", debounce(() => countTokens("prompt"), 250));
  $("#f-negative_prompt").addEventListener("input", debounce(() => countTokens("negative_prompt"), 250));
}

function defaults() {
  const out = {};
  for (const f of state.schema.fields) out[f.name] = f.default === undefined ? (f.type === "array" ? [] : null) : f.default;
  return out;
}

// --- values in and out --------------------------------------------------------------------------------
function getValue(f) {
  const node = document.getElementById(`f-${f.name}`);
  switch (f.widget) {
    case "checkbox": return node.checked;
    case "formats": return [...node.querySelectorAll("input:checked")].map((i) => i.value);
    case "motion_loras":
      return [...node.querySelectorAll(".rows > .row")].map((row) => ({
        name: $("select", row).value, strength: Number($("input", row).value) }))
        .filter((x) => x.name);
    case "controlnet_units": return state.units.map((u) => u.get());
    default: {
      const raw = node.value;
      if (f.type === "integer" || f.type === "number") {
        if (raw === "" && f.nullable) return null;
        return raw === "" ? f.default : Number(raw);
      }
      if (raw === "" && f.nullable) return null;
      return raw;
    }
  }
}
function setValue(f, value) {
  const node = document.getElementById(`f-${f.name}`);
  if (!node) return;
  switch (f.widget) {
    case "checkbox": node.checked = !!value; break;
    case "formats": {
      const wanted = (Array.isArray(value) ? value : String(value || "").split(",")).map((v) => String(v).trim().toLowerCase());
      for (const box of node.querySelectorAll("input")) box.checked = wanted.includes(box.value);
      break;
    }
    case "motion_loras":
      $(".rows", node).replaceChildren();
      for (const item of value || []) addMotionLora(f, typeof item === "string" ? { name: item } : item);
      break;
    case "controlnet_units":
      for (const unit of [...state.units]) unit.remove();
      for (const unit of value || []) addUnit(unit);
      break;
    case "model":
    case "select": {
      const chosen = value === null || value === undefined ? "" : matchOption(node, String(value));
      if (chosen !== "" && ![...node.options].some((o) => o.value === chosen)) {
        node.append(el("option", { value: chosen, text: `${chosen} (not found)` }));
      }
      node.value = chosen;
      break;
    }
    default:
      node.value = value === null || value === undefined ? "" : value;
      if (node._range) node._range.value = node.value;
  }
}
// A model named as the API or an infotext names it ("tiny-mm-v2.ckpt", "Model: tiny-sd15") picks
// the models folder's entry ("AnimateDiff/tiny-mm-v2.ckpt").
function matchOption(select, value) {
  const values = [...select.options].map((o) => o.value);
  const base = (v) => v.split("/").pop();
  const stem = (v) => base(v).replace(/\.[^.]+$/, "");
  return values.find((v) => v === value) || values.find((v) => v && base(v) === base(value))
    || values.find((v) => v && stem(v) === value) || value;
}
function setValues(values, all = false) {
  for (const f of state.schema.fields) {
    if (all || Object.prototype.hasOwnProperty.call(values, f.name)) setValue(f, values[f.name]);
  }
  countTokens("prompt");
  countTokens("negative_prompt");
}
function collect() {
  const out = {};
  for (const f of state.schema.fields) out[f.name] = getValue(f);
  return out;
}

// --- motion LoRAs and ControlNet units ------------------------------------------------------------------
function addMotionLora(f, item = {}) {
  const rows = $(`#f-${f.name} .rows`);
  const select = modelSelect("", f.kinds || [], true, "choose");
  const strength = el("input", { type: "number", step: 0.05, value: item.strength ?? 1, min: -10, max: 10 });
  const row = el("div", { class: "row" }, select, strength,
    el("button", { type: "button", class: "small", onclick: () => row.remove() }, "×"));
  rows.append(row);
  if (item.name) {
    if (![...select.options].some((o) => o.value === item.name)) select.append(el("option", { value: item.name, text: item.name }));
    select.value = item.name;
  }
}

function addUnit(values = {}) {
  const f = state.fields.controlnet_units;
  const item = f.item_fields;
  const labels = f.labels || {};
  const index = state.units.length;
  const controls = {};
  let hintFile = null;
  const hintImg = el("img", { class: "hint-preview", alt: "preprocessor hint", hidden: true });
  const root = el("div", { class: "unit", "data-unit": index });
  const title = el("span", { text: `ControlNet Unit ${index}` });
  const fieldsBox = el("div", { class: "grid" });
  const pre = () => state.schema.preprocessors.find((p) => p.name === controls.module.value);

  function field(key, control) {
    const spec = item[key];
    controls[key] = control;
    const wrap = el("div", { class: "field", "data-unit-field": key, title: `${key}: ${spec.description}` },
      el("label", { text: labels[key] || key }), control, el("div", { class: "error", "data-error": key }));
    fieldsBox.append(wrap);
    return wrap;
  }
  const num = (key, min, max, stepv) => {
    const spec = item[key];
    return el("input", { type: "number", min: min ?? spec.minimum, max: max ?? spec.maximum, step: stepv ?? (spec.type === "integer" ? 1 : 0.05) });
  };
  const enabled = el("input", { type: "checkbox", checked: true });
  controls.enabled = enabled;
  field("model", modelSelect("", f.kinds || [], false));
  const module = el("select", {});
  for (const p of state.schema.preprocessors) {
    module.append(el("option", { value: p.name, text: p.available ? p.name : `${p.name} (needs weights)`, title: p.description }));
  }
  field("module", module);
  for (const key of ["weight", "guidance_start", "guidance_end"]) field(key, num(key));
  for (const key of ["control_mode", "resize_mode"]) {
    field(key, el("select", {}, (item[key].choices || []).map((c) => el("option", { value: c, text: c }))));
  }
  field("processor_res", num("processor_res", null, null, 8));
  const thresholdA = field("threshold_a", el("input", { type: "number", step: "any" }));
  const thresholdB = field("threshold_b", el("input", { type: "number", step: "any" }));
  field("pixel_perfect", el("input", { type: "checkbox" }));
  const imageText = el("input", { type: "text", placeholder: "uploaded name or server path" });
  const imageFile = el("input", { type: "file", accept: "image/*" });
  imageFile.addEventListener("change", async () => {
    if (!imageFile.files.length) return;
    hintFile = imageFile.files[0];
    imageText.value = await uploadFiles(imageFile.files, "controlnet_units");
    preview();
  });
  const imageField = field("image", el("div", { class: "row" }, imageText, el("label", { class: "file-button" }, "Upload…", imageFile)));
  controls.image = imageText;
  imageField.classList.add("wide");
  const batchText = el("input", { type: "text", placeholder: "frames folder or video (uploaded name)" });
  const batchFiles = el("input", { type: "file", multiple: true, accept: "image/*,video/*" });
  batchFiles.addEventListener("change", async () => {
    if (!batchFiles.files.length) return;
    batchText.value = await uploadFiles(batchFiles.files, "controlnet_units");
  });
  const batchField = field("batch_images", el("div", { class: "row" }, batchText, el("label", { class: "file-button" }, "Upload…", batchFiles)));
  controls.batch_images = batchText;
  batchField.classList.add("wide");
  const hintButton = el("button", { type: "button", class: "small", onclick: () => preview() }, "Preview hint");
  const hintRow = el("div", { class: "field wide" }, el("div", { class: "row" }, hintButton, el("span", { class: "muted hint-status" })), hintImg);
  fieldsBox.append(hintRow);

  function syncThresholds() {
    const p = pre();
    for (const [wrap, slider] of [[thresholdA, p && p.threshold_a], [thresholdB, p && p.threshold_b]]) {
      wrap.hidden = !slider;
      if (!slider) continue;
      const input = $("input", wrap);
      $("label", wrap).textContent = slider.label;
      Object.assign(input, { min: slider.minimum, max: slider.maximum, step: slider.step, placeholder: String(slider.default) });
    }
    controls.processor_res.closest(".field").hidden = !(p && p.uses_resolution);
  }
  async function preview() {
    const status = $(".hint-status", root);
    if (!hintFile) { status.textContent = "upload an image first"; return; }
    const form = new FormData();
    form.append("image", hintFile);
    form.append("module", module.value);
    form.append("processor_res", controls.processor_res.value || "512");
    if (controls.threshold_a.value !== "") form.append("threshold_a", controls.threshold_a.value);
    if (controls.threshold_b.value !== "") form.append("threshold_b", controls.threshold_b.value);
    status.textContent = "…";
    try {
      const blob = await api("/api/v1/ui/preprocess", { method: "POST", body: form });
      hintImg.src = URL.createObjectURL(blob);
      hintImg.hidden = false;
      status.textContent = `${module.value} hint`;
    } catch (error) { status.textContent = error.message; hintImg.hidden = true; }
  }
  module.addEventListener("change", () => { controls.threshold_a.value = ""; controls.threshold_b.value = ""; syncThresholds(); });
  controls.threshold_a = $("input", thresholdA);
  controls.threshold_b = $("input", thresholdB);

  const unit = {
    root,
    get() {
      const out = { enabled: enabled.checked };
      for (const [key, control] of Object.entries(controls)) {
        if (key === "enabled") continue;
        const spec = item[key];
        if (control.type === "checkbox") out[key] = control.checked;
        else if (spec.type === "integer" || spec.type === "number") {
          out[key] = control.value === "" ? (spec.nullable ? null : spec.default) : Number(control.value);
        } else out[key] = control.value === "" && spec.nullable ? null : control.value;
      }
      return out;
    },
    set(v) {
      for (const [key, control] of Object.entries(controls)) {
        const value = key in v ? v[key] : item[key].default;
        if (control.type === "checkbox") control.checked = !!value;
        else if (control.tagName === "SELECT" && (value === null || value === undefined)) continue;
        else {
          if (control.tagName === "SELECT" && value && ![...control.options].some((o) => o.value === String(value))) {
            control.append(el("option", { value: String(value), text: `${value} (not found)` }));
          }
          control.value = value === null || value === undefined ? "" : value;
        }
      }
      syncThresholds();
    },
    remove() {
      root.remove();
      state.units.splice(state.units.indexOf(unit), 1);
      state.units.forEach((u, i) => { u.root.dataset.unit = i; $(".unit-head span", u.root).textContent = `ControlNet Unit ${i}`; });
    },
  };
  root.append(el("div", { class: "unit-head" }, title,
    el("label", { class: "row" }, enabled, "Enable"),
    el("button", { type: "button", class: "small remove-unit", onclick: () => unit.remove() }, "Remove")), fieldsBox);
  $("#f-controlnet_units .units").append(root);
  state.units.push(unit);
  unit.set(values);
  return unit;
}

async function uploadFiles(files, field) {
  const form = new FormData();
  for (const file of files) form.append("files", file);
  try {
    const answer = await api("/api/v1/uploads", { method: "POST", body: form });
    return answer.name;
  } catch (error) {
    showErrors(`${field}: ${error.message}`);
    return "";
  }
}

// --- prompt helpers ------------------------------------------------------------------------------------
async function countTokens(name) {
  const node = document.getElementById(`f-${name}`);
  const out = document.getElementById(`tokens-${name}`);
  if (!node || !out) return;
  try {
    const answer = await api("/api/v1/ui/tokens", { method: "POST", json: { text: node.value } });
    const chunks = (parts) => parts.map((p) => p.chunks.join("+")).join(" | ");
    let text = `${answer.count}/${answer.limit}`;
    if (answer.travel) text = `${answer.parts.length} keyframes · max ${text}`;
    if (answer.parts.some((p) => p.chunks.length > 1) || answer.travel) text += ` (${chunks(answer.parts)})`;
    out.textContent = text;
    out.title = answer.error || "tokens per 75-token chunk" + (answer.loras.length ? `; LoRAs: ${answer.loras.join(", ")}` : "");
    out.classList.toggle("over", !!answer.error);
  } catch (error) {
    out.textContent = "?";
    out.title = error.message;
  }
}
function insertLora() {
  const pick = $("#lora-pick");
  if (!pick.value) return;
  const base = pick.value.split("/").pop().replace(/\.[^.]+$/, "");
  const prompt = $("#f-prompt");
  const tag = `<lora:${base}:1>`;
  const at = prompt.selectionStart ?? prompt.value.length;
  const before = prompt.value.slice(0, at);
  const sep = before && !/[\s,]$/.test(before) ? ", " : "";
  prompt.value = before + sep + tag + prompt.value.slice(prompt.selectionEnd ?? at);
  prompt.dispatchEvent(new Event("input"));
}
function reuseSeed() {
  if (state.lastSeed !== null && state.lastSeed !== undefined) $("#f-seed").value = state.lastSeed;
}

// --- errors next to their fields ----------------------------------------------------------------------
function clearErrors() {
  document.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
  document.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}
function showErrors(detail) {
  const names = Object.keys(state.fields);
  for (const line of String(detail).split("; ")) {
    const m = line.match(/^([a-z_0-9]+)(?:\.(\d+)\.([a-z_]+))?/);
    let name = m && names.includes(m[1]) ? m[1] : names.find((n) => new RegExp(`\\b${n}\\b`).test(line));
    if (!name) { appendError($("#general-error"), line); continue; }
    let target = document.getElementById(`err-${name}`);
    if (name === "controlnet_units" && m && m[2] !== undefined && state.units[Number(m[2])]) {
      const unitError = $(`[data-error="${m[3]}"]`, state.units[Number(m[2])].root);
      if (unitError) target = unitError;
    }
    appendError(target, line);
    target.closest(".field").classList.add("invalid");
    const group = target.closest("details");
    if (group) group.open = true;
  }
}
function appendError(node, line) { node.textContent = node.textContent ? `${node.textContent}\n${line}` : line; }

// --- generate, progress, result ----------------------------------------------------------------------------
async function generate() {
  clearErrors();
  $("#warnings").textContent = "";
  let submitted;
  try {
    submitted = await api("/api/v1/jobs", { method: "POST", json: collect() });
  } catch (error) {
    showErrors(error.message);
    return;
  }
  state.lastSeed = submitted.seed;
  if (submitted.warnings.length) $("#warnings").textContent = submitted.warnings.join("\n");
  follow(submitted.id);
  refreshJobs();
}

function follow(id) {
  if (state.source) state.source.close();
  state.job = id;
  $("#result").replaceChildren();
  $("#files").replaceChildren();
  $("#infotext").hidden = true;
  $("#live-preview").hidden = true;
  $("#progress").hidden = false;
  $("#progress").dataset.job = id;
  setProgress({ fraction: 0 }, "queued");
  $("#cancel").disabled = false;
  const source = new EventSource(withKey(`/api/v1/jobs/${id}/events`));
  state.source = source;
  const on = (type, fn) => source.addEventListener(type, (e) => fn(JSON.parse(e.data)));
  on("job.queued", (e) => setProgress(e, "queued"));
  on("job.started", (e) => setProgress(e, "running"));
  on("job.progress", (e) => setProgress(e, "running"));
  on("job.preview", () => {
    const img = $("#live-preview");
    img.src = withKey(`/api/v1/jobs/${id}/preview?t=${Date.now()}`);
    img.hidden = false;
  });
  for (const type of ["job.succeeded", "job.failed", "job.canceled", "job.interrupted"]) {
    on(type, () => { source.close(); finished(id); });
  }
  source.onerror = () => {
    // The stream ends after the last event; a broken one is resumed by the browser (Last-Event-ID).
    if (source.readyState === EventSource.CLOSED) finished(id);
  };
}

function setProgress(e, status) {
  const fraction = Math.max(0, Math.min(1, e.fraction || 0));
  $("#progress-fill").style.width = `${(fraction * 100).toFixed(1)}%`;
  $("#progress").dataset.fraction = fraction.toFixed(3);
  const parts = [status];
  if (e.phase) parts.push(e.phase);
  if (e.total) parts.push(`step ${e.step}/${e.total}`);
  if (e.windows) parts.push(`window ${e.window}/${e.windows}`);
  parts.push(`${Math.round(fraction * 100)}%`);
  if (e.eta_s !== null && e.eta_s !== undefined) parts.push(`ETA ${fmtSeconds(e.eta_s)}`);
  $("#progress-text").textContent = parts.join(" · ");
}

async function finished(id) {
  if (state.job !== id) return;
  const job = await api(`/api/v1/jobs/${id}`);
  showJob(job);
  refreshJobs();
}

function showJob(job) {
  state.job = job.id;
  $("#cancel").disabled = !["queued", "running"].includes(job.status);
  $("#live-preview").hidden = true;
  $("#progress").hidden = false;
  setProgress(job.progress || {}, job.status);
  if (job.status === "succeeded") setProgress({ ...job.progress, fraction: 1, eta_s: null }, "succeeded");
  const result = $("#result");
  const files = $("#files");
  result.replaceChildren();
  files.replaceChildren();
  if (job.error) appendError($("#general-error"), `${job.status}: ${job.error}`);
  for (const file of job.files || []) {
    const url = withKey(file.url);
    if (ANIMATED.includes(file.format)) result.append(el("img", { src: url, alt: file.name, class: `result-${file.format}` }));
    if (VIDEOS.includes(file.format)) {
      result.append(el("video", { src: url, autoplay: true, loop: true, muted: true, controls: true, playsinline: true, class: `result-${file.format}` }));
    }
  }
  const pngs = (job.files || []).filter((f) => f.format === "png");
  for (const file of (job.files || []).filter((f) => f.format !== "png")) {
    files.append(el("a", { href: withKey(file.url), download: file.name, "data-format": file.format }, `⬇ ${file.name}`));
  }
  if (pngs.length) {
    const box = el("details", {}, el("summary", {}, `${pngs.length} PNG frames`));
    for (const file of pngs) box.append(el("a", { href: withKey(file.url), download: file.name, "data-format": "png" }, file.name));
    files.append(box);
  }
  if (!result.children.length && pngs.length) result.append(el("img", { src: withKey(pngs[0].url), alt: pngs[0].name }));
  const info = $("#infotext");
  info.hidden = !job.infotext;
  info.textContent = job.infotext || "";
  if (job.infotext) {
    files.append(el("a", { href: withKey(`/api/v1/jobs/${job.id}/infotext`), download: `${job.id}.txt`, "data-format": "infotext" }, "⬇ infotext"));
    files.append(el("a", { href: "#", id: "infotext-send", onclick: (e) => { e.preventDefault(); fillFromInfotext(job.infotext); } }, "Send infotext to txt2img"));
  }
  if (job.seed !== null && job.seed !== undefined) state.lastSeed = job.seed;
}

async function cancel(id = state.job) {
  if (!id) return;
  try {
    await api(`/api/v1/jobs/${id}/cancel`, { method: "POST" });
  } catch (error) {
    appendError($("#general-error"), error.message);
  }
  refreshJobs();
}

// --- queue and history ------------------------------------------------------------------------------------
function thumbOf(job) {
  const files = job.files || [];
  const pick = files.find((f) => ANIMATED.includes(f.format)) || files.find((f) => f.format === "png");
  if (pick) return el("img", { class: "thumb", src: withKey(pick.url), alt: "", loading: "lazy" });
  const video = files.find((f) => VIDEOS.includes(f.format));
  if (video) return el("video", { class: "thumb", src: withKey(video.url), muted: true, preload: "metadata" });
  return el("div", { class: "thumb" });
}
function jobRow(job, withCancel) {
  const prompt = (job.params.prompt || "").replace(/\s+/g, " ").slice(0, 120) || "(empty prompt)";
  const when = new Date(job.created_at * 1000).toLocaleString();
  const row = el("li", { "data-job": job.id, "data-status": job.status, title: `${job.id}\n${when}\n${job.params.prompt || ""}` },
    withCancel ? null : thumbOf(job),
    el("span", { class: `status ${job.status}`, text: job.status }),
    el("span", { class: "text", text: prompt }),
    el("span", { class: "muted", text: job.status === "running" ? `${Math.round((job.progress.fraction || 0) * 100)}%` : `#${String(job.seed ?? "")}` }));
  if (withCancel) {
    row.append(el("button", { type: "button", class: "small cancel-job", onclick: (e) => { e.stopPropagation(); cancel(job.id); } }, "Cancel"));
  }
  row.addEventListener("click", () => restoreJob(job));
  return row;
}
async function refreshJobs() {
  let list;
  try {
    list = await api(`/api/v1/jobs?newest_first=true&limit=${state.historyLimit}`);
    const queued = await api(`/api/v1/jobs?status=queued&limit=100`);
    const running = await api(`/api/v1/jobs?status=running&limit=20`);
    list.active = [...running.jobs, ...queued.jobs];
    $("#server-state").textContent = `${running.total} running · ${queued.total} queued · ${list.total} jobs`;
  } catch (error) {
    $("#server-state").textContent = `server: ${error.message}`;
    return;
  }
  const key = JSON.stringify([list.active.map((j) => [j.id, j.status, j.progress.fraction]), list.jobs.map((j) => [j.id, j.status])]);
  if (key === state.listKey) return;
  state.listKey = key;
  $("#queue").replaceChildren(...list.active.map((j) => jobRow(j, true)));
  if (!list.active.length) $("#queue").append(el("li", { class: "muted empty" }, "nothing queued"));
  const done = list.jobs.filter((j) => !["queued", "running"].includes(j.status));
  $("#history").replaceChildren(...done.map((j) => jobRow(j, false)));
  $("#history-more").hidden = list.total <= state.historyLimit;
}
function restoreJob(job) {
  const values = Object.assign({}, job.params);
  setValues(values);
  clearErrors();
  if (state.source) state.source.close();
  if (["queued", "running"].includes(job.status)) follow(job.id);
  else showJob(job);
}

// --- infotext: paste or drop ---------------------------------------------------------------------------
async function fillFromInfotext(text) {
  clearErrors();
  try {
    const answer = await api("/api/v1/ui/infotext", { method: "POST", json: { text } });
    setValues(answer.params);
  } catch (error) {
    appendError($("#general-error"), error.message);
  }
}
async function fillFromFile(file) {
  clearErrors();
  const form = new FormData();
  form.append("file", file);
  try {
    const answer = await api("/api/v1/ui/infotext/file", { method: "POST", body: form });
    $("#paste-infotext").value = answer.infotext;
    setValues(answer.params);
  } catch (error) {
    appendError($("#general-error"), error.message);
  }
}
function setUpDrop() {
  const overlay = $("#drop-overlay");
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; overlay.hidden = false; } });
  window.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) overlay.hidden = true; });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("drop", (e) => {
    depth = 0;
    overlay.hidden = true;
    if (!hasFiles(e)) return;
    if (e.target instanceof HTMLInputElement && e.target.type === "file") return;
    e.preventDefault();
    if (e.dataTransfer.files.length) fillFromFile(e.dataTransfer.files[0]);
  });
}

// --- start --------------------------------------------------------------------------------------------
async function start() {
  try {
    [state.schema, state.models] = await Promise.all([api("/api/v1/ui/schema"), api("/api/v1/models")]);
  } catch (error) {
    $("#general-error").textContent = `cannot load the settings: ${error.message}`;
    return;
  }
  for (const f of state.schema.fields) state.fields[f.name] = f;
  buildForm();
  $("#generate").addEventListener("click", generate);
  $("#cancel").addEventListener("click", () => cancel());
  $("#send-infotext").addEventListener("click", () => fillFromInfotext($("#paste-infotext").value));
  $("#infotext-file").addEventListener("change", (e) => { if (e.target.files.length) fillFromFile(e.target.files[0]); });
  $("#history-more").addEventListener("click", () => { state.historyLimit += 24; refreshJobs(); });
  document.addEventListener("keydown", (e) => { if (e.ctrlKey && e.key === "Enter") generate(); });
  setUpDrop();
  await refreshJobs();
  setInterval(refreshJobs, 1500);
  document.body.dataset.ready = "1";
}
start();
