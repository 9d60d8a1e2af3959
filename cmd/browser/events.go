//go:build js && wasm

package main

import (
	"syscall/js"
	"time"
)

// events reports a load to the JavaScript that asked for it (the SDK,
// and the page through it): the callbacks onPhase, onLog, onProgress and
// onStatus of load's options, each optional (docs/sdk.md). The client
// never touches the DOM; the page renders what these report.
type events struct {
	cb js.Value
}

func (e *events) call(name string, args ...any) {
	if e.cb.Type() == js.TypeObject && e.cb.Get(name).Type() == js.TypeFunction {
		call(e.cb, name, args...) // a callback that throws is the caller's problem
	}
}

// phase reports the load's phase: "joining", "downloading", "loading",
// "ready", and "generating" while a generation runs.
func (e *events) phase(p string) { e.call("onPhase", p) }

// log reports a line (level "info", "warn" or "error"), also to the
// console.
func (e *events) log(level, msg string) {
	js.Global().Get("console").Call("log", "doppler: "+level+": "+msg)
	e.call("onLog", level, msg)
}

// progress reports the download (throttled by the fetcher): verified
// bytes held of the total, and the bytes each transport brought.
func (e *events) progress(done, total int64, peers int, elapsed time.Duration, webrtc, http int64) {
	e.call("onProgress", object(map[string]any{
		"bytes": float64(done), "total": float64(total), "peers": peers, "seconds": elapsed.Seconds(),
		"webrtc": float64(webrtc), "http": float64(http),
	}))
}

// status reports transports and peers.
func (e *events) status(s map[string]any) { e.call("onStatus", object(s)) }
