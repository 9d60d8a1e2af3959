//go:build !js

package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/internal/browsertest"
	"github.com/doppler-llm/doppler/p2p/sharelink"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/signaling/web"
)

// site is a real node's HTTP side (signaling.Site: signaling, the WebRTC
// gateway, the seed, the page and the SDK) on 127.0.0.1.
type site struct {
	url  string
	id   rdrr.ModelID // the model served; zero for an empty node
	m    *rdrr.Manifest
	size int64
}

// startSite serves model (see storeWith; "-" for none) from a
// signaling.Site until the test ends.
func startSite(t *testing.T, model string) *site {
	t.Helper()
	st, id, m, size := storeWith(t, model)
	var models []rdrr.ModelID
	if m != nil {
		models = []rdrr.ModelID{id}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := signaling.StartSite(ctx, st, signaling.SiteOptions{Addr: "127.0.0.1:0", Models: models, Logger: slog.Default()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("site: %v", err)
		}
	})
	return &site{url: s.URL(), id: id, m: m, size: size}
}

// serveOther serves html at / on another port of 127.0.0.1: another
// origin than any node's.
func serveOther(t *testing.T, html string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, html)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String()
}

// TestSDKServed: the node serves the SDK as JavaScript, and the SDK, its
// glue and the wasm to every origin; its signaling accepts a page of
// another origin.
func TestSDKServed(t *testing.T) {
	s := startSite(t, "")
	for _, c := range []struct{ path, ctype string }{
		{web.SDKPath, "text/javascript"},
		{"/d/wasm_exec.js", "text/javascript"},
		{"/d/doppler.wasm", "application/wasm"},
	} {
		req, _ := http.NewRequest(http.MethodGet, s.url+c.path, nil)
		req.Header.Set("Origin", "http://127.0.0.1:1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s: %s, Content-Type %q, Access-Control-Allow-Origin %q; want 200, %s, *", c.path, resp.Status,
				resp.Header.Get("Content-Type"), resp.Header.Get("Access-Control-Allow-Origin"), c.ctype)
		}
	}
	if resp, err := http.Get(s.url + "/sdk/other.js"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /sdk/other.js: %v %v; want 404", resp.Status, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/signal?room="+s.id.String(),
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://127.0.0.1:1"}}})
	if err != nil {
		t.Fatalf("signaling from another origin: %v", err)
	}
	defer c.CloseNow()
	var welcome struct{ Type string }
	_, b, err := c.Read(ctx)
	if err != nil || json.Unmarshal(b, &welcome) != nil || welcome.Type != "welcome" {
		t.Fatalf("signaling from another origin: %s, %v; want a welcome", b, err)
	}
}

// sdkPage is the test page of another origin: it imports the SDK from the
// node, loads the model with a progress callback, streams a prompt's
// tokens, runs one chat turn, and reports in the page protocol.
const sdkPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>SDK test</title></head>
<body data-state="loading"><pre id="log"></pre>
<script type="module">
const node = %s, model = %s, prompt = %s, n = %d;
const log = (s) => { document.getElementById("log").textContent += s + "\n"; };
try {
  const { connect } = await import(node + "/sdk/doppler.js");
  const nd = await connect(node);
  const models = (await nd.models()).map((m) => m.id);
  const progress = [];
  const m = await nd.load(model, {
    onProgress: (p) => { progress.push({ bytes: p.bytes, total: p.total }); log("progress " + p.bytes + " of " + p.total); },
    onPhase: (p) => log("phase " + p),
  });
  let text = "";
  const tokens = [];
  const gen = m.generate(prompt, { maxTokens: n, temperature: 0 });
  for await (const tok of gen) {
    text += tok.text;
    if (tok.id !== undefined) tokens.push(tok.id);
    log("token " + JSON.stringify(tok.text));
  }
  const res = await gen.result;
  let reply = "";
  for await (const tok of m.chat([{ role: "user", content: "Hi" }], { maxTokens: 16, temperature: 0 })) reply += tok.text;
  log("chat " + JSON.stringify(reply));
  // Leaving the loop early stops the generation.
  const cut = m.generate(prompt, { maxTokens: 1000, temperature: 0 });
  let seen = 0;
  for await (const tok of cut) if (++seen === 2) break;
  const cutRes = await cut.result;
  const status = m.status();
  await m.unload();
  let afterUnload = "";
  try { await m.generate(prompt, { maxTokens: 1 }).result; } catch (e) { afterUnload = e.message; }
  window.dopplerResult = { origin: location.origin, models, id: m.id, progress, text, tokens, reply,
    bytesByTransport: res.bytesByTransport, peers: status.peers.length,
    cut: { stopReason: cutRes.stopReason, tokens: cutRes.tokens.length }, afterUnload };
  document.body.dataset.state = "done";
} catch (e) {
  document.body.dataset.error = String((e && e.stack) || e);
  document.body.dataset.state = "error";
}
</script></body></html>`

// TestSDKCrossOrigin: a page served from another origin imports
// /sdk/doppler.js from a node, loads stories260K in the page (WebRTC from
// the node, verified, OPFS, WebGPU) reporting progress, streams llama.cpp's
// greedy continuation and answers a chat turn.
func TestSDKCrossOrigin(t *testing.T) {
	browsertest.Chromium(t)
	s := startSite(t, "")
	g := loadGolden(t)
	const n = 16
	tk, err := tokenizer.New(s.m.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	want := tk.Decode(g.Generated[:n])
	if !strings.HasPrefix(g.Text, want) || want == "" {
		t.Fatalf("the golden's first %d tokens decode to %q, not a prefix of its text %q", n, want, g.Text)
	}
	q := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	other := serveOther(t, fmt.Sprintf(sdkPage, q(s.url), q(s.id.String()), q(g.Prompt), n))
	p, err := newBrowser(t).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := p.Progress(context.Background(), browsertest.Stall)
	defer cancel()
	raw, err := p.Run(ctx, other+"/")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Origin   string
		Models   []string
		ID       string
		Progress []struct{ Bytes, Total int64 }
		Text     string
		Tokens   []int
		Reply    string
		Peers    int
		Bytes    struct{ WebRTC, HTTP int64 } `json:"bytesByTransport"`
		Cut      struct {
			StopReason string
			Tokens     int
		}
		AfterUnload string
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("dopplerResult %s: %v", raw, err)
	}
	t.Logf("text %q, chat %q, %d progress reports, bytes %+v", r.Text, r.Reply, len(r.Progress), r.Bytes)
	if r.Origin == s.url || r.ID != s.id.String() || !slices.Contains(r.Models, s.id.String()) {
		t.Fatalf("page at %s (node %s) loaded %s from the list %v", r.Origin, s.url, r.ID, r.Models)
	}
	if r.Text != want || !slices.Equal(r.Tokens, g.Generated[:n]) {
		t.Fatalf("streamed %q %v\nwant     %q %v", r.Text, r.Tokens, want, g.Generated[:n])
	}
	if len(r.Progress) < 2 {
		t.Fatalf("progress reported %d times: %+v", len(r.Progress), r.Progress)
	}
	for i, pr := range r.Progress {
		if pr.Total != s.size || (i > 0 && pr.Bytes < r.Progress[i-1].Bytes) {
			t.Fatalf("progress %+v: want byte counts that never fall, of %d", r.Progress, s.size)
		}
	}
	if first, last := r.Progress[0].Bytes, r.Progress[len(r.Progress)-1].Bytes; first >= last || last != s.size {
		t.Fatalf("progress from %d to %d bytes; want it to increase to %d", first, last, s.size)
	}
	if r.Bytes.WebRTC < s.size || r.Peers == 0 {
		t.Fatalf("bytes %+v with %d peers: the %d-byte model should come over WebRTC from the node", r.Bytes, r.Peers, s.size)
	}
	if strings.TrimSpace(r.Reply) == "" {
		t.Fatalf("chat answered %q", r.Reply)
	}
	if r.Cut.StopReason != "interrupted" || r.Cut.Tokens < 2 || r.Cut.Tokens >= 1000 {
		t.Fatalf("a generation left after 2 tokens: %+v; want it interrupted", r.Cut)
	}
	if !strings.Contains(r.AfterUnload, "unloaded") {
		t.Fatalf("generate after unload: error %q", r.AfterUnload)
	}
}

// TestPageShareLink: the page of a node that does not hold the model
// takes a share link (p2p/sharelink) naming another node's seed, joins
// that node's room across origins, and generates the golden.
func TestPageShareLink(t *testing.T) {
	browsertest.Chromium(t)
	holder := startSite(t, "")
	empty := startSite(t, "-")
	g := loadGolden(t)
	link := sharelink.Link{Model: holder.id, Seeds: []string{holder.url}}.String()
	if _, err := sharelink.Parse(link); err != nil {
		t.Fatal(err)
	}
	p, err := newBrowser(t).NewPage()
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, p, empty.url+"/d?link="+urlEscape(link)+"&prompt="+urlEscape(g.Prompt)+"&n="+itoa(len(g.Generated))+"&temp=0&autorun=1")
	if !slices.Equal(r.Tokens, g.Generated) {
		t.Fatalf("tokens %v\nwant   %v", r.Tokens, g.Generated)
	}
	if r.BytesByTransport.WebRTC < holder.size || r.BytesByTransport.HTTP != 0 {
		t.Fatalf("bytes %+v for a %d-byte model: want all over WebRTC from the link's node", r.BytesByTransport, holder.size)
	}
	// A bad link is refused with the parser's message.
	var state, msg string
	ctx, cancel := p.Progress(context.Background(), browsertest.Stall)
	defer cancel()
	if err := p.Open(ctx, empty.url+"/d?link="+urlEscape("doppler://nothex")+"&autorun=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); !errors.Is(err, browsertest.ErrPage) {
		t.Fatalf("a bad link: %v; want the page's error", err)
	}
	p.Eval(ctx, `document.body.dataset.state`, &state)
	p.Eval(ctx, `document.body.dataset.error`, &msg)
	if !strings.Contains(msg, "share link") {
		t.Fatalf("a bad link: state %q, error %q", state, msg)
	}
}
