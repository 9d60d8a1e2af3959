// Command browser is DOPPLER's browser client, compiled to WebAssembly
// (GOOS=js GOARCH=wasm) and served by the node at /d (package
// signaling/web embeds the generated, compressed artifact).
//
// In the page it joins a model's signaling room, connects to the node and
// to other browsers over WebRTC data channels speaking the shard protocol
// (p2p/shardproto, the same code the node runs), downloads the manifest
// and the shards with the swarm's fetch policy (swarm.Fetcher), falling
// back to the node's HTTP seed for shards no peer offers, verifies every
// block before keeping it, stores shards in the Origin Private File System
// (a reload reuses them; a partial shard resumes block by block), serves
// what it holds to other browsers, and runs the engine (engine, kernels:
// the same WGSL through navigator.gpu) on the shards to stream text into
// the page.
//
// It never touches the DOM: it sets globalThis.dopplerBridge (bridge.go),
// which the browser SDK (signaling/web/static/sdk.js, served at
// /sdk/doppler.js; docs/sdk.md) wraps, and reports through the callbacks
// the SDK's caller gave. The page (app.js) is an SDK user; see
// docs/browser.md for its automation contract.
//
// Rebuild the artifact with `go generate ./signaling/web`.
package main
