// Package gotest is run in the browser by TestGoTest.
package gotest

import (
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
