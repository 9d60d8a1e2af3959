//go:build js && wasm

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall/js"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
)

// options are the page's parameters (the automation contract's URL).
type options struct {
	model    string
	prompt   string
	n        int
	temp     float64
	autorun  bool
	debug    bool
	loopback bool
	base     string
}

func main() {
	js.Global().Set("doppler", object(map[string]any{
		"start": js.FuncOf(func(_ js.Value, args []js.Value) any {
			if len(args) == 0 || args[0].Type() != js.TypeObject {
				return "start needs an options object"
			}
			o := parseOptions(args[0])
			go start(o)
			return nil
		}),
	}))
	if f := js.Global().Get("dopplerReady"); f.Type() == js.TypeFunction {
		f.Invoke()
	}
	select {}
}

func parseOptions(v js.Value) options {
	str := func(k string) string {
		if x := v.Get(k); x.Type() == js.TypeString {
			return x.String()
		}
		return ""
	}
	num := func(k string, def float64) float64 {
		if x := v.Get(k); x.Type() == js.TypeNumber {
			return x.Float()
		}
		return def
	}
	loc := js.Global().Get("location")
	host := loc.Get("hostname").String()
	return options{
		model: str("model"), prompt: str("prompt"), n: int(num("n", 64)), temp: num("temp", 0.8),
		autorun: v.Get("autorun").Truthy(), debug: v.Get("debug").Truthy(),
		loopback: host == "127.0.0.1" || host == "localhost" || host == "[::1]" || strings.HasPrefix(host, "127."),
		base:     loc.Get("origin").String(),
	}
}

// start runs the page: join, download, load, and generate (at once with
// autorun, else on the page's request).
func start(o options) {
	u := &ui{}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
	ctx := context.Background()
	if err := run(ctx, log, u, o); err != nil {
		u.fail(err)
	}
}

func run(ctx context.Context, log *slog.Logger, u *ui, o options) error {
	id, err := rdrr.ParseHash(o.model)
	if err != nil {
		return fmt.Errorf("model %q: not a model ID (64 hex digits)", o.model)
	}
	u.phase("joining")
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	c := newClient(ctx, log, u, st, o.base, id, o.loopback)
	// A model already whole in OPFS needs no peer: join only to serve.
	stored, err := st.Load(id)
	if err != nil {
		return err
	}
	held, total := st.Held(id)
	whole := stored && held == total
	if whole {
		u.log("info", "model found in OPFS")
	}
	if err := c.join(!whole); err != nil {
		u.log("warn", fmt.Sprintf("signaling: %v; downloading over HTTP only", err))
	}
	go c.report()
	if err := c.manifest(); err != nil {
		return err
	}
	u.phase("downloading")
	if err := c.download(); err != nil {
		return err
	}
	u.phase("loading")
	g, err := c.load(ctx)
	if err != nil {
		return err
	}
	c.gen = g
	if o.autorun {
		return c.generate(ctx, o.prompt, o.n, o.temp)
	}
	js.Global().Get("doppler").Set("generate", js.FuncOf(func(_ js.Value, args []js.Value) any {
		if len(args) == 0 {
			return nil
		}
		p := parseOptions(args[0])
		go func() {
			if err := c.generate(ctx, p.prompt, p.n, p.temp); err != nil {
				u.fail(err)
			}
		}()
		return nil
	}))
	u.phase("ready")
	return nil
}

// generator is the loaded engine.
type generator struct {
	dev   *kernels.Device
	model *engine.Model
	tok   *tokenizer.Tokenizer
	load  time.Duration
}

// load opens the model from OPFS and uploads it to the GPU.
func (c *client) load(ctx context.Context) (*generator, error) {
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
	c.ui.log("info", fmt.Sprintf("WebGPU adapter: %s (%s)", info.Name, info.Type))
	m, err := engine.Load(ctx, dev, rm, engine.Options{Context: 256, Logger: c.log})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("load %s: %w", c.model.Short(), err)
	}
	g := &generator{dev: dev, model: m, tok: tok, load: time.Since(start)}
	c.ui.log("info", fmt.Sprintf("model loaded in %.2f s", g.load.Seconds()))
	return g, nil
}

// generate runs one prompt, streaming tokens into the page, and
// publishes the result.
func (c *client) generate(ctx context.Context, prompt string, n int, temp float64) error {
	g := c.gen
	if g == nil {
		return errors.New("model not loaded")
	}
	c.ui.phase("generating")
	ids := g.tok.Encode(prompt, true)
	sess, err := g.model.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	so := engine.DefaultSampleOptions()
	so.Temp = temp
	so.Seed = uint64(time.Now().UnixNano())
	// The result's text is the generated tokens decoded on their own (as
	// the CLI and llama.cpp's goldens do); the page shows them continuing
	// the prompt, leading space kept.
	stream, shown := g.tok.NewStreamDecoder(), g.tok.NewContinuationDecoder()
	var text strings.Builder
	opts := engine.GenerateOptions{Sample: so, MaxTokens: n, StopAtEOG: g.tok.IsEOG,
		OnToken: func(id int) error {
			text.WriteString(stream.Push(id))
			c.ui.token(shown.Push(id))
			return nil
		}}
	start := time.Now()
	res, err := sess.Generate(ctx, ids, opts)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	text.WriteString(stream.Flush())
	c.ui.token(shown.Flush())
	tokens := make([]any, len(res.Tokens))
	for i, t := range res.Tokens {
		tokens[i] = t
	}
	prompts := make([]any, len(ids))
	for i, t := range ids {
		prompts[i] = t
	}
	secs := time.Since(start).Seconds()
	lat := make([]any, len(res.Stats.TokenLatency))
	for i, d := range res.Stats.TokenLatency {
		lat[i] = float64(d.Microseconds()) / 1000
	}
	c.ui.done(map[string]any{
		"model":            c.model.String(),
		"promptTokens":     prompts,
		"tokens":           tokens,
		"text":             text.String(),
		"stopReason":       res.Reason,
		"bytesByTransport": map[string]any{"webrtc": float64(c.bytesRTC.Load()), "http": float64(c.bytesHTTP.Load())},
		"rejectedBlocks":   float64(c.nRejected.Load()),
		"rejected":         c.rejectedList(),
		"servedBlocks":     float64(c.served.Load()),
		"seconds":          secs,
		"prefillMs":        res.Stats.Prefill.Seconds() * 1000,
		"loadMs":           g.load.Seconds() * 1000,
		"tokenMs":          lat,
	})
	return nil
}

func (c *client) rejectedList() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]any, len(c.rejectedMsgs))
	for i, s := range c.rejectedMsgs {
		out[i] = s
	}
	return out
}

// report sends transport and peer status to the page every half second.
func (c *client) report() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
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
		c.ui.status(map[string]any{
			"self": c.self, "peers": peers, "held": float64(held), "total": float64(total),
			"webrtc": float64(c.bytesRTC.Load()), "http": float64(c.bytesHTTP.Load()),
			"rejected": float64(c.nRejected.Load()), "served": float64(c.served.Load()),
		})
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
	}
}
