//go:build js && wasm

package main

import (
	"sync"
	"syscall/js"
	"time"
)

// ui reports to the page's script (globalThis.dopplerUI, in app.js) and
// keeps the automation contract: document.body.dataset.state is the phase
// ("joining", "downloading", "loading", "ready", "generating", then "done"
// or "error" with document.body.dataset.error) and window.dopplerResult
// holds the outcome.
type ui struct {
	mu       sync.Mutex
	lastProg time.Time
}

func (u *ui) call(method string, args ...any) {
	if o := js.Global().Get("dopplerUI"); o.Truthy() && o.Get(method).Type() == js.TypeFunction {
		call(o, method, args...)
	}
}

// phase sets the page state.
func (u *ui) phase(p string) {
	js.Global().Get("document").Get("body").Get("dataset").Set("state", p)
	u.call("phase", p)
}

func (u *ui) log(level, msg string) {
	js.Global().Get("console").Call("log", "doppler: "+level+": "+msg)
	u.call("log", level, msg)
}

// progress reports the download (throttled by the fetcher).
func (u *ui) progress(done, total int64, peers int, elapsed time.Duration) {
	u.call("progress", object(map[string]any{
		"done": float64(done), "total": float64(total), "peers": peers, "seconds": elapsed.Seconds(),
	}))
}

// status reports transports and peers.
func (u *ui) status(s map[string]any) { u.call("status", object(s)) }

// token appends generated text.
func (u *ui) token(piece string) { u.call("token", piece) }

// fail ends the run with an error.
func (u *ui) fail(err error) {
	body := js.Global().Get("document").Get("body")
	body.Get("dataset").Set("error", err.Error())
	u.log("error", err.Error())
	u.phase("error")
}

// done publishes the result and ends the run.
func (u *ui) done(result map[string]any) {
	js.Global().Set("dopplerResult", object(result))
	u.call("result", js.Global().Get("dopplerResult"))
	u.phase("done")
}
