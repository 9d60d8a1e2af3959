//go:build cgo || js

package kernels

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/oliverbestmann/webgpu/wgpu"

	"github.com/doppler-llm/doppler/internal/testenv"
)

var (
	devOnce sync.Once
	dev     *Device
	devErr  error
)

// testDevice opens one device per test binary. With no adapter at all the
// test is skipped, and fails under CI (which has lavapipe: no adapter there
// is a broken runner).
func testDevice(tb testing.TB) *Device {
	tb.Helper()
	devOnce.Do(func() {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		dev, devErr = Open(Options{Logger: log})
	})
	if errors.Is(devErr, ErrNoAdapter) {
		testenv.Need(tb, "a GPU adapter: %v", devErr)
	}
	if devErr != nil {
		tb.Fatalf("open device: %v", devErr)
	}
	return dev
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dev != nil {
		dev.Close()
	}
	os.Exit(code)
}

// closeTo reports whether got is within abs + rel·|want| of want.
func closeTo(got, want float32, abs, rel float64) bool {
	return math.Abs(float64(got)-float64(want)) <= abs+rel*math.Abs(float64(want))
}

func TestAllKernelsListed(t *testing.T) {
	if runtime.GOOS == "js" {
		testenv.Skip(t, "no source tree in the browser")
	}
	files, err := filepath.Glob("*.wgsl")
	if err != nil {
		t.Fatal(err)
	}
	byFile := map[string]KernelInfo{}
	for _, k := range All() {
		byFile[k.WGSL] = k
	}
	for _, f := range files {
		if f == "common.wgsl" {
			continue
		}
		k, ok := byFile[f]
		if !ok {
			t.Errorf("%s is not listed in All()", f)
			continue
		}
		if !k.HasRef {
			t.Errorf("kernel %s has no reference: every kernel needs %s_ref.go", k.Name, k.Name)
		}
		for _, need := range []string{k.Name + ".go", k.Name + "_ref.go", k.Name + "_test.go"} {
			if _, err := os.Stat(need); err != nil {
				t.Errorf("kernel %s: missing %s", k.Name, need)
			}
		}
	}
	for _, k := range All() {
		if !slices.Contains(files, k.WGSL) {
			t.Errorf("All() lists %s but %s does not exist", k.Name, k.WGSL)
		}
	}
}

func TestDecodeInfo(t *testing.T) {
	// What wgpu-native 29 returns on lavapipe (no vendor name) and on an
	// NVIDIA card.
	got := decodeInfo(wgpu.AdapterInfo{
		VendorId: 0x10005, Device: "llvmpipe (LLVM 15.0.6, 256 bits)",
		Description: "Mesa 22.3.6 (LLVM 15.0.6)",
		AdapterType: wgpu.AdapterTypeCPU, BackendType: wgpu.BackendTypeVulkan,
	})
	want := AdapterInfo{Name: "llvmpipe (LLVM 15.0.6, 256 bits)", Vendor: "Mesa", Driver: "Mesa 22.3.6 (LLVM 15.0.6)", Backend: "Vulkan", Type: "CPU", Software: true}
	if got != want {
		t.Errorf("lavapipe: got %+v, want %+v", got, want)
	}
	got = decodeInfo(wgpu.AdapterInfo{
		VendorId: 0x10de, Vendor: "NVIDIA", Device: "NVIDIA H100 80GB HBM3",
		Description: "580.65", AdapterType: wgpu.AdapterTypeDiscreteGPU, BackendType: wgpu.BackendTypeVulkan,
	})
	want = AdapterInfo{Name: "NVIDIA H100 80GB HBM3", Vendor: "NVIDIA", Driver: "580.65", Backend: "Vulkan", Type: "DiscreteGPU"}
	if got != want {
		t.Errorf("nvidia: got %+v, want %+v", got, want)
	}
	if adapterRank(want) >= adapterRank(AdapterInfo{Type: "IntegratedGPU"}) ||
		adapterRank(AdapterInfo{Type: "IntegratedGPU"}) >= adapterRank(AdapterInfo{Type: "CPU", Software: true}) {
		t.Error("adapter ranking is not discrete < integrated < software")
	}
}

func TestDeviceInfo(t *testing.T) {
	d := testDevice(t)
	info, lim := d.Info(), d.Limits()
	t.Logf("adapter: %+v", info)
	t.Logf("limits: %+v", lim)
	t.Logf("features on: %v; the adapter offers: %v", d.Features().Names(), d.AdapterFeatures())
	for _, f := range d.Features().Names() {
		if !slices.Contains(d.AdapterFeatures(), f) && !(f == "subgroups" && slices.Contains(d.AdapterFeatures(), "native-feature-subgroup")) {
			t.Errorf("feature %s is on but the adapter does not list it", f)
		}
	}
	if info.Name == "" || isHexID(info.Name) || info.Backend == "" {
		t.Errorf("adapter info not decoded: %+v", info)
	}
	if lim.MaxBufferSize < lim.MaxStorageBufferBindingSize {
		t.Errorf("max buffer size %d below the binding size %d: limits not raised", lim.MaxBufferSize, lim.MaxStorageBufferBindingSize)
	}
	if lim.MaxStorageBufferBindingSize < 128<<20 || lim.MaxWorkgroupStorage < 16<<10 || lim.MaxInvocations < 256 || lim.MinStorageOffsetAlignment == 0 {
		t.Errorf("limits below what kernels assume: %+v", lim)
	}
}

func TestOpenUnknownAdapter(t *testing.T) {
	testDevice(t)
	_, err := Open(Options{Adapter: "no-such-adapter-xyz"})
	if err == nil || !strings.Contains(err.Error(), "no adapter matches") {
		t.Fatalf("got %v, want a 'no adapter matches' error", err)
	}
}

func TestBufferRoundTrip(t *testing.T) {
	d := testDevice(t)
	before := d.AllocatedBytes()
	data := make([]byte, 1003) // not a multiple of 4
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	b, err := d.NewBufferInit("roundtrip", data)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != 1004 {
		t.Errorf("size %d, want 1004", b.Size())
	}
	for _, r := range [][2]uint64{{0, 1003}, {1, 1}, {5, 6}, {998, 5}, {256, 300}} {
		got, err := d.Read(b, r[0], r[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Errorf("read [%d,+%d) differs", r[0], r[1])
		}
	}
	f := []float32{1.5, -2, float32(math.Pi)}
	if err := d.WriteF32(b, 8, f); err != nil {
		t.Fatal(err)
	}
	gf, err := d.ReadF32(b, 8, 3)
	if err != nil || !slices.Equal(gf, f) {
		t.Errorf("ReadF32 = %v, %v; want %v", gf, err, f)
	}
	if err := d.Write(b, 2, []byte{1}); err == nil {
		t.Error("unaligned write accepted")
	}
	if err := d.Write(b, 1000, make([]byte, 8)); err == nil {
		t.Error("out-of-range write accepted")
	}
	if d.AllocatedBytes() < before+1004 {
		t.Errorf("allocated %d, want ≥ %d", d.AllocatedBytes(), before+1004)
	}
	mid := d.AllocatedBytes()
	b.Release()
	b.Release() // idempotent
	if d.AllocatedBytes() != mid-1004 {
		t.Errorf("after release: allocated %d, want %d", d.AllocatedBytes(), mid-1004)
	}
	if _, err := d.Read(b, 0, 4); !errors.Is(err, ErrReleased) {
		t.Errorf("read of released buffer: %v", err)
	}
}

// TestWriteWhileHeapGrows writes many small pieces while the Go heap
// grows in small steps. In the browser, growing the wasm memory detaches
// every view of it: a write that handed WebGPU such a view and then
// allocated (as the webgpu bindings' Queue.WriteBuffer does) failed with
// "Number of bytes to write is too large" whenever the growth fell
// between the two.
func TestWriteWhileHeapGrows(t *testing.T) {
	d := testDevice(t)
	const n = 50000
	b, err := d.NewBuffer("heap growth", n*4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	var ptrs []*[16]byte
	for i := range n {
		for range 64 {
			ptrs = append(ptrs, new([16]byte)) // small allocations, kept
		}
		if err := d.WriteU32(b, uint64(i)*4, []uint32{uint32(i) * 2654435761}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	runtime.KeepAlive(ptrs)
	got, err := d.ReadU32(b, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, v := range got {
		if v != uint32(i)*2654435761 {
			if bad++; bad <= 3 {
				t.Errorf("word %d = %#x, want %#x", i, v, uint32(i)*2654435761)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d words wrong", bad, n)
	}
}

func TestScratchPool(t *testing.T) {
	d := testDevice(t)
	s1, err := d.Scratch(1000)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Size() != 1000 || s1.cap != 1024 {
		t.Errorf("scratch size %d cap %d", s1.Size(), s1.cap)
	}
	d.Put(s1)
	n := d.AllocatedBytes()
	s2, err := d.Scratch(900)
	if err != nil {
		t.Fatal(err)
	}
	if s2 != s1 || d.AllocatedBytes() != n {
		t.Error("scratch buffer not reused")
	}
	d.Put(s2)
}

// TestEncoderOneSubmit checks the per-token contract: many dispatches, one
// pass, one submit, one small readback.
func TestEncoderOneSubmit(t *testing.T) {
	d := testDevice(t)
	const n = 64
	x, _ := d.NewBuffer("x", n*4)
	w, _ := d.NewBuffer("w", n*4)
	y, _ := d.NewBuffer("y", n*4)
	defer x.Release()
	defer w.Release()
	defer y.Release()
	xs := make([]float32, n)
	ws := make([]float32, n)
	for i := range xs {
		xs[i], ws[i] = float32(i%5)-2, 1
	}
	d.WriteF32(x, 0, xs)
	d.WriteF32(w, 0, ws)
	a, err := d.RMSNorm(Whole(x), Whole(w), Whole(y), 1, n, 1e-6, false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := d.RMSNorm(Whole(y), Whole(w), Whole(x), 1, n, 1e-6, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()

	d.ResetStats()
	e := d.NewEncoder()
	e.Run(a, b)
	e.Run(a)
	got, err := e.SubmitRead(y, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	want := RMSNormRef(RMSNormRef(xs, ws, 1, n, 1e-6, false), ws, 1, n, 1e-6, false)
	want = RMSNormRef(want, ws, 1, n, 1e-6, false)
	gf := fromBytes[float32](got)
	for i := range gf {
		if !closeTo(gf[i], want[1+i], 1e-5, 1e-4) {
			t.Errorf("y[%d] = %v, want %v", 1+i, gf[i], want[1+i])
		}
	}
	if s := d.Stats(); s != (Stats{Submits: 1, Passes: 1, Dispatches: 3, Readbacks: 1, ReadbackBytes: 8}) {
		t.Errorf("stats %+v", s)
	}

	// A copy splits the pass.
	d.ResetStats()
	e = d.NewEncoder()
	e.Run(a)
	e.Copy(y, 0, x, 0, n*4)
	e.Run(b)
	if err := e.Submit(); err != nil {
		t.Fatal(err)
	}
	if s := d.Stats(); s.Passes != 2 || s.Submits != 1 || s.Dispatches != 2 || s.Readbacks != 0 {
		t.Errorf("stats after copy %+v", s)
	}
	if err := e.Submit(); err == nil {
		t.Error("second Submit of one encoder accepted")
	}
}

func TestReleasedBufferRejected(t *testing.T) {
	d := testDevice(t)
	x, _ := d.NewBuffer("x", 64)
	w, _ := d.NewBuffer("w", 64)
	y, _ := d.NewBuffer("y", 64)
	defer x.Release()
	defer w.Release()
	op, err := d.RMSNorm(Whole(x), Whole(w), Whole(y), 1, 16, 1e-6, false)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Release()
	y.Release()
	e := d.NewEncoder()
	e.Run(op)
	if err := e.Submit(); !errors.Is(err, ErrReleased) {
		t.Errorf("submit with a released buffer: %v, want ErrReleased", err)
	}
	if _, err := d.RMSNorm(Whole(x), Whole(w), Whole(y), 1, 16, 1e-6, false); !errors.Is(err, ErrReleased) {
		t.Errorf("binding a released buffer: %v, want ErrReleased", err)
	}
}

func TestNewOpValidation(t *testing.T) {
	d := testDevice(t)
	x, _ := d.NewBuffer("x", 4096)
	defer x.Release()
	w, _ := d.NewBuffer("w", 64)
	defer w.Release()
	for name, c := range map[string][3]BufferRange{
		"misaligned offset": {{Buf: x, Offset: 4, Size: 64}, Whole(w), {Buf: x, Offset: 1024}},
		"out of range":      {{Buf: x, Offset: 4096 - 256, Size: 512}, Whole(w), {Buf: x, Offset: 0, Size: 64}},
		"writable overlap":  {{Buf: x, Size: 64}, Whole(w), {Buf: x, Size: 64}},
		"too small":         {{Buf: x, Size: 32}, Whole(w), {Buf: w}},
	} {
		if _, err := d.RMSNorm(c[0], c[1], c[2], 1, 16, 1e-6, false); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Even disjoint read-only and writable ranges of one buffer conflict
	// (WebGPU usage scopes are per buffer).
	if _, err := d.RMSNorm(BufferRange{Buf: x, Size: 64}, Whole(w), BufferRange{Buf: x, Offset: 1024, Size: 64}, 1, 16, 1e-6, false); err == nil {
		t.Error("read-only and writable ranges of one buffer accepted")
	}
	// Read-only ranges of one buffer at offsets are fine.
	y, _ := d.NewBuffer("y", 64)
	defer y.Release()
	op, err := d.RMSNorm(BufferRange{Buf: x, Size: 64}, BufferRange{Buf: x, Offset: 1024, Size: 64}, Whole(y), 1, 16, 1e-6, false)
	if err != nil {
		t.Fatalf("read-only ranges of one buffer: %v", err)
	}
	e := d.NewEncoder()
	e.Run(op)
	if err := e.Submit(); err != nil {
		t.Errorf("submit: %v", err)
	}
	op.Release()
}

func TestPipelineCache(t *testing.T) {
	d := testDevice(t)
	const src = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;\n@compute @workgroup_size(1) fn main() { a[0] = 1u; }\n"
	p1, err := d.Pipeline("test/cache", src, "main", []Binding{Storage})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := d.Pipeline("test/cache", src, "main", []Binding{Storage})
	if err != nil || p1 != p2 {
		t.Errorf("cache miss: %v", err)
	}
	if _, err := d.Pipeline("test/cache", src+"\n", "main", []Binding{Storage}); err == nil {
		t.Error("key reused for different source accepted")
	}
	if _, err := d.Pipeline("test/bad", "fn main( {", "main", []Binding{Storage}); err == nil {
		t.Error("bad WGSL compiled")
	} else {
		t.Logf("compile error reads: %v", err)
	}
}

func TestSetConst(t *testing.T) {
	got, err := setConst("a\nconst WG: u32 = 256u;\nb", "WG", 64)
	if err != nil || got != "a\nconst WG: u32 = 64u;\nb" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := setConst("const X: u32 = 1u;", "WG", 64); err == nil {
		t.Error("missing constant accepted")
	}
}

func TestSetBlock(t *testing.T) {
	got, err := setBlock("a\n// BEGIN IO\nx\ny\n// END IO\nb", "IO", "z\n")
	if err != nil || got != "a\n// BEGIN IO\nz\n// END IO\nb" {
		t.Errorf("got %q, %v", got, err)
	}
	for _, src := range []string{"a\n// END IO\n", "// BEGIN IO\nx\n", "// BEGIN KV\n// END KV\n"} {
		if _, err := setBlock(src, "IO", "z\n"); err == nil {
			t.Errorf("%q: missing block accepted", src)
		}
	}
}
