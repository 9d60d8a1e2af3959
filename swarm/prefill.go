//go:build !js

package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// The prefill service: a node holding a model complete prefills peers'
// prompts over /doppler/prefill/1 and streams back the KV cache. The swarm
// knows no GPU: the caller supplies a PrefillLoader that puts a model on
// one and returns a PrefillSession (cmd/node wires the engine to it).

// PrefillOptions configures a node's prefill service. Zero values take
// the defaults shown.
type PrefillOptions struct {
	// Load puts a model on the GPU (required).
	Load PrefillLoader
	// Context is the KV cache length of the service's session (0 =
	// min(model's, 4096)); a longer prompt reloads the model with a
	// longer cache, up to the model's context length.
	Context int
	// Queue bounds the requests waiting or running (2); more are
	// answered wire.CodeBusy at once.
	Queue int
	// Timeout bounds one request from arrival to result (2 min).
	Timeout time.Duration
	// Warmup lists models to load and measure at start, so the node
	// announces a prefill speed before its first request.
	Warmup []rdrr.ModelID
	// WarmupTokens is the length of the warm-up prompt (128).
	WarmupTokens int
	// Tamper, for tests only, changes the KV bytes before they are sent
	// (a lying server).
	Tamper func(kv []byte)
	// Stall, for tests only, delays every request by this much before it
	// is computed (a stalling server).
	Stall  time.Duration
	Logger *slog.Logger
}

// PrefillServerStats counts a prefill service's work.
type PrefillServerStats struct {
	Served, Busy, Failed int
	Tokens               int64 // prompt tokens prefilled for peers
	TokS                 float64
}

// PrefillServer serves /doppler/prefill/1 for a node: one model loaded at
// a time (from the node's store, on first request), a bounded queue, one
// request computed at a time.
type PrefillServer struct {
	n    *Node
	o    PrefillOptions
	log  *slog.Logger
	jobs chan *prefillJob
	slot chan struct{}
	quit chan struct{}
	done chan struct{}
	warm chan struct{} // closed when the warm-up is over

	// Worker-owned.
	cur *loadedModel

	mu    sync.Mutex
	stats PrefillServerStats
	toks  map[rdrr.ModelID]float64 // EWMA prefill tokens/s per model
}

type loadedModel struct {
	id    rdrr.ModelID
	f32   bool
	vocab int
	sess  PrefillSession
}

type prefillJob struct {
	ctx  context.Context
	req  *wire.PrefillRequest
	res  *p2p.PrefillResult
	err  error
	done chan struct{}
}

// ServePrefill starts the node's prefill service and registers it on the
// host; Close stops it (Node.Close does not).
func (n *Node) ServePrefill(o PrefillOptions) (*PrefillServer, error) {
	if o.Load == nil {
		return nil, errors.New("prefill service: no model loader (PrefillOptions.Load)")
	}
	if o.Queue <= 0 {
		o.Queue = 2
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.WarmupTokens <= 0 {
		o.WarmupTokens = 128
	}
	if o.Logger == nil {
		o.Logger = n.log
	}
	p := &PrefillServer{n: n, o: o, log: o.Logger, jobs: make(chan *prefillJob, o.Queue),
		slot: make(chan struct{}, o.Queue), quit: make(chan struct{}), done: make(chan struct{}), warm: make(chan struct{}),
		toks: map[rdrr.ModelID]float64{}}
	go p.worker()
	n.host.HandlePrefill(p)
	return p, nil
}

// Close stops serving, waits for the request in progress and closes the
// loaded model's session.
func (p *PrefillServer) Close() {
	p.n.host.HandlePrefill(nil)
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

// Stats returns the service's counters.
func (p *PrefillServer) Stats() PrefillServerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Prefill implements p2p.PrefillService.
func (p *PrefillServer) Prefill(ctx context.Context, peer string, req *wire.PrefillRequest) (*p2p.PrefillResult, error) {
	select {
	case p.slot <- struct{}{}:
	default:
		p.count(func(s *PrefillServerStats) { s.Busy++ })
		return nil, &wire.Error{Code: wire.CodeBusy, Msg: "prefill queue full"}
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	j := &prefillJob{ctx: ctx, req: req, done: make(chan struct{})}
	select {
	case p.jobs <- j: // never blocks: a slot is held
	case <-p.quit:
		<-p.slot
		return nil, &wire.Error{Code: wire.CodeBusy, Msg: "prefill service stopping"}
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		return nil, &wire.Error{Code: wire.CodeInternal, Msg: "prefill timed out"}
	}
	if j.err != nil {
		p.count(func(s *PrefillServerStats) { s.Failed++ })
		p.log.Info("prefill: request failed", "peer", peer, "model", req.Model.Short(), "err", j.err)
		return nil, j.err
	}
	p.count(func(s *PrefillServerStats) { s.Served++; s.Tokens += int64(len(req.Tokens)) })
	return j.res, nil
}

func (p *PrefillServer) count(f func(*PrefillServerStats)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

func (p *PrefillServer) worker() {
	defer close(p.done)
	defer func() {
		if p.cur != nil {
			p.cur.sess.Close()
			p.cur = nil
		}
	}()
	for _, id := range p.o.Warmup {
		select {
		case <-p.quit:
			close(p.warm)
			return
		default:
		}
		if err := p.warmup(id); err != nil {
			p.log.Warn("prefill: warm-up", "model", id.Short(), "err", err)
		}
	}
	close(p.warm)
	for {
		select {
		case <-p.quit:
			// Answer what is queued.
			for {
				select {
				case j := <-p.jobs:
					j.err = &wire.Error{Code: wire.CodeBusy, Msg: "prefill service stopping"}
					close(j.done)
					<-p.slot
				default:
					return
				}
			}
		case j := <-p.jobs:
			j.res, j.err = p.run(j)
			close(j.done)
			<-p.slot
		}
	}
}

// warmup loads a model and measures its prefill speed.
func (p *PrefillServer) warmup(id rdrr.ModelID) error {
	lm, err := p.load(id, false, 0)
	if err != nil {
		return err
	}
	k := min(p.o.WarmupTokens, lm.sess.Context())
	ids := make([]int, k)
	for i := range ids {
		ids[i] = (i*7 + 1) % lm.vocab
	}
	for range 2 { // the first pass builds the plans
		lm.sess.Reset()
		start := time.Now()
		if _, err := lm.sess.Forward(ids); err != nil {
			return fmt.Errorf("warm-up prefill: %w", err)
		}
		p.measured(id, k, time.Since(start), true)
	}
	lm.sess.Reset()
	return nil
}

// measured records a prefill of k tokens in d and announces the speed.
func (p *PrefillServer) measured(id rdrr.ModelID, k int, d time.Duration, replace bool) {
	if d <= 0 {
		return
	}
	v := float64(k) / d.Seconds()
	p.mu.Lock()
	if old, ok := p.toks[id]; ok && !replace {
		v = ewmaAlpha*v + (1-ewmaAlpha)*old
	}
	p.toks[id] = v
	p.stats.TokS = v
	p.mu.Unlock()
	p.n.SetSpeeds(id, v, 0)
}

// load makes model id (KV element type f32) resident with a cache of at
// least need tokens. Errors the client should see are *wire.Error.
func (p *PrefillServer) load(id rdrr.ModelID, f32 bool, need int) (*loadedModel, error) {
	if l := p.cur; l != nil && l.id == id && l.f32 == f32 && l.sess.Context() >= need {
		return l, nil
	}
	st, ok := p.n.store.Status(id)
	if !ok || st.CompleteShards < st.Shards {
		return nil, &wire.Error{Code: wire.CodeNotFound, Msg: "model " + id.String() + " is not complete here"}
	}
	rm, err := p.n.store.OpenModel(id)
	if err != nil {
		return nil, err
	}
	vocab := rm.Manifest.Config.VocabSize
	if vocab <= 0 {
		return nil, fmt.Errorf("model %s: manifest gives no vocabulary size", id.Short())
	}
	ctxLen := p.o.Context
	if max := rm.Manifest.Config.ContextLength; need > 0 && max > 0 {
		if need > max {
			return nil, &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("a %d-token prompt exceeds the model's %d-token context", need, max)}
		}
		if ctxLen == 0 {
			ctxLen = min(max, 4096)
		}
		for ctxLen < need {
			ctxLen = min(2*ctxLen, max)
		}
	}
	if p.cur != nil {
		p.cur.sess.Close()
		p.cur = nil
	}
	sess, err := p.o.Load(context.Background(), rm, PrefillLoad{Context: ctxLen, KVF32: f32, Logger: p.log})
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", id.Short(), err)
	}
	if sess.Context() < need {
		sess.Close()
		return nil, &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("a %d-token prompt exceeds the %d-token cache", need, sess.Context())}
	}
	p.cur = &loadedModel{id: id, f32: f32, vocab: vocab, sess: sess}
	p.log.Info("prefill: model loaded", "model", id.Short(), "context", sess.Context(), "kv_f32", f32)
	return p.cur, nil
}

func (p *PrefillServer) run(j *prefillJob) (*p2p.PrefillResult, error) {
	if j.ctx.Err() != nil {
		return nil, j.ctx.Err()
	}
	if p.o.Stall > 0 {
		t := time.NewTimer(p.o.Stall)
		select {
		case <-t.C:
		case <-j.ctx.Done():
			t.Stop()
			return nil, j.ctx.Err()
		case <-p.quit:
			t.Stop()
			return nil, &wire.Error{Code: wire.CodeBusy, Msg: "prefill service stopping"}
		}
	}
	req := j.req
	n := len(req.Tokens)
	lm, err := p.load(req.Model, req.KV == wire.KVF32, n)
	if err != nil {
		return nil, err
	}
	ids := make([]int, n)
	for i, t := range req.Tokens {
		if int64(t) >= int64(lm.vocab) {
			return nil, &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("token id %d outside the %d-token vocabulary", t, lm.vocab)}
		}
		ids[i] = int(t)
	}
	lm.sess.Reset()
	start := time.Now()
	logits, err := lm.sess.Forward(ids)
	if err != nil {
		return nil, fmt.Errorf("prefill: %w", err)
	}
	p.measured(req.Model, n, time.Since(start), false)
	kv, err := lm.sess.ExportKV(n)
	lm.sess.Reset()
	if err != nil {
		return nil, fmt.Errorf("export KV cache: %w", err)
	}
	if p.o.Tamper != nil {
		p.o.Tamper(kv)
	}
	return &p2p.PrefillResult{Positions: n, KVF32: req.KV == wire.KVF32, KV: kv, Logits: logits}, nil
}
