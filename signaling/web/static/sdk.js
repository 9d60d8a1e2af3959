// DOPPLER browser SDK — an ES module served by every DOPPLER node at
// /sdk/doppler.js (docs/sdk.md). It runs a node's models in *this* page:
// the same Go engine compiled to WebAssembly, on the browser's GPU
// (WebGPU), with the model's shards fetched over WebRTC from the node and
// other browsers (the node's HTTP seed as a fallback), verified block by
// block and kept in the Origin Private File System.
//
//   import { connect } from "http://NODE/sdk/doppler.js";
//   const node = await connect("http://NODE");
//   const model = await node.load(idOrNameOrLink, { onProgress: (p) => … });
//   for await (const tok of model.generate("Once upon a time", { maxTokens: 32 })) text += tok.text;
//   for await (const tok of model.chat([{ role: "user", content: "Hi" }])) …
//   await model.unload();
//
// The page at /d is itself a user of this module.

const here = import.meta.url;

// The node that served this module: connect's default.
const home = new URL("..", here).href.replace(/\/+$/, "");

let runtime = null;

// bridge starts the WebAssembly client once per page (from the node that
// served this module) and returns globalThis.dopplerBridge (cmd/browser).
function bridge() {
  runtime ??= start().catch((e) => {
    runtime = null;
    throw e;
  });
  return runtime;
}

// The webgpu binding's JavaScript backend builds two helpers with eval
// when the client starts (queue writes straight from wasm memory). A page
// whose Content-Security-Policy has no 'unsafe-eval' — the node's own page
// at /d — forbids that and the client would die at start, so while it
// starts, eval answers exactly those two sources with the same helpers
// written here, and hands anything else to the browser's eval.
function shimBindingEval() {
  const native = globalThis.eval;
  const mem = () => globalThis.wasm.instance.exports.mem.buffer;
  const helpers = [
    [/queue\.writeBuffer\(buf, offset, data, x, n\)/,
      (queue, buf, offset, addr, x, n) => queue.writeBuffer(buf, offset, new Uint8ClampedArray(mem(), addr, n), x, n)],
    [/queue\.writeTexture\(tex, data, layout, writeSize\)/,
      (queue, tex, addr, n, layout, writeSize) => queue.writeTexture(tex, new Uint8ClampedArray(mem(), addr, n), layout, writeSize)],
  ];
  globalThis.eval = function (src) {
    if (typeof src === "string") {
      for (const [re, fn] of helpers) if (re.test(src)) return fn;
    }
    return native(src);
  };
  return () => { globalThis.eval = native; };
}

async function start() {
  if (!globalThis.navigator?.gpu) {
    throw new Error("this browser has no WebGPU (navigator.gpu): use a recent Chrome or Edge, over https or on localhost");
  }
  if (globalThis.dopplerBridge) return globalThis.dopplerBridge;
  if (typeof globalThis.Go !== "function") await import(new URL("../d/wasm_exec.js", here).href);
  const go = new globalThis.Go();
  const ready = new Promise((resolve) => { globalThis.dopplerBridgeReady = resolve; });
  let wasm;
  try {
    wasm = await WebAssembly.instantiateStreaming(fetch(new URL("../d/doppler.wasm", here).href), go.importObject);
  } catch (e) {
    throw new Error("cannot load the DOPPLER client: " + (e?.message || e));
  }
  // the webgpu binding's js backend copies through globalThis.wasm.instance.
  globalThis.wasm = wasm;
  // go.run runs the client's package initialisers before it returns: the
  // binding's eval calls happen inside it, and eval is the page's again after.
  const restoreEval = shimBindingEval();
  let run;
  try {
    run = go.run(wasm.instance);
  } finally {
    restoreEval();
  }
  const exited = run.then(() => {
    runtime = null;
    throw new Error("the DOPPLER client exited");
  });
  exited.catch(() => {});
  await Promise.race([ready, exited]);
  delete globalThis.dopplerBridgeReady;
  return globalThis.dopplerBridge;
}

const isID = (s) => /^[0-9a-fA-F]{64}$/.test(s);
const isLink = (s) => /^doppler:/i.test(s);

// connect returns the node at url (by default the one that served this
// module) after checking that it answers: its HTTP seed's model list.
export async function connect(url = home, { signal } = {}) {
  const base = new URL(String(url)).href.replace(/\/+$/, "");
  const r = await fetch(base + "/rdrr/v1/models", { signal });
  if (!r.ok) throw new Error(`${base}: not a DOPPLER node (GET /rdrr/v1/models: HTTP ${r.status})`);
  await r.json();
  return new Node(base);
}

// parseLink reads a share link (doppler://<model-id>?seed=…&peer=…) with
// the node's own parser: {model, seeds, peers}. It throws on a bad link.
export async function parseLink(link) {
  const l = (await bridge()).parseLink(String(link));
  if (l.error) throw new Error(l.error);
  return { model: l.model, seeds: [...l.seeds], peers: [...l.peers] };
}

// Node is a DOPPLER node the page talks to: where signaling, the HTTP seed
// and the model list are.
export class Node {
  constructor(url) {
    this.url = url;
  }

  // models lists the models the node serves: [{id, name, status}] from
  // its API when it runs one (/v1/models), else [{id, name: ""}] from its
  // HTTP seed.
  async models({ signal } = {}) {
    try {
      const r = await fetch(this.url + "/v1/models", { signal });
      if (r.ok) {
        const j = await r.json();
        if (Array.isArray(j.data)) return j.data.map((m) => ({ id: m.id, name: m.name || "", status: m.status }));
      }
    } catch (e) {
      if (signal?.aborted) throw e;
    }
    const r = await fetch(this.url + "/rdrr/v1/models", { signal });
    if (!r.ok) throw new Error(`${this.url}: GET /rdrr/v1/models: HTTP ${r.status}`);
    const j = await r.json();
    return (j.models || []).map((id) => ({ id, name: "" }));
  }

  // load makes a model ready to generate in this page: joins its swarm,
  // downloads what this browser's storage lacks (verified), and loads it
  // onto WebGPU. model is a model ID, a share link, a name the node's
  // models() lists, or a unique prefix (4+ hex digits) of an ID.
  //
  // Options, all optional:
  //   onProgress({bytes, total, peers, seconds, webrtc, http})  the download
  //   onPhase(phase)   "joining", "downloading", "loading", "ready", "generating"
  //   onLog(level, message)
  //   onStatus({self, peers, held, total, webrtc, http, rejected, served})
  //   signal           an AbortSignal that abandons the load
  //   context          the KV cache's length in tokens (256)
  //   debug            the client's debug lines on the console
  //   download         only download (and keep serving): no GPU load, the
  //                    last phase is "downloaded", generate rejects
  async load(model, { onProgress, onPhase, onLog, onStatus, signal, context, debug, download } = {}) {
    const b = await bridge();
    let ref = String(model).trim();
    if (!isID(ref) && !isLink(ref)) ref = await this.#resolve(ref, signal);
    const h = await b.load({ base: this.url, model: ref, onProgress, onPhase, onLog, onStatus, signal, context, debug, download: !!download });
    return new Model(h);
  }

  async #resolve(name, signal) {
    const ms = await this.models({ signal });
    const exact = ms.find((m) => m.name === name || m.id === name);
    if (exact) return exact.id;
    const low = name.toLowerCase();
    const pre = /^[0-9a-f]{4,}$/.test(low) ? ms.filter((m) => m.id.startsWith(low)) : [];
    if (pre.length === 1) return pre[0].id;
    if (pre.length > 1) throw new Error(`model ${JSON.stringify(name)}: ${pre.length} models match`);
    throw new Error(`model ${JSON.stringify(name)}: ${this.url} serves no model of that name or ID`);
  }
}

// Model is a model loaded in this page.
export class Model {
  #h;

  constructor(h) {
    this.#h = h;
    this.id = h.id;
    this.name = h.name;
  }

  // generate continues a prompt. Options: maxTokens (64), temperature
  // (0.8; 0 is greedy), seed (a number; by default from the clock),
  // continuation (keep the first token's leading space, to show the
  // text right after the prompt), signal (an AbortSignal that stops it).
  generate(prompt, options = {}) {
    return new Generation(this.#h, { ...options, prompt: String(prompt) });
  }

  // chat answers a conversation ([{role, content}], roles system, user,
  // assistant) with the model's chat template, or the plain transcript
  // of docs/api.md when it has none. Options as for generate.
  chat(messages, options = {}) {
    return new Generation(this.#h, { ...options, messages: messages.map((m) => ({ role: String(m.role), content: String(m.content) })) });
  }

  // status is the swarm now: {self, peers, held, total, webrtc, http,
  // rejected, served}.
  status() {
    return this.#h.status();
  }

  // unload closes the model's connections and frees its GPU memory; the
  // shards stay in storage for the next load.
  unload() {
    return this.#h.unload();
  }
}

// Generation is one running generation: an async iterable of tokens
// ({id, text}), with result, a promise of the whole outcome ({text,
// tokens, promptTokens, stopReason, bytesByTransport, …}, docs/sdk.md).
// Breaking out of a for await loop, or cancel(), stops it.
export class Generation {
  #queue = [];
  #wake = null;
  #end = null; // {error} or {}
  #abort = new AbortController();

  constructor(h, options) {
    const outer = options.signal;
    if (outer?.aborted) this.#abort.abort();
    else outer?.addEventListener("abort", () => this.#abort.abort(), { once: true });
    this.result = h.generate({ ...options, signal: this.#abort.signal }, (tok) => {
      this.#queue.push(tok);
      this.#notify();
    });
    this.result.then(
      () => { this.#end = {}; this.#notify(); },
      (error) => { this.#end = { error }; this.#notify(); },
    );
  }

  #notify() {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  async next() {
    for (;;) {
      if (this.#queue.length) return { value: this.#queue.shift(), done: false };
      if (this.#end?.error) throw this.#end.error;
      if (this.#end) return { value: undefined, done: true };
      await new Promise((resolve) => { this.#wake = resolve; });
    }
  }

  async return() {
    this.cancel();
    return { value: undefined, done: true };
  }

  // cancel stops the generation; result then resolves with stopReason
  // "interrupted" and the tokens so far.
  cancel() {
    this.#abort.abort();
  }

  // text waits for the whole text.
  async text() {
    return (await this.result).text;
  }
}
