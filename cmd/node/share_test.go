package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/sharelink"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// cliContext runs the CLI in-process until it returns or ctx ends.
func cliContext(ctx context.Context, args ...string) (string, error) {
	var out lockedBuf
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// serveStories starts `doppler serve` (no API: no GPU needed) on
// stories260K and returns its URL, the model ID and its manifest.
func serveStories(t *testing.T, ctx context.Context) (string, rdrr.ModelID, *rdrr.Manifest) {
	t.Helper()
	dir := convertStories(t)
	man, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	id := rdrr.Sum(man)
	m, err := rdrr.ParseManifest(man)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	url, _ := startCommand(t, sctx, cancel, []string{"serve", dir, "--http", "127.0.0.1:0", "--no-api", "--store", filepath.Join(t.TempDir(), "serve")}, id, false)
	return url, id, m
}

// verified checks that dir is a complete RDRR directory of model id.
func verified(t *testing.T, ctx context.Context, dir string, id rdrr.ModelID) {
	t.Helper()
	out, err := cliContext(ctx, "verify", dir)
	if err != nil || !strings.Contains(out, "ok "+dir) || !strings.Contains(out, "model id "+id.String()) {
		t.Fatalf("verify %s: %v\n%s", dir, err, out)
	}
	man, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil || rdrr.Sum(man) != id {
		t.Fatalf("%s: manifest hash %v, want the model ID %s (%v)", dir, rdrr.Sum(man), id, err)
	}
}

// seedProxy stands between a pull and a seed: it counts the shard bytes it
// passes on and, when told, corrupts the first byte of every shard body
// or stops sending once stallAfter bytes have gone through (until the
// request ends).
type seedProxy struct {
	upstream   string
	corrupt    bool
	stallAfter int64

	mu       sync.Mutex
	requests int   // shard requests
	bytes    int64 // shard body bytes sent
	stalled  chan struct{}
}

func newProxy(t *testing.T, upstream string) (*seedProxy, string) {
	p := &seedProxy{upstream: upstream, stalled: make(chan struct{})}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func (p *seedProxy) sent() (int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.bytes
}

func (p *seedProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), nil)
	if rg := r.Header.Get("Range"); rg != "" {
		req.Header.Set("Range", rg)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	shard := strings.Contains(r.URL.Path, "/shards/")
	if shard {
		p.mu.Lock()
		p.requests++
		p.mu.Unlock()
	}
	buf := make([]byte, 4<<10)
	for first := true; ; first = false {
		n, err := resp.Body.Read(buf)
		if n > 0 && shard {
			if first && p.corrupt {
				buf[0] ^= 0xff
			}
			p.mu.Lock()
			stall := p.stallAfter > 0 && p.bytes >= p.stallAfter
			if !stall {
				p.bytes += int64(n)
			}
			p.mu.Unlock()
			if stall {
				w.(http.Flusher).Flush()
				select {
				case <-p.stalled:
				default:
					close(p.stalled)
				}
				<-r.Context().Done()
				return
			}
		}
		if n > 0 {
			w.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// TestPullSeed: `doppler pull ID --seed URL -o DIR` from a running serve
// gives a directory that verifies, whose manifest hashes to the ID; the
// pull needs no libp2p peer.
func TestPullSeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, id, _ := serveStories(t, ctx)
	tmp := t.TempDir()
	out := filepath.Join(tmp, "out")
	o, err := cliContext(ctx, "pull", id.String(), "--seed", url, "-o", out, "--store", filepath.Join(tmp, "store"))
	if err != nil || !strings.Contains(o, "pulled "+id.String()) || !strings.Contains(o, "wrote "+out) {
		t.Fatalf("pull: %v\n%s", err, o)
	}
	verified(t, ctx, out, id)
}

// TestShareLink: `doppler share` prints a link naming the model and the
// seed; `doppler pull LINK -o DIR` fetches the model from it.
func TestShareLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, id, _ := serveStories(t, ctx)
	tmp := t.TempDir()
	o, err := cliContext(ctx, "share", id.String(), "--seed", url+"/", "--store", filepath.Join(tmp, "empty"))
	if err != nil {
		t.Fatalf("share: %v\n%s", err, o)
	}
	link := strings.TrimSpace(o)
	l, err := sharelink.Parse(link)
	if err != nil || l.Model != id || len(l.Seeds) != 1 || l.Seeds[0] != url || len(l.Peers) != 0 || strings.Contains(link, "\n") {
		t.Fatalf("share printed %q: %+v, %v", o, l, err)
	}
	out := filepath.Join(tmp, "out")
	if o, err := cliContext(ctx, "pull", link, "-o", out, "--store", filepath.Join(tmp, "store")); err != nil {
		t.Fatalf("pull %s: %v\n%s", link, err, o)
	}
	verified(t, ctx, out, id)
}

// Bad share and pull arguments fail at once, naming what is wrong.
func TestShareFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tmp := t.TempDir()
	id := strings.Repeat("ab", 32)
	peer := "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLRPJAA5o6tnwkR2ZAYG5CEvExbEvYKxbwuT9kBSzwDps"
	o, err := cliContext(ctx, "share", id, "--peer", peer, "--seed", "http://127.0.0.1:1", "--seed", "http://127.0.0.1:1/")
	if want := "doppler://" + id + "?seed=http%3A%2F%2F127.0.0.1%3A1&peer=%2Fip4%2F127.0.0.1%2Ftcp%2F4001%2Fp2p%2F12D3KooWLRPJAA5o6tnwkR2ZAYG5CEvExbEvYKxbwuT9kBSzwDps\n"; err != nil || o != want {
		t.Fatalf("share: %q, %v; want %q", o, err, want)
	}
	// Sharing a link again adds the sources given.
	o, err = cliContext(ctx, "share", strings.TrimSpace(o), "--seed", "https://example.org")
	if l, perr := sharelink.Parse(strings.TrimSpace(o)); err != nil || perr != nil || len(l.Seeds) != 2 || l.Seeds[0] != "https://example.org" || len(l.Peers) != 1 {
		t.Fatalf("share LINK --seed: %q, %v", o, err)
	}
	store := filepath.Join(tmp, "store")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"share", id}, "at least one --seed"},
		{[]string{"share", id, "--seed", "ftp://127.0.0.1"}, "http:// or https://"},
		{[]string{"share", id, "--peer", "/ip4/127.0.0.1/tcp/1"}, "bad multiaddr"},
		{[]string{"share", "zz", "--seed", "http://127.0.0.1:1", "--store", store}, "bad model id"},
		{[]string{"share", "doppler://" + id[:10], "--seed", "http://127.0.0.1:1"}, "doppler://" + id[:10]},
		{[]string{"pull", id, "--store", store}, "--seed URL or --peer"},
		{[]string{"pull", id, "--seed", "file:///etc", "--store", store}, "file:///etc"},
		{[]string{"pull", "doppler://" + id + "?seed=gopher://x", "--store", store}, "doppler://" + id},
		{[]string{"pull", "doppler:" + id, "--store", store}, "doppler://<model-id>"},
		{[]string{"pull", "doppler://" + id, "--store", store}, "--seed URL or --peer"},
		{[]string{"pull", id, "--seed", "http://127.0.0.1:1", "--store", store}, "GET http://127.0.0.1:1/rdrr/v1/models/" + id + "/manifest.json"},
	} {
		if o, err := cliContext(ctx, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v (%s); want an error mentioning %q", c.args, err, o, c.want)
		}
	}
}

// TestPullSeedBadBlock: a seed that corrupts blocks never gets one into
// the store: alone, the pull fails at once (not after --wait, here an
// hour), naming the seed and the shard; beside a good seed, its blocks are
// fetched again from the other and the pull verifies.
func TestPullSeedBadBlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, id, m := serveStories(t, ctx)
	bad, badURL := newProxy(t, url)
	bad.corrupt = true
	tmp := t.TempDir()

	store := filepath.Join(tmp, "alone")
	pctx, pcancel := context.WithTimeout(ctx, time.Minute)
	o, err := cliContext(pctx, "pull", id.String(), "--seed", badURL, "--store", store, "--wait", "1h")
	pcancel()
	if err == nil || !strings.Contains(err.Error(), badURL) || !strings.Contains(err.Error(), "bad blocks") ||
		!strings.Contains(err.Error(), m.Shards[0].Hash.Short()) {
		t.Fatalf("pull from a corrupting seed: %v\n%s\nwant an error naming %s and shard %s", err, o, badURL, m.Shards[0].Hash.Short())
	}
	t.Logf("alone: %v", err)
	st, err := swarm.Open(store, swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status, _ := st.Status(id)
	st.Close()
	if status.HaveBytes != 0 {
		t.Fatalf("the store holds %d bytes from a seed that sent only bad blocks", status.HaveBytes)
	}

	out := filepath.Join(tmp, "out")
	if o, err := cliContext(ctx, "pull", id.String(), "--seed", badURL, "--seed", url, "-o", out, "--store", filepath.Join(tmp, "both")); err != nil {
		t.Fatalf("pull from a corrupting and a good seed: %v\n%s", err, o)
	}
	if n, _ := bad.sent(); n == 0 {
		t.Error("the corrupting seed was never asked")
	}
	verified(t, ctx, out, id)
}

// TestPullSeedResume: a pull cancelled half-way keeps the blocks it
// verified; pulled again, it fetches only the rest.
func TestPullSeedResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, id, m := serveStories(t, ctx)
	tmp := t.TempDir()
	store := filepath.Join(tmp, "store")
	total := m.TotalSize()

	first, firstURL := newProxy(t, url)
	first.stallAfter = total / 2
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := cliContext(pctx, "pull", id.String(), "--seed", firstURL, "--store", store)
		done <- err
	}()
	select {
	case <-first.stalled:
	case err := <-done:
		t.Fatalf("the first pull ended before being cut off: %v", err)
	case <-ctx.Done():
		t.Fatal("the first pull never reached half the model")
	}
	// The blocks received before the stall are written (the sidecar
	// records them, 4 bytes each after an 8-byte header) before the pull
	// is cancelled: wait until it holds some and stops growing.
	sidecars := func() (n int64) {
		side, _ := filepath.Glob(filepath.Join(store, "partial", "*.blocks"))
		for _, f := range side {
			if fi, err := os.Stat(f); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	last, since := int64(-1), time.Now()
	waitUntil(t, "verified blocks in the store's sidecar", func() bool {
		if n := sidecars(); n != last {
			last, since = n, time.Now()
		}
		return last > 8 && time.Since(since) > 300*time.Millisecond
	})
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Logf("the cancelled pull returned %v", err)
		}
		if err == nil {
			t.Fatal("the cancelled pull succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the pull did not return within 20 s of its cancellation")
	}
	_, sent1 := first.sent()

	second, secondURL := newProxy(t, url)
	out := filepath.Join(tmp, "out")
	if o, err := cliContext(ctx, "pull", id.String(), "--seed", secondURL, "-o", out, "--store", store); err != nil {
		t.Fatalf("the second pull: %v\n%s", err, o)
	}
	_, sent2 := second.sent()
	t.Logf("model %d bytes; first pull got %d before its cancel, the second %d", total, sent1, sent2)
	// The sidecar held at least one block when the first was cancelled.
	if sent2 > total-m.Shards[0].BlockSize || sent2 == 0 {
		t.Fatalf("the second pull fetched %d bytes of %d: want only what the first left", sent2, total)
	}
	verified(t, ctx, out, id)
}
