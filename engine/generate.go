//go:build cgo || js

package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/doppler-llm/doppler/kernels"
)

// SampleOptions selects how the next token is drawn. Temp 0 is plain
// argmax. Filters apply in llama.cpp's order: repetition penalty, top-k,
// top-p, min-p, temperature, then a draw.
type SampleOptions struct {
	Temp       float64
	TopK       int     // 0 = off
	TopP       float64 // 0 or 1 = off
	MinP       float64 // 0 = off
	RepPenalty float64 // 0 or 1 = off
	RepLastN   int     // tokens the penalty looks back over; 0 = 64
	Seed       uint64
}

// DefaultSampleOptions are llama.cpp's defaults.
func DefaultSampleOptions() SampleOptions {
	return SampleOptions{Temp: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepPenalty: 1, RepLastN: 64}
}

// Validate reports an out-of-range sampling value.
func (o SampleOptions) Validate() error {
	switch {
	case o.Temp < 0:
		return fmt.Errorf("temperature %g must be ≥ 0", o.Temp)
	case o.TopK < 0:
		return fmt.Errorf("top-k %d must be ≥ 0", o.TopK)
	case o.TopP < 0 || o.TopP > 1:
		return fmt.Errorf("top-p %g must be in [0, 1]", o.TopP)
	case o.MinP < 0 || o.MinP >= 1:
		return fmt.Errorf("min-p %g must be in [0, 1)", o.MinP)
	case o.RepPenalty < 0:
		return fmt.Errorf("repetition penalty %g must be > 0", o.RepPenalty)
	case o.RepLastN < 0:
		return fmt.Errorf("repetition window %d must be ≥ 0", o.RepLastN)
	}
	return nil
}

// GenerateOptions controls Generate.
type GenerateOptions struct {
	Sample    SampleOptions
	MaxTokens int
	// StopAtEOG ends generation at an end-of-generation token (not
	// included in the output).
	StopAtEOG func(id int) bool
	// OnToken is called with each generated token; returning an error stops
	// generation with that error.
	OnToken func(id int) error
	// StopText, when set, is called after each token; returning true stops.
	StopText func(id int) bool
}

// Stats describes one generation.
type Stats struct {
	PromptTokens    int
	GeneratedTokens int
	Prefill         time.Duration // prompt processing, up to the first token
	TokenLatency    []time.Duration
	Submits         uint64 // during decode
	Dispatches      uint64 // during decode: compute dispatches, all layers
	ReadbackBytes   uint64 // during decode
	Paging          PagingStats
}

// Result is what Generate produced.
type Result struct {
	Tokens []int
	// Reason: "length", "eos", "stop", or "interrupted".
	Reason string
	Stats  Stats
}

// Generate prefills prompt and generates up to MaxTokens tokens. Each
// decode step is one compute pass in one submit that reads back only the
// sampled token id. Decode runs one step ahead: the step that feeds token
// t back (its embedding reads t from the GPU) is submitted before t is read,
// so the CPU's encoding and the readback overlap the GPU's work. A step
// submitted for a token that turns out to end generation is waited for and
// taken back out of the cache (Rewind). Cancelling ctx stops cleanly: the
// tokens generated so far are returned with Reason "interrupted".
func (s *Session) Generate(ctx context.Context, prompt []int, o GenerateOptions) (*Result, error) {
	if len(prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	if err := o.Sample.Validate(); err != nil {
		return nil, err
	}
	if s.pos+len(prompt) > s.ctxLen {
		return nil, fmt.Errorf("%w: prompt of %d tokens (+%d cached) exceeds the %d-token context", ErrContextFull, len(prompt), s.pos, s.ctxLen)
	}
	smp, err := s.newSampler(o.Sample)
	if err != nil {
		return nil, err
	}
	for _, id := range prompt {
		smp.accept(id)
	}
	res := &Result{Reason: "length"}
	res.Stats.PromptTokens = len(prompt)
	start := time.Now()
	// Prefill all chunks but the last without reading anything back.
	rest := prompt
	for len(rest) > s.batch {
		e, err := s.encode(ctx, s.dev.NewEncoder(), rest[:s.batch], false, false)
		if err != nil {
			return nil, err
		}
		if err := e.Submit(); err != nil {
			return nil, err
		}
		rest = rest[s.batch:]
	}
	paged := s.m.Paging()
	pending, err := s.submitStep(ctx, rest, smp)
	if err != nil {
		return nil, err
	}
	// Stepping ahead needs a step that reads nothing the CPU learns from
	// the token (the penalty's history takes it on the GPU: feed): not
	// with expert paging (routing is read back mid-step). In a batch the
	// step goes in with the other members' (Batch.enqueue).
	ahead := s.m.pager == nil
	var next *pendingStep // submitted for the token pending waits for
	defer func() {
		if next != nil {
			// Generation ended on the token next feeds back: nothing
			// reads its result, and the cache must not hold it.
			next.wait()
			s.Rewind(s.pos - 1)
		}
	}()
	before := s.dev.Stats()
	t0 := time.Now()
	for first := true; ; first = false {
		// The step for pending's token goes in before the token comes out,
		// unless this token is the last one wanted.
		if ahead && len(res.Tokens)+1 < o.MaxTokens && s.pos < s.ctxLen {
			if next, err = s.submitStep(ctx, nil, smp); err != nil {
				next = nil
				pending.wait()
				return res, err
			}
		}
		id, err := pending.wait()
		if err != nil {
			return res, err
		}
		now := time.Now()
		if first {
			res.Stats.Prefill = now.Sub(start)
			// Submits count when submitted, reads when read: the
			// prompt's token has come back only now.
			before.ReadbackBytes = s.dev.Stats().ReadbackBytes
		} else {
			res.Stats.TokenLatency = append(res.Stats.TokenLatency, now.Sub(t0))
		}
		t0 = now
		if o.StopAtEOG != nil && o.StopAtEOG(id) {
			res.Reason = "eos"
			break
		}
		res.Tokens = append(res.Tokens, id)
		if o.OnToken != nil {
			if err := o.OnToken(id); err != nil {
				return res, err
			}
		}
		if o.StopText != nil && o.StopText(id) {
			res.Reason = "stop"
			break
		}
		if len(res.Tokens) >= o.MaxTokens {
			break
		}
		if ctx.Err() != nil {
			res.Reason = "interrupted"
			break
		}
		if next == nil {
			if s.pos >= s.ctxLen {
				res.Reason = "context"
				break
			}
			if next, err = s.submitStep(ctx, nil, smp); err != nil {
				next = nil
				return res, err
			}
		}
		pending, next = next, nil
	}
	after := s.dev.Stats()
	res.Stats.GeneratedTokens = len(res.Tokens)
	res.Stats.Submits = after.Submits - before.Submits
	res.Stats.Dispatches = after.Dispatches - before.Dispatches
	res.Stats.ReadbackBytes = after.ReadbackBytes - before.ReadbackBytes
	now := s.m.Paging()
	res.Stats.Paging = now.sub(paged)
	return res, nil
}

// pendingStep is a submitted forward pass whose sampled token has not been
// read back yet.
type pendingStep struct {
	s   *Session
	rb  *kernels.Readback
	w   *waiter // instead of rb, in a batch: the step's row
	pos int     // where the sampled token goes in the cache
}

// submitStep submits one forward pass (over ids, or over the last sampled
// token when ids is nil) plus sampling in one submit, without waiting.
func (s *Session) submitStep(ctx context.Context, ids []int, smp *gpuSampler) (*pendingStep, error) {
	if ids == nil && s.joined != nil {
		w := s.joined.enqueue(s, smp)
		return &pendingStep{s: s, w: w, pos: w.pos}, nil
	}
	e := s.dev.NewEncoder()
	if ids == nil {
		smp.feed(e)
	}
	if err := smp.prepare(); err != nil {
		return nil, err
	}
	e, err := s.encode(ctx, e, ids, ids == nil, false)
	if err != nil {
		return nil, err
	}
	e.Run(smp.ops...)
	rb, err := e.SubmitReadAsync(s.tok, 0, 4)
	if err != nil {
		return nil, err
	}
	return &pendingStep{s: s, rb: rb, pos: s.pos}, nil
}

// wait reads the step's token back.
func (p *pendingStep) wait() (int, error) {
	var id int
	if w := p.w; w != nil {
		<-w.ok
		if w.err != nil {
			return 0, w.err
		}
		var err error
		if id, err = w.st.token(w.row); err != nil {
			return 0, err
		}
	} else {
		b, err := p.rb.Wait()
		if err != nil {
			return 0, err
		}
		id = int(binary.LittleEndian.Uint32(b))
	}
	if id >= p.s.m.Config.VocabSize {
		// Argmax writes kernels.ArgmaxNone when every logit is NaN: the
		// weights are broken, and a silent token 0 would hide it.
		return 0, fmt.Errorf("%w: no token to pick at position %d (the logits are NaN)", ErrBadLogits, p.pos)
	}
	return id, nil
}

// gpuSampler owns the sampling ops of a session for one option set.
type gpuSampler struct {
	s    *Session
	ops  []*kernels.Op
	impl samplerImpl
}

type samplerImpl interface {
	prepare() error
	// accept appends a prompt token to what the sampler has seen.
	accept(id int)
	// feed records into e, a step that reads the last sampled token from
	// the GPU, the same for that token (no CPU round trip).
	feed(e *kernels.Encoder)
	release()
}

func (g *gpuSampler) prepare() error {
	if g.impl != nil {
		return g.impl.prepare()
	}
	return nil
}

func (g *gpuSampler) accept(id int) {
	if g.impl != nil {
		g.impl.accept(id)
	}
}

func (g *gpuSampler) feed(e *kernels.Encoder) {
	if g.impl != nil {
		g.impl.feed(e)
	}
}

func (g *gpuSampler) release() {
	releaseOps(g.ops)
	if g.impl != nil {
		g.impl.release()
	}
}

// newSampler builds the sampling ops: argmax for plain greedy, else the GPU
// sampler (penalty, filters, draw) with its per-token state.
func (s *Session) newSampler(o SampleOptions) (*gpuSampler, error) {
	if s.sampler != nil {
		s.sampler.release()
		s.sampler = nil
	}
	g := &gpuSampler{s: s}
	if o.Temp == 0 && (o.RepPenalty == 0 || o.RepPenalty == 1) {
		op, err := s.dev.Argmax(whole(s.logits), whole(s.tok), s.m.Config.VocabSize)
		if err != nil {
			return nil, err
		}
		g.ops = []*kernels.Op{op}
	} else {
		impl, ops, err := newStochastic(s, o)
		if err != nil {
			return nil, err
		}
		g.impl, g.ops = impl, ops
	}
	s.sampler = g
	return g, nil
}
