//go:build cgo || js

package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/rdrr"
)

// Model states, as /v1/models reports them.
const (
	stateLoading = "loading"
	stateReady   = "ready"
	stateFailed  = "failed"
)

// model is one served model: its tokenizer, its weights on the GPU and the
// workers that run its requests, one per session (whose KV state is reset
// for every request); with several, their decode steps run batched.
type model struct {
	id      rdrr.ModelID
	name    string
	created int64
	log     *slog.Logger
	q       *fairQueue

	mu    sync.Mutex
	state string
	err   error

	// Set once loaded (state ready), read-only after.
	tok      *tokenizer.Tokenizer
	template string
	ctxLen   int
	eng      *engine.Model
	sess     []*engine.Session // one per worker
	batch    *engine.Batch     // nil with one session
}

func (m *model) status() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.err
}

func (m *model) setState(state string, err error) {
	m.mu.Lock()
	m.state, m.err = state, err
	m.mu.Unlock()
}

// load opens the tokenizer and the weights, and n sessions (n > 1 batch
// their decode steps); the model is ready after.
func (m *model) load(ctx context.Context, rm *rdrr.Model, open func(context.Context, *rdrr.Model) (*engine.Model, error), n int) error {
	if rm.Manifest.Tokenizer == nil {
		return errors.New("the model has no tokenizer: the API takes text")
	}
	tok, err := tokenizer.New(rm.Manifest.Tokenizer)
	if err != nil {
		return err
	}
	eng, err := open(ctx, rm)
	if err != nil {
		return err
	}
	m.eng = eng
	if n > 1 {
		if m.batch, err = eng.NewBatch(n); err != nil {
			m.log.Info("requests run one at a time", "reason", err)
			n = 1
		}
	}
	newSession := eng.NewSession
	if m.batch != nil {
		newSession = m.batch.NewSession // its KV caches are the batch's
	}
	for range n {
		sess, err := newSession()
		if err != nil {
			m.close()
			return fmt.Errorf("session %d of %d: %w", len(m.sess)+1, n, err)
		}
		m.sess = append(m.sess, sess)
	}
	m.tok, m.template, m.ctxLen = tok, rm.Manifest.Tokenizer.ChatTemplate, m.sess[0].Context()
	return nil
}

// job is one request's generation, run by the model's worker.
type job struct {
	client string
	ctx    context.Context
	prompt []int
	opts   engine.GenerateOptions
	stops  []string
	// emit receives the reply's text as it is generated (on the worker's
	// goroutine; the handler waits on done meanwhile). An error stops the
	// generation: the client is gone.
	emit   func(delta string) error
	queued time.Time

	done chan struct{}
	out  outcome
}

// outcome is a finished job.
type outcome struct {
	text      string
	finish    string // "stop" or "length"
	generated int
	ttft      time.Duration // from queueing to the first token
	decode    time.Duration // from the first token to the last
	paging    engine.PagingStats
	err       error
}

// run serves the queue until ctx ends: one worker per session.
func (m *model) run(ctx context.Context, met *metrics) {
	var wg sync.WaitGroup
	for _, s := range m.sess {
		wg.Go(func() {
			for {
				j := m.q.pop(ctx)
				if j == nil {
					return
				}
				met.queueDepth.WithLabelValues(m.id.String()).Set(float64(m.q.len()))
				j.out = m.generate(s, j)
				close(j.done)
			}
		})
	}
	wg.Wait()
}

// generate runs one job on session s, in the model's batch if it has one.
func (m *model) generate(s *engine.Session, j *job) (out outcome) {
	if err := j.ctx.Err(); err != nil {
		return outcome{err: err}
	}
	s.Reset()
	if m.batch != nil {
		if err := m.batch.Join(s); err != nil {
			return outcome{err: err}
		}
		defer m.batch.Leave(s)
	}
	var first time.Time
	o := engine.TextOptions{GenerateOptions: j.opts, Tokenizer: m.tok, Stops: j.stops, OnText: j.emit}
	o.OnToken = func(int) error {
		if first.IsZero() {
			first = time.Now()
			out.ttft = first.Sub(j.queued)
		}
		out.generated++
		return nil
	}
	res, err := s.GenerateText(j.ctx, j.prompt, o)
	if !first.IsZero() {
		out.decode = time.Since(first)
	}
	if res != nil && res.Result != nil {
		out.paging = res.Stats.Paging
	}
	switch {
	case err != nil:
		out.err = err
	case res.Reason == "interrupted":
		out.err = context.Cause(j.ctx)
	default:
		out.text, out.finish = res.Text, res.Finish
	}
	return out
}

// close frees the model's GPU state; the workers must have stopped.
func (m *model) close() {
	for _, s := range m.sess {
		s.Close()
	}
	m.sess = nil
	if m.batch != nil {
		m.batch.Close()
		m.batch = nil
	}
	if m.eng != nil {
		m.eng.Close()
		m.eng = nil
	}
}
