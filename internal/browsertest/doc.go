//go:build !js

// Package browsertest drives a headless Chromium from Go tests, so that
// pages built from this module (a GOOS=js wasm engine, a browser client)
// can be exercised end to end on a machine without a display or a GPU.
//
// # The page protocol
//
// A page under test reports its outcome on <body>:
//
//   - document.body.dataset.state = "done" once it has finished; the
//     result is window.dopplerResult, any JSON-serialisable value, which
//     [Page.Wait] returns as JSON.stringify(window.dopplerResult);
//   - document.body.dataset.state = "error" when it failed, with the
//     message in document.body.dataset.error ([Page.Wait] returns it as an
//     error wrapping [ErrPage]).
//
// Anything else (no state yet, "loading", …) means "still running"; Wait
// polls until one of the two states or until its context ends.
//
// # The browser
//
// [New] starts Debian's chromium (/usr/lib/chromium/chromium, or the
// executable named by $DOPPLER_CHROMIUM) headless with --no-sandbox and
// --enable-unsafe-webgpu: WebGPU then runs on Chromium's built-in
// SwiftShader (a software Vulkan; no shader-f16, subgroups of 4, 1 GiB
// storage bindings). When Chromium is missing the test is skipped, or
// fails when the environment has CI=true.
//
// The browser gets a fresh profile (user-data-dir) in t.TempDir(), or the
// directory given with [WithProfile] so that a second browser started
// later on the same directory finds the first one's storage (OPFS,
// IndexedDB, localStorage). Only one browser may use a profile at a time:
// [Browser.Close] the first before starting the second.
//
// Chromium's own network traffic is switched off (background networking,
// component and field-trial updates, sync, default apps, pings, domain
// reliability, translate, optimization hints), and every host except
// localhost, 127.0.0.1 and [::1] (IP literals included) resolves to
// nothing, so a page can reach only loopback servers such as an
// httptest.Server. WebRTC's ICE does not go through the resolver: pages
// gather 127.0.0.1 host candidates under their real address (loopback
// allowed, mDNS names off), and a test of data channels must drop any
// other candidate itself.
//
// The page's console messages, uncaught exceptions and browser log entries
// are forwarded to t.Log, prefixed with the tab's name ("tab1 log: …");
// closing a tab first logs everything it sent. Everything is closed on
// t.Cleanup.
//
// # Go tests in the browser
//
// [Browser.GoTest] compiles a package's tests for GOOS=js GOARCH=wasm and
// runs the binary in a tab (wasm_exec.js from GOROOT, globalThis.wasm set
// as cogentcore/webgpu's js backend needs), returning its exit code; the
// test output arrives through the console. kernels.TestInBrowser uses it
// to run the kernel tests on Chromium's WebGPU.
//
// # Deadlines
//
// Bound a page by its progress, not the wall clock: [Page.Progress]
// gives a context that ends only once the page has shown nothing new (no
// change of its state or text, no console message) for a stall window,
// [Stall] for the app's pages. A loaded machine then makes a test
// slower, never red; a stuck page still fails, with the state it was in.
//
// # Example
//
//	srv := httptest.NewServer(handler) // serves index.html, wasm_exec.js, …
//	defer srv.Close()
//	b := browsertest.New(t)
//	ctx, cancel := b.Progress(context.Background(), browsertest.Stall)
//	defer cancel()
//	res, err := b.Run(ctx, srv.URL+"/index.html")
//	if err != nil {
//		b.Screenshot(context.Background(), filepath.Join(t.TempDir(), "fail.png"))
//		t.Fatal(err)
//	}
//	var out struct{ Tokens []int }
//	json.Unmarshal(res, &out)
package browsertest
