//go:build !js && cgo

package kernels

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// The native and js backends of the webgpu binding differ in a few
// signatures and in how a device is opened, waited on and read back;
// these shims (and wgpu_js.go) keep the rest of the package on one code
// path.

func endPass(p *wgpu.ComputePassEncoder) error { return p.TryEnd() }

func computePipelineDesc(label string, l *wgpu.PipelineLayout, m *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Label: label, Layout: l, Compute: wgpu.ProgrammableStageDescriptor{Module: m, EntryPoint: entry}}
}

// platformState holds, natively, the device's loss: wgpu-native reports
// other errors from the calls themselves.
type platformState struct {
	lost *atomic.Pointer[string] // the loss's message, once the device is lost
}

func (platformState) release() {}

// gpuErr reports the device's loss (ErrGPU), else nil.
func (d *Device) gpuErr() error {
	if d.platform.lost == nil {
		return nil
	}
	if msg := d.platform.lost.Load(); msg != nil {
		return fmt.Errorf("%w: device lost: %s", ErrGPU, *msg)
	}
	return nil
}

// checked runs f, which creates WebGPU objects; natively the calls return
// their own errors, so this is just f().
func (d *Device) checked(_ string, f func() error) error { return f() }

// writeBuffer queues a write of data into buf at off.
func (d *Device) writeBuffer(buf *wgpu.Buffer, off uint64, data []byte) error {
	var err error
	d.serial(func() { err = d.queue.TryWriteBuffer(buf, off, data) })
	return err
}

// waitIdle blocks until every submitted command buffer has run, saying
// so in the log once a minute has passed (a hung GPU waits forever).
func (d *Device) waitIdle() {
	var done atomic.Bool
	d.serial(func() {
		d.queue.OnSubmittedWorkDone(func(wgpu.QueueWorkDoneStatus) { done.Store(true) })
	})
	d.pollUntil(&done)
}

// pollUntil polls the device until done is set by a callback that the
// polls fire, saying so in the log once a minute has passed.
//
// wgpu-native 29's non-blocking Poll reports an empty queue while the
// last submission still runs, so a wait follows a callback (the queue's
// OnSubmittedWorkDone, a buffer map) rather than Poll's result. Never
// Poll(true): a blocking wait bounded by wgpu's cleanup timeout once
// recycled a submission's command pools while lavapipe still ran it
// (issue 16); Poll(false) reads the fence's real value.
func (d *Device) pollUntil(done *atomic.Bool) {
	start, warned := time.Now(), false
	for b := d.newBackoff(); !done.Load(); b.wait() {
		d.serial(func() { d.dev.Poll(false, nil) })
		if !warned && time.Since(start) > time.Minute {
			d.log.Warn("webgpu: still waiting for the GPU to finish submitted work", "waited", time.Since(start).Round(time.Second))
			warned = true
		}
	}
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
	inst := wgpu.CreateInstance(&wgpu.InstanceDescriptor{Backends: instanceBackendPrimary})
	adapter, info, err := chooseAdapter(inst, want)
	if err != nil {
		inst.Release()
		return backend{}, err
	}
	logAdapter(log, info)

	// Start from the defaults and raise what the kernels use to the
	// adapter's.
	al := adapter.GetLimits()
	req := wgpu.DefaultLimits()
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
	feats, reqFeats := adapterFeatures(adapter)
	var offered []string
	for _, f := range adapter.GetFeatures() {
		name := f.String()
		if name == "" {
			name = fmt.Sprintf("0x%x", uint32(f))
		}
		offered = append(offered, name)
	}
	slices.Sort(offered)
	lost := new(atomic.Pointer[string])
	dev, err := adapter.RequestDevice(&wgpu.DeviceDescriptor{
		Label:            "doppler",
		RequiredFeatures: reqFeats,
		RequiredLimits:   &req,
		DeviceLostCallback: func(reason wgpu.DeviceLostReason, msg string) {
			if reason != wgpu.DeviceLostReasonDestroyed && reason != wgpu.DeviceLostReasonCallbackCancelled {
				log.Error("webgpu: device lost", "reason", reason, "message", msg)
				lost.Store(&msg)
			}
		},
	})
	if err != nil {
		adapter.Release()
		inst.Release()
		return backend{}, fmt.Errorf("kernels: request device on %q: %w", info.Name, err)
	}
	return backend{inst: inst, adapter: adapter, dev: dev, info: info, features: feats, offered: offered, platform: platformState{lost: lost}}, nil
}

// instanceBackendPrimary is wgpu's WGPUInstanceBackend_Primary (Vulkan,
// Metal, D3D12 and the browser's WebGPU), which this binding leaves out.
const instanceBackendPrimary wgpu.InstanceBackend = 1<<0 | 1<<2 | 1<<3 | 1<<5

// adapterFeatures reports the optional features the kernels can use that
// the adapter offers, and the feature names to request for them:
// shader-f16, and subgroups under WebGPU's name or wgpu-native's.
func adapterFeatures(a *wgpu.Adapter) (Features, []wgpu.FeatureName) {
	var f Features
	var want []wgpu.FeatureName
	if a.HasFeature(wgpu.FeatureNameShaderF16) {
		f.F16 = true
		want = append(want, wgpu.FeatureNameShaderF16)
	}
	for _, n := range []wgpu.FeatureName{wgpu.FeatureNameSubgroups, wgpu.NativeFeatureSubgroup} {
		if a.HasFeature(n) {
			f.Subgroups = true
			want = append(want, n)
			break
		}
	}
	return f, want
}

// startMap asks for the first n bytes of a staging buffer whose copy has
// been submitted to be mapped, and returns the wait that polls until they
// are and returns a copy. Nothing waits in between, so the caller can
// submit more work while this copy is still queued.
func (d *Device) startMap(s *wgpu.Buffer, n uint64) func() ([]byte, error) {
	// The callback runs in the poll that retires the copy, on whichever
	// goroutine polls: hand its result over through atomics.
	var status atomic.Uint32
	done := new(atomic.Bool)
	var err error
	d.serial(func() {
		err = s.TryMapAsync(wgpu.MapModeRead, 0, n, func(st wgpu.MapAsyncStatus) {
			status.Store(uint32(st))
			done.Store(true)
		})
	})
	return func() ([]byte, error) {
		if err != nil {
			return nil, fmt.Errorf("kernels: map staging: %w", err)
		}
		d.pollUntil(done)
		if st := wgpu.MapAsyncStatus(status.Load()); st != wgpu.MapAsyncStatusSuccess {
			return nil, fmt.Errorf("kernels: map staging: %s", st)
		}
		out := make([]byte, n)
		var uerr error
		d.serial(func() {
			copy(out, s.GetMappedRange(0, uint(n)))
			uerr = s.TryUnmap()
		})
		if uerr != nil {
			return nil, fmt.Errorf("kernels: unmap staging: %w", uerr)
		}
		return out, nil
	}
}
