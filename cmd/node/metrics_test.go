package main

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/httpseed"
	"github.com/doppler-llm/doppler/swarm"
)

// TestMetricsFetched: a node pulls a model from two HTTP seeds, one of
// which corrupts every shard; /metrics counts the verified bytes fetched
// over HTTP (the whole model, once) and the corrupt seed's bad blocks, and
// the seed banned.
func TestMetricsFetched(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, id, m := serveStories(t, ctx)
	bad, badURL := newProxy(t, url)
	bad.corrupt = true

	st, err := swarm.Open(t.TempDir(), swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	met := newSwarmMetrics(st)
	srv := httptest.NewServer(metricsOnly(newRegistry(met)))
	defer srv.Close()
	n, err := swarm.NewNode(ctx, st, swarm.NodeOptions{Host: p2p.Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	met.setNode(n)
	var srcs []swarm.Source
	for _, u := range []string{badURL, url} {
		c, err := httpseed.New(u, httpseed.Options{})
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, c)
	}
	// The bad seed is asked first for the manifest, and for blocks until
	// its first bad one.
	if err := n.Pull(ctx, id, swarm.PullOptions{Sources: srcs}); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := bad.sent(); reqs == 0 {
		t.Fatal("the corrupting seed was never asked for a shard")
	}
	body := scrape(t, ctx, srv.URL)
	if got := metricValue(t, body, `doppler_shard_bytes_total{direction="fetched",transport="http"}`); got != float64(m.TotalSize()) {
		t.Errorf("fetched over HTTP: %v bytes, want the model's %d", got, m.TotalSize())
	}
	if got := metricValue(t, body, `doppler_blocks_rejected_total{transport="http"}`); got < 1 {
		t.Errorf("blocks rejected over HTTP: %v, want at least 1", got)
	}
	if got := metricValue(t, body, "doppler_peers_banned"); got != 1 {
		t.Errorf("doppler_peers_banned %v, want 1 (the corrupting seed)", got)
	}
	for _, tr := range []string{"libp2p", "webrtc"} {
		if got := metricValue(t, body, `doppler_shard_bytes_total{direction="fetched",transport="`+tr+`"}`); got != 0 {
			t.Errorf("fetched over %s: %v, want 0", tr, got)
		}
	}
}
