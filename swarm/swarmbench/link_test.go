//go:build linux

package swarmbench

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// linkBinary builds cmd/node into the test's temporary directory.
func linkBinary(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		testenv.Need(t, "the go command on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "doppler")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gobin, "build", "-o", bin, "github.com/doppler-llm/doppler/cmd/node").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/node: %v\n%s", err, out)
	}
	return bin
}

// needLink: link mode's prerequisites (root, ip, tc) or a testenv.Need.
func needLink(t *testing.T) {
	t.Helper()
	if err := needLinkTools(); err != nil {
		testenv.Need(t, "link mode: %v", err)
	}
}

// linkOptions: 4 MiB in 1 MiB shards over 20 Mbit/s links (one download
// alone: about 1.7 s).
func linkOptions(t *testing.T, peers int) Options {
	return Options{Mode: ModeLink, Peers: peers, ModelBytes: 4 << 20, ShardBytes: 1 << 20, BlockBytes: 256 << 10,
		Rate: 20e6, Dir: t.TempDir(), Binary: linkBinary(t), Timeout: 2 * time.Minute}
}

// leftovers lists this process's namespaces and links still present.
func leftovers() []string {
	return (&netLab{prefix: labPrefix(os.Getpid())}).left()
}

func runLinkTest(t *testing.T, o Options) *Result {
	t.Helper()
	var progress strings.Builder
	o.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := Run(ctx, o)
	t.Logf("progress:\n%s", progress.String())
	if left := leftovers(); len(left) > 0 {
		t.Errorf("left behind after the run: %v", left)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	t.Logf("%s", b)
	return r
}

// TestLinkShaped runs 4 `doppler node` processes and a seed, each in its
// own network namespace with its links capped by tc, then the HTTP
// baseline on the same links; every namespace is gone after.
func TestLinkShaped(t *testing.T) {
	needLink(t)
	o := linkOptions(t, 4)
	r := runLinkTest(t, o)
	if r.HonestPeers != 4 || r.HonestComplete != 4 || len(r.Failed) > 0 || r.BadBytesStored != 0 {
		t.Errorf("%d/%d honest peers complete, %d bad bytes stored, failed: %v", r.HonestComplete, r.HonestPeers, r.BadBytesStored, r.Failed)
	}
	// The rate binds: one download alone takes at least the model's bits
	// over the rate, and four at once from the seed about four times that.
	alone := float64(r.ModelBytes*8) / float64(o.Rate)
	if r.OneHTTPSeconds < 0.95*alone || r.HTTPSeconds < 0.9*4*alone || r.HTTPClients != 4 {
		t.Errorf("http: one client %.2fs, 4 clients %.2fs (%d); the link alone allows %.2fs per download", r.OneHTTPSeconds, r.HTTPSeconds, r.HTTPClients, alone)
	}
	if r.P2PSeconds < 0.95*alone {
		t.Errorf("p2p %.2fs: faster than one download at the link rate (%.2fs): the links are not shaped", r.P2PSeconds, alone)
	}
	if r.SeedUploadRatio < 0.99 || r.MaxDownloadRatio < 0.99 {
		t.Errorf("seed uploaded %.2f×, worst peer downloaded %.2f×: want each ≥ 1×", r.SeedUploadRatio, r.MaxDownloadRatio)
	}
	if r.CPUCoresBusy <= 0 {
		t.Errorf("cpu_cores_busy %g", r.CPUCoresBusy)
	}
}

// TestLinkChurnMalicious: a peer is SIGKILLed mid-transfer and replaced, a
// malicious process serves bit-flipped blocks; every honest peer still
// completes, nothing bad is stored, the flipper is banned.
func TestLinkChurnMalicious(t *testing.T) {
	needLink(t)
	o := linkOptions(t, 6)
	o.Churn, o.Malicious, o.Kinds, o.NoHTTP = 0.2, 0.15, []EvilKind{EvilFlip}, true
	r := runLinkTest(t, o)
	if r.Malicious != 1 || r.Churned != 1 || r.HonestPeers != 5 {
		t.Fatalf("plan: %d malicious, %d churned, %d honest; want 1, 1, 5", r.Malicious, r.Churned, r.HonestPeers)
	}
	if r.HonestComplete != r.HonestPeers || len(r.Failed) > 0 || r.BadBytesStored != 0 {
		t.Errorf("%d/%d honest peers complete, %d bad bytes stored, failed: %v", r.HonestComplete, r.HonestPeers, r.BadBytesStored, r.Failed)
	}
	if r.Unbanned != 0 || r.BadSenders > 0 && r.Banned != 1 {
		t.Errorf("%d bad senders, %d banned, %d (peer, sender) pairs not banned", r.BadSenders, r.Banned, r.Unbanned)
	}
}

// TestLabSweep: a namespace and a bridge left by a run whose process is
// gone are removed by the next run's sweep; live ones are left alone.
func TestLabSweep(t *testing.T) {
	needLink(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A PID that is not running: a child that has exited.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	dead := labPrefix(c.Process.Pid)
	mine := labPrefix(os.Getpid())
	for _, s := range [][]string{
		{"ip", "netns", "add", dead + "-0"},
		{"ip", "link", "add", dead + "br", "type", "bridge"},
		{"ip", "netns", "add", mine + "-99"},
	} {
		if err := ipRun(ctx, s[0], s[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ipRun(context.Background(), "ip", "netns", "del", mine+"-99")
		ipRun(context.Background(), "ip", "netns", "del", dead+"-0")
		ipRun(context.Background(), "ip", "link", "del", dead+"br")
	})
	sweepStale(ctx, slog.New(slog.DiscardHandler))
	if nsExists(dead+"-0") || linkExists(dead+"br") {
		t.Errorf("stale %s* not swept", dead)
	}
	if !nsExists(mine + "-99") {
		t.Errorf("the live run's namespace %s-99 was swept", mine)
	}
}

// TestLabPID: every name a lab makes gives back its run's PID, whatever
// letters the PID's base-36 digits hold; other names give none.
func TestLabPID(t *testing.T) {
	for _, pid := range []int{1, 35, 36, 22751, 23255, 14687, 32768, 4194304} {
		p := labPrefix(pid)
		for _, name := range []string{p + "br", p + "-0", p + "-65000", p + "h12", p + "p7"} {
			if len(name) > 15 {
				t.Errorf("%s: longer than a link name may be", name)
			}
			if got, ok := labPID(name); !ok || got != pid {
				t.Errorf("labPID(%q) = %d, %v; want %d", name, got, ok, pid)
			}
		}
	}
	for _, name := range []string{"eth0", "dpl", "dpl0001", "docker0", "dplzz!!!br", "dpl00000br"} {
		if pid, ok := labPID(name); ok {
			t.Errorf("labPID(%q) = %d; want no PID", name, pid)
		}
	}
}
