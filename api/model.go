//go:build cgo || js

package api

import (
	"context"
	"errors"
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
// worker that runs its requests one at a time on one session (its KV
// state is reset for every request).
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
	sess     *engine.Session
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

// load opens the tokenizer and the weights; the model is ready after.
func (m *model) load(ctx context.Context, rm *rdrr.Model, open func(context.Context, *rdrr.Model) (*engine.Model, error)) error {
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
	sess, err := eng.NewSession()
	if err != nil {
		eng.Close()
		return err
	}
	m.tok, m.template, m.eng, m.sess, m.ctxLen = tok, rm.Manifest.Tokenizer.ChatTemplate, eng, sess, sess.Context()
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

// run serves the queue until ctx ends.
func (m *model) run(ctx context.Context, met *metrics) {
	for {
		j := m.q.pop(ctx)
		if j == nil {
			return
		}
		met.queueDepth.WithLabelValues(m.id.String()).Set(float64(m.q.len()))
		j.out = m.generate(j)
		close(j.done)
	}
}

// generate runs one job on the model's session.
func (m *model) generate(j *job) (out outcome) {
	if err := j.ctx.Err(); err != nil {
		return outcome{err: err}
	}
	m.sess.Reset()
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
	res, err := m.sess.GenerateText(j.ctx, j.prompt, o)
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

// close frees the model's GPU state; the worker must have stopped.
func (m *model) close() {
	if m.sess != nil {
		m.sess.Close()
	}
	if m.eng != nil {
		m.eng.Close()
	}
}
