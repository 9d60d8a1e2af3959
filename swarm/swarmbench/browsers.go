package swarmbench

import (
	"context"
	"fmt"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// Browser peers (Options.Browsers, loopback mode): headless Chromium pages
// that join the run's swarm through the seed's signaling room, pull the
// model over WebRTC (the node's gateway and each other, through the
// node's TURN relay on loopback) and keep serving it, counted among the
// honest peers of the run. Their links are not shaped, and their CPU
// (Chromium's processes) is not in cpu_cores_busy.
//
// This package cannot start them itself: swarm/... depends neither on
// signaling/... (the WebRTC gateway, the page) nor on a browser driver
// (docs/architecture.md). The caller hands in a BrowserFleet that does:
// swarmbench's test builds one from signaling.Gateway, signaling/web and
// internal/browsertest.

// BrowserFleet runs the browser peers of a run.
type BrowserFleet interface {
	// Start, before the pulls, serves the model from seed to browsers
	// (signaling, the WebRTC gateway, the HTTP seed, the page at /d) and
	// starts n browsers, not yet pulling.
	Start(ctx context.Context, seed BrowserSeed, n int) error
	// Pull opens the pages (/d?model=…&download=1): each pulls the model
	// and keeps serving it. t0 is the start of the run's pulls, which
	// the pages' times count from. Pull returns once every page has
	// ended, or ctx is done, with one result per page.
	Pull(ctx context.Context, t0 time.Time) (*BrowserRun, error)
	// Close stops the browsers and what Start serves; it may be called
	// again.
	Close() error
}

// BrowserSeed is what a fleet serves browsers from: the seed's store
// (holding the whole model) and node.
type BrowserSeed struct {
	Model rdrr.ModelID
	Store *swarm.Store
	Node  *swarm.Node
}

// BrowserRun is what a fleet measured.
type BrowserRun struct {
	Pages []BrowserPage
	// SeedUploaded: the shard bytes the seed served to browsers (over
	// WebRTC and its HTTP seed), apart from its libp2p upload.
	SeedUploaded int64
}

// BrowserPage is one browser peer's outcome.
type BrowserPage struct {
	Name string
	Took time.Duration // from the start of the pulls until it held a verified copy
	// WebRTC and HTTP: verified bytes it downloaded by transport.
	WebRTC, HTTP int64
	// Rejected: blocks that failed verification; Served: blocks it served
	// to other peers (read when the fleet ended).
	Rejected, Served int
	Err              error // nil: it holds a verified copy
}

// addBrowsers counts a fleet's pages among the run's honest peers: the
// last completion, the worst download and the seed's upload include them.
// wall is the p2p phase's length (a failed page's time).
func addBrowsers(res *Result, br *BrowserRun, wall time.Duration) {
	total := float64(res.ModelBytes)
	res.HonestPeers += len(br.Pages)
	res.SeedUploadRatio += float64(br.SeedUploaded) / total
	last := time.Duration(res.P2PSeconds * float64(time.Second))
	for _, p := range br.Pages {
		res.Browsers++
		res.BrowserServedBlocks += p.Served
		res.BrowserWebRTCBytes += p.WebRTC
		if p.Err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", p.Name, p.Err))
			last = max(last, wall)
			continue
		}
		res.HonestComplete++
		res.BrowsersComplete++
		last = max(last, p.Took)
		res.MaxDownloadRatio = max(res.MaxDownloadRatio, float64(p.WebRTC+p.HTTP)/total)
	}
	res.P2PSeconds = last.Seconds()
}

// browsers runs the pulls of an in-process run's fleet (started before
// the pulls); its error becomes one failed page per browser.
func (r *inRun) browsers(ctx context.Context) *BrowserRun {
	br, err := r.o.BrowserFleet.Pull(ctx, r.t0)
	if err != nil {
		br = &BrowserRun{}
		for i := range r.o.Browsers {
			br.Pages = append(br.Pages, BrowserPage{Name: fmt.Sprintf("browser%d", i), Err: fmt.Errorf("fleet: %w", err)})
		}
	}
	fmt.Fprintf(r.o.Progress, "%6.1fs: %d browsers ended\n", time.Since(r.t0).Seconds(), len(br.Pages))
	return br
}
