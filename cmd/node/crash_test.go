package main

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
	"github.com/doppler-llm/doppler/swarm/swarmbench"
)

// TestPullKill9 kills a pulling `doppler pull` with SIGKILL 100 times at
// random points. After each kill the store, reopened as the next run
// would, must claim nothing that fails verification: every complete
// shard and every block a partial shard says it holds hashes right.
// The pulls resume where the killed one stopped (the held bytes never go
// back), and an uninterrupted pull at the end completes the model.
func TestPullKill9(t *testing.T) {
	bin := buildDoppler(t)
	tmp := t.TempDir()
	env := append(os.Environ(), "DOPPLER_CACHE="+filepath.Join(tmp, "cache"), "DOPPLER_STORE=")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// 24 MiB in 96 shards of 256 KiB, 64 KiB blocks: a pull on loopback
	// takes long enough for kills to land mid-transfer.
	src := filepath.Join(tmp, "model")
	id, err := swarmbench.SynthModel(src, 24<<20, 256<<10, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	m, err := rdrr.OpenDir(src)
	if err != nil {
		t.Fatal(err)
	}
	total := m.Manifest.TotalSize()
	seed := startProc(t, ctx, "seed", bin, env, "seed", src, "--store", filepath.Join(tmp, "A"), "--listen", "/ip4/127.0.0.1/tcp/0")
	addr := strings.Fields(seed.waitLine(t, "listening /ip4/", time.Minute))[1]
	seed.waitLine(t, "serving ", time.Minute)

	store := filepath.Join(tmp, "B")
	pullArgs := []string{"pull", id.String(), "--peer", addr, "--store", store, "--linger", "0", "--wait", "20s"}
	held := func() int64 {
		t.Helper()
		c, err := swarmbench.CheckStore(store, id, m.Manifest)
		if err != nil {
			t.Fatalf("check store: %v", err)
		}
		if c.BadBytes != 0 || len(c.BadShards) > 0 {
			t.Fatalf("after a kill the store claims %d bytes that fail verification (bad complete shards: %d)", c.BadBytes, len(c.BadShards))
		}
		s, err := swarm.Open(store, swarm.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		st, _ := s.Status(id)
		return st.HaveBytes
	}

	// One uninterrupted pull first: how long a pull takes here sets the
	// window the kills are drawn from (a fixed 700 ms let half the pulls
	// complete once pulls got faster).
	t0 := time.Now()
	if o, err := exec.CommandContext(ctx, bin, pullArgs...).CombinedOutput(); err != nil || !strings.Contains(string(o), "pulled "+id.String()) {
		t.Fatalf("first pull: %v\n%s", err, o)
	}
	window := max(time.Since(t0), 200*time.Millisecond)
	if o, err := exec.CommandContext(ctx, bin, "rm", id.String(), "--store", store).CombinedOutput(); err != nil {
		t.Fatalf("rm: %v\n%s", err, o)
	}
	t.Logf("one pull takes %v: kills fall within it", window.Round(time.Millisecond))

	rng := rand.New(rand.NewPCG(14, 9))
	var prev int64
	kills, mid, completed := 0, 0, 0
	for range 100 {
		cmd := exec.CommandContext(ctx, bin, pullArgs...)
		cmd.Env = env
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Anywhere from before the process is up to the end of the pull.
		d := time.Duration(rng.Int64N(int64(window)))
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("pull exited before its kill: %v\n%s", err, out.String())
			}
			if h := held(); h != total {
				t.Fatalf("pull succeeded but the store holds %d of %d bytes", h, total)
			}
			// Complete: start over, so the next kills land mid-transfer.
			completed++
			if o, err := exec.CommandContext(ctx, bin, "rm", id.String(), "--store", store).CombinedOutput(); err != nil {
				t.Fatalf("rm: %v\n%s", err, o)
			}
			prev = 0
			continue
		case <-time.After(d):
		}
		cmd.Process.Kill() // SIGKILL
		<-exited
		kills++
		h := held()
		if h < prev {
			t.Fatalf("kill %d: the store holds %d bytes, fewer than the %d before the run", kills, h, prev)
		}
		if h > 0 && h < total {
			mid++
		}
		prev = h
	}
	t.Logf("%d kills (%d mid-transfer), %d pulls completed between kills", kills, mid, completed)
	if kills < 50 || mid < 10 {
		t.Errorf("%d kills, %d of them mid-transfer: the kill points missed the transfers", kills, mid)
	}
	// The last run is not killed: it resumes and ends with the model.
	cmd := exec.CommandContext(ctx, bin, pullArgs...)
	cmd.Env = env
	if o, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(o), "pulled "+id.String()) {
		t.Fatalf("final pull: %v\n%s", err, o)
	}
	if h := held(); h != total {
		t.Fatalf("final pull: the store holds %d of %d bytes", h, total)
	}
}
