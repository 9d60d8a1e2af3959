//go:build cgo || js

package repl

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/chat"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/internal/gputest"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/rdrr"
)

// waitFor bounds every wait of these tests (lavapipe on a busy machine).
const waitFor = 2 * time.Minute

// model is stories260K on the test GPU adapter (lavapipe in CI).
type model struct {
	m        *engine.Model
	tk       *tokenizer.Tokenizer
	template string
}

func loadModel(t *testing.T, ctxLen int) *model {
	t.Helper()
	_, rm := testmodel.Open(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{})
	tk, err := tokenizer.New(rm.Manifest.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	dev := gputest.Open(t)
	// f32 KV: a turn that reuses the cache gives the same greedy tokens as
	// one prefilled from scratch.
	m, err := engine.Load(context.Background(), dev, rm, engine.Options{Context: ctxLen, KVF32: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return &model{m: m, tk: tk, template: rm.Manifest.Tokenizer.ChatTemplate}
}

func (m *model) session(t *testing.T) *engine.Session {
	t.Helper()
	s, err := m.m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// output collects what the chat prints; hook, when set, sees each write.
type output struct {
	mu      sync.Mutex
	buf     strings.Builder
	changed chan struct{} // closed and replaced on each write
	hook    func(p string)
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	hook := o.hook
	o.mu.Unlock()
	if hook != nil {
		hook(string(p))
	}
	return len(p), nil
}

func (o *output) setHook(h func(string)) {
	o.mu.Lock()
	o.hook = h
	o.mu.Unlock()
}

// chatRun is a Run in progress on a session of stories260K.
type chatRun struct {
	t     *testing.T
	sess  *engine.Session
	in    *io.PipeWriter
	out   *output
	sig   chan os.Signal
	turns chan Turn
	done  chan error
}

// start runs a greedy chat on a new session of m; tune adjusts the
// options first.
func start(t *testing.T, m *model, tune func(*Options)) *chatRun {
	t.Helper()
	pr, pw := io.Pipe()
	c := &chatRun{t: t, sess: m.session(t), in: pw, out: &output{changed: make(chan struct{})},
		sig: make(chan os.Signal), turns: make(chan Turn, 16), done: make(chan error, 1)}
	o := Options{Session: c.sess, Tokenizer: m.tk, Template: m.template, Sample: engine.SampleOptions{},
		MaxTokens: 24, In: pr, Out: c.out, Interrupts: c.sig, OnTurn: func(tr Turn) { c.turns <- tr }}
	if tune != nil {
		tune(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { c.done <- Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		pw.Close()
		select {
		case <-c.done:
		case <-time.After(waitFor):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	return c
}

// send types a line.
func (c *chatRun) send(line string) {
	c.t.Helper()
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c.in, line+"\n")
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			c.t.Fatalf("typing %q: %v", line, err)
		}
	case <-time.After(waitFor):
		c.t.Fatalf("typing %q: the chat read nothing for %v", line, waitFor)
	}
}

// prompts waits until the output holds n prompts and returns it.
func (c *chatRun) prompts(n int) string {
	c.t.Helper()
	deadline := time.After(waitFor)
	for {
		c.out.mu.Lock()
		s, changed := c.out.buf.String(), c.out.changed
		c.out.mu.Unlock()
		if strings.Count(s, prompt) >= n {
			return s
		}
		select {
		case <-changed:
		case <-deadline:
			c.t.Fatalf("waiting for prompt %d, the output is:\n%s", n, s)
		}
	}
}

// turn waits for the next answer.
func (c *chatRun) turn() Turn {
	c.t.Helper()
	select {
	case tr := <-c.turns:
		return tr
	case <-time.After(waitFor):
		c.t.Fatalf("no answer within %v; the output is:\n%s", waitFor, c.out.buf.String())
	}
	return Turn{}
}

// say sends a message and waits for its answer and the next prompt.
func (c *chatRun) say(msg string) Turn {
	c.t.Helper()
	n := strings.Count(c.prompts(1), prompt)
	c.send(msg)
	tr := c.turn()
	c.prompts(n + 1)
	return tr
}

// exit waits for Run to return and checks it returned nil.
func (c *chatRun) exit() {
	c.t.Helper()
	select {
	case err := <-c.done:
		if err != nil {
			c.t.Fatalf("Run: %v", err)
		}
		c.done <- nil // for the cleanup
	case <-time.After(waitFor):
		c.t.Fatalf("Run did not return; the output is:\n%s", c.out.buf.String())
	}
}

// greedy is what a fresh session answers to the conversation msgs.
func greedy(t *testing.T, m *model, msgs []chat.Message, maxTokens int) []int {
	t.Helper()
	ids, err := chat.Tokens(m.tk, m.template, msgs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.session(t).Generate(context.Background(), ids, engine.GenerateOptions{MaxTokens: maxTokens, StopAtEOG: m.tk.IsEOG})
	if err != nil {
		t.Fatal(err)
	}
	return res.Tokens
}

// TestTwoTurns: the second turn carries the first through the transcript,
// feeds the session only the tokens after the cached prefix, and answers
// what a fresh session answers to the whole conversation; /bye exits.
func TestTwoTurns(t *testing.T) {
	m := loadModel(t, 256)
	c := start(t, m, nil)
	first := c.say("Tell me a story.")
	if first.Reused != 0 || first.Reply == "" || first.Dropped != 0 {
		t.Fatalf("first turn: %+v", first)
	}
	if out := c.prompts(2); !strings.Contains(out, first.Reply) {
		t.Fatalf("the reply %q is not in the output:\n%s", first.Reply, out)
	}
	cached := c.sess.Pos()
	second := c.say("What did the dog do?")
	if second.Reused < first.Prompt || second.Reused > cached || second.Reused >= second.Prompt {
		t.Fatalf("second turn reused %d of %d prompt tokens; want at least the first prompt's %d, at most the %d cached",
			second.Reused, second.Prompt, first.Prompt, cached)
	}
	conv := []chat.Message{{Role: "user", Content: "Tell me a story."}, {Role: "assistant", Content: first.Reply},
		{Role: "user", Content: "What did the dog do?"}}
	ids, err := chat.Tokens(m.tk, m.template, conv)
	if err != nil {
		t.Fatal(err)
	}
	if second.Prompt != len(ids) {
		t.Fatalf("second prompt: %d tokens, the conversation renders to %d", second.Prompt, len(ids))
	}
	if want := greedy(t, m, conv, 24); !slices.Equal(second.Tokens, want) {
		t.Fatalf("second answer with the cache reused: %v; from scratch: %v", second.Tokens, want)
	}
	c.send("/bye")
	c.exit()
}

// TestCommands: /help lists the commands, an unknown one is named, /clear
// forgets the conversation (the same message gets the first answer again,
// from an empty cache), and the end of the input exits.
func TestCommands(t *testing.T) {
	m := loadModel(t, 256)
	c := start(t, m, func(o *Options) { o.System = "You tell stories." })
	first := c.say("Hello")
	for _, cmd := range []struct{ line, want string }{
		{"/help", "/clear"},
		{"/?", "/bye"},
		{"/nope", `Unknown command "/nope"`},
		{"/clear", cleared},
	} {
		n := strings.Count(c.prompts(1), prompt)
		c.send(cmd.line)
		if out := c.prompts(n + 1); !strings.Contains(out[strings.LastIndex(out[:len(out)-len(prompt)], prompt):], cmd.want) {
			t.Fatalf("%s: no %q in the output:\n%s", cmd.line, cmd.want, out)
		}
	}
	if c.sess.Pos() != 0 {
		t.Fatalf("/clear left %d tokens in the KV cache", c.sess.Pos())
	}
	again := c.say("Hello")
	if again.Reused != 0 || again.Prompt != first.Prompt || !slices.Equal(again.Tokens, first.Tokens) {
		t.Fatalf("after /clear: %+v; before: %+v", again, first)
	}
	c.in.Close() // Ctrl-D
	c.exit()
}

// TestInterrupt: an interrupt during an answer stops it there and keeps
// what was printed; the next message is answered; an interrupt at the
// prompt prints how to exit.
func TestInterrupt(t *testing.T) {
	m := loadModel(t, 256)
	c := start(t, m, func(o *Options) { o.MaxTokens = 0 })
	n := strings.Count(c.prompts(1), prompt)
	var once sync.Once
	c.out.setHook(func(p string) {
		if p != prompt {
			once.Do(func() { c.sig <- os.Interrupt }) // inside the answer's first token
		}
	})
	c.send("Tell me a long story.")
	stopped := c.turn()
	c.out.setHook(nil)
	out := c.prompts(n + 1)
	if stopped.Reason != "interrupted" || len(stopped.Tokens) > 8 || stopped.Reply == "" {
		t.Fatalf("interrupted answer: %q after %d tokens (reason %s)", stopped.Reply, len(stopped.Tokens), stopped.Reason)
	}
	if !strings.Contains(out, stopped.Reply) {
		t.Fatalf("the interrupted reply %q is not in the output:\n%s", stopped.Reply, out)
	}
	next := c.say("Go on.")
	if next.Reason == "interrupted" || len(next.Tokens) == 0 || next.Reused < stopped.Prompt {
		t.Fatalf("the turn after an interrupt: %+v", next)
	}
	n = strings.Count(c.prompts(1), prompt)
	select {
	case c.sig <- os.Interrupt:
	case <-time.After(waitFor):
		t.Fatal("the chat does not take interrupts at the prompt")
	}
	if out := c.prompts(n + 1); !strings.HasSuffix(out, exitHint+"\n"+prompt) {
		t.Fatalf("an interrupt at the prompt: the output ends\n%s", out[max(0, len(out)-200):])
	}
	c.send("/bye")
	c.exit()
}

// TestContextFull: an answer that fills the context says so; the next
// message drops the oldest exchange, with a line saying so, and is
// answered; a message too long for the context alone is refused and the
// chat goes on.
func TestContextFull(t *testing.T) {
	m := loadModel(t, 128)
	c := start(t, m, func(o *Options) { o.MaxTokens = 0 })
	first := c.say("Tell me a story.")
	if first.Reason != "context" || !strings.Contains(c.prompts(2), "context is full") {
		t.Fatalf("first answer ended with %q after %d tokens, want the context full:\n%s", first.Reason, len(first.Tokens), c.prompts(2))
	}
	second := c.say("And then?")
	if second.Dropped != 1 || !strings.Contains(c.prompts(3), "forgot the oldest 1") || len(second.Tokens) == 0 {
		t.Fatalf("second turn: %+v\n%s", second, c.prompts(3))
	}
	n := strings.Count(c.prompts(3), prompt)
	c.send(strings.Repeat("Once upon a time there was a dog. ", 30))
	if out := c.prompts(n + 1); !strings.Contains(out, "does not fit the 128-token context") {
		t.Fatalf("a message longer than the context:\n%s", out)
	}
	if third := c.say("Hi"); len(third.Tokens) == 0 {
		t.Fatalf("the turn after a refused message: %+v", third)
	}
	c.send("/bye")
	c.exit()
}
