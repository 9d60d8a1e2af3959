//go:build cgo || js

package api

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/doppler-llm/doppler/engine"
)

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	m := s.readyRequest(w, r, &req, &req.samplingRequest)
	if m == nil {
		return
	}
	prompt, text := req.Prompt.tokens, req.Prompt.text
	if prompt == nil {
		prompt = m.tok.Encode(text, true)
	} else {
		for _, id := range prompt {
			if id < 0 || id >= m.tok.VocabSize() {
				badRequest("prompt", "invalid_value", "prompt: token id %d outside the %d-token vocabulary", id, m.tok.VocabSize()).write(w)
				return
			}
		}
		text = m.tok.Decode(prompt)
	}
	if len(prompt) == 0 {
		badRequest("prompt", "empty_prompt", "prompt: empty, and the model adds no BOS token").write(w)
		return
	}
	f := replyFormat{id: newID("cmpl-"), model: m.id.String(), created: time.Now().Unix(), completion: true}
	if req.Echo {
		f.echo = text
	}
	s.generate(w, r, m, prompt, req.samplingRequest, f)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	m := s.readyRequest(w, r, &req, &req.samplingRequest)
	if m == nil {
		return
	}
	msgs := make([]Message, len(req.Messages))
	for i, cm := range req.Messages {
		msgs[i] = Message{Role: cm.Role, Content: string(cm.Content)}
	}
	prompt, err := ChatTokens(m.tok, m.template, msgs)
	if err != nil {
		badRequest("messages", "invalid_messages", "messages: %v", err).write(w)
		return
	}
	f := replyFormat{id: newID("chatcmpl-"), model: m.id.String(), created: time.Now().Unix()}
	s.generate(w, r, m, prompt, req.samplingRequest, f)
}

// readyRequest decodes a generation request's body into req, whose
// sampling fields are sr, and returns the ready model it names. On failure
// it writes the error response and returns nil.
func (s *Server) readyRequest(w http.ResponseWriter, r *http.Request, req any, sr *samplingRequest) *model {
	if e := s.decode(w, r, req); e != nil {
		e.write(w)
		return nil
	}
	m, e := s.readyModel(sr.Model)
	if e != nil {
		e.write(w)
		return nil
	}
	return m
}

// readyModel finds the model named and checks it can answer.
func (s *Server) readyModel(name string) (*model, *httpError) {
	m, e := s.lookup(name)
	if e != nil {
		return nil, e
	}
	switch st, err := m.status(); st {
	case stateLoading:
		return nil, &httpError{code: http.StatusServiceUnavailable, typ: "server_error", errCode: "model_loading",
			msg: fmt.Sprintf("model %s is still loading", m.id.Short()), retryAfterS: 5}
	case stateFailed:
		return nil, &httpError{code: http.StatusServiceUnavailable, typ: "server_error", errCode: "model_failed",
			msg: fmt.Sprintf("model %s failed to load: %v", m.id.Short(), err)}
	}
	return m, nil
}

// options turns a request's sampling fields into the engine's, checking
// each against the model (ctxLen) and the prompt's length.
func (req *samplingRequest) options(ctxLen, promptLen int) (engine.GenerateOptions, *httpError) {
	var o engine.GenerateOptions
	if req.N != nil && *req.N != 1 {
		return o, badRequest("n", "unsupported_parameter", "n: only 1 choice per request is supported")
	}
	if lp := string(req.Logprobs); lp != "" && lp != "null" && lp != "false" {
		return o, badRequest("logprobs", "unsupported_parameter", "logprobs: not supported")
	}
	for _, p := range []struct {
		name string
		v    *float64
	}{{"frequency_penalty", req.FrequencyPenalty}, {"presence_penalty", req.PresencePenalty}} {
		if p.v != nil && *p.v != 0 {
			return o, badRequest(p.name, "unsupported_parameter", "%s: not supported; use repeat_penalty (llama.cpp's multiplicative penalty, 1 = off)", p.name)
		}
	}
	room := ctxLen - promptLen
	if room < 1 {
		return o, badRequest("messages", "context_length_exceeded",
			"the prompt is %d tokens; the model's context holds %d, with room for at least one more", promptLen, ctxLen)
	}
	o.MaxTokens = room
	for _, mt := range []struct {
		name string
		v    *int
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if mt.v == nil {
			continue
		}
		if *mt.v < 1 {
			return o, badRequest(mt.name, "invalid_value", "%s: %d, want ≥ 1", mt.name, *mt.v)
		}
		o.MaxTokens = min(*mt.v, room)
	}
	so := engine.DefaultSampleOptions()
	if req.Temperature != nil {
		so.Temp = *req.Temperature
	}
	if req.TopP != nil {
		so.TopP = *req.TopP
	}
	if req.TopK != nil {
		so.TopK = *req.TopK
	}
	if req.MinP != nil {
		so.MinP = *req.MinP
	}
	if req.RepeatPenalty != nil {
		so.RepPenalty = *req.RepeatPenalty
	}
	if req.Seed != nil {
		so.Seed = uint64(*req.Seed)
	} else {
		so.Seed = rand.Uint64()
	}
	if err := so.Validate(); err != nil {
		return o, badRequest("", "invalid_value", "%v", err)
	}
	o.Sample = so
	return o, nil
}

// replyFormat builds a completion's or a chat completion's response
// objects, whole and streamed.
type replyFormat struct {
	id, model  string
	created    int64
	completion bool   // /v1/completions; else chat
	echo       string // completions: the prompt, echoed before the reply
}

func (f replyFormat) chunk(delta string, finish *string, u *usage) any {
	if f.completion {
		c := completionResponse{ID: f.id, Object: "text_completion", Created: f.created, Model: f.model, Usage: u,
			Choices: []completionChoice{{Text: delta, FinishReason: finish}}}
		if u != nil {
			c.Choices = []completionChoice{}
		}
		return c
	}
	c := chatResponse{ID: f.id, Object: "chat.completion.chunk", Created: f.created, Model: f.model, Usage: u,
		Choices: []chatChoice{{Delta: &assistantMessage{Content: delta}, FinishReason: finish}}}
	if u != nil {
		c.Choices = []chatChoice{}
	}
	return c
}

// first is a stream's opening event: the assistant's role for a chat, the
// echoed prompt for a completion (nil when there is none).
func (f replyFormat) first() any {
	if f.completion {
		if f.echo == "" {
			return nil
		}
		return f.chunk(f.echo, nil, nil)
	}
	return chatResponse{ID: f.id, Object: "chat.completion.chunk", Created: f.created, Model: f.model,
		Choices: []chatChoice{{Delta: &assistantMessage{Role: "assistant"}}}}
}

func (f replyFormat) whole(text, finish string, u usage) any {
	if f.completion {
		return completionResponse{ID: f.id, Object: "text_completion", Created: f.created, Model: f.model, Usage: &u,
			Choices: []completionChoice{{Text: f.echo + text, FinishReason: &finish}}}
	}
	return chatResponse{ID: f.id, Object: "chat.completion", Created: f.created, Model: f.model, Usage: &u,
		Choices: []chatChoice{{Message: &assistantMessage{Role: "assistant", Content: text}, FinishReason: &finish}}}
}

// generate queues the request on m's worker and answers it, whole or as
// Server-Sent Events. A client that goes away cancels its generation (or
// leaves the queue) and frees the worker.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, m *model, prompt []int, req samplingRequest, f replyFormat) {
	opts, e := req.options(m.ctxLen, len(prompt))
	if e != nil {
		e.write(w)
		return
	}
	j := &job{client: clientKey(r), ctx: r.Context(), prompt: prompt, opts: opts, stops: req.Stop,
		queued: time.Now(), done: make(chan struct{})}
	var sse *eventStream
	if req.Stream {
		sse = newEventStream(w)
		j.emit = func(delta string) error { return sse.send(f.chunk(delta, nil, nil)) }
	}
	if err := m.q.push(j); err != nil {
		(&httpError{code: http.StatusTooManyRequests, typ: "rate_limit_error", errCode: "queue_full",
			msg: fmt.Sprintf("model %s: %d requests already waiting; try again", m.id.Short(), s.o.Queue), retryAfterS: 1}).write(w)
		return
	}
	s.met.queueDepth.WithLabelValues(m.id.String()).Set(float64(m.q.len()))
	if sse != nil {
		// Headers and the first chunk go out at once, so a client sees the
		// request accepted while it waits its turn.
		sse.start()
		if first := f.first(); first != nil {
			sse.send(first)
		}
	}
	select {
	case <-j.done:
	case <-r.Context().Done():
		if m.q.remove(j) {
			s.met.queueDepth.WithLabelValues(m.id.String()).Set(float64(m.q.len()))
			return
		}
		<-j.done // running: it stops at the next token
	}
	out := j.out
	s.account(m, len(prompt), out)
	if r.Context().Err() != nil {
		return // the client is gone; nobody reads an answer
	}
	u := usage{PromptTokens: len(prompt), CompletionTokens: out.generated, TotalTokens: len(prompt) + out.generated}
	if out.err != nil {
		m.log.Error("generation failed", "err", out.err)
		e := &httpError{code: http.StatusInternalServerError, typ: "server_error", errCode: "generation_failed",
			msg: fmt.Sprintf("model %s: %v", m.id.Short(), out.err)}
		if sse != nil {
			sse.sendError(e)
			return
		}
		e.write(w)
		return
	}
	if sse == nil {
		writeJSON(w, http.StatusOK, f.whole(out.text, out.finish, u))
		return
	}
	sse.send(f.chunk("", &out.finish, nil))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		sse.send(f.chunk("", nil, &u))
	}
	sse.done()
}

// account records a finished job in the metrics.
func (s *Server) account(m *model, promptLen int, out outcome) {
	id := m.id.String()
	s.met.tokensIn.WithLabelValues(id).Add(float64(promptLen))
	s.met.tokensOut.WithLabelValues(id).Add(float64(out.generated))
	if out.paging.Hits+out.paging.Misses > 0 {
		s.met.expertHits.WithLabelValues(id).Add(float64(out.paging.Hits))
		s.met.expertMiss.WithLabelValues(id).Add(float64(out.paging.Misses))
	}
	if out.generated > 0 {
		s.met.ttft.WithLabelValues(id).Observe(out.ttft.Seconds())
	}
	if out.generated > 1 && out.decode > 0 {
		s.met.decodeRate.WithLabelValues(id).Set(float64(out.generated-1) / out.decode.Seconds())
	}
}

// eventStream writes Server-Sent Events: "data: JSON\n\n" per event,
// flushed at once, ending with "data: [DONE]".
type eventStream struct {
	w http.ResponseWriter
	f http.Flusher
}

func newEventStream(w http.ResponseWriter) *eventStream {
	f, _ := w.(http.Flusher)
	return &eventStream{w: w, f: f}
}

func (e *eventStream) start() {
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	e.w.WriteHeader(http.StatusOK)
	e.flush()
}

func (e *eventStream) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", b); err != nil {
		return err
	}
	e.flush()
	return nil
}

// sendError ends a stream whose generation failed, as llama-server does:
// an error object as the last event.
func (e *eventStream) sendError(he *httpError) {
	body := apiError{Error: errorBody{Message: he.msg, Type: he.typ}}
	if he.errCode != "" {
		body.Error.Code = &he.errCode
	}
	e.send(body)
	e.done()
}

func (e *eventStream) done() {
	fmt.Fprint(e.w, "data: [DONE]\n\n")
	e.flush()
}

func (e *eventStream) flush() {
	if e.f != nil {
		e.f.Flush()
	}
}
