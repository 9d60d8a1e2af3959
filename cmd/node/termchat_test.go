package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// screen is what a terminal shows: everything the process wrote to it.
type screen struct {
	mu      sync.Mutex
	text    strings.Builder
	changed chan struct{} // closed and replaced on each write
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text.Write(p)
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

// waitFor waits until the screen holds n times want and returns it.
func (s *screen) waitFor(t *testing.T, want string, n int, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		text, changed := s.text.String(), s.changed
		s.mu.Unlock()
		if strings.Count(text, want) >= n {
			return text
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %d× %q on the terminal within %v; it shows:\n%s", n, want, timeout, text)
		}
	}
}

// TestChatREPL runs the real binary on a terminal (a pty) with no prompt:
// doppler run opens the chat, answers a line, survives Ctrl-C at the
// prompt with a hint, and exits 0 on /bye. With its input piped, run
// without a prompt still asks for one.
func TestChatREPL(t *testing.T) {
	testenv.SkipShort(t, "builds the doppler binary")
	model := testenv.Path(t, "models/stories260K.gguf")
	bin := buildDoppler(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := append(os.Environ(), "DOPPLER_CACHE="+filepath.Join(t.TempDir(), "cache"), "DOPPLER_STORE=")

	piped := exec.CommandContext(ctx, bin, "run", "-m", model, "--temp", "0")
	piped.Env, piped.Stdin = env, strings.NewReader("Tell me a story.\n")
	if out, err := piped.CombinedOutput(); err == nil || !strings.Contains(string(out), "give exactly one of -p PROMPT") {
		t.Fatalf("run with piped input and no prompt: %v\n%s", err, out)
	}

	cmd := exec.CommandContext(ctx, bin, "run", "-m", model, "--temp", "0", "-n", "24")
	cmd.Env = env
	tty, err := pty.Start(cmd) // stdin, stdout and stderr; the controlling terminal
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	defer tty.Close()
	scr := &screen{changed: make(chan struct{})}
	go io.Copy(scr, tty) // ends when the process exits and tty is closed
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel() // kills the process if it is still running
		<-exited
	})
	const wait = 2 * time.Minute
	typeIn := func(s string) {
		t.Helper()
		if _, err := io.WriteString(tty, s); err != nil {
			t.Fatalf("typing %q: %v", s, err)
		}
	}

	scr.waitFor(t, ">>> ", 1, wait)
	typeIn("Tell me a story.\r")
	text := scr.waitFor(t, ">>> ", 2, wait)
	answer := text[strings.Index(text, "Tell me a story.")+len("Tell me a story."):]
	answer = strings.TrimSpace(answer[:strings.LastIndex(answer, ">>> ")])
	if answer == "" {
		t.Fatalf("no answer on the terminal:\n%s", text)
	}
	typeIn("\x03") // Ctrl-C at the prompt
	text = scr.waitFor(t, ">>> ", 3, wait)
	if !strings.Contains(text, "Use Ctrl-D or /bye to exit.") {
		t.Fatalf("Ctrl-C at the prompt printed no hint:\n%s", text)
	}
	typeIn("/bye\r")
	select {
	case err := <-exited:
		if err != nil {
			scr.mu.Lock()
			t.Fatalf("doppler run exited with %v; the terminal shows:\n%s", err, scr.text.String())
		}
		exited <- nil // for the cleanup
	case <-time.After(wait):
		t.Fatalf("doppler run did not exit after /bye")
	}
}
