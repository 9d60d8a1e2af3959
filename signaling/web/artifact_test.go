//go:build !js

package web_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/wasmbuild"
)

// TestArtifactFresh fails when the committed browser client
// (static/doppler.wasm.gz, static/wasm_exec.js) does not match what the
// sources and this toolchain build: run `go generate ./signaling/web`.
func TestArtifactFresh(t *testing.T) {
	testenv.SkipShort(t, "builds the WebAssembly client")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	want, err := wasmbuild.Build(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile("static/doppler.wasm.gz")
	if err != nil {
		t.Fatalf("%v: run go generate ./signaling/web", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("static/doppler.wasm.gz: %v", err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("static/doppler.wasm.gz: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("static/doppler.wasm.gz is stale (%d bytes; the sources build %d): run go generate ./signaling/web", len(got), len(want))
	}
	exec, err := wasmbuild.WasmExec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("static/wasm_exec.js"); err != nil || !bytes.Equal(b, exec) {
		t.Fatalf("static/wasm_exec.js differs from this toolchain's (err %v): run go generate ./signaling/web", err)
	}
}
