//go:build js && wasm

package main

import (
	"context"
	"errors"
	"syscall/js"

	"github.com/doppler-llm/doppler/p2p/sharelink"
)

// bridge is globalThis.dopplerBridge, what the SDK (signaling/web's
// sdk.js, served at /sdk/doppler.js) calls; the page is an SDK user. Its
// functions never throw: a failure is a rejected promise, or for
// parseLink an {error} object.
//
//	parseLink(link)            {model, seeds, peers} or {error}
//	load(options) → Promise    a loaded model (see loaded)
func bridge() js.Value {
	return object(map[string]any{
		"parseLink": js.FuncOf(func(_ js.Value, args []js.Value) any {
			if len(args) == 0 || args[0].Type() != js.TypeString {
				return object(map[string]any{"error": "parseLink needs a string"})
			}
			l, err := sharelink.Parse(args[0].String())
			if err != nil {
				return object(map[string]any{"error": err.Error()})
			}
			seeds, peers := make([]any, len(l.Seeds)), make([]any, len(l.Peers))
			for i, s := range l.Seeds {
				seeds[i] = s
			}
			for i, p := range l.Peers {
				peers[i] = p
			}
			return object(map[string]any{"model": l.Model.String(), "seeds": seeds, "peers": peers})
		}),
		"load": js.FuncOf(func(_ js.Value, args []js.Value) any {
			return promise(func() (any, error) {
				if len(args) == 0 || args[0].Type() != js.TypeObject {
					return nil, errors.New("load needs an options object")
				}
				// The signal aborts the load; after it, only unload ends
				// the client.
				ctx, cancel := context.WithCancel(context.Background())
				stop := onAbort(args[0].Get("signal"), cancel)
				c, err := load(ctx, parseLoadOptions(args[0]))
				stop()
				if err != nil {
					cancel()
					return nil, err
				}
				c.cancel = cancel
				return loaded(c), nil
			})
		}),
	})
}

// loaded is the JavaScript face of a loaded model:
//
//	id, name                       the model ID and its manifest's name
//	generate(options, onToken)     Promise of the result; onToken({id, text})
//	status()                       transports and peers now
//	unload() → Promise             closes the connections and frees the GPU
func loaded(c *client) js.Value {
	name := "" // downloaded only: no generator
	if c.gen != nil {
		name = c.gen.name
	}
	return object(map[string]any{
		"id":   c.model.String(),
		"name": name,
		"generate": js.FuncOf(func(_ js.Value, args []js.Value) any {
			return promise(func() (any, error) {
				if len(args) == 0 || args[0].Type() != js.TypeObject {
					return nil, errors.New("generate needs an options object")
				}
				o, err := parseGenOptions(args[0])
				if err != nil {
					return nil, err
				}
				var cb js.Value
				if len(args) > 1 && args[1].Type() == js.TypeFunction {
					cb = args[1]
				}
				ctx, cancel := context.WithCancel(c.ctx)
				defer cancel()
				stop := onAbort(args[0].Get("signal"), cancel)
				defer stop()
				res, err := c.generate(ctx, o, func(id int, text string) {
					if cb.IsUndefined() {
						return
					}
					t := map[string]any{"text": text}
					if id >= 0 {
						t["id"] = id
					}
					call(cb, "call", js.Null(), object(t)) // a callback that throws does not stop us
				})
				if err != nil {
					return nil, err
				}
				return object(res), nil
			})
		}),
		"status": js.FuncOf(func(js.Value, []js.Value) any { return object(c.status()) }),
		"unload": js.FuncOf(func(js.Value, []js.Value) any {
			return promise(func() (any, error) {
				c.close()
				return nil, nil
			})
		}),
	})
}

// promise runs f in a goroutine and returns a Promise of its outcome (a
// rejection carries an Error with the message).
func promise(f func() (any, error)) js.Value {
	var exec js.Func
	exec = js.FuncOf(func(_ js.Value, args []js.Value) any {
		resolve, reject := args[0], args[1]
		exec.Release()
		go func() {
			v, err := f()
			if err != nil {
				reject.Invoke(js.Global().Get("Error").New(err.Error()))
				return
			}
			resolve.Invoke(v)
		}()
		return nil
	})
	return js.Global().Get("Promise").New(exec)
}

// onAbort calls f when an AbortSignal fires (at once if it has); stop
// removes the listener. A missing signal is no signal.
func onAbort(signal js.Value, f func()) (stop func()) {
	if signal.Type() != js.TypeObject || signal.Get("addEventListener").Type() != js.TypeFunction {
		return func() {}
	}
	if signal.Get("aborted").Truthy() {
		f()
		return func() {}
	}
	fn := js.FuncOf(func(js.Value, []js.Value) any { go f(); return nil })
	signal.Call("addEventListener", "abort", fn)
	return func() {
		signal.Call("removeEventListener", "abort", fn)
		fn.Release()
	}
}
