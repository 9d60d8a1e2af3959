// DOPPLER page: starts the WebAssembly client and renders what it reports.
// The client (cmd/browser) does the work; this file only touches the DOM.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const opts = {
    model: params.get("model") || "",
    prompt: params.get("prompt") || "",
    n: params.has("n") ? Number(params.get("n")) : 64,
    temp: params.has("temp") ? Number(params.get("temp")) : 0.8,
    autorun: params.get("autorun") === "1",
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

  window.dopplerUI = {
    phase(p) {
      setPhase(p);
      $("go").disabled = p !== "ready" && p !== "done";
    },
    log(level, msg) {
      const li = document.createElement("li");
      li.className = level;
      li.textContent = new Date().toLocaleTimeString() + "  " + msg;
      $("log").appendChild(li);
      $("log").scrollTop = $("log").scrollHeight;
      if (level === "error") $("log-box").open = true;
    },
    progress(p) {
      total = p.total;
      const pct = p.total ? (100 * p.done / p.total) : 0;
      $("bar-fill").style.width = pct.toFixed(1) + "%";
      $("bytes").textContent = fmtBytes(p.done) + " of " + fmtBytes(p.total) + " (" + pct.toFixed(0) + "%)";
      if (p.seconds > 0) $("rate").textContent = fmtBytes(p.done / p.seconds) + "/s";
      $("eta").textContent = p.done >= p.total ? "complete, verified" : p.peers + (p.peers === 1 ? " source" : " sources");
    },
    status(s) {
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
    token(piece) { $("text").textContent += piece; },
    result(r) {
      const secs = r.seconds ? r.seconds.toFixed(2) : "?";
      $("gen-stats").textContent = r.tokens.length + " tokens in " + secs + " s · prefill " +
        r.prefillMs.toFixed(0) + " ms · model load " + r.loadMs.toFixed(0) + " ms";
    },
  };

  const generate = (o) => {
    $("prompt-echo").textContent = o.prompt;
    $("text").textContent = "";
    $("gen-stats").textContent = "";
    window.doppler.generate(o);
  };
  $("gen-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generate({ prompt: $("prompt").value || $("prompt").placeholder, n: Number($("n").value), temp: Number($("temp").value) });
  });
  $("prompt").value = opts.prompt;
  $("n").value = opts.n;
  $("temp").value = opts.temp;

  const fail = (msg) => {
    document.body.dataset.error = msg;
    window.dopplerUI.log("error", msg);
    document.body.dataset.state = "error";
    setPhase("error");
  };

  const pickModel = async () => {
    $("model-pick").hidden = false;
    try {
      const r = await fetch("/rdrr/v1/models");
      const list = await r.json();
      for (const m of list.models || list) {
        const id = m.id || m;
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = "/d?model=" + encodeURIComponent(id);
        a.textContent = (m.name ? m.name + " — " : "") + id;
        li.appendChild(a);
        $("models").appendChild(li);
      }
      setPhase("pick a model");
      document.body.dataset.state = "idle";
    } catch (e) {
      fail("cannot list models: " + e);
    }
  };

  const boot = async () => {
    if (!navigator.gpu) {
      fail("this browser has no WebGPU (navigator.gpu); use a recent Chrome or Edge, over https or localhost");
      return;
    }
    if (!opts.model) { pickModel(); return; }
    $("model-info").hidden = false;
    $("model-id").textContent = opts.model;
    $("prompt-echo").textContent = opts.autorun ? opts.prompt : "";
    const go = new Go();
    let result;
    try {
      result = await WebAssembly.instantiateStreaming(fetch("/d/doppler.wasm"), go.importObject);
    } catch (e) {
      fail("cannot load the client: " + e);
      return;
    }
    // cogentcore/webgpu's js backend copies through globalThis.wasm.instance.
    globalThis.wasm = result;
    window.dopplerReady = () => window.doppler.start(opts);
    go.run(result.instance).then(() => fail("the client exited"));
  };
  boot();
})();
