//go:build js

package kernels

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall/js"
	"unsafe"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// The browser backend of the webgpu binding (GOOS=js) wraps navigator.gpu,
// but leaves out what this package needs to open a device properly: its
// Adapter.GetInfo is empty, its Poll is a no-op, and it has no error or
// device-lost reporting. So the device is requested here through
// syscall/js and wrapped in the binding's Device (wrapJS); everything
// after that goes through the binding as natively.
//
// Blocking: MapAsync and the requests below wait on JavaScript promises by
// parking the calling goroutine while the page's event loop runs. They
// must not be called from inside a js.FuncOf callback (that blocks the
// event loop the promise needs): start a goroutine there instead.

func endPass(p *wgpu.ComputePassEncoder) error { return p.TryEnd() }

func computePipelineDesc(_ string, l *wgpu.PipelineLayout, m *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Layout: l, Compute: wgpu.ProgrammableStageDescriptor{Module: m, EntryPoint: entry}}
}

// shaderModule compiles WGSL source; the browser applies its own checks.
func (d *Device) shaderModule(label, src string) (*wgpu.ShaderModule, error) {
	return d.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: label, WGSLSource: &wgpu.ShaderSourceWGSL{Code: src}})
}

// requestedLimits are the limits raised to the adapter's, as natively
// (wgpu_native.go); WebGPU accepts any value up to the adapter's.
var requestedLimits = []string{
	"maxStorageBufferBindingSize",
	"maxBufferSize",
	"maxComputeWorkgroupStorageSize",
	"maxComputeInvocationsPerWorkgroup",
	"maxStorageBuffersPerShaderStage",
	"maxComputeWorkgroupSizeX",
}

// platformState holds the browser device and its error handlers.
type platformState struct{ *jsDevice }

type jsDevice struct {
	dev     js.Value // GPUDevice
	queue   js.Value // its GPUQueue
	log     *slog.Logger
	onError js.Func
	mapMu   sync.Mutex // one buffer map at a time (see mapRead)
	onLost  js.Func

	writeMu sync.Mutex
	stage   js.Value // a JavaScript-owned Uint8Array that writes go through

	mu  sync.Mutex
	err error // the first uncaptured error or the loss, wrapping ErrGPU
}

func (j *jsDevice) fail(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = err
	}
}

// release destroys the device (freeing its GPU memory now rather than at
// the page's garbage collection) and waits for its lost promise: the lost
// handler, registered first, has then run (seeing reason "destroyed") and
// released itself, so no callback into Go is left pending — one would
// throw "Go program has already exited" if main returned meanwhile.
func (p platformState) release() {
	if p.jsDevice == nil {
		return
	}
	p.dev.Call("removeEventListener", "uncapturederror", p.onError)
	p.onError.Release()
	p.dev.Call("destroy")
	if _, err := await(p.dev.Get("lost")); err != nil {
		p.log.Warn("webgpu: waiting for the destroyed device", "err", err)
	}
}

// gpuErr is the first error the browser reported asynchronously.
func (d *Device) gpuErr() error {
	if d.platform.jsDevice == nil {
		return nil
	}
	d.platform.mu.Lock()
	defer d.platform.mu.Unlock()
	return d.platform.err
}

// checked runs f, which creates WebGPU objects, inside validation and
// out-of-memory error scopes and returns what they caught: in the browser
// the calls themselves return no errors, and an uncaught one would poison
// the device (ErrGPU). It costs a round trip to the GPU process, so it
// wraps what is created at load time (pipelines, buffers), not per-token
// work. Both scopes are popped before either is awaited: an await lets
// other goroutines run, and their calls must not land in these scopes.
func (d *Device) checked(what string, f func() error) error {
	j := d.platform.jsDevice
	if j == nil {
		return f()
	}
	j.dev.Call("pushErrorScope", "validation")
	j.dev.Call("pushErrorScope", "out-of-memory")
	err := f()
	oom := j.dev.Call("popErrorScope")
	val := j.dev.Call("popErrorScope")
	for _, p := range []js.Value{oom, val} {
		e, aerr := await(p)
		switch {
		case aerr != nil && err == nil:
			err = fmt.Errorf("kernels: %s: %w: popErrorScope: %v", what, ErrGPU, aerr)
		case aerr == nil && e.Truthy() && err == nil:
			err = fmt.Errorf("kernels: %s: %s: %s", what, e.Get("constructor").Get("name").String(), e.Get("message").String())
		}
	}
	return err
}

// maxStage bounds the staging array writes are copied through.
const maxStage = 16 << 20

// writeBuffer queues a write of data into buf at off. The binding's
// Queue.WriteBuffer hands writeBuffer a Uint8ClampedArray view of the wasm
// memory, but every js.Value Go creates allocates, and an allocation that
// grows the wasm memory detaches the ArrayBuffer under that view before
// writeBuffer reads it ("Number of bytes to write is too large", seen
// loading a model). Here the bytes are copied with js.CopyBytesToJS (one
// JavaScript-side memcpy, immune to growth) into a JavaScript-owned
// staging array, at most maxStage bytes at a time, and written from there:
// writeBuffer copies its source before it returns.
func (d *Device) writeBuffer(buf *wgpu.Buffer, off uint64, data []byte) (err error) {
	j := d.platform.jsDevice
	gb, err := jsValueOf(buf)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			jerr, ok := r.(js.Error)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("writeBuffer: %w", jerr)
		}
	}()
	j.writeMu.Lock()
	defer j.writeMu.Unlock()
	for len(data) > 0 {
		n := min(len(data), maxStage)
		if j.stage.IsUndefined() || j.stage.Length() < n {
			size := 64 << 10
			for size < n {
				size *= 2
			}
			j.stage = js.Global().Get("Uint8Array").New(size)
		}
		js.CopyBytesToJS(j.stage, data[:n])
		j.queue.Call("writeBuffer", gb, off, j.stage, 0, n)
		off += uint64(n)
		data = data[n:]
	}
	return nil
}

// jsValueOf returns the GPU object a binding type wraps: the binding keeps
// it in an unexported field named jsValue.
func jsValueOf[T any](p *T) (js.Value, error) {
	f := reflect.ValueOf(p).Elem().FieldByName("jsValue")
	if !f.IsValid() || f.Type() != reflect.TypeFor[js.Value]() {
		return js.Value{}, fmt.Errorf("kernels: %T has no jsValue field: the webgpu binding changed, update wgpu_js.go", p)
	}
	return *(*js.Value)(unsafe.Pointer(f.UnsafeAddr())), nil
}

// wrapJS makes the binding's T (Device) around a GPU object v, setting
// the unexported jsValue field that jsValueOf reads.
func wrapJS[T any](v js.Value) (*T, error) {
	p := new(T)
	f := reflect.ValueOf(p).Elem().FieldByName("jsValue")
	if !f.IsValid() || f.Type() != reflect.TypeFor[js.Value]() {
		return nil, fmt.Errorf("kernels: %T has no jsValue field: the webgpu binding changed, update wgpu_js.go", p)
	}
	*(*js.Value)(unsafe.Pointer(f.UnsafeAddr())) = v
	return p, nil
}

// waitIdle waits for queue.onSubmittedWorkDone (the binding's Poll is a
// no-op in the browser).
func (d *Device) waitIdle() {
	if d.platform.jsDevice == nil {
		return
	}
	if _, err := await(d.platform.queue.Call("onSubmittedWorkDone")); err != nil {
		d.platform.fail(fmt.Errorf("%w: onSubmittedWorkDone: %v", ErrGPU, err))
	}
}

// openBackend requests the page's WebGPU adapter and a device on it with
// the storage and compute limits raised to the adapter's. Browsers expose
// one adapter; want, when set, must match its name.
func openBackend(want string, log *slog.Logger) (be backend, err error) {
	defer func() {
		// syscall/js panics with a js.Error when a call throws.
		if r := recover(); r != nil {
			jerr, ok := r.(js.Error)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("kernels: open WebGPU device: %w", jerr)
		}
	}()
	gpu := js.Global().Get("navigator").Get("gpu")
	if !gpu.Truthy() {
		return backend{}, fmt.Errorf("kernels: navigator.gpu is missing (no WebGPU in this browser, or not a secure context): %w", ErrNoAdapter)
	}
	opts := js.Global().Get("Object").New()
	opts.Set("powerPreference", "high-performance")
	adapter, err := await(gpu.Call("requestAdapter", opts))
	if err != nil {
		return backend{}, fmt.Errorf("kernels: requestAdapter: %w", err)
	}
	if !adapter.Truthy() {
		return backend{}, fmt.Errorf("kernels: requestAdapter returned no adapter: %w", ErrNoAdapter)
	}
	info := jsAdapterInfo(adapter)
	if want != "" && !strings.Contains(strings.ToLower(info.Name), strings.ToLower(want)) {
		return backend{}, fmt.Errorf("kernels: no adapter matches %q; have %s (WebGPU)", want, info.Name)
	}
	logAdapter(log, info)
	var features Features
	var reqFeats []any
	var offered []string
	if feats := adapter.Get("features"); feats.Truthy() {
		arr := js.Global().Get("Array").Call("from", feats)
		names := make([]string, arr.Length())
		for i := range names {
			names[i] = arr.Index(i).String()
		}
		log.Debug("webgpu: adapter features", "features", strings.Join(names, " "))
		offered = slices.Sorted(slices.Values(names))
		if feats.Call("has", "shader-f16").Bool() {
			features.F16 = true
			reqFeats = append(reqFeats, "shader-f16")
		}
		if feats.Call("has", "subgroups").Bool() {
			features.Subgroups = true
			reqFeats = append(reqFeats, "subgroups")
		}
	}

	al := adapter.Get("limits")
	req := js.Global().Get("Object").New()
	for _, name := range requestedLimits {
		if v := al.Get(name); v.Type() == js.TypeNumber {
			req.Set(name, v)
		}
	}
	desc := js.Global().Get("Object").New()
	desc.Set("label", "doppler")
	desc.Set("requiredLimits", req)
	desc.Set("requiredFeatures", js.ValueOf(reqFeats))
	dev, err := await(adapter.Call("requestDevice", desc))
	if err != nil {
		return backend{}, fmt.Errorf("kernels: request device on %q: %w", info.Name, err)
	}
	if !dev.Truthy() {
		return backend{}, fmt.Errorf("kernels: request device on %q: no device", info.Name)
	}

	j := &jsDevice{dev: dev, queue: dev.Get("queue"), log: log}
	j.onError = js.FuncOf(func(_ js.Value, args []js.Value) any {
		msg := "unknown error"
		if len(args) > 0 {
			if e := args[0].Get("error"); e.Truthy() {
				msg = e.Get("constructor").Get("name").String() + ": " + e.Get("message").String()
			}
		}
		log.Error("webgpu: uncaptured error", "err", msg)
		j.fail(fmt.Errorf("%w: %s", ErrGPU, msg))
		return nil
	})
	dev.Call("addEventListener", "uncapturederror", j.onError)
	j.onLost = js.FuncOf(func(_ js.Value, args []js.Value) any {
		defer j.onLost.Release()
		reason, msg := "unknown", ""
		if len(args) > 0 && args[0].Truthy() {
			reason, msg = args[0].Get("reason").String(), args[0].Get("message").String()
		}
		if reason == "destroyed" {
			return nil
		}
		log.Error("webgpu: device lost", "reason", reason, "message", msg)
		j.fail(fmt.Errorf("%w: device lost (%s): %s", ErrGPU, reason, msg))
		return nil
	})
	dev.Get("lost").Call("then", j.onLost)

	wd, err := wrapJS[wgpu.Device](dev)
	if err != nil {
		return backend{}, err
	}
	return backend{dev: wd, info: info, features: features, offered: offered, platform: platformState{j}}, nil
}

// jsAdapterInfo reads GPUAdapter.info (GPUAdapterInfo: vendor,
// architecture, device, description; isFallbackAdapter in newer
// browsers, on the adapter itself in older ones). Browsers may blank
// these for privacy.
func jsAdapterInfo(a js.Value) AdapterInfo {
	in := a.Get("info")
	str := func(v js.Value, k string) string {
		if !v.Truthy() {
			return ""
		}
		if s := v.Get(k); s.Type() == js.TypeString {
			return s.String()
		}
		return ""
	}
	vendor, arch, device, desc := str(in, "vendor"), str(in, "architecture"), str(in, "device"), str(in, "description")
	fallback := in.Truthy() && in.Get("isFallbackAdapter").Truthy() || a.Get("isFallbackAdapter").Truthy()
	out := AdapterInfo{Vendor: vendor, Driver: arch, Backend: "WebGPU", Type: "Unknown"}
	switch {
	case desc != "":
		out.Name = desc
	case device != "":
		out.Name = device
	default:
		out.Name = strings.TrimSpace(vendor + " " + arch)
	}
	if out.Name == "" {
		out.Name = "WebGPU adapter"
	}
	name := strings.ToLower(out.Name + " " + arch)
	out.Software = fallback || strings.Contains(name, "swiftshader") || strings.Contains(name, "llvmpipe") ||
		strings.Contains(name, "lavapipe") || strings.Contains(name, "basic render")
	if out.Software {
		out.Type = "CPU"
	}
	return out
}

// startMap returns the wait that maps the first n bytes of a staging
// buffer whose copy has been submitted and returns a copy. The browser
// maps when the wait awaits mapAsync's promise, so nothing starts early.
func (d *Device) startMap(s *wgpu.Buffer, n uint64) func() ([]byte, error) {
	return func() ([]byte, error) { return d.mapRead(s, n) }
}

// mapRead maps the first n bytes of a staging buffer whose copy has been
// submitted and returns a copy. The binding's MapAsync awaits mapAsync
// (parking this goroutine) and then reports success even when the promise
// rejected; a failed map then throws from getMappedRange, which is turned
// into an error here, and the cause shows up as the device's error.
func (d *Device) mapRead(s *wgpu.Buffer, n uint64) (out []byte, err error) {
	d.platform.mapMu.Lock()
	defer d.platform.mapMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			jerr, ok := r.(js.Error)
			if !ok {
				panic(r)
			}
			s.TryUnmap()
			out, err = nil, fmt.Errorf("kernels: map staging: %w", jerr)
		}
		if gerr := d.gpuErr(); gerr != nil {
			out, err = nil, gerr
		}
	}()
	if err := s.TryMapAsync(wgpu.MapModeRead, 0, n, func(wgpu.MapAsyncStatus) {}); err != nil {
		return nil, fmt.Errorf("kernels: map staging: %w", err)
	}
	out = s.GetMappedRange(0, uint(n)) // a copy already (js.CopyBytesToGo)
	if len(out) != int(n) {
		out = out[:min(uint64(len(out)), n)]
	}
	if err := s.TryUnmap(); err != nil {
		return nil, fmt.Errorf("kernels: unmap staging: %w", err)
	}
	return out, nil
}

// await waits for a JavaScript promise (a non-promise is returned as is),
// parking the goroutine while the event loop runs.
func await(p js.Value) (js.Value, error) {
	if p.Type() != js.TypeObject || p.Get("then").Type() != js.TypeFunction {
		return p, nil
	}
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	arg := func(args []js.Value) js.Value {
		if len(args) == 0 {
			return js.Undefined()
		}
		return args[0]
	}
	resolve := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{v: arg(args)}
		return nil
	})
	defer resolve.Release()
	reject := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := arg(args)
		msg := v.String()
		if v.Type() == js.TypeObject && v.Get("message").Type() == js.TypeString {
			msg = v.Get("name").String() + ": " + v.Get("message").String()
		}
		ch <- result{err: errors.New(msg)}
		return nil
	})
	defer reject.Release()
	p.Call("then", resolve, reject)
	r := <-ch
	return r.v, r.err
}
