//go:build cgo || js

package kernels

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// ErrNoAdapter is returned by [Open] when WebGPU finds no adapter at all.
var ErrNoAdapter = errors.New("no WebGPU adapter found: install a Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1)")

// ErrReleased is returned when a released buffer, op or device is used.
var ErrReleased = errors.New("kernels: use after release")

// ErrGPU is wrapped by errors that the WebGPU implementation reported on
// its own time rather than from a call: in the browser, an uncaptured
// validation or out-of-memory error, or a lost device. Results computed
// since are wrong, and the device refuses further submits.
var ErrGPU = errors.New("kernels: WebGPU error")

// Options configures [Open].
type Options struct {
	// Adapter picks the adapter whose name contains this substring
	// (case-insensitive). Empty prefers a discrete GPU, then an integrated
	// one, then any other, then a CPU/software adapter.
	Adapter string
	// Logger receives adapter choice and warnings; nil discards them.
	Logger *slog.Logger
}

// AdapterInfo describes the chosen adapter.
type AdapterInfo struct {
	Name     string // e.g. "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)"
	Vendor   string // vendor name, or its PCI id in hex when unknown
	Driver   string // driver description when the binding provides one
	Backend  string // "Vulkan", "Metal", "D3D12", ...
	Type     string // "DiscreteGPU", "IntegratedGPU", "CPU", "Unknown"
	Software bool   // a CPU rasterizer (lavapipe, SwiftShader, WARP)
}

// Features are the optional WebGPU features the device was opened with,
// those the kernels can use: each kernel that has a variant for one
// chooses it only where the feature is on.
type Features struct {
	F16       bool // shader-f16: WGSL's f16 type ("enable f16;")
	Subgroups bool // subgroup operations (WebGPU's "subgroups" or wgpu-native's)
}

// Limits are the granted device limits that kernels size themselves by.
type Limits struct {
	MaxStorageBufferBindingSize uint64
	MaxBufferSize               uint64
	MaxWorkgroupStorage         int // bytes of var<workgroup> per workgroup
	MaxInvocations              int // invocations per workgroup
	MaxWorkgroupsPerDim         int
	MaxStorageBuffersPerStage   int
	MinStorageOffsetAlignment   int // BufferRange offsets must be multiples of this
}

// Stats counts GPU traffic since Open or the last ResetStats.
type Stats struct {
	Submits       uint64 // queue submits (Encoder.Submit/SubmitRead, Device.Read)
	Passes        uint64 // compute passes begun
	Dispatches    uint64
	Readbacks     uint64 // GPU→CPU reads
	ReadbackBytes uint64
}

type counters struct {
	submits, passes, dispatches, readbacks, readbackBytes atomic.Uint64
}

// Device is an open WebGPU device with its queue, pipeline cache and buffer
// pools. Its methods are safe for concurrent use; an Encoder is not.
type Device struct {
	log      *slog.Logger
	inst     *wgpu.Instance
	adapter  *wgpu.Adapter
	dev      *wgpu.Device
	queue    *wgpu.Queue
	info     AdapterInfo
	features Features
	offered  []string
	limits   Limits

	allocated atomic.Uint64
	stats     counters
	platform  platformState // per-platform extras (the browser's error handlers)

	mu        sync.Mutex
	closed    bool
	pipelines map[string]*Pipeline
	staging   []*wgpu.Buffer          // idle MapRead buffers
	stageSize map[*wgpu.Buffer]uint64 // sizes of staging buffers (the js backend has no GetSize)
	wgpuMu    sync.Mutex              // serializes wgpu's device-wide calls (see serial)
	scratch   map[uint64][]*Buffer    // idle transient buffers by capacity

	attn attnState // split attention's knobs and shared partials
}

// serial runs f, a call into wgpu that takes its device-wide locks —
// queue writes and submits, polls, buffer maps, creating and destroying
// buffers, bind groups and encoders — under one mutex, so that sessions on
// several goroutines never run two such calls at once. wgpu-core takes
// those locks in different orders on different paths (gfx-rs/wgpu#5695,
// #5737, #7254): four API requests decoding at once on lavapipe
// deadlocked, Queue.WriteBuffer, Queue.Submit and Buffer.Destroy each
// parked for 25 minutes while a fourth goroutine polled. Shader and
// pipeline creation stay outside: they are slow, rare and take none of
// those locks. f must not call serial.
func (d *Device) serial(f func()) {
	d.wgpuMu.Lock()
	defer d.wgpuMu.Unlock()
	f()
}

// Open picks an adapter (see [Options]) and opens a device on it with the
// storage and compute limits raised to what the adapter supports.
func Open(opts Options) (*Device, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	be, err := openBackend(opts.Adapter, log)
	if err != nil {
		return nil, err
	}
	info, dev := be.info, be.dev
	gl := dev.GetLimits()
	d := &Device{
		log:      log,
		inst:     be.inst,
		adapter:  be.adapter,
		dev:      dev,
		queue:    dev.GetQueue(),
		info:     info,
		features: be.features,
		offered:  be.offered,
		platform: be.platform,
		limits: Limits{
			MaxStorageBufferBindingSize: gl.MaxStorageBufferBindingSize,
			MaxBufferSize:               gl.MaxBufferSize,
			MaxWorkgroupStorage:         int(gl.MaxComputeWorkgroupStorageSize),
			MaxInvocations:              int(gl.MaxComputeInvocationsPerWorkgroup),
			MaxWorkgroupsPerDim:         int(gl.MaxComputeWorkgroupsPerDimension),
			MaxStorageBuffersPerStage:   int(gl.MaxStorageBuffersPerShaderStage),
			MinStorageOffsetAlignment:   int(gl.MinStorageBufferOffsetAlignment),
		},
		pipelines: map[string]*Pipeline{},
		scratch:   map[uint64][]*Buffer{},
	}
	log.Debug("webgpu: device limits", "limits", d.limits)
	return d, nil
}

// backend is what a platform's openBackend (wgpu_native.go, wgpu_js.go)
// hands to Open: the device, its adapter's description and whatever the
// platform must keep beside them.
type backend struct {
	inst     *wgpu.Instance // nil in the browser
	adapter  *wgpu.Adapter  // nil in the browser
	dev      *wgpu.Device
	info     AdapterInfo
	features Features
	offered  []string // every feature the adapter offers, by name
	platform platformState
}

// logAdapter reports the chosen adapter, warning about software ones.
func logAdapter(log *slog.Logger, info AdapterInfo) {
	if info.Software {
		log.Warn("webgpu: using a CPU/software adapter; expect it to be very slow", "adapter", info.Name, "backend", info.Backend)
	} else {
		log.Info("webgpu: adapter", "name", info.Name, "vendor", info.Vendor, "backend", info.Backend, "type", info.Type)
	}
}

// chooseAdapter enumerates adapters (falling back to RequestAdapter) and
// returns the best match, releasing the others.
func chooseAdapter(inst *wgpu.Instance, want string) (*wgpu.Adapter, AdapterInfo, error) {
	adapters := inst.EnumerateAdapters(nil)
	if len(adapters) == 0 {
		for _, o := range []*wgpu.RequestAdapterOptions{
			{PowerPreference: wgpu.PowerPreferenceHighPerformance},
			{ForceFallbackAdapter: true},
		} {
			if a, err := inst.RequestAdapter(o); err == nil && a != nil {
				adapters = append(adapters, a)
				break
			}
		}
	}
	if len(adapters) == 0 {
		return nil, AdapterInfo{}, ErrNoAdapter
	}
	best, bestRank := -1, 0
	infos := make([]AdapterInfo, len(adapters))
	var names []string
	for i, a := range adapters {
		infos[i] = decodeInfo(a.GetInfo())
		names = append(names, infos[i].Name+" ("+infos[i].Backend+")")
		if want != "" && !strings.Contains(strings.ToLower(infos[i].Name), strings.ToLower(want)) {
			continue
		}
		if r := adapterRank(infos[i]); best < 0 || r < bestRank {
			best, bestRank = i, r
		}
	}
	for i, a := range adapters {
		if i != best {
			a.Release()
		}
	}
	if best < 0 {
		return nil, AdapterInfo{}, fmt.Errorf("kernels: no adapter matches %q; have %s", want, strings.Join(names, ", "))
	}
	return adapters[best], infos[best], nil
}

// adapterRank orders adapters: lower is better.
func adapterRank(info AdapterInfo) int {
	r := 0
	switch {
	case info.Software:
		r = 30
	case info.Type == "DiscreteGPU":
		r = 0
	case info.Type == "IntegratedGPU":
		r = 10
	default:
		r = 20
	}
	if info.Backend == "OpenGL" || info.Backend == "OpenGLES" {
		r += 5
	}
	return r
}

func backendName(b wgpu.BackendType) string {
	switch b {
	case wgpu.BackendTypeVulkan:
		return "Vulkan"
	case wgpu.BackendTypeMetal:
		return "Metal"
	case wgpu.BackendTypeD3D12:
		return "D3D12"
	case wgpu.BackendTypeD3D11:
		return "D3D11"
	case wgpu.BackendTypeOpenGL:
		return "OpenGL"
	case wgpu.BackendTypeOpenGLES:
		return "OpenGLES"
	case wgpu.BackendTypeWebGPU:
		return "WebGPU"
	}
	return b.String()
}

func typeName(t wgpu.AdapterType) string {
	switch t {
	case wgpu.AdapterTypeDiscreteGPU:
		return "DiscreteGPU"
	case wgpu.AdapterTypeIntegratedGPU:
		return "IntegratedGPU"
	case wgpu.AdapterTypeCPU:
		return "CPU"
	}
	return "Unknown"
}

func vendorName(id uint32) string {
	switch id {
	case 0x10de:
		return "NVIDIA"
	case 0x1002:
		return "AMD"
	case 0x8086:
		return "Intel"
	case 0x106b:
		return "Apple"
	case 0x13b5:
		return "ARM"
	case 0x5143:
		return "Qualcomm"
	case 0x10005:
		return "Mesa"
	case 0x1414:
		return "Microsoft"
	case 0x1ae0:
		return "Google"
	}
	return fmt.Sprintf("0x%x", id)
}

// decodeInfo maps the binding's AdapterInfo to ours. wgpu-native puts the
// adapter's name in Device and the driver's in Description; Vendor is
// empty on some drivers, which the PCI vendor id then names.
func decodeInfo(in wgpu.AdapterInfo) AdapterInfo {
	out := AdapterInfo{
		Name:    in.Device,
		Vendor:  in.Vendor,
		Driver:  in.Description,
		Backend: backendName(in.BackendType),
		Type:    typeName(in.AdapterType),
	}
	if out.Vendor == "" || isHexID(out.Vendor) {
		out.Vendor = vendorName(in.VendorId)
	}
	name := strings.ToLower(out.Name)
	out.Software = in.AdapterType == wgpu.AdapterTypeCPU ||
		strings.Contains(name, "llvmpipe") || strings.Contains(name, "lavapipe") ||
		strings.Contains(name, "swiftshader") || strings.Contains(name, "softpipe") ||
		strings.Contains(name, "basic render")
	return out
}

func isHexID(s string) bool {
	if !strings.HasPrefix(s, "0x") {
		return false
	}
	_, err := strconv.ParseUint(s[2:], 16, 32)
	return err == nil
}

// Info describes the adapter the device runs on.
func (d *Device) Info() AdapterInfo { return d.info }

// Features returns the optional features the device was opened with.
func (d *Device) Features() Features { return d.features }

// AdapterFeatures lists every feature the adapter offers by its WebGPU
// (or wgpu-native) name, sorted: what a newer kernel could use.
func (d *Device) AdapterFeatures() []string { return slices.Clone(d.offered) }

// Names lists the features that are on by their WebGPU names.
func (f Features) Names() []string {
	var out []string
	if f.F16 {
		out = append(out, "shader-f16")
	}
	if f.Subgroups {
		out = append(out, "subgroups")
	}
	return out
}

// Limits returns the granted device limits.
func (d *Device) Limits() Limits { return d.limits }

// Stats returns the traffic counters.
func (d *Device) Stats() Stats {
	return Stats{
		Submits:       d.stats.submits.Load(),
		Passes:        d.stats.passes.Load(),
		Dispatches:    d.stats.dispatches.Load(),
		Readbacks:     d.stats.readbacks.Load(),
		ReadbackBytes: d.stats.readbackBytes.Load(),
	}
}

// ResetStats zeroes the traffic counters.
func (d *Device) ResetStats() {
	d.stats.submits.Store(0)
	d.stats.passes.Store(0)
	d.stats.dispatches.Store(0)
	d.stats.readbacks.Store(0)
	d.stats.readbackBytes.Store(0)
}

// AllocatedBytes is the size of all live buffers this device created,
// pools and staging included (WebGPU has no memory query).
func (d *Device) AllocatedBytes() uint64 { return d.allocated.Load() }

// Wait blocks until all submitted work has finished.
func (d *Device) Wait() {
	d.waitIdle()
}

// Sync submits an empty command buffer — flushing writes queued with Write
// since the last submit — and waits for the GPU. Call it before releasing
// buffers that queued work may still touch: in this wgpu build, destroying
// a buffer with writes still queued corrupts a later map callback.
func (d *Device) Sync() error {
	if err := d.NewEncoder().Submit(); err != nil {
		return err
	}
	d.Wait()
	return d.gpuErr()
}

// Close waits for the GPU, releases pooled buffers, pipelines and the
// device. Buffers and Ops the caller still holds must not be used after.
func (d *Device) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	d.waitIdle()
	for _, p := range d.pipelines {
		p.release()
	}
	d.pipelines = nil
	for _, s := range d.staging {
		d.allocated.Add(-d.stageSize[s])
		s.Destroy()
		s.Release()
	}
	d.staging = nil
	for _, list := range d.scratch {
		for _, b := range list {
			b.Release()
		}
	}
	d.scratch = nil
	d.queue.Release()
	d.platform.release()
	d.dev.Release()
	if d.adapter != nil {
		d.adapter.Release()
	}
	if d.inst != nil {
		d.inst.Release()
	}
}
