//go:build js && wasm

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall/js"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/chat"
)

// Defaults of generate's options (docs/sdk.md).
const (
	defaultMaxTokens   = 64
	defaultTemperature = 0.8
)

// genOptions are the arguments of a loaded model's generate.
type genOptions struct {
	prompt       string
	messages     []chat.Message // a chat turn instead of a prompt
	maxTokens    int
	temperature  float64
	seed         uint64 // 0: from the clock
	continuation bool   // token text keeps the first piece's leading space
}

func parseGenOptions(v js.Value) (genOptions, error) {
	o := genOptions{prompt: str(v, "prompt"), maxTokens: int(num(v, "maxTokens", defaultMaxTokens)),
		temperature: num(v, "temperature", defaultTemperature), seed: uint64(num(v, "seed", 0)),
		continuation: v.Get("continuation").Truthy()}
	if ms := v.Get("messages"); ms.Truthy() {
		if !js.Global().Get("Array").Call("isArray", ms).Bool() {
			return o, errors.New("messages: want an array of {role, content}")
		}
		for i := range ms.Length() {
			m := ms.Index(i)
			if m.Type() != js.TypeObject {
				return o, fmt.Errorf("message %d: want {role, content}", i)
			}
			o.messages = append(o.messages, chat.Message{Role: str(m, "role"), Content: str(m, "content")})
		}
	}
	switch {
	case o.maxTokens < 1:
		return o, fmt.Errorf("maxTokens %d: want at least 1", o.maxTokens)
	case o.temperature < 0:
		return o, fmt.Errorf("temperature %g: want 0 (greedy) or more", o.temperature)
	case o.messages == nil && o.prompt == "":
		return o, errors.New("generate: no prompt (or messages)")
	}
	return o, nil
}

// errUnloaded answers a generation asked of a model never loaded or unloaded.
var errUnloaded = errors.New("model not loaded (or unloaded)")

// generate runs one prompt or chat turn, calling onToken with each token
// ({id, text}) as it is generated, and returns the result (the page's
// window.dopplerResult, docs/browser.md).
func (c *client) generate(ctx context.Context, o genOptions, onToken func(id int, text string)) (map[string]any, error) {
	// unload cancels c.ctx, from which ctx derives: a call after it must
	// say so, whichever case the select below would take.
	if c.ctx.Err() != nil {
		return nil, errUnloaded
	}
	select {
	case c.busy <- struct{}{}:
	case <-ctx.Done():
		if c.ctx.Err() != nil {
			return nil, errUnloaded
		}
		return nil, ctx.Err()
	}
	defer func() { <-c.busy }()
	g := c.gen
	if g == nil {
		return nil, errUnloaded
	}
	var ids []int
	if o.messages != nil {
		var err error
		if ids, err = chat.Tokens(g.tok, g.chat, o.messages); err != nil {
			return nil, fmt.Errorf("chat: %w", err)
		}
	} else {
		ids = g.tok.Encode(o.prompt, true)
	}
	c.ev.phase("generating")
	defer c.ev.phase("ready")
	sess, err := g.model.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	so := engine.DefaultSampleOptions()
	so.Temp = o.temperature
	so.Seed = o.seed
	if so.Seed == 0 {
		so.Seed = uint64(time.Now().UnixNano())
	}
	// The result's text is the generated tokens decoded on their own (as
	// the CLI, the API and llama.cpp's goldens do); with continuation the
	// tokens' text continues the prompt, leading space kept, for showing
	// after it.
	stream := g.tok.NewStreamDecoder()
	shown := stream
	if o.continuation {
		shown = g.tok.NewContinuationDecoder()
	}
	var text strings.Builder
	opts := engine.GenerateOptions{Sample: so, MaxTokens: o.maxTokens, StopAtEOG: g.tok.IsEOG,
		OnToken: func(id int) error {
			piece := stream.Push(id)
			text.WriteString(piece)
			if shown != stream {
				piece = shown.Push(id)
			}
			onToken(id, piece)
			return nil
		}}
	start := time.Now()
	res, err := sess.Generate(ctx, ids, opts)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	tail := stream.Flush()
	text.WriteString(tail)
	if shown != stream {
		tail = shown.Flush()
	}
	if tail != "" {
		onToken(-1, tail)
	}
	tokens := make([]any, len(res.Tokens))
	for i, t := range res.Tokens {
		tokens[i] = t
	}
	prompts := make([]any, len(ids))
	for i, t := range ids {
		prompts[i] = t
	}
	lat := make([]any, len(res.Stats.TokenLatency))
	for i, d := range res.Stats.TokenLatency {
		lat[i] = float64(d.Microseconds()) / 1000
	}
	return map[string]any{
		"model":            c.model.String(),
		"promptTokens":     prompts,
		"tokens":           tokens,
		"text":             text.String(),
		"stopReason":       res.Reason,
		"bytesByTransport": map[string]any{"webrtc": float64(c.bytesRTC.Load()), "http": float64(c.bytesHTTP.Load())},
		"rejectedBlocks":   float64(c.nRejected.Load()),
		"rejected":         c.rejectedList(),
		"servedBlocks":     float64(c.served.Load()),
		"seconds":          time.Since(start).Seconds(),
		"prefillMs":        res.Stats.Prefill.Seconds() * 1000,
		"loadMs":           g.load.Seconds() * 1000,
		"tokenMs":          lat,
	}, nil
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
