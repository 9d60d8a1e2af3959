//go:build cgo || js

package engine

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/doppler-llm/doppler/kernels"
)

// stochastic drives the GPU sampler: per token it writes the uniform draw
// and the history count into the sampler's state buffer, and appends the
// prompt's tokens (accept) and each sampled one (feed) to the GPU history
// ring (for the repetition penalty).
type stochastic struct {
	s       *Session
	state   *kernels.Buffer
	history *kernels.Buffer // nil when the penalty is off
	ring    int
	count   uint32
	rng     *rand.Rand
}

func newStochastic(s *Session, o SampleOptions) (*stochastic, []*kernels.Op, error) {
	st := &stochastic{s: s, rng: rand.New(rand.NewPCG(o.Seed, 0x5a3b1e))}
	var err error
	if st.state, err = s.dev.NewBuffer("sample_state", kernels.SampleStateBytes); err != nil {
		return nil, nil, err
	}
	topP := o.TopP
	if topP == 0 {
		topP = 1
	}
	p := kernels.SampleParams{Temp: float32(o.Temp), TopK: o.TopK, TopP: float32(topP), MinP: float32(o.MinP),
		RepPenalty: float32(o.RepPenalty), RepLastN: o.RepLastN}
	var hist kernels.BufferRange
	if o.RepPenalty != 1 && o.RepPenalty != 0 {
		if p.RepLastN == 0 {
			p.RepLastN = 64
		}
		p.RepLastN = min(p.RepLastN, kernels.SampleMaxRepLastN)
		st.ring = p.RepLastN
		if st.history, err = s.dev.NewBuffer("sample_history", uint64(4*st.ring)); err != nil {
			st.release()
			return nil, nil, err
		}
		hist = whole(st.history)
	} else {
		p.RepPenalty = 1
	}
	ops, err := s.dev.Sample(whole(s.logits), whole(st.state), hist, whole(s.tok), s.m.Config.VocabSize, p)
	if err != nil {
		st.release()
		return nil, nil, err
	}
	return st, ops, nil
}

func (st *stochastic) prepare() error {
	var b [kernels.SampleStateBytes]byte
	binary.LittleEndian.PutUint32(b[0:], math.Float32bits(float32(st.rng.Uint32()>>8)/(1<<24)))
	binary.LittleEndian.PutUint32(b[4:], st.count)
	return st.s.dev.Write(st.state, 0, b[:])
}

func (st *stochastic) accept(id int) {
	if st.history == nil {
		return
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(id))
	// A queue write: staged into the next submit, no extra submit.
	st.s.dev.Write(st.history, uint64(4*(int(st.count)%st.ring)), b[:])
	st.count++
}

// feed appends the token a step reads from s.tok to the history ring with
// a GPU copy at the step's start (its sampling, at the end, reads the
// ring), so the step can be submitted before the token is read back.
func (st *stochastic) feed(e *kernels.Encoder) {
	if st.history == nil {
		return
	}
	e.Copy(st.s.tok, 0, st.history, uint64(4*(int(st.count)%st.ring)), 4)
	st.count++
}

func (st *stochastic) release() {
	st.state.Release()
	if st.history != nil {
		st.history.Release()
	}
}
