// Package web is the page a DOPPLER node serves at /d and the browser SDK
// at /sdk/doppler.js (docs/sdk.md): plain HTML, CSS, the SDK (an ES module
// around the browser client, cmd/browser, compiled to WebAssembly) and the
// page's script, itself an SDK user. Everything is embedded, so `go build
// ./cmd/node` gives a complete binary; static/doppler.wasm.gz and
// static/wasm_exec.js are generated (go generate ./signaling/web) and a
// test fails when they are stale.
//
// The automation contract (docs/browser.md):
//
//	/d?model=<model-id>&prompt=<text>&n=<N>&temp=0&autorun=1
//	/d?link=<share-link>&prompt=<text>&n=<N>&temp=0&autorun=1
//
// joins, downloads and generates without clicks; when finished
// document.body.dataset.state is "done" (or "error", with the message in
// document.body.dataset.error) and window.dopplerResult is
// {tokens, text, bytesByTransport: {webrtc, http}, rejectedBlocks, …}.
// With download=1 instead of autorun=1 the page only downloads and keeps
// serving (no GPU), then is "done" (docs/browser.md).
package web

//go:generate go run ../../internal/wasmbuild/gen -root ../.. -out static
