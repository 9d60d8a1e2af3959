//go:build js && wasm

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall/js"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/p2p/sharelink"
	"github.com/doppler-llm/doppler/rdrr"
)

// defaultContext is the KV cache's length in tokens when load's options
// name none.
const defaultContext = 256

func main() {
	js.Global().Set("dopplerBridge", bridge())
	if f := js.Global().Get("dopplerBridgeReady"); f.Type() == js.TypeFunction {
		f.Invoke()
	}
	select {}
}

// loadOptions are the arguments of dopplerBridge.load (docs/sdk.md).
type loadOptions struct {
	base    string // the node the SDK connected to (an origin URL)
	model   string // a model ID or a share link
	context int    // KV cache length in tokens
	debug   bool
	// download: fetch and verify the model and keep serving it, but do not
	// load it on the GPU (a swarm peer only: the benchmark's browsers).
	download bool
	events   js.Value // {onPhase, onLog, onProgress, onStatus}, each optional
}

func parseLoadOptions(v js.Value) loadOptions {
	o := loadOptions{base: str(v, "base"), model: str(v, "model"), context: int(num(v, "context", defaultContext)),
		debug: v.Get("debug").Truthy(), download: v.Get("download").Truthy(), events: v}
	o.base = strings.TrimRight(o.base, "/")
	return o
}

func str(v js.Value, k string) string {
	if x := v.Get(k); x.Type() == js.TypeString {
		return x.String()
	}
	return ""
}

func num(v js.Value, k string, def float64) float64 {
	if x := v.Get(k); x.Type() == js.TypeNumber {
		return x.Float()
	}
	return def
}

// source is where a model comes from: its ID, the node whose signaling
// room to join and the HTTP seed to fall back on.
type source struct {
	model  rdrr.ModelID
	signal string // base URL of the node's /signal
	seed   string // base URL of the HTTP seed (sigwire.SeedPrefix below it)
}

// resolve reads a model ID or a share link (p2p/sharelink). A link with
// seeds sends both signaling and the HTTP fallback to its first seed — a
// node serves the two at one origin, and it is the node that holds the
// model, which the node at base may not; a seed that is a plain HTTP seed
// has no /signal, and the download then goes over HTTP only. A link
// without seeds, or a bare ID, uses the node at base. A link's libp2p
// peers are not reachable from a browser and are ignored.
func resolve(base, model string) (source, error) {
	if sharelink.Is(model) {
		l, err := sharelink.Parse(model)
		if err != nil {
			return source{}, err
		}
		s := source{model: l.Model, signal: base, seed: base}
		if len(l.Seeds) > 0 {
			s.signal, s.seed = l.Seeds[0], l.Seeds[0]
		}
		return s, nil
	}
	id, err := rdrr.ParseHash(model)
	if err != nil {
		return source{}, fmt.Errorf("model %q: neither a model ID (64 hex digits) nor a share link (doppler://…)", model)
	}
	return source{model: id, signal: base, seed: base}, nil
}

// loopbackURL reports whether a base URL's host is a loopback address or
// localhost: the client then keeps to 127.0.0.0/8 in WebRTC.
func loopbackURL(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// load joins the model's swarm, downloads what OPFS lacks, and loads the
// model onto WebGPU. The client returned runs until ctx ends and close.
func load(ctx context.Context, o loadOptions) (*client, error) {
	ev := &events{cb: o.events}
	src, err := resolve(o.base, o.model)
	if err != nil {
		return nil, err
	}
	if o.base == "" || src.seed == "" {
		return nil, errors.New("load: no node URL (base)")
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
	c, err := start(ctx, log, ev, src, o.context, o.download)
	if err != nil {
		if c != nil {
			c.close()
		}
		return nil, err
	}
	return c, nil
}

// start runs a load: join, download, load (not with downloadOnly: the
// phase is then "downloaded", and the client goes on serving). On an error
// the client, when there is one, is returned for closing.
func start(ctx context.Context, log *slog.Logger, ev *events, src source, ctxLen int, downloadOnly bool) (*client, error) {
	ev.phase("joining")
	st, err := openStore(ctx)
	if err != nil {
		return nil, err
	}
	c := newClient(ctx, log, ev, st, src, loopbackURL(src.signal))
	// A model already whole in OPFS needs no peer: join only to serve.
	stored, err := st.Load(src.model)
	if err != nil {
		return c, err
	}
	held, total := st.Held(src.model)
	whole := stored && held == total
	if whole {
		ev.log("info", "model found in OPFS")
	}
	if err := c.join(!whole); err != nil {
		ev.log("warn", fmt.Sprintf("signaling: %v; downloading over HTTP only", err))
	}
	go c.report()
	if err := c.manifest(); err != nil {
		return c, err
	}
	ev.phase("downloading")
	if err := c.download(); err != nil {
		return c, err
	}
	if downloadOnly {
		ev.phase("downloaded")
		return c, nil
	}
	ev.phase("loading")
	g, err := c.load(ctx, ctxLen)
	if err != nil {
		return c, err
	}
	c.gen = g
	ev.phase("ready")
	return c, nil
}

// close ends the client: signaling, peer connections, the engine and the
// GPU device. A generation in progress is interrupted.
func (c *client) close() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.sig != nil {
		c.sig.close()
	}
	c.mu.Lock()
	peers := make([]*rtcPeer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	for _, p := range peers {
		p.Close()
	}
	c.busy <- struct{}{} // wait for a generation to end
	defer func() { <-c.busy }()
	if g := c.gen; g != nil {
		c.gen = nil
		g.model.Close()
		g.dev.Close()
	}
}

// generator is the loaded engine.
type generator struct {
	dev   *kernels.Device
	model *engine.Model
	tok   *tokenizer.Tokenizer
	chat  string // the model's chat template; "" for none
	name  string // the manifest's name
	load  time.Duration
}

// load opens the model from OPFS and uploads it to the GPU.
func (c *client) load(ctx context.Context, ctxLen int) (*generator, error) {
	start := time.Now()
	sm, ok := c.store.Model(c.model)
	if !ok {
		return nil, errors.New("no manifest")
	}
	rm, err := rdrr.Open(sm.raw, sm.sig, c.store)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", c.model.Short(), err)
	}
	if rm.Manifest.Tokenizer == nil {
		return nil, fmt.Errorf("model %s has no tokenizer", c.model.Short())
	}
	tok, err := tokenizer.New(rm.Manifest.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("model %s: tokenizer: %w", c.model.Short(), err)
	}
	dev, err := kernels.Open(kernels.Options{Logger: c.log})
	if err != nil {
		return nil, fmt.Errorf("WebGPU: %w", err)
	}
	info := dev.Info()
	c.ev.log("info", fmt.Sprintf("WebGPU adapter: %s (%s)", info.Name, info.Type))
	m, err := engine.Load(ctx, dev, rm, engine.Options{Context: ctxLen, Logger: c.log})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("load %s: %w", c.model.Short(), err)
	}
	g := &generator{dev: dev, model: m, tok: tok, chat: rm.Manifest.Tokenizer.ChatTemplate, name: rm.Manifest.Name, load: time.Since(start)}
	c.ev.log("info", fmt.Sprintf("model loaded in %.2f s", g.load.Seconds()))
	return g, nil
}

// report sends transport and peer status every half second.
func (c *client) report() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		c.ev.status(c.status())
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
	}
}

// status is the client's transports and peers now.
func (c *client) status() map[string]any {
	peers := []any{}
	for _, p := range c.usablePeers() {
		have := 0
		if inv := p.Inventory(); inv != nil {
			for i := range inv.Have.N {
				if inv.Have.Has(i) {
					have++
				}
			}
		}
		peers = append(peers, map[string]any{"id": p.id, "down": float64(p.down.Load()), "up": float64(p.up.Load()), "shards": have})
	}
	held, total := c.store.Held(c.model)
	return map[string]any{
		"self": c.self, "peers": peers, "held": float64(held), "total": float64(total),
		"webrtc": float64(c.bytesRTC.Load()), "http": float64(c.bytesHTTP.Load()),
		"rejected": float64(c.nRejected.Load()), "served": float64(c.served.Load()),
	}
}
