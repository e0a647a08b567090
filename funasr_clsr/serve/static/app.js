// The funasr-clsr page: plain JavaScript against the /v1 API (docs/serve.md). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "funasr-clsr-api-key";
let clipUrls = [];          // object URLs of the clips shown now (revoked on the next answer)
let recordingSeconds = {};  // recording_id -> length, for the timeline

// ------------------------------------------------------------------ API

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path, options = {}) {
  const opts = { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } };
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (err) {
    throw new Error("the server cannot be reached (" + err.message + ")");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!resp.ok) {
    let msg = (body && body.error) || ("HTTP " + resp.status);
    if (resp.status === 401) msg += " (enter the server's API key at the top right)";
    if (resp.status === 413) msg = "the file is too large for this server: " + msg;
    throw new Error(msg);
  }
  return body;
}

// A segment's audio: fetched with the key (an <audio src> cannot send a header), played from a blob.
async function clipBlobUrl(clipUrl) {
  const resp = await fetch(clipUrl, { headers: authHeaders() });
  if (!resp.ok) {
    let msg = "HTTP " + resp.status;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error("clip: " + msg);
  }
  const url = URL.createObjectURL(await resp.blob());
  clipUrls.push(url);
  return url;
}

// ------------------------------------------------------------------ messages

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function fmtTime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const ss = sec.toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

// ------------------------------------------------------------------ recordings

async function refreshHealth() {
  try {
    const h = await api("/health");
    $("health").textContent = `${h.model_id} · ${h.segments} segments indexed`;
  } catch (err) {
    $("health").textContent = "not connected";
    showError(err.message);
  }
}

async function refreshRecordings(select) {
  const data = await api("/v1/recordings");
  const sel = $("recordings");
  const keep = select !== undefined ? select : sel.value;
  sel.replaceChildren(new Option("all recordings", ""));
  recordingSeconds = {};
  for (const r of data.recordings) {
    recordingSeconds[r.recording_id] = r.seconds;
    const label = `${r.recording_id} (${fmtTime(r.seconds || 0)}, ${r.segments} segments)`;
    sel.add(new Option(label, r.recording_id));
  }
  sel.value = data.recordings.some((r) => r.recording_id === keep) ? keep : "";
}

async function upload(event) {
  event.preventDefault();
  clearError();
  const file = $("file").files[0];
  if (!file) { showError("choose an audio file first"); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  const rid = $("recording-id").value.trim();
  if (rid) form.append("recording_id", rid);
  $("upload").disabled = true;
  try {
    const job = await api("/v1/recordings", { method: "POST", body: form });
    await watchJob(job);
  } catch (err) {
    showError(err.message);
  } finally {
    $("upload").disabled = false;
  }
}

function showJob(job) {
  $("job").hidden = false;
  $("job").dataset.state = job.state;
  $("job-name").textContent = job.name || job.recording_id;
  $("job-state").textContent = job.state;
  $("job-progress").value = job.progress || 0;
  $("job-count").textContent = job.total ? `${job.done} / ${job.total} windows` : "";
}

async function watchJob(job) {
  showJob(job);
  while (job.state === "queued" || job.state === "running") {
    await new Promise((r) => setTimeout(r, 300));
    job = await api("/v1/jobs/" + job.job_id);
    showJob(job);
  }
  if (job.state === "failed") throw new Error("indexing failed: " + job.error);
  await refreshRecordings(job.recording_id);
  await refreshHealth();
}

async function deleteSelected() {
  clearError();
  const rid = $("recordings").value;
  if (!rid) { showError("pick a recording to delete"); return; }
  if (!confirm(`Delete ${rid} from the index?`)) return;
  try {
    await api("/v1/recordings/" + encodeURIComponent(rid), { method: "DELETE" });
    await refreshRecordings("");
    await refreshHealth();
  } catch (err) {
    showError(err.message);
  }
}

// ------------------------------------------------------------------ asking

async function ask(event) {
  event.preventDefault();
  clearError();
  const body = { question: $("question").value, top_k: parseInt($("top-k").value, 10), timeline: true };
  const rid = $("recordings").value;
  const where = $("where").value.trim();
  if (rid) body.recording_id = rid;
  if (where) body.where = where;
  if (!Number.isInteger(body.top_k)) { showError("top must be a whole number"); return; }
  await runSearch({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

async function askSpoken(event) {
  event.preventDefault();
  clearError();
  const file = $("question-audio").files[0];
  if (!file) { showError("choose a spoken question (an audio file) first"); return; }
  const form = new FormData();
  form.append("audio", file, file.name);
  form.append("top_k", $("top-k").value);
  form.append("timeline", "true");
  if ($("recordings").value) form.append("recording_id", $("recordings").value);
  if ($("where").value.trim()) form.append("where", $("where").value.trim());
  await runSearch({ method: "POST", body: form });
}

async function runSearch(options) {
  $("ask").disabled = $("ask-spoken").disabled = true;
  try {
    const result = await api("/v1/search", options);
    await render(result);
  } catch (err) {
    showError(err.message);
  } finally {
    $("ask").disabled = $("ask-spoken").disabled = false;
  }
}

async function render(result) {
  clipUrls.forEach((u) => URL.revokeObjectURL(u));
  clipUrls = [];
  const list = $("results");
  list.replaceChildren();
  const heard = result.question_transcript ? ` (heard: "${result.question_transcript}")` : "";
  $("summary").textContent = result.hits.length
    ? `${result.hits.length} segments for "${result.question}"${heard} in ${result.took_ms} ms`
    : "no segments: the index is empty";
  for (const h of result.hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.start = h.start;
    li.dataset.end = h.end;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${h.recording_id} · ${fmtTime(h.start)} – ${fmtTime(h.end)} · score ${h.score.toFixed(3)}`;
    const text = document.createElement("div");
    text.className = "transcript";
    text.textContent = h.transcript ? `“${h.transcript}”` : "(no transcript)";
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "auto";
    li.append(meta, text, audio);
    list.append(li);
    clipBlobUrl(h.clip_url).then((u) => { audio.src = u; }).catch((err) => showError(err.message));
  }
  drawTimeline(result);
}

function drawTimeline(result) {
  const section = $("timeline-section");
  const svg = $("timeline");
  svg.replaceChildren();
  const tl = result.timeline;
  if (!tl || !tl.segments.length) { section.hidden = true; return; }
  section.hidden = false;
  const total = Math.max(recordingSeconds[tl.recording_id] || 0, ...tl.segments.map((s) => s.end));
  const scores = tl.segments.map((s) => s.score);
  const lo = Math.min(...scores), hi = Math.max(...scores);
  const top = new Set(result.hits.filter((h) => h.recording_id === tl.recording_id).map((h) => h.start));
  const ns = "http://www.w3.org/2000/svg";
  for (const s of tl.segments) {
    const height = 8 + 104 * (hi > lo ? (s.score - lo) / (hi - lo) : 1);
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", (1000 * s.start) / total);
    rect.setAttribute("width", Math.max((1000 * (s.end - s.start)) / total - 1, 1));
    rect.setAttribute("y", 120 - height);
    rect.setAttribute("height", height);
    if (top.has(s.start)) rect.classList.add("top");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${fmtTime(s.start)} – ${fmtTime(s.end)}: ${s.score.toFixed(3)}`;
    rect.append(title);
    rect.addEventListener("click", () => playSegment(tl.recording_id, s));
    svg.append(rect);
  }
  $("timeline-title").textContent = tl.recording_id;
  $("timeline-end").textContent = fmtTime(total);
}

async function playSegment(rid, seg) {
  const url = `/v1/recordings/${encodeURIComponent(rid)}/audio?start=${seg.start}&end=${seg.end}`;
  try {
    const player = $("timeline-audio");
    player.src = await clipBlobUrl(url);
    player.hidden = false;
    await player.play();
  } catch (err) {
    showError(err.message);
  }
}

// ------------------------------------------------------------------ start

$("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
  clearError();
  refreshHealth();
  refreshRecordings().catch((err) => showError(err.message));
});
$("upload-form").addEventListener("submit", upload);
$("ask-form").addEventListener("submit", ask);
$("ask-spoken-form").addEventListener("submit", askSpoken);
$("delete").addEventListener("click", deleteSelected);
refreshHealth();
refreshRecordings().catch((err) => showError(err.message));
