package httpseed_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/httpseed"
	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/dtype"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/signaling/sigwire"
	"github.com/doppler-llm/doppler/swarm"
)

// The client asks for what the server mounts.
func TestPrefix(t *testing.T) {
	if httpseed.Prefix != sigwire.SeedPrefix {
		t.Fatalf("httpseed.Prefix %q, sigwire.SeedPrefix %q", httpseed.Prefix, sigwire.SeedPrefix)
	}
}

// model writes a random-weight RDRR directory of a few small shards with
// 1 KiB blocks (the last block of each shard short), signed when key is
// set.
func model(t *testing.T, seed byte, key ed25519.PrivateKey) (string, rdrr.ModelID, *rdrr.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := rdrr.NewWriter(dir, rdrr.WriterOptions{ShardSize: 20 << 10, BlockSize: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{seed})
	for i, rows := range []int64{17, 13, 9} {
		if err := w.AddTensor(fmt.Sprintf("blk.%d.ffn_up.weight", i), dtype.F32, []int64{rows, 333}, io.LimitReader(rng, rows*333*4)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := rdrr.Config{Architecture: "llama", ContextLength: 128, HiddenSize: 64, Layers: 1, Heads: 1, KVHeads: 1, HeadDim: 64,
		FFN: 128, VocabSize: 32, NormEps: 1e-5, Activation: "silu", Rope: rdrr.RoPE{Theta: 10000, Dim: 64, Style: "normal"}}
	id, err := w.Finish(&rdrr.Manifest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if key != nil {
		sig, err := rdrr.Sign(raw, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rdrr.SignatureFile), sig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := rdrr.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return dir, id, m
}

// seed serves the RDRR directories with signaling.Seed on loopback; wrap,
// when set, stands between the client and the seed.
func seed(t *testing.T, wrap func(http.Handler) http.Handler, dirs ...string) *httptest.Server {
	t.Helper()
	st, err := swarm.Open(t.TempDir(), swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, d := range dirs {
		if _, err := st.ImportDir(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	h := signaling.NewSeed(st, signaling.SeedOptions{}).Handler()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// counter is a Doer that records the requests it sends.
type counter struct {
	mu     sync.Mutex
	ranges []string
}

func (c *counter) Do(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.ranges = append(c.ranges, r.Header.Get("Range"))
	c.mu.Unlock()
	return http.DefaultClient.Do(r)
}

func client(t *testing.T, base string, opts httpseed.Options) *httpseed.Client {
	t.Helper()
	c, err := httpseed.New(base, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestManifest(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	plainDir, plain, _ := model(t, 1, nil)
	signedDir, signed, _ := model(t, 2, priv)
	srv := seed(t, nil, plainDir, signedDir)
	c := client(t, srv.URL+"/", httpseed.Options{})
	if c.ID() != srv.URL {
		t.Errorf("ID %q, want %q (no trailing slash)", c.ID(), srv.URL)
	}
	ctx := context.Background()

	man, sig, err := c.Manifest(ctx, plain)
	if err != nil || rdrr.Sum(man) != plain || sig != nil {
		t.Fatalf("unsigned: %d bytes, sig %q, %v", len(man), sig, err)
	}
	man, sig, err = c.Manifest(ctx, signed)
	if err != nil || rdrr.Sum(man) != signed || sig == nil {
		t.Fatalf("signed: %d bytes, sig %q, %v", len(man), sig, err)
	}
	if _, err := rdrr.VerifySignature(man, sig); err != nil {
		t.Fatal(err)
	}

	unknown := rdrr.Sum([]byte("no such model"))
	_, _, err = c.Manifest(ctx, unknown)
	if !errors.Is(err, shardproto.ErrNotFound) || !strings.Contains(err.Error(), srv.URL+"/rdrr/v1/models/"+unknown.String()) {
		t.Errorf("unknown model: %v, want ErrNotFound naming the URL", err)
	}
}

// A seed that lies about a manifest, or sends too much, is refused with
// an error naming the URL.
func TestManifestHostile(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	dirA, a, _ := model(t, 1, nil)
	dirB, b, _ := model(t, 2, priv)
	manB, _ := os.ReadFile(filepath.Join(dirB, rdrr.ManifestFile))
	_, other, _ := ed25519.GenerateKey(nil)
	badSig, _ := rdrr.Sign(manB, other)
	badSig = bytes.Replace(badSig, []byte(`"sig":"`), []byte(`"sig":"00`), 1)
	for _, c := range []struct {
		name string
		id   rdrr.ModelID
		h    http.HandlerFunc // in front of the seed for the manifest's URL; nil: pass
		want error
		text string
	}{
		{"another model's manifest", a, func(w http.ResponseWriter, r *http.Request) { w.Write(manB) }, shardproto.ErrBadManifest, ""},
		{"not a manifest", rdrr.Sum([]byte("{}")), func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }, shardproto.ErrBadManifest, ""},
		{"over the limit", a, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(rdrr.MaxManifestSize+1))
			w.Write([]byte("{"))
		}, shardproto.ErrProtocol, "at most"},
		{"server error", a, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, shardproto.ErrRemote, "500"},
		{"bad signature", b, func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, rdrr.SignatureFile) {
				w.Write(badSig)
				return
			}
			w.Write(manB)
		}, rdrr.ErrBadSignature, rdrr.SignatureFile},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := seed(t, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.Contains(r.URL.Path, "/models/") {
						c.h(w, r)
						return
					}
					next.ServeHTTP(w, r)
				})
			}, dirA, dirB)
			_, _, err := client(t, srv.URL, httpseed.Options{}).Manifest(context.Background(), c.id)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), srv.URL+httpseed.Prefix+"/models/"+c.id.String()) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("%v, want %v naming the URL and %q", err, c.want, c.text)
			}
		})
	}
}

// read collects what ReadBlocks hands over.
func read(c *httpseed.Client, sh rdrr.Shard, first, count int) ([]int, []byte, error) {
	var idx []int
	var got []byte
	err := c.ReadBlocks(context.Background(), sh, first, count, func(i int, data []byte) error {
		idx = append(idx, i)
		got = append(got, data...)
		return nil
	})
	return idx, got, err
}

// ReadBlocks sends one request with one Range per run and hands over the
// run's blocks, in order, equal to the shard's bytes.
func TestReadBlocks(t *testing.T) {
	dir, _, m := model(t, 1, nil)
	if len(m.Shards) < 2 {
		t.Fatalf("%d shards; the test wants several", len(m.Shards))
	}
	if last := m.Shards[len(m.Shards)-1]; last.Size%last.BlockSize == 0 {
		t.Fatalf("the last shard's last block is whole; the test wants a short one")
	}
	srv := seed(t, nil, dir)
	var doer counter
	c := client(t, srv.URL, httpseed.Options{Doer: &doer})
	for _, sh := range m.Shards {
		file, err := os.ReadFile(filepath.Join(dir, sh.Hash.String()))
		if err != nil {
			t.Fatal(err)
		}
		n := len(sh.Blocks)
		for _, r := range [][2]int{{0, n}, {0, 1}, {n - 1, 1}, {1, n - 2}, {n / 2, n - n/2}} {
			if r[1] <= 0 {
				continue
			}
			doer.ranges = nil
			idx, got, err := read(c, sh, r[0], r[1])
			if err != nil {
				t.Fatalf("shard %s blocks %d+%d: %v", sh.Hash.Short(), r[0], r[1], err)
			}
			lo := int64(r[0]) * sh.BlockSize
			hi := min(int64(r[0]+r[1])*sh.BlockSize, sh.Size)
			if !bytes.Equal(got, file[lo:hi]) || len(idx) != r[1] || idx[0] != r[0] || idx[len(idx)-1] != r[0]+r[1]-1 {
				t.Fatalf("shard %s blocks %d+%d: got blocks %v, %d bytes", sh.Hash.Short(), r[0], r[1], idx, len(got))
			}
			if want := fmt.Sprintf("bytes=%d-%d", lo, hi-1); len(doer.ranges) != 1 || doer.ranges[0] != want {
				t.Fatalf("shard %s blocks %d+%d: requests %q, want one with Range %s", sh.Hash.Short(), r[0], r[1], doer.ranges, want)
			}
		}
	}
	if _, _, err := read(c, m.Shards[0], 0, len(m.Shards[0].Blocks)+1); err == nil {
		t.Error("a range past the shard's blocks was sent")
	}
}

// flip corrupts byte off of every shard body.
func flip(off int) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/shards/") {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if off < len(body) {
				body[off] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
}

// A seed that sends a bad block, the wrong range, too few bytes or an
// error status is refused, with the URL named; blocks before a bad one
// are handed over, the bad one never.
func TestReadBlocksHostile(t *testing.T) {
	dir, _, m := model(t, 1, nil)
	sh := m.Shards[0]
	n := len(sh.Blocks)
	shardURL := "/rdrr/v1/shards/" + sh.Hash.String()
	rewrite := func(f func(w http.ResponseWriter, r *http.Request, next http.Handler)) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(w, r, next) })
		}
	}
	for _, c := range []struct {
		name   string
		wrap   func(http.Handler) http.Handler
		want   error
		blocks int // handed over before the error
	}{
		{"bad first block", flip(0), rdrr.ErrBadBlock, 0},
		{"bad third block", flip(2<<10 + 5), rdrr.ErrBadBlock, 2},
		{"truncated", rewrite(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			w.Header().Set("Content-Range", rec.Header().Get("Content-Range"))
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()[:3<<10+10])
		}), shardproto.ErrProtocol, 3},
		{"wrong range", rewrite(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			r.Header.Set("Range", "bytes=1024-")
			next.ServeHTTP(w, r)
		}), shardproto.ErrProtocol, 0},
		{"not found", rewrite(func(w http.ResponseWriter, r *http.Request, next http.Handler) { http.NotFound(w, r) }), shardproto.ErrNotFound, 0},
		{"busy", rewrite(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}), shardproto.ErrRemote, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := seed(t, c.wrap, dir)
			idx, _, err := read(client(t, srv.URL, httpseed.Options{}), sh, 0, n)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), srv.URL+shardURL) || len(idx) != c.blocks {
				t.Fatalf("%v after blocks %v; want %v naming the URL after %d blocks", err, idx, c.want, c.blocks)
			}
		})
	}
}

// A seed that ignores Range (HTTP 200, the whole shard) still gives the
// blocks asked for.
func TestReadBlocksNoRange(t *testing.T) {
	dir, _, m := model(t, 1, nil)
	sh := m.Shards[0]
	srv := seed(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Range")
			next.ServeHTTP(w, r)
		})
	}, dir)
	file, _ := os.ReadFile(filepath.Join(dir, sh.Hash.String()))
	idx, got, err := read(client(t, srv.URL, httpseed.Options{}), sh, 2, 3)
	if err != nil || len(idx) != 3 || !bytes.Equal(got, file[2<<10:5<<10]) {
		t.Fatalf("blocks %v, %v", idx, err)
	}
}

// Cancelling the context ends a request whose body stalls, promptly; an
// error from fn is returned as is.
func TestReadBlocksCancel(t *testing.T) {
	dir, _, m := model(t, 1, nil)
	sh := m.Shards[0]
	srv := seed(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			w.Header().Set("Content-Range", rec.Header().Get("Content-Range"))
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()[:1<<10])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // stall
		})
	}, dir)
	c := client(t, srv.URL, httpseed.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	err := c.ReadBlocks(ctx, sh, 0, 4, func(i int, data []byte) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v, want context.Canceled at once", err, time.Since(start))
	}
	stop := errors.New("stop")
	if err := c.ReadBlocks(context.Background(), sh, 0, 4, func(int, []byte) error { return stop }); err != stop {
		t.Fatalf("%v, want fn's error as is", err)
	}
}

func TestParseBase(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
		{"https://example.org/doppler/", "https://example.org/doppler"},
		{"HTTP://[::1]:80", "http://[::1]:80"},
		{"ftp://example.org", ""},
		{"127.0.0.1:8080", ""},
		{"http://", ""},
		{"http:opaque", ""},
		{"http://user:pw@example.org", ""},
		{"http://example.org/?x=1", ""},
		{"http://example.org/#frag", ""},
		{"", ""},
	} {
		got, err := httpseed.ParseBase(c.in)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("ParseBase(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", c.in)) {
			t.Errorf("ParseBase(%q): %v does not name the URL", c.in, err)
		}
	}
}
