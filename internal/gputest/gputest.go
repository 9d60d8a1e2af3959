//go:build cgo || js

// Package gputest opens the GPU for tests outside package kernels (whose
// own tests cannot import it): with no adapter the test needs one
// (testenv.Need: a skip, a failure under CI, where lavapipe is installed).
package gputest

import (
	"errors"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/kernels"
)

// Open opens a GPU device for the test and closes it when the test ends.
func Open(t testing.TB) *kernels.Device {
	t.Helper()
	dev, err := kernels.Open(kernels.Options{})
	if errors.Is(err, kernels.ErrNoAdapter) {
		testenv.Need(t, "a GPU adapter: %v", err)
	}
	if err != nil {
		t.Fatalf("open the GPU: %v", err)
	}
	t.Cleanup(dev.Close)
	return dev
}
