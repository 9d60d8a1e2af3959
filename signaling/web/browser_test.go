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
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/browsertest"
	"github.com/doppler-llm/doppler/internal/testdata"
	"github.com/doppler-llm/doppler/rdrr"
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
	RejectedBlocks int      `json:"rejectedBlocks"`
	Rejected       []string `json:"rejected"`
}

// node is an in-process DOPPLER node serving one model to browsers: the
// HTTP seed, signaling, the page.
type node struct {
	url   string
	id    rdrr.ModelID
	store *swarm.Store
	size  int64
}

// startNode converts stories260K into small shards (several shards, many
// blocks) and serves it on 127.0.0.1.
func startNode(t *testing.T) *node {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "model")
	_, err := rdrr.Convert(ctx, testdata.Path(t, "models/stories260K.gguf"), dir,
		rdrr.ConvertOptions{Writer: rdrr.WriterOptions{ShardSize: 256 << 10, BlockSize: 16 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := swarm.Open(filepath.Join(t.TempDir(), "store"), 0, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	id, err := st.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	status, _ := st.Status(id)
	sig := signaling.New(signaling.Options{Allow: func(room rdrr.ModelID) bool { return room == id }})
	mux := http.NewServeMux()
	mux.Handle("/signal", sig.Handler())
	mux.Handle("/d", web.Handler())
	mux.Handle("/d/", web.Handler())
	mux.Handle("/", signaling.NewSeed(st, slog.Default()).Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sig.Shutdown(ctx)
		srv.Shutdown(ctx)
	})
	return &node{url: "http://" + ln.Addr().String(), id: id, store: st, size: status.Bytes}
}

func loadGolden(t *testing.T) golden {
	b, err := os.ReadFile(testdata.Path(t, "golden/stories260K.once.json"))
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
	opts = append([]browsertest.Option{
		browsertest.WithFlag("allow-loopback-in-peer-connection", true),
	}, opts...)
	return browsertest.New(t, opts...)
}

func run(t *testing.T, p *browsertest.Page, url string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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
	n := startNode(t)
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
	t.Logf("text %q; bytes %+v", r.Text, r.BytesByTransport)
	if got := r.BytesByTransport.WebRTC + r.BytesByTransport.HTTP; got < n.size {
		t.Fatalf("downloaded %d bytes of a %d-byte model", got, n.size)
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
