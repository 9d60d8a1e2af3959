//go:build js && wasm

package main

import (
	"context"
	"errors"
	"fmt"
	"syscall/js"
)

// await waits for a JavaScript promise; a rejection becomes an error with
// the reason's message.
func await(ctx context.Context, p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	var then, catch js.Func
	then = js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		ch <- result{v: v}
		return nil
	})
	catch = js.FuncOf(func(_ js.Value, args []js.Value) any {
		msg := "promise rejected"
		if len(args) > 0 {
			msg = jsError(args[0])
		}
		ch <- result{err: errors.New(msg)}
		return nil
	})
	p.Call("then", then, catch)
	select {
	case r := <-ch:
		then.Release()
		catch.Release()
		return r.v, r.err
	case <-ctx.Done():
		// The callbacks stay referenced by the promise; release them once
		// it settles.
		go func() {
			<-ch
			then.Release()
			catch.Release()
		}()
		return js.Undefined(), ctx.Err()
	}
}

// jsError is the message of a thrown JavaScript value.
func jsError(v js.Value) string {
	if v.Type() == js.TypeObject {
		if m := v.Get("message"); m.Type() == js.TypeString {
			name := v.Get("name")
			if name.Type() == js.TypeString && name.String() != "Error" {
				return name.String() + ": " + m.String()
			}
			return m.String()
		}
	}
	return v.Call("toString").String()
}

// call calls method on v, turning a thrown exception into an error.
func call(v js.Value, method string, args ...any) (r js.Value, err error) {
	defer func() {
		if e := recover(); e != nil {
			if je, ok := e.(js.Error); ok {
				err = fmt.Errorf("%s: %s", method, jsError(je.Value))
				return
			}
			err = fmt.Errorf("%s: %v", method, e)
		}
	}()
	return v.Call(method, args...), nil
}

// callAwait calls a method that returns a promise and waits for it.
func callAwait(ctx context.Context, v js.Value, method string, args ...any) (js.Value, error) {
	p, err := call(v, method, args...)
	if err != nil {
		return p, err
	}
	r, err := await(ctx, p)
	if err != nil {
		return r, fmt.Errorf("%s: %w", method, err)
	}
	return r, nil
}

// goBytes copies a Uint8Array, ArrayBuffer or DataView into Go.
func goBytes(v js.Value) []byte {
	u8 := js.Global().Get("Uint8Array")
	if !v.InstanceOf(u8) {
		if v.InstanceOf(js.Global().Get("ArrayBuffer")) {
			v = u8.New(v)
		} else {
			v = u8.New(v.Get("buffer"), v.Get("byteOffset"), v.Get("byteLength"))
		}
	}
	b := make([]byte, v.Get("byteLength").Int())
	js.CopyBytesToGo(b, v)
	return b
}

// jsBytes copies b into a new Uint8Array.
func jsBytes(b []byte) js.Value {
	u := js.Global().Get("Uint8Array").New(len(b))
	js.CopyBytesToJS(u, b)
	return u
}

// object builds a plain JavaScript object.
func object(kv map[string]any) js.Value {
	o := js.Global().Get("Object").New()
	for k, v := range kv {
		o.Set(k, v)
	}
	return o
}

// jsonParse and jsonStringify are JSON.parse and JSON.stringify.
func jsonParse(s string) js.Value { return js.Global().Get("JSON").Call("parse", s) }
func jsonStringify(v js.Value) string {
	return js.Global().Get("JSON").Call("stringify", v).String()
}

// handlers sets event handler properties (onmessage, …) on JavaScript
// objects and releases the Go functions behind them when done.
type handlers struct {
	funcs []js.Func
	set   []struct {
		target js.Value
		event  string
	}
}

// on sets target[event] to call f with the event (undefined if none). f
// runs on the event loop: it must not block.
func (h *handlers) on(target js.Value, event string, f func(ev js.Value)) {
	fn := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		f(v)
		return nil
	})
	h.funcs = append(h.funcs, fn)
	h.set = append(h.set, struct {
		target js.Value
		event  string
	}{target, event})
	target.Set(event, fn)
}

// release clears every handler set and frees its function.
func (h *handlers) release() {
	for _, s := range h.set {
		s.target.Set(s.event, js.Null())
	}
	for _, f := range h.funcs {
		f.Release()
	}
	h.funcs, h.set = nil, nil
}
