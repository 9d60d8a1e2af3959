//go:build !js

package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// goTestPage runs test.wasm with the arguments in the URL's fragment (a
// JSON array) and reports the exit code as window.dopplerResult.code.
const goTestPage = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>go test</title></head>
<body data-state="loading">
<script src="wasm_exec.js"></script>
<script>
(async () => {
	const go = new Go();
	go.argv = ["test.wasm", ...JSON.parse(decodeURIComponent(location.hash.slice(1)) || "[]")];
	const ci = new URLSearchParams(location.search).get("ci");
	if (ci) go.env = {CI: ci}; // so that testenv.Need fails in the browser too under CI
	let code = null;
	go.exit = c => { code = c; };
	const r = await WebAssembly.instantiateStreaming(fetch("test.wasm"), go.importObject);
	globalThis.wasm = r; // the webgpu binding's js backend reads wasm.instance.exports.mem
	await go.run(r.instance);
	window.dopplerResult = {code: code};
	document.body.dataset.state = "done";
})().catch(e => {
	document.body.dataset.error = String(e && e.stack || e);
	document.body.dataset.state = "error";
});
</script>
</body></html>`

// GoTestStall is how long a test binary run by [Browser.GoTest] may go
// without printing anything before it is taken to be stuck: one test
// with no subtests runs that long without a line even under -test.v, so
// this is longer than [Stall].
const GoTestStall = 5 * time.Minute

// GoTest compiles the tests of the package in dir for GOOS=js
// GOARCH=wasm (go test -c), runs the binary in a new tab of b with the
// given test flags (e.g. "-test.v", "-test.run", "TestMatmul") and returns
// its exit code once it has finished. The test output goes to the
// console and so to t.Log. ctx bounds the whole run; the run in the page
// also ends once it has printed nothing for [GoTestStall] (see
// [Page.Progress]), so a loaded machine makes it slower, not failed, and
// a hung binary still fails. The binary's environment has only the
// host's CI variable, so that a resource missing in the browser fails the
// test under CI as it does on the host (internal/testenv).
//
// The browser has no file system: tests that read files must skip when
// runtime.GOOS is "js".
func (b *Browser) GoTest(ctx context.Context, dir string, args ...string) (int, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return -1, fmt.Errorf("browsertest: go test in the browser: %w", err)
	}
	out := b.t.TempDir()
	build := exec.CommandContext(ctx, goBin, "test", "-c", "-o", filepath.Join(out, "test.wasm"), ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	var stderr bytes.Buffer
	build.Stdout, build.Stderr = &stderr, &stderr
	if err := build.Run(); err != nil {
		return -1, fmt.Errorf("browsertest: go test -c %s for js/wasm: %w\n%s", dir, err, stderr.String())
	}
	goroot, err := exec.CommandContext(ctx, goBin, "env", "GOROOT").Output()
	if err != nil {
		return -1, fmt.Errorf("browsertest: go env GOROOT: %w", err)
	}
	execJS, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		return -1, fmt.Errorf("browsertest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "wasm_exec.js"), execJS, 0o644); err != nil {
		return -1, fmt.Errorf("browsertest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "index.html"), []byte(goTestPage), 0o644); err != nil {
		return -1, fmt.Errorf("browsertest: %w", err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(out)))
	defer srv.Close()

	argv, err := json.Marshal(append([]string{}, args...))
	if err != nil {
		return -1, err
	}
	p, err := b.NewPage()
	if err != nil {
		return -1, err
	}
	defer p.Close()
	ctx, cancel := p.Progress(ctx, GoTestStall)
	defer cancel()
	raw, err := p.Run(ctx, srv.URL+"/index.html?ci="+url.QueryEscape(os.Getenv("CI"))+"#"+url.PathEscape(string(argv)))
	if err != nil {
		return -1, err
	}
	var res struct {
		Code *int `json:"code"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return -1, fmt.Errorf("browsertest: go test result %s: %w", raw, err)
	}
	if res.Code == nil {
		return -1, fmt.Errorf("browsertest: the test binary of %s ended without an exit code", dir)
	}
	return *res.Code, nil
}
