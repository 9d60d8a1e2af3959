//go:build !js && cgo

package kernels

import (
	"context"
	"testing"

	"github.com/doppler-llm/doppler/internal/browsertest"
	"github.com/doppler-llm/doppler/internal/testenv"
)

// TestInBrowser runs this package's tests compiled for GOOS=js in headless
// Chromium, on its WebGPU (SwiftShader): the browser's WGSL compiler
// (Tint) is stricter than wgpu-native's (naga), its built-ins may be less
// precise, and the js backend opens, reads back and reports errors
// differently. TestSample (7k sampled draws, 80 s there) is left out:
// TestSampleFilters compiles and checks the same kernel. About 2.5
// minutes on 2 cores.
func TestInBrowser(t *testing.T) {
	testenv.SkipShort(t, "compiling and running the kernels in Chromium takes minutes")
	b := browsertest.New(t)
	// No wall-clock budget: GoTest fails the run once the binary has
	// printed nothing for browsertest.GoTestStall, and a loaded machine
	// only makes it slower. -test.timeout 0 likewise (the binary's own
	// default, 10 minutes, would fire on a slow machine).
	code, err := b.GoTest(context.Background(), ".", "-test.v", "-test.timeout", "0", "-test.run", "^Test", "-test.skip", "^TestSample$")
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("the kernels tests failed in the browser (exit code %d); their output is above", code)
	}
}
