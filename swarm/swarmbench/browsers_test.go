//go:build !js

package swarmbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/browsertest"
	"github.com/doppler-llm/doppler/p2p/rtc"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/signaling/web"
	"github.com/doppler-llm/doppler/swarm"
)

// pageFleet is a BrowserFleet of headless Chromium pages, each its own
// browser (its own profile, so its own storage), run in two waves: the
// first half at the start of the pulls, the rest once those hold the
// model, so that a later browser finds earlier ones to fetch from.
type pageFleet struct {
	t        *testing.T
	url      string // the page, pulling the model
	read     atomic.Int64
	browsers []*browsertest.Browser
	stop     []func() // Close undoes Start, last first
	once     sync.Once
	sig      *signaling.Server
	seed     BrowserSeed
	// goFetched: verified bytes a Go WebRTC peer fetched from a browser
	// after the pulls (fetchFromBrowser).
	goFetched int64
}

// countingStore is the seed's store as the gateway sees it, counting the
// bytes it reads for browsers.
type countingStore struct {
	*swarm.Store
	read *atomic.Int64
}

func (s countingStore) ReadBlock(h rdrr.Hash, i int, p []byte) (int, error) {
	n, err := s.Store.ReadBlock(h, i, p)
	s.read.Add(int64(n))
	return n, err
}

// pageResult is the part of the page's window.dopplerResult (download=1)
// the fleet reads.
type pageResult struct {
	Held             int64 `json:"held"`
	Total            int64 `json:"total"`
	BytesByTransport struct {
		WebRTC int64 `json:"webrtc"`
		HTTP   int64 `json:"http"`
	} `json:"bytesByTransport"`
	RejectedBlocks int `json:"rejectedBlocks"`
}

func (f *pageFleet) Start(ctx context.Context, seed BrowserSeed, n int) error {
	t := f.t
	// The seed as a node serving browsers: signaling with the loopback
	// TURN relay (browsers reach each other through it), the WebRTC
	// gateway on the seed's store, the HTTP seed and the page.
	relay, err := signaling.NewRelay(net.IPv4(127, 0, 0, 1), signaling.RelayOptions{})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	f.stop = append(f.stop, func() { relay.Close() })
	sig := signaling.New(signaling.Options{Allow: func(room rdrr.ModelID) bool { return room == seed.Model },
		ICEServers: []signaling.ICEServer{relay.ICEServer()}})
	f.sig, f.seed = sig, seed
	f.stop = append(f.stop, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sig.Shutdown(sctx)
	})
	gw, err := signaling.NewGateway(sig, countingStore{seed.Store, &f.read}, signaling.GatewayOptions{Loopback: true})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	f.stop = append(f.stop, func() { gw.Close() })
	if err := gw.Add(ctx, seed.Model); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/signal", sig.Handler())
	mux.Handle("/d", web.Handler())
	mux.Handle("/d/", web.Handler())
	mux.Handle("/sdk/", web.Handler())
	mux.Handle("/", signaling.NewSeed(seed.Store, signaling.SeedOptions{}).Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	f.stop = append(f.stop, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	f.url = "http://" + ln.Addr().String() + "/d?model=" + seed.Model.String() + "&download=1"
	for range n {
		b := browsertest.New(t)
		f.browsers = append(f.browsers, b)
		f.stop = append(f.stop, b.Close)
	}
	return nil
}

func (f *pageFleet) Close() error {
	f.once.Do(func() {
		for i := len(f.stop) - 1; i >= 0; i-- {
			f.stop[i]()
		}
	})
	return nil
}

func (f *pageFleet) Pull(ctx context.Context, t0 time.Time) (*BrowserRun, error) {
	t, n := f.t, len(f.browsers)
	br := &BrowserRun{Pages: make([]BrowserPage, n)}
	wave := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				p := &br.Pages[i]
				p.Name = fmt.Sprintf("browser%d", i)
				raw, err := f.browsers[i].Run(ctx, f.url)
				p.Took = time.Since(t0)
				var r pageResult
				if err == nil {
					err = json.Unmarshal(raw, &r)
				}
				if err == nil && (r.Total == 0 || r.Held != r.Total) {
					err = fmt.Errorf("page done holding %d of %d bytes", r.Held, r.Total)
				}
				p.Err, p.WebRTC, p.HTTP, p.Rejected = err, r.BytesByTransport.WebRTC, r.BytesByTransport.HTTP, r.RejectedBlocks
				t.Logf("%s: done at %v: webrtc %d, http %d, rejected %d, err %v", p.Name, p.Took, p.WebRTC, p.HTTP, p.Rejected, p.Err)
			})
		}
		wg.Wait()
	}
	wave(0, n/2)
	wave(n/2, n)
	// What each served to the others, now that all hold the model.
	var errs []error
	for i, b := range f.browsers {
		if br.Pages[i].Err != nil {
			continue
		}
		if err := b.Eval(ctx, "window.dopplerModel.status().served", &br.Pages[i].Served); err != nil {
			errs = append(errs, fmt.Errorf("%s: served: %w", br.Pages[i].Name, err))
		}
	}
	if br.Pages[n-1].Err == nil {
		var err error
		if f.goFetched, err = f.fetchFromBrowser(ctx, f.browsers[n-1]); err != nil {
			errs = append(errs, fmt.Errorf("a Go peer fetching from %s: %w", br.Pages[n-1].Name, err))
		}
	}
	for _, p := range br.Pages {
		br.SeedUploaded += p.HTTP
	}
	br.SeedUploaded += f.read.Load()
	return br, errors.Join(errs...)
}

// fetchFromBrowser is a later Go peer re-fetching from a browser: it joins
// the signaling room, offers a WebRTC connection (p2p/rtc, the code the
// node's gateway runs) to the browser's page and reads the model's first
// shard from it, every block verified (hash and Merkle proof). It returns
// the bytes read.
func (f *pageFleet) fetchFromBrowser(ctx context.Context, b *browsertest.Browser) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var self string
	if err := b.Eval(ctx, "window.dopplerModel.status().self", &self); err != nil || self == "" {
		return 0, fmt.Errorf("the page's peer ID %q: %v", self, err)
	}
	to := signaling.PeerID(self)
	raw, _, ok := f.seed.Store.Manifest(f.seed.Model)
	if !ok {
		return 0, errors.New("the seed has no manifest")
	}
	m, err := rdrr.ParseManifest(raw)
	if err != nil {
		return 0, err
	}
	ep, err := f.sig.Join(ctx, f.seed.Model)
	if err != nil {
		return 0, err
	}
	defer ep.Close()
	p, err := rtc.NewPeer(rtc.Options{Loopback: true, PeerID: self}, nil)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	p.OnCandidate(func(c string) {
		ep.Send(ctx, signaling.Message{Type: signaling.TypeCandidate, To: to, Candidate: json.RawMessage(c)})
	})
	offer, err := p.Offer(ctx)
	if err != nil {
		return 0, err
	}
	sdp, _ := json.Marshal(map[string]string{"type": "offer", "sdp": offer})
	if err := ep.Send(ctx, signaling.Message{Type: signaling.TypeOffer, To: to, SDP: sdp}); err != nil {
		return 0, err
	}
	go func() { // the answer and the browser's candidates
		for msg := range ep.Recv() {
			if msg.From != to {
				continue
			}
			switch msg.Type {
			case signaling.TypeAnswer:
				var d struct{ SDP string }
				if json.Unmarshal(msg.SDP, &d) == nil {
					p.Accept(ctx, d.SDP)
				}
			case signaling.TypeCandidate:
				p.AddCandidate(string(msg.Candidate))
			}
		}
	}()
	sh := m.Shards[0]
	var got int64
	err = p.ReadBlocks(ctx, sh, 0, len(sh.Blocks), func(_ int, data []byte) error {
		got += int64(len(data))
		return nil
	})
	if err == nil && got != sh.Size {
		err = fmt.Errorf("read %d bytes of a %d-byte shard", got, sh.Size)
	}
	return got, err
}

// TestRunBrowsers (issue #14, item 11): 4 headless Chromium pages join a
// loopback swarm of a seed and 3 Go peers, pull the model over WebRTC —
// the later two partly from the first two — and count in the run's
// figures; then a Go WebRTC peer fetches a shard from a browser.
// Unshaped: browsers run in loopback mode only.
func TestRunBrowsers(t *testing.T) {
	browsertest.Chromium(t) // fails under CI, skips elsewhere, when missing
	o := Options{Mode: ModeLoopback, Peers: 3, ModelBytes: 4 << 20, ShardBytes: 512 << 10, BlockBytes: 64 << 10,
		Dir: t.TempDir(), Timeout: 3 * time.Minute, NoHTTP: true, Browsers: 4, BrowserFleet: &pageFleet{t: t}}
	r := run(t, o)
	if r.Browsers != 4 || r.BrowsersComplete != 4 || r.HonestPeers != 7 || r.HonestComplete != 7 || len(r.Failed) > 0 {
		t.Errorf("browsers %d/%d complete, honest %d/%d; failed: %v", r.BrowsersComplete, r.Browsers, r.HonestComplete, r.HonestPeers, r.Failed)
	}
	if r.BadBytesStored != 0 {
		t.Errorf("%d bad bytes stored", r.BadBytesStored)
	}
	// Every browser byte came over WebRTC (the HTTP seed is only for
	// shards no WebRTC peer announces), and browsers served each other.
	if r.BrowserWebRTCBytes < 4*r.ModelBytes {
		t.Errorf("browsers got %d bytes over WebRTC, want ≥ 4 × %d", r.BrowserWebRTCBytes, r.ModelBytes)
	}
	if r.BrowserServedBlocks == 0 {
		t.Errorf("browsers served no block to each other")
	}
	if fl := o.BrowserFleet.(*pageFleet); fl.goFetched == 0 {
		t.Errorf("a Go peer fetched nothing from a browser over WebRTC")
	} else {
		t.Logf("a Go peer fetched %d verified bytes from a browser over WebRTC", fl.goFetched)
	}
	if r.MaxDownloadRatio < 0.99 || r.MaxDownloadRatio > 2 || r.P2PSeconds <= 0 {
		t.Errorf("max download ratio %.2f, p2p %.2fs", r.MaxDownloadRatio, r.P2PSeconds)
	}
}
