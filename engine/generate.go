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
// sampled token id. Cancelling ctx stops cleanly: the tokens generated so
// far are returned with Reason "interrupted".
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
	before := s.dev.Stats()
	paged := s.m.Paging()
	next, err := s.step(ctx, rest, smp)
	if err != nil {
		return nil, err
	}
	res.Stats.Prefill = time.Since(start)
	before = s.dev.Stats()
	for {
		if o.StopAtEOG != nil && o.StopAtEOG(next) {
			res.Reason = "eos"
			break
		}
		res.Tokens = append(res.Tokens, next)
		smp.accept(next)
		if o.OnToken != nil {
			if err := o.OnToken(next); err != nil {
				return res, err
			}
		}
		if o.StopText != nil && o.StopText(next) {
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
		if s.pos >= s.ctxLen {
			res.Reason = "context"
			break
		}
		t0 := time.Now()
		if next, err = s.step(ctx, nil, smp); err != nil {
			return res, err
		}
		res.Stats.TokenLatency = append(res.Stats.TokenLatency, time.Since(t0))
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

// step runs one forward pass (over ids, or over the last sampled token when
// ids is nil) plus sampling in one submit, and reads back the token id.
func (s *Session) step(ctx context.Context, ids []int, smp *gpuSampler) (int, error) {
	if ids == nil && s.joined != nil {
		return s.joined.decode(ctx, s, smp)
	}
	if err := smp.prepare(); err != nil {
		return 0, err
	}
	e, err := s.encode(ctx, s.dev.NewEncoder(), ids, ids == nil, false)
	if err != nil {
		return 0, err
	}
	e.Run(smp.ops...)
	b, err := e.SubmitRead(s.tok, 0, 4)
	if err != nil {
		return 0, err
	}
	id := binary.LittleEndian.Uint32(b)
	if id >= uint32(s.m.Config.VocabSize) {
		// Argmax writes kernels.ArgmaxNone when every logit is NaN: the
		// weights are broken, and a silent token 0 would hide it.
		return 0, fmt.Errorf("%w: no token to pick at position %d (the logits are NaN)", ErrBadLogits, s.pos)
	}
	return int(id), nil
}

// gpuSampler owns the sampling ops of a session for one option set.
type gpuSampler struct {
	s    *Session
	ops  []*kernels.Op
	impl samplerImpl
}

type samplerImpl interface {
	prepare() error
	accept(id int)
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
