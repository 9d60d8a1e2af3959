// Command gen writes the browser client's artifacts into a directory (go
// generate in signaling/web runs it): doppler.wasm.gz, built reproducibly
// from cmd/browser, and the toolchain's wasm_exec.js.
//
//	go run ./internal/wasmbuild/gen -root . -out signaling/web/static
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/doppler-llm/doppler/internal/wasmbuild"
	"github.com/doppler-llm/doppler/rdrr"
)

func main() {
	root := flag.String("root", ".", "module root")
	out := flag.String("out", ".", "output directory")
	flag.Parse()
	if err := run(context.Background(), *root, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, root, out string) error {
	wasm, err := wasmbuild.Build(ctx, root)
	if err != nil {
		return err
	}
	exec, err := wasmbuild.WasmExec(ctx)
	if err != nil {
		return err
	}
	gz := wasmbuild.Gzip(wasm)
	if err := rdrr.WriteFileAtomic(filepath.Join(out, "doppler.wasm.gz"), gz); err != nil {
		return err
	}
	if err := rdrr.WriteFileAtomic(filepath.Join(out, "wasm_exec.js"), exec); err != nil {
		return err
	}
	fmt.Printf("doppler.wasm: %d bytes, %d compressed\n", len(wasm), len(gz))
	return nil
}
