// Package gotest is run in the browser by TestGoTest.
package gotest

import (
	"os"
	"runtime"
	"syscall/js"
	"testing"
)

func TestInBrowser(t *testing.T) {
	if runtime.GOOS != "js" {
		t.Fatalf("GOOS %s, want js", runtime.GOOS)
	}
	if !js.Global().Get("navigator").Get("gpu").Truthy() {
		t.Error("no navigator.gpu: WebGPU is off")
	}
	t.Log("ran in", js.Global().Get("navigator").Get("userAgent").String())
}

func TestFails(t *testing.T) {
	t.Error("failing on purpose")
}

// TestCI passes when CI is "true" in the browser: GoTest passes the host's
// CI variable on.
func TestCI(t *testing.T) {
	if v := os.Getenv("CI"); v != "true" {
		t.Errorf("CI=%q in the browser, want \"true\"", v)
	}
}
