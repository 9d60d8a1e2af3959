package swarmbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// Mode is where the nodes run.
type Mode string

// The modes (see the package documentation).
const (
	ModeLoopback Mode = "loopback"
	ModeSim      Mode = "sim"
	ModeLink     Mode = "link"
)

// Options configures a run. Zero values take the defaults shown.
type Options struct {
	Mode  Mode // ModeLoopback
	Peers int  // peers besides the seed, honest and malicious (9)
	// ModelBytes, ShardBytes, BlockBytes shape the synthetic model (1 GiB,
	// 64 MiB, 1 MiB).
	ModelBytes, ShardBytes, BlockBytes int64
	// Rate caps every node's upload and, apart, its download, in bits per
	// second (sim and link; required there).
	Rate int64
	// Latency is each link's one-way delay (sim only: tbf adds none).
	Latency time.Duration
	// Churn is the fraction of the honest peers killed mid-transfer, each
	// replaced at once by a fresh peer; Malicious the fraction of Peers
	// that misbehave (kinds in turn: see EvilKinds).
	Churn, Malicious float64
	// Kinds are the malicious kinds taken in turn (nil: EvilKinds).
	Kinds []EvilKind
	// NoHTTP skips the HTTP baseline.
	NoHTTP bool
	// PerPeer and Parallel are the fetchers' requests in flight to one
	// peer and in all (0: the swarm's defaults).
	PerPeer, Parallel int
	// UploadSlots is each in-process node's p2p.Options.UploadSlots (0:
	// the default).
	UploadSlots int
	// RequestTimeout is the fetchers' stall timeout floor (0: the swarm's
	// default): a peer that stalls mid-block holds a request this long.
	RequestTimeout time.Duration
	// Degree (sim): how many random earlier peers each peer dials at
	// start besides the seed (4). Loopback and link peers dial the seed
	// only and find the others through it (gossip, DHT).
	Degree int
	// Dir is the work directory (default: a temporary one, removed after).
	Dir string
	// Binary (link) is the doppler executable each node runs (this
	// process's executable).
	Binary string
	// Timeout bounds the p2p phase and the HTTP phase each (10 min).
	Timeout time.Duration
	// Seed seeds the choice of malicious and churned peers and the kill
	// times (1).
	Seed uint64
	// Browsers (loopback only) is how many browser peers BrowserFleet
	// runs beside the Go peers, counted among the honest ones
	// (browsers.go).
	Browsers     int
	BrowserFleet BrowserFleet
	// Progress receives human-readable lines as the run goes (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

func (o *Options) fill() error {
	if o.Mode == "" {
		o.Mode = ModeLoopback
	}
	if o.Peers == 0 {
		o.Peers = 9
	}
	if o.ModelBytes == 0 {
		o.ModelBytes = 1 << 30
	}
	if o.ShardBytes == 0 {
		o.ShardBytes = 64 << 20
	}
	if o.BlockBytes == 0 {
		o.BlockBytes = 1 << 20
	}
	if o.Degree <= 0 {
		o.Degree = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch o.Mode {
	case ModeLoopback, ModeSim, ModeLink:
	default:
		return fmt.Errorf("unknown mode %q (want loopback, sim or link)", o.Mode)
	}
	if o.Peers < 1 || o.Peers > 5000 {
		return fmt.Errorf("%d peers: want 1 … 5000", o.Peers)
	}
	if o.Mode == ModeLoopback && o.Peers > 64 {
		return fmt.Errorf("%d peers on loopback: want at most 64 (use sim for more)", o.Peers)
	}
	if o.Mode != ModeLoopback && o.Rate <= 0 {
		return fmt.Errorf("mode %s needs a link rate", o.Mode)
	}
	if o.Browsers < 0 || o.Browsers > 0 && (o.Mode != ModeLoopback || o.BrowserFleet == nil) {
		return fmt.Errorf("%d browsers: browsers run in loopback mode only, with a BrowserFleet", o.Browsers)
	}
	if o.Churn < 0 || o.Churn > 1 || o.Malicious < 0 || o.Malicious >= 1 {
		return fmt.Errorf("churn %g, malicious %g: want 0 ≤ churn ≤ 1, 0 ≤ malicious < 1", o.Churn, o.Malicious)
	}
	return nil
}

// Result is one run's figures; the JSON keys are stable.
type Result struct {
	Mode       string  `json:"mode"`
	Peers      int     `json:"peers"`
	ModelBytes int64   `json:"model_bytes"`
	ShardBytes int64   `json:"shard_bytes"`
	Rate       int64   `json:"rate"`       // bits/s per node and direction (0: unshaped)
	LatencyMS  float64 `json:"latency_ms"` // per link, one way (sim)
	// P2PSeconds: from the start of the pulls until the last honest peer
	// holds a verified copy.
	P2PSeconds float64 `json:"p2p_s"`
	// HTTPSeconds: every honest peer downloads the model from the seed
	// over HTTP at once; OneHTTPSeconds: one client alone (0: skipped).
	HTTPSeconds    float64 `json:"http_s"`
	OneHTTPSeconds float64 `json:"one_http_s"`
	// HTTPClients: the HTTP clients run at once. In sim it is at most 8:
	// the seed's uplink binds from the second client on, so with more
	// honest peers http_s is the time of HTTPClients scaled by
	// honest_peers / http_clients.
	HTTPClients int `json:"http_clients"`
	// SeedUploadRatio: the seed's bytes sent / the model's; with
	// MaxDownloadRatio, the worst honest peer's bytes received / the
	// model's (shard-protocol payload in-process; every byte on the wire,
	// headers included, in link mode).
	SeedUploadRatio  float64 `json:"seed_upload_ratio"`
	MaxDownloadRatio float64 `json:"max_download_ratio"`
	// HonestPeers counts the honest peers that were to complete (churned
	// ones excluded, their replacements included); HonestComplete those
	// holding a verified copy at the end.
	HonestPeers    int `json:"honest_peers"`
	HonestComplete int `json:"honest_complete"`
	// BadBytesStored: bytes in honest peers' stores, complete or partial,
	// that fail their hashes (checked block by block after the run).
	BadBytesStored int64 `json:"bad_bytes_stored"`
	// Banned: malicious peers dropped (for the model) by at least one
	// honest peer; BadSenders: peers that sent an honest peer a bad block;
	// Unbanned: (honest peer, sender) pairs where a bad block was received
	// and the sender not dropped.
	Banned     int `json:"banned"`
	BadSenders int `json:"bad_senders"`
	Unbanned   int `json:"unbanned"`
	// CPUCoresBusy: CPU seconds of every node / p2p_s (above ~0.8 ×
	// the machine's cores the CPU, not the links, binds).
	CPUCoresBusy float64 `json:"cpu_cores_busy"`
	Malicious    int     `json:"malicious"`
	Churned      int     `json:"churned"`
	// Gossip traffic per peer per minute (mean over honest peers, sent and
	// received; in-process modes).
	GossipMsgsPerPeerMin  float64 `json:"gossip_msgs_per_peer_min"`
	GossipBytesPerPeerMin float64 `json:"gossip_bytes_per_peer_min"`
	// Browsers: browser peers in the run (Options.Browsers), counted in
	// honest_peers; BrowsersComplete those holding a verified copy;
	// BrowserServedBlocks the blocks they served to other peers (their
	// re-sharing); BrowserWebRTCBytes what they got over WebRTC.
	Browsers            int   `json:"browsers,omitempty"`
	BrowsersComplete    int   `json:"browsers_complete,omitempty"`
	BrowserServedBlocks int   `json:"browser_served_blocks,omitempty"`
	BrowserWebRTCBytes  int64 `json:"browser_webrtc_bytes,omitempty"`
	// Failed lists honest pulls that ended in an error.
	Failed []string `json:"failed,omitempty"`
}

// Run writes the synthetic model, runs the swarm and the HTTP baseline in
// o.Mode, and returns the figures. Failed pulls are reported in the
// Result, not as an error; an error means the harness itself failed.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "doppler-bench-swarm-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	}
	src := filepath.Join(o.Dir, "model")
	t0 := time.Now()
	id, err := SynthModel(src, o.ModelBytes, o.ShardBytes, o.BlockBytes)
	if err != nil {
		return nil, fmt.Errorf("synthetic model: %w", err)
	}
	m, err := rdrr.OpenDir(src)
	if err != nil {
		return nil, err
	}
	total := m.Manifest.TotalSize()
	fmt.Fprintf(o.Progress, "model %s: %s in %d shards of %s, %s blocks (written in %v)\n", id.Short(), human(total),
		len(m.Manifest.Shards), human(o.ShardBytes), human(o.BlockBytes), time.Since(t0).Round(time.Millisecond))
	r := &Result{Mode: string(o.Mode), Peers: o.Peers, ModelBytes: total, ShardBytes: o.ShardBytes, Rate: o.Rate,
		LatencyMS: float64(o.Latency) / float64(time.Millisecond)}
	p := newPlan(&o, total)
	r.Malicious, r.HonestPeers = len(p.evil), p.honest
	env := &runEnv{o: &o, src: src, id: id, man: m.Manifest, plan: p, res: r}
	switch o.Mode {
	case ModeLink:
		err = runLink(ctx, env)
	default:
		err = runInProcess(ctx, env)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "p2p: %d/%d honest peers complete in %.2fs; seed uploaded %.2f×, worst peer downloaded %.2f×; %d bad bytes stored; %d/%d malicious banned; %.2f cores busy\n",
		r.HonestComplete, r.HonestPeers, r.P2PSeconds, r.SeedUploadRatio, r.MaxDownloadRatio, r.BadBytesStored, r.Banned, r.Malicious, r.CPUCoresBusy)
	if r.OneHTTPSeconds > 0 {
		fmt.Fprintf(o.Progress, "http: 1 client in %.2fs; %d parallel clients in %.2fs; p2p / one http download: %.2f\n",
			r.OneHTTPSeconds, r.HonestPeers, r.HTTPSeconds, r.P2PSeconds/r.OneHTTPSeconds)
	}
	return r, nil
}

// runEnv is what a mode's runner works from.
type runEnv struct {
	o    *Options
	src  string // the model's RDRR directory (the seed imports it)
	id   rdrr.ModelID
	man  *rdrr.Manifest
	plan *plan
	res  *Result
}

// plan fixes who misbehaves and who is churned, and when.
type plan struct {
	honest int        // honest peers at the start (and at the end)
	evil   []EvilKind // one per malicious peer
	killAt []time.Duration
}

func newPlan(o *Options, total int64) *plan {
	rng := rand.New(rand.NewPCG(o.Seed, 0xd0))
	nEvil := int(math.Round(o.Malicious * float64(o.Peers)))
	if o.Malicious > 0 && nEvil == 0 {
		nEvil = 1
	}
	nEvil = min(nEvil, o.Peers-1)
	p := &plan{honest: o.Peers - nEvil}
	kinds := o.Kinds
	if len(kinds) == 0 {
		kinds = EvilKinds
	}
	for i := range nEvil {
		p.evil = append(p.evil, kinds[i%len(kinds)])
	}
	victims := int(math.Round(o.Churn * float64(p.honest)))
	if o.Churn > 0 && victims == 0 {
		victims = 1
	}
	// Kill mid-transfer: between a fifth and three fifths of the time one
	// peer alone would take to download the model at the link rate.
	alone := 300 * time.Millisecond
	if o.Rate > 0 {
		alone = time.Duration(float64(total*8) / float64(o.Rate) * float64(time.Second))
	}
	for range victims {
		p.killAt = append(p.killAt, time.Duration((0.2+0.4*rng.Float64())*float64(alone)))
	}
	return p
}

// human formats n in binary units.
func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// errNoRoot is returned by link mode without root.
var errNoRoot = errors.New("--link needs root (network namespaces and tc): run as root, or use --sim")
