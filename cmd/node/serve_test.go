package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/p2p/rtc"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/swarm"
)

// TestServeWebRTC: doppler serve, and doppler node --http, answer a WebRTC
// client (a Go rtc.Peer standing in for a browser) that signals through
// /signal: it fetches the manifest and every block of every shard over the
// data channels, gets the node's inventory, and the command shuts down
// cleanly when its context ends.
func TestServeWebRTC(t *testing.T) {
	tmp := t.TempDir()
	dir := convertStories(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// doppler node serves what its store holds: import it beforehand.
	nodeStore := filepath.Join(tmp, "node-store")
	st, err := swarm.Open(nodeStore, swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.ImportDir(ctx, dir)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		args []string
		p2p  bool // a libp2p listening line comes first
	}{
		{"serve", []string{"serve", dir, "--http", "127.0.0.1:0", "--store", filepath.Join(tmp, "serve-store")}, false},
		{"node", []string{"node", "--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--store", nodeStore}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			url, addrs, done := startCommandAddrs(t, ctx, cancel, c.args, id, c.p2p)
			webrtcFetch(t, ctx, url, id, dir)
			apiCheck(t, ctx, url, id)
			metricsCheck(t, ctx, url, id, dir, addrs)
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s after cancel: %v", c.name, err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s did not return within 20 s of its context's end", c.name)
			}
		})
	}
}

// convertStories converts stories260K to an RDRR directory with 64 KiB
// blocks (several per shard, non-trivial proofs).
func convertStories(t *testing.T) string {
	t.Helper()
	return testmodel.Convert(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{BlockSize: 64 << 10})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apiCheck is what an application does with a node at url: waits for
// /health, lists the models, asks for a greedy completion of "Once upon a
// time" (a prefix of llama.cpp's golden) and reads the token counter in
// /metrics.
func apiCheck(t *testing.T, ctx context.Context, url string, id rdrr.ModelID) {
	t.Helper()
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, url+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	waitUntil(t, "/health to answer 200", func() bool { code, _ := do("GET", "/health", ""); return code == 200 })
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object string
		} `json:"data"`
	}
	if code, body := do("GET", "/v1/models", ""); code != 200 || json.Unmarshal([]byte(body), &list) != nil ||
		list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != id.String() || list.Data[0].Object != "model" {
		t.Fatalf("GET /v1/models: %d %s", code, body)
	}
	var res struct {
		Choices []struct{ Text string }
	}
	code, body := do("POST", "/v1/completions", `{"prompt":"Once upon a time","max_tokens":16,"temperature":0}`)
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || len(res.Choices) != 1 {
		t.Fatalf("POST /v1/completions: %d %s", code, body)
	}
	var g struct{ Text string }
	b, err := os.ReadFile(testenv.Path(t, "golden/stories260K.once.json"))
	if err != nil || json.Unmarshal(b, &g) != nil {
		t.Fatalf("golden: %v", err)
	}
	if res.Choices[0].Text == "" || !strings.HasPrefix(g.Text, res.Choices[0].Text) {
		t.Errorf("completion %q is not a prefix of llama.cpp's %q", res.Choices[0].Text, g.Text)
	}
	if code, body := do("GET", "/metrics", ""); code != 200 || !strings.Contains(body, `doppler_tokens_generated_total{model="`+id.String()+`"} 16`) {
		t.Errorf("GET /metrics: %d, no doppler_tokens_generated_total of 16", code)
	}
}

// metricsCheck checks the swarm's series on /metrics of a node at url
// that served model id (the RDRR directory dir) once over WebRTC
// (webrtcFetch): it fetches a shard over the HTTP seed and, when the node
// listens on libp2p (addrs), pulls the model over libp2p into a store of
// its own; the node's served bytes by transport must count each.
func metricsCheck(t *testing.T, ctx context.Context, url string, id rdrr.ModelID, dir string, addrs []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rdrr.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.Shards[0]
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/rdrr/v1/shards/"+sh.Hash.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != sh.Size {
		t.Fatalf("GET shard %s over HTTP: %d bytes, want %d", sh.Hash.Short(), n, sh.Size)
	}
	want := map[string]float64{"webrtc": float64(m.TotalSize()), "http": float64(sh.Size), "libp2p": 0}
	if len(addrs) > 0 {
		if o, err := cliContext(ctx, "pull", id.String(), "--peer", addrs[0], "--store", t.TempDir()); err != nil {
			t.Fatalf("pull over libp2p: %v\n%s", err, o)
		}
		want["libp2p"] = float64(m.TotalSize())
	}
	body := scrape(t, ctx, url)
	for tr, min := range want {
		got := metricValue(t, body, `doppler_shard_bytes_total{direction="served",transport="`+tr+`"}`)
		if got < min || (min == 0 && got != 0) {
			t.Errorf("shard bytes served over %s: %v, want at least %v", tr, got, min)
		}
	}
	if got := metricValue(t, body, "doppler_store_bytes"); got != float64(m.TotalSize()) {
		t.Errorf("doppler_store_bytes %v, want the model's %d", got, m.TotalSize())
	}
	for _, series := range []string{"doppler_peers_banned", "doppler_store_blocks_bad_total", `doppler_prefill_offloads_total{role="served"}`,
		`doppler_peers_connected{transport="libp2p"}`, `doppler_shard_bytes_total{direction="fetched",transport="http"}`} {
		metricValue(t, body, series) // present, whatever the value
	}
}

// scrape returns the text of url's /metrics.
func scrape(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %v", resp.Status, err)
	}
	return string(b)
}

// metricValue returns the value of series (name{labels}, labels in
// name order, as Prometheus writes them) in a text exposition.
func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("%s: value %q: %v", series, v, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return 0
}

// Bad HTTP flags fail at once, before the model is imported.
func TestServeFlags(t *testing.T) {
	tmp := t.TempDir()
	missing := filepath.Join(tmp, "missing.pem")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "nonexistent-model", "--tls-cert", missing}, "go together"},
		{[]string{"serve", "nonexistent-model", "--tls-key", missing}, "go together"},
		{[]string{"serve", "nonexistent-model", "--tls-cert", missing, "--tls-key", missing}, "--tls-cert/--tls-key"},
		{[]string{"node", "--store", tmp, "--tls-cert", missing, "--tls-key", missing}, "needs --http"},
		{[]string{"serve", convertStories(t), "--http", "256.0.0.1:0", "--store", tmp}, "--http 256.0.0.1:0"},
		{[]string{"serve", "nonexistent-model", "--http", "0.0.0.0:0"}, "--api-key"},
		{[]string{"node", "--store", tmp, "--http", "[::]:0"}, "--api-key"},
	} {
		_, err := doppler(t, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
}

// startCommand runs the CLI with args in-process until ctx ends and waits
// for its ready lines: "listening http://…" and "serving <id>" (after the
// libp2p listening lines when p2p). It returns the HTTP URL and the
// command's result.
func startCommand(t *testing.T, ctx context.Context, cancel func(), args []string, id rdrr.ModelID, p2p bool) (string, <-chan error) {
	t.Helper()
	url, _, done := startCommandAddrs(t, ctx, cancel, args, id, p2p)
	return url, done
}

// startCommandAddrs is startCommand that also returns the libp2p
// listening addresses.
func startCommandAddrs(t *testing.T, ctx context.Context, cancel func(), args []string, id rdrr.ModelID, p2p bool) (string, []string, <-chan error) {
	t.Helper()
	var out lockedBuf
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	done := make(chan error, 1)
	go func() {
		done <- root.ExecuteContext(ctx)
		close(done) // the cleanup's receive returns once the result is taken
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("%s still running", args[0])
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		lines := strings.Split(out.String(), "\n")
		if slices.Contains(lines, "serving "+id.String()) {
			var listening []string
			for _, l := range lines {
				if a, ok := strings.CutPrefix(l, "listening "); ok {
					listening = append(listening, a)
				}
			}
			if len(listening) == 0 {
				t.Fatalf("no listening line:\n%s", out.String())
			}
			if p2p && !strings.HasPrefix(listening[0], "/ip4/127.0.0.1/tcp/") {
				t.Fatalf("first listening line %q: want the libp2p address first", listening[0])
			}
			url := listening[len(listening)-1]
			if !strings.HasPrefix(url, "http://127.0.0.1:") && !strings.HasPrefix(url, "https://127.0.0.1:") {
				t.Fatalf("last listening line %q: want http(s)://127.0.0.1:port", url)
			}
			return url, listening[:len(listening)-1], done
		}
		select {
		case err := <-done:
			t.Fatalf("%s exited: %v\n%s", args[0], err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s printed no serving line within a minute:\n%s", args[0], out.String())
		}
	}
}

// webrtcFetch does what a browser does against a node at url: joins model
// id's room at /signal, offers to the node (its one peer), trickles
// candidates, then fetches the manifest and every block over the data
// channels and checks them against the RDRR directory dir; the node's
// inventory must say it holds the model. The HTTP seed and the page at /d
// are checked too.
func webrtcFetch(t *testing.T, ctx context.Context, url string, id rdrr.ModelID, dir string) {
	t.Helper()
	get := func(path string) (*http.Response, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	if resp, body := get("/rdrr/v1/models"); resp.StatusCode != http.StatusOK || !strings.Contains(body, id.String()) {
		t.Fatalf("GET /rdrr/v1/models: %s %s", resp.Status, body)
	}
	if resp, _ := get("/d"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /d: %s %s, want the page", resp.Status, resp.Header.Get("Content-Type"))
	}

	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/signal?room="+id.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() (signaling.Message, error) {
		var m signaling.Message
		_, b, err := ws.Read(ctx)
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		return m, err
	}
	write := func(m signaling.Message) error {
		b, _ := json.Marshal(m)
		return ws.Write(ctx, websocket.MessageText, b)
	}
	welcome, err := read()
	if err != nil || welcome.Type != signaling.TypeWelcome || len(welcome.Peers) != 1 {
		t.Fatalf("welcome %+v, %v: want the node as the one peer", welcome, err)
	}
	node := welcome.Peers[0]

	p, offer, err := rtc.Dial(ctx, rtc.Options{Loopback: true, PeerID: "node", FrameTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	invs := make(chan *wire.Inventory, 8)
	p.OnInventory(func(inv *wire.Inventory) {
		select {
		case invs <- inv:
		default:
		}
	})
	sdp, _ := json.Marshal(map[string]string{"type": "offer", "sdp": offer})
	if err := write(signaling.Message{Type: signaling.TypeOffer, To: node, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
	p.OnCandidate(func(c string) {
		write(signaling.Message{Type: signaling.TypeCandidate, To: node, Candidate: json.RawMessage(c)})
	})
	// The node's answer and candidates, until the socket closes.
	relayed := make(chan error, 1)
	go func() {
		for {
			m, err := read()
			if err != nil {
				relayed <- nil
				return
			}
			switch m.Type {
			case signaling.TypeAnswer:
				err = p.Accept(ctx, string(m.SDP))
			case signaling.TypeCandidate:
				err = p.AddCandidate(string(m.Candidate))
			}
			if err != nil {
				relayed <- fmt.Errorf("%s from the node: %w", m.Type, err)
				return
			}
		}
	}()
	defer func() {
		ws.Close(websocket.StatusNormalClosure, "")
		if err := <-relayed; err != nil {
			t.Error(err)
		}
	}()

	man, _, err := p.Manifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile)); !bytes.Equal(man, want) {
		t.Fatal("manifest differs from the directory's")
	}
	m, err := rdrr.ParseManifest(man)
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, sh := range m.Shards {
		var got []byte
		err := p.ReadBlocks(ctx, sh, 0, len(sh.Blocks), func(i int, data []byte) error {
			got = append(got, data...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := os.ReadFile(filepath.Join(dir, sh.Hash.String())); !bytes.Equal(got, want) {
			t.Fatalf("shard %s differs from the directory's", sh.Hash.Short())
		}
		blocks += len(sh.Blocks)
	}
	select {
	case inv := <-invs:
		if inv.Model != id || inv.Have.Count() != len(m.Shards) || !slices.Contains(inv.Models, id) {
			t.Fatalf("inventory %+v: want model %s complete", inv, id.Short())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no inventory from the node")
	}
	// Its inventory channel open, this client is the node's one browser.
	if got := metricValue(t, scrape(t, ctx, url), `doppler_peers_connected{transport="webrtc"}`); got != 1 {
		t.Errorf("doppler_peers_connected{transport=\"webrtc\"} %v while connected, want 1", got)
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	t.Logf("%d shards, %d blocks over WebRTC from %s", len(m.Shards), blocks, url)
}
