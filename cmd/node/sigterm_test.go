package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuf is a goroutine-safe buffer for a child's stderr.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestNodeSIGTERM: `doppler node` shuts down cleanly on SIGTERM (as on
// Ctrl-C): it logs the shutdown, closes its node and store and exits 0,
// instead of dying of the signal.
func TestNodeSIGTERM(t *testing.T) {
	bin := buildDoppler(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "node", "--store", filepath.Join(tmp, "store"), "--listen", "/ip4/127.0.0.1/tcp/0")
	cmd.Env = append(os.Environ(), "DOPPLER_CACHE="+filepath.Join(tmp, "cache"), "DOPPLER_STORE=")
	var stderr lockedBuf
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening ") && !once {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("node printed no listening line within 60s; stderr:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("node still running 20s after SIGTERM; stderr:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("node after SIGTERM: %v (want a clean exit 0); stderr:\n%s", err, stderr.String())
	} else if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Fatalf("no shutdown logged; stderr:\n%s", stderr.String())
	}
}
