//go:build !js && cgo

package kernels

import (
	"context"
	"testing"
	"time"

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
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	code, err := b.GoTest(ctx, ".", "-test.v", "-test.timeout", "8m", "-test.run", "^Test", "-test.skip", "^TestSample$")
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("the kernels tests failed in the browser (exit code %d); their output is above", code)
	}
}
