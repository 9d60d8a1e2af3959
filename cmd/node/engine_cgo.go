//go:build cgo

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doppler-llm/doppler/api"
	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/repl"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// The engine wiring (engine.go says what it is for).

// The engine's session is what prefill offload needs.
var _ swarm.PrefillSession = (*engine.Session)(nil)

// engineAvailable reports that this build has the GPU engine.
func engineAvailable() error { return nil }

// defaultSampling is the engine's (llama.cpp's) sampling defaults.
func defaultSampling() sampling { return sampling(engine.DefaultSampleOptions()) }

// validate reports an out-of-range sampling value.
func (s sampling) validate() error { return engine.SampleOptions(s).Validate() }

// gpuModel is a model loaded on a GPU the wiring opened for it.
type gpuModel struct {
	dev   *kernels.Device
	model *engine.Model
}

func (g *gpuModel) Close() {
	g.model.Close()
	g.dev.Close()
}

// load opens the GPU --adapter names and loads src's model on it with the
// flags' engine options, its experts' routing hooked to the swarm when
// run joined it and pages experts.
func (f *runFlags) load(ctx context.Context, src *modelSource) (*gpuModel, error) {
	vram, err := f.expertVRAMBytes()
	if err != nil {
		return nil, err
	}
	eo := engine.Options{Context: f.ctxLen, KVF32: f.kvF32, Q8X: f.q8x, RoPEInAttention: f.ropeAttn, Batch: f.batch,
		ExpertCache: f.expertCache, ExpertVRAM: vram, Logger: slog.Default()}
	if tr := f.expertTracker(src, vram); tr != nil {
		hookExperts(&eo, tr)
	}
	dev, err := kernels.Open(kernels.Options{Adapter: f.adapter, Logger: slog.Default()})
	if err != nil {
		return nil, err
	}
	m, err := engine.Load(ctx, dev, src.rm, eo)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("%s: %w", f.modelName(), err)
	}
	return &gpuModel{dev: dev, model: m}, nil
}

// hookExperts makes the engine report each token's routing to tr (usage
// gossip) and read ahead the experts tr's clusters name.
func hookExperts(o *engine.Options, tr *swarm.ExpertTracker) {
	o.OnRoute = tr.OnRoute
	o.ExpertHints = func(layer int, experts []int) []engine.ExpertRef {
		hints := tr.Hints(layer, experts)
		if len(hints) == 0 {
			return nil
		}
		refs := make([]engine.ExpertRef, len(hints))
		for i, h := range hints {
			refs[i] = engine.ExpertRef(h)
		}
		return refs
	}
}

// generate loads src's model on the GPU and runs req: the prefill
// offloaded to a peer when req's policy allows, then the generation.
func generate(ctx context.Context, src *modelSource, f *runFlags, req genRequest) (*genResult, error) {
	g, err := f.load(ctx, src)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	sess, err := g.model.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	out := &genResult{reason: "length"}
	prompt := req.ids
	if req.offload.Mode != swarm.OffloadOff && src.node != nil {
		r, err := src.node.Offload(ctx, src.id, g.model.Config, sess, req.ids, req.offload)
		if err != nil {
			return nil, err
		}
		out.offload = &r
		if r.Used {
			prompt = req.ids[len(req.ids)-1:]
		}
	}
	if req.maxTokens == 0 {
		return out, nil
	}
	gen := engine.GenerateOptions{Sample: engine.SampleOptions(req.sample), MaxTokens: req.maxTokens}
	var res *engine.Result
	if src.tok == nil {
		res, err = sess.Generate(ctx, prompt, gen)
	} else {
		var tr *engine.TextResult
		tr, err = sess.GenerateText(ctx, prompt, engine.TextOptions{GenerateOptions: gen, Tokenizer: src.tok,
			IgnoreEOS: req.ignoreEOS, Stops: req.stops, OnText: req.onText})
		if tr != nil {
			res, out.text = tr.Result, tr.Text
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.modelName(), err)
	}
	out.tokens, out.reason, out.stats = res.Tokens, res.Reason, statsOf(res.Stats)
	return out, nil
}

// statsOf copies the engine's generation statistics.
func statsOf(s engine.Stats) genStats {
	return genStats{prefill: s.Prefill, tokenLatency: s.TokenLatency, submits: s.Submits, dispatches: s.Dispatches, readbackBytes: s.ReadbackBytes,
		paging: pagingStats{hits: s.Paging.Hits, misses: s.Paging.Misses, bytesPaged: s.Paging.BytesPaged, stall: s.Paging.Stall}}
}

// benchRuns loads src's model on the GPU and generates o.gen tokens after
// each prompt, o.warmup times unmeasured and o.runs times measured.
func benchRuns(ctx context.Context, src *modelSource, f *runFlags, o benchOptions) (*benchRun, error) {
	g, err := f.load(ctx, src)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	info := g.dev.Info()
	if info.Software {
		if !o.allowSoftware {
			return nil, fmt.Errorf("adapter %q is a software (CPU) adapter: its figures say nothing about GPU speed (pass --allow-software to run anyway)", info.Name)
		}
		fmt.Fprintf(os.Stderr, "WARNING: %s is a software (CPU) adapter: these figures say nothing about GPU speed\n", info.Name)
	}
	sess, err := g.model.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	out := &benchRun{adapter: info.Name, backend: info.Backend, adapterType: info.Type, software: info.Software, context: sess.Context(),
		features: g.dev.Features().Names(), adapterFeatures: g.dev.AdapterFeatures(),
		kvBytes: uint64(sess.KVBytes(sess.Context())), peakBytes: g.dev.AllocatedBytes()}
	for _, prompt := range o.prompts {
		if len(prompt)+o.gen > sess.Context() {
			return nil, fmt.Errorf("prompt %d + %d generated tokens exceed the %d-token context (use --ctx)", len(prompt), o.gen, sess.Context())
		}
		if o.batch > 1 {
			runs, agg, err := batchBench(ctx, g.model, prompt, o)
			if err != nil {
				return nil, fmt.Errorf("--batch %d: %w", o.batch, err)
			}
			out.stats, out.aggregate = append(out.stats, runs), append(out.aggregate, agg)
			out.peakBytes = max(out.peakBytes, g.dev.AllocatedBytes())
			continue
		}
		var runs []genStats
		for r := 0; r < o.warmup+o.runs; r++ {
			sess.Reset()
			res, err := sess.Generate(ctx, prompt, engine.GenerateOptions{MaxTokens: o.gen})
			if err != nil {
				return nil, err
			}
			if r >= o.warmup {
				runs = append(runs, statsOf(res.Stats))
			}
			// Scratch buffers are pooled, not freed: after a run the
			// allocation is at its high-water mark for that prompt.
			out.peakBytes = max(out.peakBytes, g.dev.AllocatedBytes())
		}
		out.stats = append(out.stats, runs)
	}
	out.gpuBytes, out.weightBytes = g.dev.AllocatedBytes(), g.model.WeightBytes()
	out.peakBytes = max(out.peakBytes, out.gpuBytes)
	return out, nil
}

// prefillLoader opens the GPU adapter names (a substring of its name; ""
// = the fastest) for the prefill service; closeGPU frees it once the
// service is closed.
func prefillLoader(adapter string) (load swarm.PrefillLoader, closeGPU func(), err error) {
	dev, err := kernels.Open(kernels.Options{Adapter: adapter, Logger: slog.Default()})
	if err != nil {
		return nil, nil, err
	}
	return enginePrefillLoader(dev), dev.Close, nil
}

// enginePrefillLoader loads models on dev with the engine.
func enginePrefillLoader(dev *kernels.Device) swarm.PrefillLoader {
	return func(ctx context.Context, m *rdrr.Model, o swarm.PrefillLoad) (swarm.PrefillSession, error) {
		md, err := engine.Load(ctx, dev, m, engine.Options{Context: o.Context, KVF32: o.KVF32, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		s, err := md.NewSession()
		if err != nil {
			md.Close()
			return nil, err
		}
		return prefillSession{Session: s, model: md}, nil
	}
}

// prefillSession is a session whose Close frees its model too.
type prefillSession struct {
	*engine.Session
	model *engine.Model
}

func (s prefillSession) Close() {
	s.Session.Close()
	s.model.Close()
}

// newEngineAPI opens the GPU and serves the API's models on it.
func newEngineAPI(f apiFlags, reg *prometheus.Registry) (*apiHost, error) {
	dev, err := kernels.Open(kernels.Options{Adapter: f.adapter, Logger: slog.Default()})
	if err != nil {
		return nil, err
	}
	srv := api.New(api.Options{
		Load: func(ctx context.Context, m *rdrr.Model) (*engine.Model, error) {
			return engine.Load(ctx, dev, m, engine.Options{Context: f.ctxLen, Logger: slog.Default()})
		},
		Queue:    f.queue,
		APIKey:   f.key,
		Registry: reg,
		Logger:   slog.Default(),
	})
	return &apiHost{handler: srv.Handler(), add: srv.Add, close: func() { srv.Close(); dev.Close() }}, nil
}

// terminalChat loads src's model on the GPU and chats with it
// (engine/repl) until /bye or Ctrl-D. Once the model is loaded, Ctrl-C
// stops an answer rather than the program: the chat takes the interrupts
// from main's context, which SIGTERM still cancels.
func terminalChat(ctx context.Context, src *modelSource, f *runFlags, o chatOptions) error {
	if src.tok == nil {
		return fmt.Errorf("%s has no tokenizer: the chat needs one (pass -p or --prompt-tokens)", f.modelName())
	}
	g, err := f.load(ctx, src)
	if err != nil {
		return err
	}
	defer g.Close()
	sess, err := g.model.NewSession()
	if err != nil {
		return fmt.Errorf("%s: %w", f.modelName(), err)
	}
	defer sess.Close()
	signal.Reset(os.Interrupt)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	err = repl.Run(ctx, repl.Options{Session: sess, Tokenizer: src.tok, Template: src.rm.Manifest.Tokenizer.ChatTemplate,
		System: o.system, Sample: engine.SampleOptions(o.sample), MaxTokens: o.maxTokens,
		In: o.in, Out: o.out, Interrupts: sig, Logger: slog.Default()})
	if errors.Is(err, context.Canceled) { // SIGTERM
		return nil
	}
	return err
}
