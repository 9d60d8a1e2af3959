package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// buildDoppler builds the real binary into a temporary directory, with
// env (such as CGO_ENABLED=0) added to the go command's environment.
func buildDoppler(t *testing.T, env ...string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		testenv.Need(t, "the go command on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "doppler")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, gobin, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), env...)
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSeedPullRun runs the real binary: seed a GGUF, pull it by ID into
// another store and an RDRR directory, verify it and run it.
func TestSeedPullRun(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	bin := buildDoppler(t)
	tmp := t.TempDir()
	env := append(os.Environ(), "DOPPLER_CACHE="+filepath.Join(tmp, "cache"), "DOPPLER_STORE=")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	seed := exec.CommandContext(ctx, bin, "seed", src, "--store", filepath.Join(tmp, "A"), "--listen", "/ip4/127.0.0.1/tcp/0")
	seed.Env = env
	seed.Stderr = &prefixWriter{t: t, prefix: "seed: "}
	stdout, err := seed.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		seed.Process.Kill()
		seed.Wait()
	})
	type ready struct{ addr, id string }
	lines := make(chan ready, 1)
	go func() {
		var r ready
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "listening" && r.addr == "" {
				r.addr = f[1]
			}
			if len(f) == 2 && f[0] == "serving" && r.id == "" {
				r.id = f[1]
				lines <- r
			}
		}
		close(lines)
	}()
	var r ready
	select {
	case got, ok := <-lines:
		if !ok {
			t.Fatal("seed exited before printing serving <id>")
		}
		r = got
	case <-time.After(60 * time.Second):
		t.Fatal("seed printed no serving line within 60s")
	}
	if !strings.HasPrefix(r.addr, "/ip4/127.0.0.1/tcp/") || strings.Contains(r.addr, "/tcp/0/") || !strings.Contains(r.addr, "/p2p/") {
		t.Fatalf("listening address %q", r.addr)
	}

	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out := filepath.Join(tmp, "out")
	if o, err := run("pull", r.id, "--peer", r.addr, "--store", filepath.Join(tmp, "B"), "-o", out); err != nil {
		t.Fatalf("pull: %v\n%s", err, o)
	}
	if o, err := run("verify", out); err != nil || !strings.Contains(o, "ok ") {
		t.Fatalf("verify: %v\n%s", err, o)
	}
	if o, err := run("list", "--store", filepath.Join(tmp, "B")); err != nil || !strings.Contains(o, r.id) || !strings.Contains(o, "1/1") {
		t.Fatalf("list: %v\n%s", err, o)
	}
	cmd := exec.CommandContext(ctx, bin, "run", "-m", out, "-p", "Once upon a time", "-n", "8", "--temp", "0")
	cmd.Env = env
	text, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(text), ", there was a little girl") {
		t.Fatalf("run: %v\n%q", err, text)
	}
	// Bad input: one-line errors.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pull", r.id, "--peer", "/ip4/1.2.3.4/tcp/x", "--store", filepath.Join(tmp, "C")}, "bad multiaddr"},
		{[]string{"pull", r.id, "--peer", "/ip4/127.0.0.1/tcp/1" + r.addr[strings.Index(r.addr, "/p2p/"):], "--store", filepath.Join(tmp, "C"), "--wait", "2s"}, "no peer reachable"},
		{[]string{"pull", "zz", "--peer", r.addr, "--store", filepath.Join(tmp, "C")}, "bad model id"},
		{[]string{"rm", strings.Repeat("ab", 32), "--store", filepath.Join(tmp, "B")}, "unknown model id"},
		{[]string{"seed", "--listen", "nonsense", src, "--store", filepath.Join(tmp, "A2")}, "bad multiaddr"},
	} {
		o, err := run(c.args...)
		var errLines []string
		for _, l := range strings.Split(o, "\n") {
			if !strings.HasPrefix(l, "time=") && strings.TrimSpace(l) != "" {
				errLines = append(errLines, l)
			}
		}
		if err == nil || len(errLines) != 1 || !strings.HasPrefix(errLines[0], "doppler: ") || !strings.Contains(errLines[0], c.want) {
			t.Errorf("%v: %v\n%s\nwant one line mentioning %q", c.args, err, o, c.want)
		}
	}
	if o, err := run("rm", r.id[:12], "--store", filepath.Join(tmp, "B")); err != nil || !strings.Contains(o, "removed "+r.id) {
		t.Fatalf("rm: %v\n%s", err, o)
	}
}

type prefixWriter struct {
	t      *testing.T
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
