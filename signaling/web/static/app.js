// DOPPLER page: a user of the browser SDK (/sdk/doppler.js) that renders
// what the client reports and keeps the automation contract
// (docs/browser.md). The client (cmd/browser) does the work; this file
// only touches the DOM.
import { connect, parseLink } from "/sdk/doppler.js";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const opts = {
  model: params.get("model") || "",
  link: params.get("link") || "",
  prompt: params.get("prompt") || "",
  n: params.has("n") ? Number(params.get("n")) : 64,
  temp: params.has("temp") ? Number(params.get("temp")) : 0.8,
  autorun: params.get("autorun") === "1",
  download: params.get("download") === "1",
  debug: params.get("debug") === "1",
};
const fmtBytes = (n) => {
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
};
let total = 0;
const setPhase = (p) => { $("phase").textContent = p; };

const ui = {
  onPhase(p) {
    setPhase(p);
    document.body.dataset.state = p;
    $("go").disabled = p !== "ready";
  },
  onLog(level, msg) {
    const li = document.createElement("li");
    li.className = level;
    li.textContent = new Date().toLocaleTimeString() + "  " + msg;
    $("log").appendChild(li);
    $("log").scrollTop = $("log").scrollHeight;
    if (level === "error") $("log-box").open = true;
  },
  onProgress(p) {
    total = p.total;
    const pct = p.total ? (100 * p.bytes / p.total) : 0;
    $("bar-fill").style.width = pct.toFixed(1) + "%";
    $("bytes").textContent = fmtBytes(p.bytes) + " of " + fmtBytes(p.total) + " (" + pct.toFixed(0) + "%)";
    if (p.seconds > 0) $("rate").textContent = fmtBytes(p.bytes / p.seconds) + "/s";
    $("eta").textContent = p.bytes >= p.total ? "complete, verified" : p.peers + (p.peers === 1 ? " source" : " sources");
  },
  onStatus(s) {
    $("self").textContent = s.self ? "you are " + s.self : "";
    $("by-rtc").textContent = fmtBytes(s.webrtc);
    $("by-http").textContent = fmtBytes(s.http);
    $("rejected").textContent = s.rejected;
    $("served").textContent = s.served;
    if (s.total && !total) {
      const pct = 100 * s.held / s.total;
      $("bar-fill").style.width = pct.toFixed(1) + "%";
      $("bytes").textContent = fmtBytes(s.held) + " of " + fmtBytes(s.total) + " (" + pct.toFixed(0) + "%)";
    }
    const body = $("peers").tBodies[0];
    body.textContent = "";
    for (const p of s.peers) {
      const tr = body.insertRow();
      for (const v of [p.id, p.shards, fmtBytes(p.down), fmtBytes(p.up)]) tr.insertCell().textContent = v;
    }
    $("no-peers").hidden = s.peers.length > 0;
  },
};
const showResult = (r) => {
  const secs = r.seconds ? r.seconds.toFixed(2) : "?";
  $("gen-stats").textContent = r.tokens.length + " tokens in " + secs + " s · prefill " +
    r.prefillMs.toFixed(0) + " ms · model load " + r.loadMs.toFixed(0) + " ms";
};

const fail = (e) => {
  const msg = String(e?.message || e);
  document.body.dataset.error = msg;
  ui.onLog("error", msg);
  document.body.dataset.state = "error";
  setPhase("error");
};

let model = null;
// generate runs one prompt; when done, window.dopplerResult holds the
// outcome and the state is "done".
const generate = async (o) => {
  $("prompt-echo").textContent = o.prompt;
  $("text").textContent = "";
  $("gen-stats").textContent = "";
  try {
    const gen = model.generate(o.prompt, { maxTokens: o.n, temperature: o.temp, continuation: true });
    for await (const tok of gen) $("text").textContent += tok.text;
    const r = await gen.result;
    window.dopplerResult = r;
    showResult(r);
    setPhase("done");
    document.body.dataset.state = "done";
    $("go").disabled = false;
  } catch (e) {
    fail(e);
  }
};
$("gen-form").addEventListener("submit", (e) => {
  e.preventDefault();
  $("go").disabled = true;
  generate({ prompt: $("prompt").value || $("prompt").placeholder, n: Number($("n").value), temp: Number($("temp").value) });
});
$("prompt").value = opts.prompt;
$("n").value = opts.n;
$("temp").value = opts.temp;

const pickModel = async (node) => {
  $("model-pick").hidden = false;
  for (const m of await node.models()) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "/d?model=" + encodeURIComponent(m.id);
    a.textContent = (m.name ? m.name + " — " : "") + m.id;
    li.appendChild(a);
    $("models").appendChild(li);
  }
  setPhase("pick a model");
  document.body.dataset.state = "idle";
};

// downloadOnly (download=1) fetches the model, verified, and keeps serving
// it to the swarm without loading it on the GPU; then the state is "done",
// window.dopplerResult holds the transfer's figures and window.dopplerModel
// the model (its status() reads them later: what it served since).
const downloadOnly = async (node) => {
  const t0 = performance.now();
  $("model-info").hidden = false;
  $("model-id").textContent = opts.link ? (await parseLink(opts.link)).model : opts.model;
  model = await node.load(opts.link || opts.model, { ...ui, debug: opts.debug, download: true });
  window.dopplerModel = model;
  const s = model.status();
  window.dopplerResult = {
    model: model.id, seconds: (performance.now() - t0) / 1000, held: s.held, total: s.total,
    bytesByTransport: { webrtc: s.webrtc, http: s.http }, rejectedBlocks: s.rejected, servedBlocks: s.served,
  };
  setPhase("done");
  document.body.dataset.state = "done";
};

const boot = async () => {
  const node = await connect(location.origin);
  if (!opts.model && !opts.link) {
    await pickModel(node);
    return;
  }
  if (opts.download) return downloadOnly(node);
  if (!navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu); use a recent Chrome or Edge, over https or localhost");
  $("model-info").hidden = false;
  $("model-id").textContent = opts.link ? (await parseLink(opts.link)).model : opts.model;
  $("prompt-echo").textContent = opts.autorun ? opts.prompt : "";
  model = await node.load(opts.link || opts.model, { ...ui, debug: opts.debug });
  $("model-id").textContent = model.id;
  if (opts.autorun) await generate(opts);
};
boot().catch(fail);
