//go:build js

package kernels

import (
	"errors"
	"log/slog"
	"os"
	"testing"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// TestGPUErrorSurfaces: in the browser an error that no call returns (here
// a shader created outside the error scopes) arrives as an
// uncapturederror event; the device then fails its next Sync, submit and
// read with ErrGPU and the browser's message.
func TestGPUErrorSurfaces(t *testing.T) {
	d, err := Open(Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fresh device: %v", err)
	}
	if _, err := d.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{
		Label:      "bad",
		WGSLSource: &wgpu.ShaderSourceWGSL{Code: "fn main( {"},
	}); err != nil {
		t.Fatalf("the browser backend returned %v; the error was expected as an event", err)
	}
	if err := d.Sync(); !errors.Is(err, ErrGPU) {
		t.Fatalf("Sync after an uncaptured error = %v, want ErrGPU", err)
	}
	b, err := d.NewBuffer("after", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if _, err := d.Read(b, 0, 4); !errors.Is(err, ErrGPU) {
		t.Errorf("Read after an uncaptured error = %v, want ErrGPU", err)
	}
}

// TestAdapterInfoJS: the browser's GPUAdapter.info is read.
func TestAdapterInfoJS(t *testing.T) {
	info := testDevice(t).Info()
	if info.Backend != "WebGPU" || info.Name == "" || info.Name == "WebGPU adapter" {
		t.Errorf("adapter info %+v: want the browser's vendor/architecture", info)
	}
}
