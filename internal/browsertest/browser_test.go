//go:build !js

package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pages are trivial pages speaking the package's protocol: each finishes
// after a timer, so Wait must really wait.
var pages = map[string]string{
	"/ok": `<!doctype html><body data-state="loading"><script>
console.log("hello from the page");
setTimeout(() => {
	window.dopplerResult = {n: 42, s: "héllo"};
	document.body.dataset.state = "done";
}, 300);
</script></body>`,
	"/fail": `<!doctype html><body><script>
setTimeout(() => {
	document.body.dataset.error = "boom: the model is gone";
	document.body.dataset.state = "error";
}, 300);
</script></body>`,
	"/noresult": `<!doctype html><body><script>
setTimeout(() => { document.body.dataset.state = "done"; }, 100);
</script></body>`,
	"/throw": `<!doctype html><body><script>
setTimeout(() => { throw new Error("kaput"); }, 50);
</script></body>`,
	// Only loopback is reachable: a name and a non-loopback IP both fail.
	"/offline": `<!doctype html><body><script>
const probe = url => fetch(url, {mode: "no-cors"}).then(() => "reached", e => "failed");
Promise.all([probe("http://example.com/"), probe("http://10.1.2.3:8080/"), probe(location.origin + "/ok")]).then(r => {
	window.dopplerResult = r;
	document.body.dataset.state = "done";
});
</script></body>`,
	// Works for 4 s, longer than TestProgress's stall window, showing
	// progress in its text (ticking) or on the console only (chatty).
	"/ticking": `<!doctype html><body data-state="working"><p id="n">0</p><script>
let n = 0;
const iv = setInterval(() => {
	document.getElementById("n").textContent = String(++n);
	if (n === 20) { clearInterval(iv); document.body.dataset.state = "done"; }
}, 200);
</script></body>`,
	"/chatty": `<!doctype html><body data-state="working"><script>
let n = 0;
const iv = setInterval(() => {
	console.log("step " + (++n));
	if (n === 20) { clearInterval(iv); document.body.dataset.state = "done"; }
}, 200);
</script></body>`,
	// Says it is working and never changes again.
	"/stuck": `<!doctype html><body data-state="working"><p>working…</p></body>`,
	"/store": `<!doctype html><body><script>
(async () => {
	const prev = localStorage.getItem("visits");
	localStorage.setItem("visits", String(Number(prev || 0) + 1));
	const root = await navigator.storage.getDirectory();
	let opfs = "";
	try {
		const f = await (await root.getFileHandle("mark")).getFile();
		opfs = await f.text();
	} catch (e) {}
	const w = await (await root.getFileHandle("mark", {create: true})).createWritable();
	await w.write("seen");
	await w.close();
	window.dopplerResult = {prev: prev, opfs: opfs};
	document.body.dataset.state = "done";
})().catch(e => { document.body.dataset.error = String(e); document.body.dataset.state = "error"; });
</script></body>`,
}

func server(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if r.URL.Path == "/favicon.ico" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRun(t *testing.T) {
	srv := server(t)
	b := New(t)
	tests := []struct {
		path    string
		timeout time.Duration
		want    string // JSON result
		wantErr string // substring of the error
		is      error
	}{
		{path: "/ok", timeout: 30 * time.Second, want: `{"n":42,"s":"héllo"}`},
		{path: "/noresult", timeout: 30 * time.Second, want: `null`},
		{path: "/offline", timeout: 30 * time.Second, want: `["failed","failed","reached"]`},
		{path: "/fail", timeout: 30 * time.Second, wantErr: "boom: the model is gone", is: ErrPage},
		{path: "/throw", timeout: time.Second, wantErr: "kaput", is: context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			got, err := b.Run(ctx, srv.URL+tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, tc.is) {
					t.Fatalf("err = %v, want one containing %q and wrapping %v", err, tc.wantErr, tc.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, got, tc.want) {
				t.Errorf("result %s, want %s", got, tc.want)
			}
			if tc.path == "/ok" && time.Since(start) < 300*time.Millisecond {
				t.Errorf("returned after %v, before the page's 300 ms timer", time.Since(start))
			}
		})
	}
}

func jsonEqual(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("result %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func TestScreenshotAndTabs(t *testing.T) {
	srv := server(t)
	b := New(t, WithWindowSize(640, 480))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Open(ctx, srv.URL+"/ok"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mid := filepath.Join(dir, "mid.png")
	if err := b.Screenshot(ctx, mid); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	end := filepath.Join(dir, "end.png")
	if err := b.Screenshot(ctx, end); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mid, end} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG (%d bytes)", p, len(data))
		}
	}

	tab, err := b.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	if tab.Name() == b.Name() {
		t.Errorf("second tab is named %q like the first", tab.Name())
	}
	got, err := tab.Run(ctx, srv.URL+"/ok")
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, got, `{"n":42,"s":"héllo"}`) {
		t.Errorf("second tab: %s", got)
	}
	var sum int
	if err := tab.Eval(ctx, `Promise.resolve(20 + 22)`, &sum); err != nil || sum != 42 {
		t.Errorf("Eval = %d, %v; want 42", sum, err)
	}
	tab.Close()
}

// TestProfileReuse: a second browser on the same profile finds the first
// one's localStorage and OPFS files; a fresh profile finds nothing.
func TestProfileReuse(t *testing.T) {
	srv := server(t)
	profile := t.TempDir()
	type visit struct {
		Prev *string `json:"prev"`
		OPFS string  `json:"opfs"`
	}
	run := func(opts ...Option) visit {
		t.Helper()
		b := New(t, opts...)
		defer b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		raw, err := b.Run(ctx, srv.URL+"/store")
		if err != nil {
			t.Fatal(err)
		}
		var v visit
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := run(WithProfile(profile)); v.Prev != nil || v.OPFS != "" {
		t.Fatalf("first visit saw %+v, want nothing stored", v)
	}
	if v := run(WithProfile(profile)); v.Prev == nil || *v.Prev != "1" || v.OPFS != "seen" {
		t.Fatalf("second visit on the same profile saw %+v, want prev 1 and opfs \"seen\"", v)
	}
	if v := run(); v.Prev != nil || v.OPFS != "" {
		t.Fatalf("fresh profile saw %+v, want nothing stored", v)
	}
}

// TestChromiumMissing: without CI a missing Chromium skips the test (under
// CI it fails it: testenv.Need, tested there).
func TestChromiumMissing(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv("DOPPLER_CHROMIUM", filepath.Join(t.TempDir(), "no-such-chromium"))
	ran := false
	t.Run("skips", func(t *testing.T) {
		Chromium(t)
		ran = true
	})
	if ran {
		t.Error("Chromium returned for a missing executable instead of skipping")
	}
}

// TestProgress: a Progress context outlasts its stall window while the
// page shows progress in its text or on its console, and ends with
// ErrStalled once the page stops changing.
func TestProgress(t *testing.T) {
	srv := server(t)
	b := New(t)
	const stall = 2 * time.Second
	for _, path := range []string{"/ticking", "/chatty"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			ctx, cancel := b.Progress(context.Background(), stall)
			defer cancel()
			start := time.Now()
			if _, err := b.Run(ctx, srv.URL+path); err != nil {
				t.Fatalf("after %v: %v", time.Since(start), err)
			}
			if d := time.Since(start); d < stall {
				t.Fatalf("done after %v, before the stall window (%v): the test proves nothing", d, stall)
			}
		})
	}
	t.Run("stuck", func(t *testing.T) {
		ctx, cancel := b.Progress(context.Background(), stall)
		defer cancel()
		start := time.Now()
		_, err := b.Run(ctx, srv.URL+"/stuck")
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), `state "working"`) {
			t.Fatalf("err = %v, want one wrapping ErrStalled with the page's state", err)
		}
		if d := time.Since(start); d < stall || d > 10*stall {
			t.Errorf("stalled after %v, want a little over %v", d, stall)
		}
	})
}

func TestGoTest(t *testing.T) {
	b := New(t)
	// GoTest bounds each run by the binary's progress (GoTestStall).
	ctx := context.Background()
	tests := []struct {
		run  string
		ci   *string // the host's CI variable for this run; nil: as it is
		want int
	}{
		{run: "TestInBrowser", want: 0},
		{run: "TestFails", want: 1},
		{run: "TestCI", ci: new("true"), want: 0},
		{run: "TestCI", ci: new(""), want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.run, func(t *testing.T) {
			if tc.ci != nil {
				t.Setenv("CI", *tc.ci)
			}
			code, err := b.GoTest(ctx, "testdata/gotest", "-test.v", "-test.run", "^"+tc.run+"$")
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.want {
				t.Errorf("exit code %d, want %d", code, tc.want)
			}
		})
	}
}
