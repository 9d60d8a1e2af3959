package wasmbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Package is the browser client's import path.
const Package = "github.com/doppler-llm/doppler/cmd/browser"

// Build compiles the browser client for GOOS=js GOARCH=wasm from the
// module at root and returns the wasm bytes. The flags make the output a
// function of the sources and the toolchain only (-trimpath, no VCS stamp,
// no build ID).
func Build(ctx context.Context, root string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "doppler-wasm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "doppler.wasm")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, Package)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s for js/wasm: %w\n%s", Package, err, stderr.Bytes())
	}
	return os.ReadFile(out)
}

// Gzip compresses b deterministically (no name, no time stamp, best
// compression), so the same wasm always gives the same artifact.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// WasmExec returns the toolchain's wasm_exec.js, the JavaScript support
// code that must match the Go version that built the wasm.
func WasmExec(ctx context.Context) ([]byte, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "lib", "wasm", "wasm_exec.js")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("wasm_exec.js: %w", err)
	}
	return b, nil
}

// goTool is the go command of the running toolchain when there is one.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}
