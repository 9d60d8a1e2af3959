package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// TestNoCgoBuild builds doppler with CGO_ENABLED=0 — the seed-server
// binary for a machine without a GPU — and runs it: converting, verifying,
// inspecting and tokenizing stories260K work, and run and bench inference
// exit non-zero with errNoGPU as their one line of output.
func TestNoCgoBuild(t *testing.T) {
	testenv.SkipShort(t, "builds the doppler binary with CGO_ENABLED=0")
	src := testenv.Path(t, "models/stories260K.gguf")
	bin := buildDoppler(t, "CGO_ENABLED=0")
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" && s.Value != "0" {
			t.Fatalf("the binary was built with CGO_ENABLED=%s", s.Value)
		}
	}
	tmp := t.TempDir()
	env := append(os.Environ(), "DOPPLER_CACHE="+filepath.Join(tmp, "cache"), "DOPPLER_STORE="+filepath.Join(tmp, "store"))
	dir := filepath.Join(tmp, "stories")
	doppler := func(args ...string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}

	for _, c := range []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"convert", src, "-o", dir}, "model id "},
		{[]string{"verify", dir}, "ok " + dir},
		{[]string{"inspect", dir}, "architecture  llama"},
		{[]string{"tokenize", "-m", src, "Once upon a time"}, "1 "},
		{[]string{"tokenize", "-m", dir, "--decode", "1,403,407"}, "\n"},
	} {
		out, errOut, err := doppler(c.args...)
		if err != nil || !strings.Contains(out, c.want) {
			t.Fatalf("doppler %s: %v\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), err, out, errOut)
		}
	}

	want := "doppler: " + errNoGPU.Error() + "\n"
	for _, args := range [][]string{
		{"run", "-m", dir, "-p", "Once upon a time"},
		{"run", "-m", dir, "--prompt-tokens", "1,2,3", "--json"},
		{"bench", "inference", "-m", dir},
	} {
		out, errOut, err := doppler(args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("doppler %s: %v, want a non-zero exit", strings.Join(args, " "), err)
		}
		if out != "" || errOut != want {
			t.Errorf("doppler %s:\nstdout %q\nstderr %q\nwant stderr %q", strings.Join(args, " "), out, errOut, want)
		}
	}
}
