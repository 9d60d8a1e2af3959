package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// nodePulls runs node --pull: each model is fetched from the swarm in the
// background while the node serves (what it holds is announced and served
// as it arrives), and re-shared after. A pull that finds no peer with a
// missing shard for the fetcher's wait is retried after a backoff: a
// long-lived node does not give up on a model it was told to hold.
//
// The contract lines on stdout, after printReady's: "pulled <id> <name>:
// N shards, SIZE verified" once a model is complete, and "pull <id>
// failed: ERR (retrying in D)" for each failed attempt. With --stats the
// node also writes its figures (nodeStats) to a file, atomically, when a
// pull ends and on exit.
type nodePulls struct {
	w     io.Writer
	n     *swarm.Node
	met   *swarmMetrics // nil without --stats and --http
	file  string        // --stats; "" none
	began time.Time

	mu    sync.Mutex // w, pulls, the file
	pulls []*pullStat
	wg    sync.WaitGroup
}

// nodeStats is --stats' JSON.
type nodeStats struct {
	ID      string      `json:"id"`
	UptimeS float64     `json:"uptime_s"`
	Pulls   []*pullStat `json:"pulls"`
	// Uploaded and Downloaded are the shard protocol's payload bytes
	// (whole frames) sent and received over libp2p (p2p.Stats).
	Uploaded     uint64            `json:"uploaded_bytes"`
	Downloaded   uint64            `json:"downloaded_bytes"`
	ServedLibp2p int64             `json:"served_libp2p_bytes"`
	ServedHTTP   int64             `json:"served_http_bytes"`
	PeerStats    []swarm.PeerStats `json:"peer_stats"`
}

// pullStat is one --pull's state.
type pullStat struct {
	Model    rdrr.ModelID `json:"model"`
	Done     bool         `json:"done"`
	DoneS    float64      `json:"done_s,omitempty"` // seconds from the node's start
	Failures int          `json:"failures"`
	LastErr  string       `json:"last_err,omitempty"`
}

func newNodePulls(w io.Writer, n *swarm.Node, met *swarmMetrics, file string) *nodePulls {
	return &nodePulls{w: w, n: n, met: met, file: file, began: time.Now()}
}

// start pulls ids in the background until each is complete or ctx ends.
func (p *nodePulls) start(ctx context.Context, ids []rdrr.ModelID) {
	for _, id := range ids {
		ps := &pullStat{Model: id}
		p.mu.Lock()
		p.pulls = append(p.pulls, ps)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.pull(ctx, ps)
		}()
	}
}

// pull fetches one model, retrying with a backoff (1 s doubling to 30 s).
func (p *nodePulls) pull(ctx context.Context, ps *pullStat) {
	backoff := time.Second
	for {
		err := p.n.Pull(ctx, ps.Model, swarm.PullOptions{})
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		if err == nil {
			st, _ := p.n.Store().Status(ps.Model)
			ps.Done, ps.DoneS = true, time.Since(p.began).Seconds()
			fmt.Fprintf(p.w, "pulled %s %s: %d shards, %s verified\n", ps.Model, st.Name, st.Shards, humanBytes(st.Bytes))
		} else {
			ps.Failures++
			ps.LastErr = oneLine(err).Error()
			fmt.Fprintf(p.w, "pull %s failed: %s (retrying in %v)\n", ps.Model, ps.LastErr, backoff)
			slog.Warn("pull failed; retrying", "model", ps.Model.Short(), "err", ps.LastErr, "in", backoff)
		}
		if f, ok := p.w.(*os.File); ok {
			f.Sync()
		}
		p.writeLocked()
		p.mu.Unlock()
		if err == nil {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// finish waits for the pulls (which end with the node's context) and
// writes the figures a last time.
func (p *nodePulls) finish() {
	p.wg.Wait()
	p.mu.Lock()
	p.writeLocked()
	p.mu.Unlock()
}

// writeLocked writes --stats (a temporary file renamed over it).
func (p *nodePulls) writeLocked() {
	if p.file == "" {
		return
	}
	hs := p.n.Host().Stats()
	s := nodeStats{ID: p.n.ID(), UptimeS: time.Since(p.began).Seconds(), Pulls: p.pulls, PeerStats: p.n.Store().PeerStats(),
		Uploaded: hs.Uploaded, Downloaded: hs.Downloaded}
	if p.met != nil {
		s.ServedLibp2p, s.ServedHTTP = p.met.servedLibp2p.Load(), p.met.servedHTTP.Load()
	}
	if s.Pulls == nil {
		s.Pulls = []*pullStat{}
	}
	b, err := json.Marshal(&s)
	if err == nil {
		tmp := filepath.Join(filepath.Dir(p.file), "."+filepath.Base(p.file)+".tmp")
		if err = os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
			err = os.Rename(tmp, p.file)
		}
	}
	if err != nil {
		slog.Warn("--stats: cannot write the figures", "file", p.file, "err", err)
	}
}
