//go:build !js

package web_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/browsertest"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/signaling/web"
	"github.com/doppler-llm/doppler/swarm"
)

// golden is ../shared/golden/stories260K.once.json.
type golden struct {
	Prompt    string `json:"prompt"`
	Generated []int  `json:"generated"`
	Text      string `json:"text"`
}

// result is window.dopplerResult.
type result struct {
	Tokens           []int  `json:"tokens"`
	Text             string `json:"text"`
	BytesByTransport struct {
		WebRTC int64 `json:"webrtc"`
		HTTP   int64 `json:"http"`
	} `json:"bytesByTransport"`
	RejectedBlocks int       `json:"rejectedBlocks"`
	Rejected       []string  `json:"rejected"`
	PrefillMs      float64   `json:"prefillMs"`
	TokenMs        []float64 `json:"tokenMs"`
}

// node is an in-process DOPPLER node serving one model to browsers: the
// HTTP seed, signaling, the WebRTC gateway, the page.
type node struct {
	url    string
	id     rdrr.ModelID
	store  *swarm.Store
	size   int64
	shards []rdrr.Shard
	gw     *signaling.Gateway
}

// nodeOptions make a node misbehave on its WebRTC side (the HTTP seed
// stays honest).
type nodeOptions struct {
	model   string        // under ../shared/models; stories260K.gguf by default
	refuse  int           // 1 + the index of a shard the node neither announces nor serves
	corrupt int           // 1 + the index of a shard whose blocks it serves with a flipped byte
	slow    time.Duration // a delay before each block served (to watch a download)
}

// holdings wraps the store as the gateway sees it.
type holdings struct {
	*swarm.Store
	refuse, corrupt rdrr.Hash
	slow            time.Duration
}

func (h holdings) Shard(x rdrr.Hash) (rdrr.Shard, bool) {
	if x == h.refuse {
		return rdrr.Shard{}, false
	}
	return h.Store.Shard(x)
}

func (h holdings) Has(x rdrr.Hash) bool { return x != h.refuse && h.Store.Has(x) }

func (h holdings) ReadBlock(x rdrr.Hash, i int, p []byte) (int, error) {
	time.Sleep(h.slow)
	n, err := h.Store.ReadBlock(x, i, p)
	if x == h.corrupt && n > 0 {
		p[n/2] ^= 0x40
	}
	return n, err
}

// startNode converts stories260K into small shards (several shards, many
// blocks) and serves it on 127.0.0.1.
func startNode(t *testing.T, o nodeOptions) *node {
	t.Helper()
	ctx := context.Background()
	st, id, m, size := storeWith(t, o.model)
	relay, err := signaling.NewRelay(net.IPv4(127, 0, 0, 1), signaling.RelayOptions{Logger: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	sig := signaling.New(signaling.Options{Allow: func(room rdrr.ModelID) bool { return room == id },
		ICEServers: []signaling.ICEServer{relay.ICEServer()}})
	h := holdings{Store: st, slow: o.slow}
	if o.refuse > 0 {
		h.refuse = m.Shards[o.refuse-1].Hash
	}
	if o.corrupt > 0 {
		h.corrupt = m.Shards[o.corrupt-1].Hash
	}
	gw, err := signaling.NewGateway(sig, h, signaling.GatewayOptions{Loopback: true, ServeUnverified: o.corrupt > 0, Logger: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Add(ctx, id); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/signal", sig.Handler())
	mux.Handle("/d", web.Handler())
	mux.Handle("/d/", web.Handler())
	mux.Handle("/sdk/", web.Handler())
	mux.Handle("/", signaling.NewSeed(st, signaling.SeedOptions{Logger: slog.Default()}).Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gw.Close()
		sig.Shutdown(ctx)
		srv.Shutdown(ctx)
	})
	return &node{url: "http://" + ln.Addr().String(), id: id, store: st, size: size, shards: m.Shards, gw: gw}
}

// storeWith opens a store in a temporary directory and, unless model is
// "-", imports a model (under ../shared/models; stories260K.gguf when "")
// converted into small shards (several shards, many blocks). It returns
// the model's ID, manifest and size in bytes.
func storeWith(t *testing.T, model string) (*swarm.Store, rdrr.ModelID, *rdrr.Manifest, int64) {
	t.Helper()
	ctx := context.Background()
	st, err := swarm.Open(filepath.Join(t.TempDir(), "store"), swarm.StoreOptions{Logger: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if model == "-" {
		return st, rdrr.ModelID{}, nil, 0
	}
	dir := filepath.Join(t.TempDir(), "model")
	wo := rdrr.WriterOptions{ShardSize: 256 << 10, BlockSize: 16 << 10}
	if model == "" {
		model = "stories260K.gguf"
	} else {
		wo = rdrr.WriterOptions{ShardSize: 2 << 20, BlockSize: 64 << 10}
	}
	if _, err := convert.ToRDRR(ctx, testenv.Path(t, "models/"+model), dir, convert.Options{Writer: wo}); err != nil {
		t.Fatal(err)
	}
	id, err := st.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	status, _ := st.Status(id)
	raw, _, _ := st.Manifest(id)
	m, err := rdrr.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return st, id, m, status.Bytes
}

func loadGolden(t *testing.T) golden { return loadGoldenOf(t, "stories260K") }

// loadGoldenOf reads ../shared/golden/<model>.once.json.
func loadGoldenOf(t *testing.T, model string) golden {
	b, err := os.ReadFile(testenv.Path(t, "golden/"+model+".once.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func (n *node) pageURL(g golden) string {
	return n.url + "/d?model=" + n.id.String() + "&prompt=" + urlEscape(g.Prompt) + "&n=" + itoa(len(g.Generated)) + "&temp=0&autorun=1"
}

func newBrowser(t *testing.T, opts ...browsertest.Option) *browsertest.Browser {
	return browsertest.New(t, opts...)
}

// run opens url and waits for the page's result for as long as the page
// makes progress (browsertest.Stall): on a loaded machine it is slower,
// not failed.
func run(t *testing.T, p *browsertest.Page, url string) result {
	t.Helper()
	ctx, cancel := p.Progress(context.Background(), browsertest.Stall)
	defer cancel()
	raw, err := p.Run(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var r result
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("dopplerResult %s: %v", raw, err)
	}
	return r
}

// TestPageGeneratesGolden: the page downloads stories260K, keeps it in
// OPFS and generates llama.cpp's greedy continuation with WebGPU; a reload
// downloads nothing.
func TestPageGeneratesGolden(t *testing.T) {
	browsertest.Chromium(t)
	n := startNode(t, nodeOptions{})
	g := loadGolden(t)
	b := newBrowser(t)
	p, err := b.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, p, n.pageURL(g))
	if !slices.Equal(r.Tokens, g.Generated) {
		t.Fatalf("tokens %v\nwant   %v", r.Tokens, g.Generated)
	}
	t.Logf("text %q; bytes %+v; prefill %.0f ms; token ms %.0f", r.Text, r.BytesByTransport, r.PrefillMs, r.TokenMs)
	// Every byte came over WebRTC from the node: none from the HTTP seed.
	if r.BytesByTransport.WebRTC < n.size || r.BytesByTransport.HTTP != 0 || r.RejectedBlocks != 0 {
		t.Fatalf("model of %d bytes: got %+v, %d rejected blocks", n.size, r.BytesByTransport, r.RejectedBlocks)
	}
	// Reload: everything is in OPFS.
	r2 := run(t, p, n.pageURL(g))
	if !slices.Equal(r2.Tokens, g.Generated) {
		t.Fatalf("after reload: tokens %v", r2.Tokens)
	}
	if r2.BytesByTransport.WebRTC+r2.BytesByTransport.HTTP != 0 {
		t.Fatalf("reload downloaded %+v", r2.BytesByTransport)
	}
}

// TestTwoBrowsers: the node refuses one shard over WebRTC, so the first
// browser takes it from the HTTP seed; the second browser gets it from the
// first over a browser-to-browser data channel, verified, and nothing over
// HTTP.
func TestTwoBrowsers(t *testing.T) {
	browsertest.Chromium(t)
	const refused = 2
	n := startNode(t, nodeOptions{refuse: refused})
	g := loadGolden(t)
	short := golden{Prompt: g.Prompt, Generated: g.Generated[:4]}
	pa, err := newBrowser(t).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	ra := run(t, pa, n.pageURL(short))
	sh := n.shards[refused-1]
	if ra.BytesByTransport.HTTP < sh.Size || ra.BytesByTransport.WebRTC < n.size-sh.Size {
		t.Fatalf("first browser: %+v; the refused shard is %d of %d bytes", ra.BytesByTransport, sh.Size, n.size)
	}
	pb, err := newBrowser(t).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	rb := run(t, pb, n.pageURL(short))
	if !slices.Equal(rb.Tokens, short.Generated) {
		t.Fatalf("second browser: tokens %v, want %v", rb.Tokens, short.Generated)
	}
	if rb.BytesByTransport.HTTP != 0 || rb.BytesByTransport.WebRTC < n.size {
		t.Fatalf("second browser: %+v for a %d-byte model; the refused shard must come from the first browser", rb.BytesByTransport, n.size)
	}
	var served int
	if err := pa.Eval(context.Background(), `Number(document.getElementById("served").textContent)`, &served); err != nil {
		t.Fatal(err)
	}
	if want := len(sh.Blocks); served < want {
		t.Fatalf("first browser served %d blocks; the refused shard has %d", served, want)
	}
}

// TestCorruptPeer: the node serves one shard corrupted over WebRTC; the
// page rejects the block, names the peer, and completes from the HTTP
// seed with the golden output.
func TestCorruptPeer(t *testing.T) {
	browsertest.Chromium(t)
	n := startNode(t, nodeOptions{corrupt: 3})
	g := loadGolden(t)
	p, err := newBrowser(t).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, p, n.pageURL(g))
	if !slices.Equal(r.Tokens, g.Generated) {
		t.Fatalf("tokens %v\nwant   %v", r.Tokens, g.Generated)
	}
	nodeID, _ := n.gw.ID(n.id)
	if r.RejectedBlocks < 1 || len(r.Rejected) == 0 || !strings.Contains(r.Rejected[0], string(nodeID)) {
		t.Fatalf("rejected %d blocks: %q; want the node %s named", r.RejectedBlocks, r.Rejected, nodeID)
	}
	if r.BytesByTransport.HTTP < n.shards[2].BlockSize {
		t.Fatalf("bytes %+v: the corrupted shard must come from the HTTP seed", r.BytesByTransport)
	}
	t.Logf("rejected: %s", r.Rejected[0])
}

// TestPageScreenshots saves the page mid-download and after generation to
// $DOPPLER_SCREENSHOTS (skipped when unset): look at them after a change
// to the page.
func TestPageScreenshots(t *testing.T) {
	dir := os.Getenv("DOPPLER_SCREENSHOTS")
	if dir == "" {
		testenv.Skip(t, "opt-in: set DOPPLER_SCREENSHOTS to a directory")
	}
	browsertest.Chromium(t)
	n := startNode(t, nodeOptions{slow: 25 * time.Millisecond})
	g := loadGolden(t)
	p, err := newBrowser(t, browsertest.WithWindowSize(1280, 1000)).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := p.Progress(context.Background(), browsertest.Stall)
	defer cancel()
	if err := p.Open(ctx, n.pageURL(g)); err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		var pct float64
		p.Eval(ctx, `parseFloat(document.getElementById("bar-fill").style.width) || 0`, &pct)
		if pct >= 30 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Screenshot(ctx, filepath.Join(dir, "d-downloading.png")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Screenshot(ctx, filepath.Join(dir, "d-done.png")); err != nil {
		t.Fatal(err)
	}
}

// TestPageResumes: a visit cut off mid-download leaves verified blocks in
// OPFS; the next visit fetches only the rest and still matches the golden.
func TestPageResumes(t *testing.T) {
	browsertest.Chromium(t)
	n := startNode(t, nodeOptions{slow: 20 * time.Millisecond})
	g := loadGolden(t)
	short := golden{Prompt: g.Prompt, Generated: g.Generated[:4]}
	p, err := newBrowser(t).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := p.Progress(context.Background(), browsertest.Stall)
	defer cancel()
	if err := p.Open(ctx, n.pageURL(short)); err != nil {
		t.Fatal(err)
	}
	var held float64
	for ctx.Err() == nil && held < 0.3 {
		time.Sleep(20 * time.Millisecond)
		p.Eval(ctx, `parseFloat(document.getElementById("bar-fill").style.width) / 100 || 0`, &held)
	}
	if held >= 1 {
		t.Fatalf("the download finished before it could be cut off (%.0f%%)", 100*held)
	}
	r := run(t, p, n.pageURL(short)) // navigating away cuts the first visit off
	if !slices.Equal(r.Tokens, short.Generated) {
		t.Fatalf("tokens %v, want %v", r.Tokens, short.Generated)
	}
	got := r.BytesByTransport.WebRTC + r.BytesByTransport.HTTP
	if got >= n.size || got == 0 {
		t.Fatalf("second visit downloaded %d bytes of %d; it should resume from the first visit's blocks", got, n.size)
	}
	t.Logf("cut off at %.0f%%; the second visit downloaded %d of %d bytes", 100*held, got, n.size)
}

// TestPageMoE: the MoE families (Mixtral, GPT-OSS) run in the page too —
// routing and expert matmuls on WebGPU — token-exact against llama.cpp's
// greedy goldens, downloaded over WebRTC only.
func TestPageMoE(t *testing.T) {
	browsertest.Chromium(t)
	for _, model := range []string{"tiny-mixtral-F32", "tiny-gptoss-F32"} {
		t.Run(model, func(t *testing.T) {
			n := startNode(t, nodeOptions{model: model + ".gguf"})
			g := loadGoldenOf(t, model)
			p, err := newBrowser(t).NewPage()
			if err != nil {
				t.Fatal(err)
			}
			r := run(t, p, n.pageURL(g))
			if !slices.Equal(r.Tokens, g.Generated) {
				t.Fatalf("tokens %v\nwant   %v", r.Tokens, g.Generated)
			}
			if r.BytesByTransport.WebRTC < n.size || r.BytesByTransport.HTTP != 0 {
				t.Fatalf("bytes %+v for a %d-byte model", r.BytesByTransport, n.size)
			}
		})
	}
}
