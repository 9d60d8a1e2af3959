//go:build !js && cgo

package kernels

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
)

// The native and js backends of cogentcore/webgpu differ in a few
// signatures and in how a device is opened, waited on and read back;
// these shims (and wgpu_js.go) keep the rest of the package on one code
// path.

func endPass(p *wgpu.ComputePassEncoder) error { return p.End() }

func computePipelineDesc(label string, l *wgpu.PipelineLayout, m *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Label: label, Layout: l, Compute: wgpu.ProgrammableStageDescriptor{Module: m, EntryPoint: entry}}
}

// platformState is empty natively: wgpu-native reports errors from the
// calls themselves.
type platformState struct{}

func (platformState) release() {}

// gpuErr is always nil natively (errors come back from each call).
func (d *Device) gpuErr() error { return nil }

// checked runs f, which creates WebGPU objects; natively the calls return
// their own errors, so this is just f().
func (d *Device) checked(_ string, f func() error) error { return f() }

// writeBuffer queues a write of data into buf at off.
func (d *Device) writeBuffer(buf *wgpu.Buffer, off uint64, data []byte) error {
	var err error
	d.serial(func() { err = d.queue.WriteBuffer(buf, off, data) })
	return err
}

// waitIdle blocks until every submitted command buffer has run, saying
// so in the log once a minute has passed (a hung GPU waits forever).
func (d *Device) waitIdle() {
	start, warned := time.Now(), false
	for b := d.newBackoff(); !d.poll(); b.wait() {
		if !warned && time.Since(start) > time.Minute {
			d.log.Warn("webgpu: still waiting for the GPU to finish submitted work", "waited", time.Since(start).Round(time.Second))
			warned = true
		}
	}
}

// poll lets wgpu retire finished work and fire map callbacks, without
// blocking, and reports whether no submitted work is left.
//
// Never Poll(true): this wgpu's Device::maintain(Wait) waits on the fence
// at most CLEANUP_WAIT_MS (5 s) and then, timed out or not, takes the
// newest submission for finished. It recycles that submission's command
// pools and frees what it held while the driver is still running it. On
// lavapipe a submission that compiles shaders (a cold shader cache) on a
// loaded machine outlasts 5 s; its queue thread then executes a freed
// command list and the process dies of SIGSEGV on that thread, where Go
// prints no stack (issue 16). Poll(false) reads the fence's real value.
func (d *Device) poll() (idle bool) {
	d.serial(func() { idle = d.dev.Poll(false, nil) })
	return idle
}

// backoff paces a polling loop. On a hardware GPU it spins (yielding)
// for the first spinFor of a wait: a decode step is a few milliseconds of
// GPU work, and any sleep there lands late (a doubling backoff added up
// to half a token's time: 1B decode 270 tok/s instead of 500 on an H200).
// After that, and from the start on a software adapter, whose "GPU" is
// the CPU the spinning would take from it, it sleeps for an eighth of
// the time waited so far (20 µs … 2 ms), so a wait overshoots by at most
// about 12 %.
type backoff struct {
	start   time.Time
	spinFor time.Duration
	n       int
}

// spinFor is how long a wait on a hardware GPU spins before it sleeps.
const spinFor = 20 * time.Millisecond

func (d *Device) newBackoff() backoff {
	b := backoff{start: time.Now()}
	if !d.info.Software {
		b.spinFor = spinFor
	}
	return b
}

func (b *backoff) wait() {
	b.n++
	waited := time.Since(b.start)
	if b.n <= 32 || waited < b.spinFor {
		runtime.Gosched()
		return
	}
	time.Sleep(min(max(waited/8, 20*time.Microsecond), 2*time.Millisecond))
}

// skipDeviceSelectLayer keeps Mesa's implicit Vulkan layer
// VK_LAYER_MESA_device_select out of the instance wgpu creates, unless the
// user set NODEVICE_SELECT or MESA_VK_DEVICE_SELECT. wgpu enables every
// surface extension the loader offers, and the layer, seeing
// VK_KHR_wayland_surface, connects to a Wayland compositor to learn which
// GPU drives the display: with no session (a server, CI, ssh) libwayland
// prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment."
// on every enumeration. The layer only reorders the adapters, and Open
// chooses its adapter by its own rule (Options.Adapter, else the fastest),
// so nothing is lost. NODEVICE_SELECT=1 is the layer's documented switch;
// the loader reads it when the instance is created (os.Setenv reaches C's
// environment in a cgo binary).
func skipDeviceSelectLayer() {
	if os.Getenv("NODEVICE_SELECT") != "" || os.Getenv("MESA_VK_DEVICE_SELECT") != "" {
		return
	}
	os.Setenv("NODEVICE_SELECT", "1")
}

// openBackend picks an adapter (see [Options.Adapter]) among those
// wgpu-native enumerates and requests a device with the storage and
// compute limits raised to the adapter's.
func openBackend(want string, log *slog.Logger) (backend, error) {
	wgpu.SetLogLevel(wgpu.LogLevelError) // its Warn level is chatty and goes to stderr
	skipDeviceSelectLayer()
	inst := wgpu.CreateInstance(&wgpu.InstanceDescriptor{Backends: wgpu.InstanceBackendPrimary})
	adapter, info, err := chooseAdapter(inst, want)
	if err != nil {
		inst.Release()
		return backend{}, err
	}
	logAdapter(log, info)

	// Requesting the adapter's own limits fails (its MaxPushConstantSize is
	// garbage in this binding): start from the defaults, raise what we use.
	al := adapter.GetLimits().Limits
	req := wgpu.DefaultLimits()
	req.MaxPushConstantSize = 0
	req.MaxStorageBufferBindingSize = al.MaxStorageBufferBindingSize
	// NVIDIA reports MaxBufferSize = 2^64-1, which is also the binding's
	// "undefined" value: passed through, it grants the 256 MiB default.
	req.MaxBufferSize = al.MaxBufferSize
	if req.MaxBufferSize == wgpu.LimitU64Undefined {
		req.MaxBufferSize = 1 << 40
	}
	req.MaxComputeWorkgroupStorageSize = al.MaxComputeWorkgroupStorageSize
	req.MaxComputeInvocationsPerWorkgroup = al.MaxComputeInvocationsPerWorkgroup
	req.MaxStorageBuffersPerShaderStage = al.MaxStorageBuffersPerShaderStage
	req.MaxComputeWorkgroupSizeX = al.MaxComputeWorkgroupSizeX
	// No DeviceLostCallback: this binding stores a Go pointer in the C
	// descriptor and panics under the default cgocheck.
	dev, err := adapter.RequestDevice(&wgpu.DeviceDescriptor{
		Label:          "doppler",
		RequiredLimits: &wgpu.RequiredLimits{Limits: req},
	})
	if err != nil {
		adapter.Release()
		inst.Release()
		return backend{}, fmt.Errorf("kernels: request device on %q: %w", info.Name, err)
	}
	return backend{inst: inst, adapter: adapter, dev: dev, info: info}, nil
}

// gcHold keeps the collector off while any device of the process waits
// for a map callback (see mapRead). The GC percent is process state, so
// the count is too: with a per-call save and restore, two devices mapping
// at once could restore it under each other (the first to finish set it
// back on while the second still waited), and a CI run of the API tests
// panicked with "misuse of an invalid Handle" in a later Submit.
var gcHold struct {
	mu    sync.Mutex
	n     int
	saved int
}

// gcOff turns the collector off until the func it returns is called.
func gcOff() (release func()) {
	gcHold.mu.Lock()
	if gcHold.n == 0 {
		gcHold.saved = debug.SetGCPercent(-1)
	}
	gcHold.n++
	gcHold.mu.Unlock()
	return func() {
		gcHold.mu.Lock()
		if gcHold.n--; gcHold.n == 0 {
			debug.SetGCPercent(gcHold.saved)
		}
		gcHold.mu.Unlock()
	}
}

// mapRead maps the first n bytes of a staging buffer whose copy has been
// submitted, waits for it and returns a copy.
func (d *Device) mapRead(s *wgpu.Buffer, n uint64) ([]byte, error) {
	// The callback may run on another goroutine (whichever one polls or
	// submits next, when several use the device): hand its result over
	// through atomics.
	var status atomic.Uint32
	var done atomic.Bool
	// cogentcore/webgpu's MapAsync hands C the address of a Go variable
	// holding the callback's cgo.Handle and reads it back in the callback,
	// during a later Poll. Nothing keeps that variable alive in between, so
	// a garbage collection there frees it and the callback reads garbage
	// ("misuse of an invalid Handle"). Keep the collector off from the
	// map request until the callback has run; disabling it first waits for
	// any running cycle to finish.
	d.mapMu.Lock()
	defer d.mapMu.Unlock()
	defer gcOff()()
	var err error
	d.serial(func() {
		err = s.MapAsync(wgpu.MapModeRead, 0, n, func(st wgpu.BufferMapAsyncStatus) {
			status.Store(uint32(st))
			done.Store(true)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("kernels: map staging: %w", err)
	}
	// The callback fires in the poll that retires the copy; once the
	// queue is empty it has had its chance (a few more polls, to be sure).
	for b, after := d.newBackoff(), 0; !done.Load(); b.wait() {
		if d.poll() {
			if after++; after > 3 && !done.Load() {
				return nil, fmt.Errorf("kernels: map staging: no callback with the queue empty")
			}
		}
	}
	if st := wgpu.BufferMapAsyncStatus(status.Load()); st != wgpu.BufferMapAsyncStatusSuccess {
		return nil, fmt.Errorf("kernels: map staging: %s", st)
	}
	out := make([]byte, n)
	d.serial(func() {
		copy(out, s.GetMappedRange(0, uint(n)))
		err = s.Unmap()
	})
	if err != nil {
		return nil, fmt.Errorf("kernels: unmap staging: %w", err)
	}
	return out, nil
}
