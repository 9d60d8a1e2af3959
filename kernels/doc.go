// Package kernels is DOPPLER's GPU layer: the WGSL compute kernels
// (embedded with go:embed) and the Go that compiles, binds and dispatches
// them through WebGPU (github.com/oliverbestmann/webgpu, wgpu-native 29, natively;
// the browser's navigator.gpu under GOOS=js). It is the only package that
// imports wgpu, so a change of binding touches one place; the two
// platforms differ only in wgpu_native.go and wgpu_js.go (how a device is
// opened, waited on, read back, and how errors arrive).
//
// # Model
//
// A [Device] owns the adapter, the queue, a pipeline cache and the buffer
// pools. Work is described ahead of time and replayed every token:
//
//   - a [Pipeline] is one WGSL entry point with an explicit bind-group
//     layout ([Binding] per slot), compiled once and cached by key;
//   - an [Op] is a pipeline plus its bind group (built once, at model load),
//     its own params uniform and its workgroup counts;
//   - an [Encoder] records many Ops into ONE compute pass and ONE queue
//     submit; [Encoder.SubmitRead] reads back a few bytes (the sampled token
//     id) in that same submit.
//
// Dispatches inside one pass cost a few µs; a submit costs 40–120 µs (see
// DESIGN.md §2), so a whole token should be one Encoder. [Device.Stats]
// counts submits, passes, dispatches and readbacks so tests can assert it.
//
// # Adding a kernel
//
// A kernel "foo" is four files plus one line in the [All] table:
//
//	foo.wgsl      one entry point, group 0; binding 0 = params uniform (a
//	              struct padded to 16 bytes), then the buffers
//	foo.go        //go:embed foo.wgsl; the params struct (+ size test);
//	              func (d *Device) Foo(ranges..., shape...) (*Op, error)
//	              which checks sizes, calls d.Pipeline and d.NewOp
//	foo_ref.go    FooRef: plain scalar Go, accumulating in float64
//	foo_test.go   a table of shapes incl. odd sizes vs FooRef with abs/rel
//	              tolerance, using testDevice(t); BenchmarkFoo
//
// WGSL rules for this wgpu: no `enable f16` (f16 data is packed in u32 and
// read with unpack2x16float; Chromium's SwiftShader has no shader-f16),
// no subgroup ops (reduce through workgroup memory), quantized blocks are
// read byte-wise from array<u32> with the helpers of common.wgsl
// ([helpersWGSL]). Kernels must also pass Chrome's stricter compiler
// (Tint), which naga does not check for us: no constant expression may
// evaluate to an infinity or NaN (read -inf from a var<private> holding
// its bits). Give a var declared inside a loop an initializer: naga
// zeroes one declared without it once, at the entry, so it keeps the
// previous iteration's value (seen on lavapipe).
//
// Binding rule: WebGPU tracks buffer usage per whole buffer, so a buffer
// bound writable in an Op may not be bound read-only in the same Op, even
// at a disjoint range (NewOp rejects it). Read-only ranges of one buffer
// (weights packed in a shard) are fine; give outputs their own buffers.
//
// # Errors
//
// Validation errors of wgpu calls come back as Go errors. This wgpu-native
// build has no uncaptured-error callback and treats an uncaptured error (for
// example a submit that uses a destroyed buffer) as fatal, so this package
// checks offsets, sizes, limits and released buffers in Go before calling
// wgpu.
//
// In the browser, calls return no errors at all: WebGPU reports them
// later, as uncapturederror events (a WGSL compile error, a bad bind
// group) or by losing the device. The device listens for both; the first
// one makes every later submit, read and [Device.Sync] fail with an error
// wrapping [ErrGPU] that carries the browser's message.
//
// # The browser (GOOS=js)
//
// The page must set globalThis.wasm to the WebAssembly.instantiate result
// ({module, instance}) before running Go: the binding hands byte slices
// to queue.writeBuffer as views of wasm.instance.exports.mem. Reads
// (mapAsync) and [Device.Wait] park the calling goroutine on a promise, so
// they must not run inside a js.FuncOf callback: start a goroutine there.
//
// Natively the package needs cgo (wgpu-native is a C library): its files
// build with cgo or for js only, and in a build without cgo
// (CGO_ENABLED=0, the default when cross-compiling) the package is this
// comment alone. Binaries say so where they would need a GPU
// (cmd/node/engine_nocgo.go).
package kernels
