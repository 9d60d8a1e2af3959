//go:build cgo || js

package repl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"unicode"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/chat"
	"github.com/doppler-llm/doppler/engine/tokenizer"
)

// What the chat prints besides the answers.
const (
	prompt   = ">>> "
	banner   = "Send a message (/? for help, /bye or Ctrl-D to exit)\n"
	exitHint = "Use Ctrl-D or /bye to exit."
	cleared  = "Cleared the conversation."
	helpText = `Commands:
  /clear       forget the conversation (the system message stays)
  /bye         exit (Ctrl-D, at the prompt, too)
  /help, /?    this list
Ctrl-C stops an answer; what was printed of it stays in the conversation.
`
)

// Options configures [Run].
type Options struct {
	// Session generates the answers; Run empties its KV cache first and
	// then owns it until it returns. Required.
	Session *engine.Session
	// Tokenizer is the model's. Required.
	Tokenizer *tokenizer.Tokenizer
	// Template is the model's chat template; "" renders the plain
	// transcript of [chat.Tokens].
	Template string
	// System, when set, is the system message; /clear keeps it.
	System string
	// Sample draws each answer's tokens.
	Sample engine.SampleOptions
	// MaxTokens bounds each answer; 0 lets it run to an end-of-generation
	// token or the end of the context.
	MaxTokens int
	// In is read line by line (the user's messages and commands) and Out
	// gets the prompt, the answers and the notices. Required. Run may
	// return while a read of In is still blocked.
	In  io.Reader
	Out io.Writer
	// Interrupts (Ctrl-C) stop the answer being generated; at the prompt
	// they print how to exit. Nil: none.
	Interrupts <-chan os.Signal
	// OnTurn, when set, is told about each answer once it is printed.
	OnTurn func(Turn)
	// Logger gets a debug record per turn; nil: none.
	Logger *slog.Logger
}

// Turn describes one answer.
type Turn struct {
	// Prompt is the number of tokens of the rendered conversation, of
	// which Reused were already in the KV cache and not fed again.
	Prompt, Reused int
	// Dropped is how many of the oldest exchanges (a message and its
	// answer) were forgotten to make the conversation fit the context.
	Dropped int
	// Tokens are the answer's tokens and Reply its text, as printed.
	Tokens []int
	Reply  string
	// Reason is why the answer ended, as in [engine.Result]: "eos",
	// "length" (MaxTokens), "context" or "interrupted".
	Reason string
}

// Run chats until /bye, the end of In, or ctx is done (it then returns
// ctx's error). A failure of the engine or of Out ends it with that error;
// a conversation too long for the context does not.
func Run(ctx context.Context, o Options) error {
	if o.Session == nil || o.Tokenizer == nil || o.In == nil || o.Out == nil {
		return errors.New("repl: Session, Tokenizer, In and Out are required")
	}
	if o.MaxTokens < 0 {
		return fmt.Errorf("repl: MaxTokens %d must be ≥ 0", o.MaxTokens)
	}
	if err := o.Sample.Validate(); err != nil {
		return fmt.Errorf("repl: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &conversation{o: o, log: log}
	o.Session.Reset()
	done := make(chan struct{})
	defer close(done)
	lines := readLines(o.In, done)
	if err := c.print(banner); err != nil {
		return err
	}
	for {
		if err := c.print(prompt); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			c.print("\n")
			return ctx.Err()
		case <-o.Interrupts:
			if err := c.print("\n" + exitHint + "\n"); err != nil {
				return err
			}
		case l, ok := <-lines:
			if !ok {
				return c.print("\n")
			}
			if l.err != nil {
				return fmt.Errorf("repl: reading input: %w", l.err)
			}
			text := strings.TrimSpace(l.text)
			if text == "" {
				continue
			}
			if strings.HasPrefix(text, "/") {
				quit, err := c.command(text)
				if quit || err != nil {
					return err
				}
				continue
			}
			if err := c.turn(ctx, text); err != nil {
				return err
			}
		}
	}
}

// conversation is one chat: the messages so far (without the system
// message) and the tokens whose KV the session holds.
type conversation struct {
	o       Options
	log     *slog.Logger
	history []chat.Message // user and assistant messages, in pairs
	cached  []int          // the tokens at the session's positions 0 … Pos()-1
}

func (c *conversation) print(s string) error {
	if _, err := io.WriteString(c.o.Out, s); err != nil {
		return fmt.Errorf("repl: writing output: %w", err)
	}
	return nil
}

// command runs a slash command; quit says the chat is over.
func (c *conversation) command(line string) (quit bool, err error) {
	switch name := strings.Fields(line)[0]; name {
	case "/bye":
		return true, nil
	case "/clear":
		c.history, c.cached = nil, nil
		c.o.Session.Reset()
		return false, c.print(cleared + "\n\n")
	case "/help", "/?":
		return false, c.print(helpText + "\n")
	default:
		return false, c.print(fmt.Sprintf("Unknown command %q. Type /? for help.\n\n", name))
	}
}

// turn answers the user's message text.
func (c *conversation) turn(ctx context.Context, text string) error {
	s := c.o.Session
	user := chat.Message{Role: "user", Content: text}
	ids, dropped, err := c.fit(user)
	if err != nil {
		return err
	}
	if ids == nil {
		return c.print(fmt.Sprintf("That message does not fit the %d-token context; send a shorter one.\n\n", s.Context()))
	}
	if dropped > 0 {
		if err := c.print(fmt.Sprintf("(The conversation no longer fits the %d-token context: forgot the oldest %d of its exchanges.)\n", s.Context(), dropped)); err != nil {
			return err
		}
	}
	// Feed only what follows the prefix the cache already holds (at least
	// one token: Generate samples after its prompt).
	reused := min(commonPrefix(c.cached, ids), len(ids)-1)
	if err := s.Rewind(reused); err != nil {
		return fmt.Errorf("repl: %w", err)
	}
	c.cached = c.cached[:reused]

	var reply strings.Builder
	emit := func(piece string) error {
		if reply.Len() == 0 {
			piece = strings.TrimLeftFunc(piece, unicode.IsSpace)
		}
		if piece == "" {
			return nil
		}
		reply.WriteString(piece)
		return c.print(piece)
	}
	dec := c.o.Tokenizer.NewStreamDecoder()
	maxTokens := c.o.MaxTokens
	if maxTokens == 0 {
		maxTokens = s.Context() // the context ends it first
	}
	g := engine.GenerateOptions{Sample: c.o.Sample, MaxTokens: maxTokens, StopAtEOG: c.o.Tokenizer.IsEOG,
		OnToken: func(id int) error { return emit(dec.Push(id)) }}
	tctx, cancel := context.WithCancel(ctx)
	stop := stopOnInterrupt(c.o.Interrupts, cancel)
	res, err := s.Generate(tctx, ids[reused:], g)
	stop()
	cancel()
	if err != nil {
		c.cached = nil
		s.Reset()
		if errors.Is(err, engine.ErrContextFull) { // fit should have prevented it
			return c.print(fmt.Sprintf("\n(%v; starting over.)\n\n", err))
		}
		return fmt.Errorf("repl: generating: %w", err)
	}
	if err := emit(dec.Flush()); err != nil {
		return err
	}
	// The session holds KV for the prompt and the answer's tokens but
	// (usually) the last one, which was sampled and never fed.
	all := append(ids[:len(ids):len(ids)], res.Tokens...)
	if s.Pos() > len(all) { // never: Generate feeds nothing else
		return fmt.Errorf("repl: the session holds %d tokens after a %d-token turn", s.Pos(), len(all))
	}
	c.cached = all[:s.Pos()]
	answer := strings.TrimRightFunc(reply.String(), unicode.IsSpace)
	c.history = append(c.history[2*dropped:], user, chat.Message{Role: "assistant", Content: answer})
	end := "\n\n"
	if res.Reason == "context" {
		end = fmt.Sprintf("\n(The %d-token context is full: the answer stops here.)\n\n", s.Context())
	}
	if err := c.print(end); err != nil {
		return err
	}
	c.log.Debug("chat turn", "prompt_tokens", len(ids), "reused", reused, "dropped", dropped,
		"generated", len(res.Tokens), "reason", res.Reason, "kv", s.Pos())
	if c.o.OnTurn != nil {
		c.o.OnTurn(Turn{Prompt: len(ids), Reused: reused, Dropped: dropped, Tokens: res.Tokens, Reply: answer, Reason: res.Reason})
	}
	return nil
}

// fit renders the conversation with the user's new message, dropping the
// oldest exchanges until it leaves room for an answer (MaxTokens, at most
// half the context). It returns the tokens and how many exchanges it
// dropped, or nil tokens when the message leaves no room even alone.
func (c *conversation) fit(user chat.Message) ([]int, int, error) {
	ctxLen := c.o.Session.Context()
	room := ctxLen / 2
	if c.o.MaxTokens > 0 {
		room = min(room, c.o.MaxTokens)
	}
	for dropped := 0; ; dropped++ {
		msgs := make([]chat.Message, 0, len(c.history)+2)
		if c.o.System != "" {
			msgs = append(msgs, chat.Message{Role: "system", Content: c.o.System})
		}
		msgs = append(append(msgs, c.history[2*dropped:]...), user)
		ids, err := chat.Tokens(c.o.Tokenizer, c.o.Template, msgs)
		if err != nil {
			return nil, 0, fmt.Errorf("repl: rendering the conversation: %w", err)
		}
		if len(ids)+room <= ctxLen {
			return ids, dropped, nil
		}
		if 2*dropped >= len(c.history) {
			if len(ids) >= ctxLen {
				return nil, 0, nil
			}
			return ids, dropped, nil // some room, if less than wished
		}
	}
}

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// stopOnInterrupt calls cancel on the first interrupt until stop is
// called; stop returns once the watch has ended.
func stopOnInterrupt(sig <-chan os.Signal, cancel func()) (stop func()) {
	if sig == nil {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-sig:
			cancel()
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// line is one line of input, or the error that ended the input.
type line struct {
	text string
	err  error
}

// readLines sends the lines of r (without their line ends) until r ends,
// then closes the channel; a read error is sent as the last line. It
// stops early when done is closed, once its read returns.
func readLines(r io.Reader, done <-chan struct{}) <-chan line {
	ch := make(chan line)
	go func() {
		defer close(ch)
		br := bufio.NewReader(r)
		for {
			s, err := br.ReadString('\n')
			if s != "" || (err != nil && err != io.EOF) {
				l := line{text: strings.TrimRight(s, "\r\n")}
				if err != nil && err != io.EOF {
					l.err = err
				}
				select {
				case ch <- l:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}
