package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/swarm"
)

// proc is a doppler child whose stdout lines the test reads.
type proc struct {
	cmd   *exec.Cmd
	lines chan string // closed when stdout ends
}

// startProc starts bin with args; the process is killed at cleanup.
func startProc(t *testing.T, ctx context.Context, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stderr = &prefixWriter{t: t, prefix: name + ": "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// waitLine returns the first line (after those read so far) starting
// with prefix, failing the test after d.
func (p *proc) waitLine(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%v exited before printing %q", p.cmd.Args, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("%v printed no %q line within %v", p.cmd.Args, prefix, d)
		}
	}
}

// TestNodePull runs the real binary: node B pulls a model from a seed
// with --pull while serving; then the seed goes away and node C, which
// knows only B, pulls it from B (B re-shares what it pulled). B's --stats
// file names what it fetched and served.
func TestNodePull(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	bin := buildDoppler(t)
	tmp := t.TempDir()
	env := append(os.Environ(), "DOPPLER_CACHE="+filepath.Join(tmp, "cache"), "DOPPLER_STORE=")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lo := "/ip4/127.0.0.1/tcp/0"

	seed := startProc(t, ctx, "seed", bin, env, "seed", src, "--store", filepath.Join(tmp, "A"), "--listen", lo)
	seedAddr := strings.Fields(seed.waitLine(t, "listening /ip4/", time.Minute))[1]
	id := strings.Fields(seed.waitLine(t, "serving ", time.Minute))[1]

	stats := filepath.Join(tmp, "b.json")
	b := startProc(t, ctx, "B", bin, env, "node", "--store", filepath.Join(tmp, "B"), "--listen", lo,
		"--bootstrap", seedAddr, "--pull", id, "--stats", stats)
	bAddr := strings.Fields(b.waitLine(t, "listening /ip4/", time.Minute))[1]
	if got := b.waitLine(t, "pulled ", time.Minute); !strings.HasPrefix(got, "pulled "+id) {
		t.Fatalf("B: %q", got)
	}
	seed.cmd.Process.Kill()
	seed.cmd.Wait()

	c := startProc(t, ctx, "C", bin, env, "node", "--store", filepath.Join(tmp, "C"), "--listen", lo,
		"--bootstrap", bAddr, "--pull", id)
	if got := c.waitLine(t, "pulled ", time.Minute); !strings.HasPrefix(got, "pulled "+id) || !strings.Contains(got, "1 shards") {
		t.Fatalf("C: %q", got)
	}
	if err := b.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Wait(); err != nil {
		t.Fatalf("B on SIGINT: %v", err)
	}
	raw, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var st nodeStats
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if len(st.Pulls) != 1 || !st.Pulls[0].Done || st.Pulls[0].Model.String() != id || st.Pulls[0].Failures != 0 {
		t.Errorf("pulls: %+v", st.Pulls)
	}
	var got int64
	for _, ps := range st.PeerStats {
		got += ps.BytesUseful
	}
	// B fetched the whole model, and C fetched all of it from B.
	store, err := swarm.Open(filepath.Join(tmp, "B"), swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := store.Status(st.Pulls[0].Model)
	store.Close()
	if ms.Bytes == 0 || got != ms.Bytes || st.ServedLibp2p != ms.Bytes || st.Uploaded < uint64(ms.Bytes) || st.Downloaded < uint64(ms.Bytes) {
		t.Errorf("B fetched %d useful bytes and served %d; want the model's %d each (and as many or more on the wire)\n%s", got, st.ServedLibp2p, ms.Bytes, raw)
	}

	// Bad use: one clear line.
	out, err := exec.CommandContext(ctx, bin, "node", "--store", filepath.Join(tmp, "D"), "--pull", id).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--pull needs peers") {
		t.Errorf("node --pull without peers: %v\n%s", err, out)
	}
}
