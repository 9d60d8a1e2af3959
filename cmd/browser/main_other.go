//go:build !(js && wasm)

package main

import (
	"fmt"
	"os"
)

// The client runs only in a browser; natively there is nothing to do.
func main() {
	fmt.Fprintln(os.Stderr, "cmd/browser is the WebAssembly browser client: build it with GOOS=js GOARCH=wasm (go generate ./signaling/web); doppler serves it at /d")
	os.Exit(2)
}
