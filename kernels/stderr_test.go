//go:build cgo && !js

package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestOpenQuietStderr opens the GPU in a child process whose environment
// has no display session (no XDG_RUNTIME_DIR, WAYLAND_DISPLAY or DISPLAY,
// no NODEVICE_SELECT: a server's, CI's) and checks that nothing it prints
// on stderr is a stray warning from a library under wgpu — Mesa's
// device-select layer once made libwayland print an XDG_RUNTIME_DIR error
// on every GPU command.
func TestOpenQuietStderr(t *testing.T) {
	if os.Getenv("DOPPLER_KERNELS_OPEN_CHILD") == "1" {
		d, err := Open(Options{})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		d.Close()
		return
	}
	testDevice(t) // needs an adapter
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenQuietStderr$", "-test.count=1")
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "XDG_RUNTIME_DIR", "WAYLAND_DISPLAY", "DISPLAY", "NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "DOPPLER_KERNELS_OPEN_CHILD=1")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr // go test's child reports on stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "XDG_RUNTIME_DIR") || strings.Contains(strings.ToLower(line), "wayland") {
			t.Errorf("opening the GPU printed %q", line)
		}
	}
	if !strings.Contains(stderr.String(), "PASS") {
		t.Errorf("the child did not pass:\n%s", stderr.String())
	}
}
