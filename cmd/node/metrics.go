package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/swarm"
)

// The swarm's side of /metrics. The distribution packages keep plain
// counters (the store's, the fetcher's per-peer table, the prefill
// server's) and know nothing of Prometheus; swarmMetrics reads them at
// scrape time, under their own short locks, so a scrape never waits for a
// generation or a transfer. What they do not count apart — the bytes each
// transport serves — is counted here, by the store views each transport is
// handed (servedBy).

// Transports, as the metrics' transport label names them.
const (
	transportLibp2p = "libp2p"
	transportWebRTC = "webrtc"
	transportHTTP   = "http"
)

// swarmMetrics is a prometheus.Collector over a store and, once they run,
// the node and the prefill service.
type swarmMetrics struct {
	store *swarm.Store

	servedLibp2p, servedWebRTC, servedHTTP atomic.Int64

	mu      sync.Mutex
	node    *swarm.Node
	prefill *swarm.PrefillServer
	gateway *signaling.Gateway

	shardBytes, rejected, badOnDisk, peers, banned, offloads, storeBytes *prometheus.Desc
}

func newSwarmMetrics(store *swarm.Store) *swarmMetrics {
	return &swarmMetrics{
		store: store,
		shardBytes: prometheus.NewDesc("doppler_shard_bytes_total",
			"Shard bytes served to peers and fetched (verified, new to the store) from them, by transport.",
			[]string{"direction", "transport"}, nil),
		rejected: prometheus.NewDesc("doppler_blocks_rejected_total",
			"Fetched blocks that failed verification, by the transport of the peer or seed that sent them.",
			[]string{"transport"}, nil),
		badOnDisk: prometheus.NewDesc("doppler_store_blocks_bad_total",
			"Stored blocks that failed re-verification on disk and were dropped.", nil, nil),
		peers: prometheus.NewDesc("doppler_peers_connected",
			"Peers connected now, by transport.", []string{"transport"}, nil),
		banned: prometheus.NewDesc("doppler_peers_banned",
			"Peers no longer asked for at least one model because they sent a bad block.", nil, nil),
		offloads: prometheus.NewDesc("doppler_prefill_offloads_total",
			"Prefills offloaded: role=\"served\" counts those this node computed for peers.", []string{"role"}, nil),
		storeBytes: prometheus.NewDesc("doppler_store_bytes",
			"Bytes of shards in the store, complete and partial.", nil, nil),
	}
}

// setNode and setPrefill add what starts after the metrics are registered.
func (m *swarmMetrics) setNode(n *swarm.Node) {
	m.mu.Lock()
	m.node = n
	m.mu.Unlock()
}

func (m *swarmMetrics) setGateway(g *signaling.Gateway) {
	m.mu.Lock()
	m.gateway = g
	m.mu.Unlock()
}

func (m *swarmMetrics) setPrefill(p *swarm.PrefillServer) {
	m.mu.Lock()
	m.prefill = p
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *swarmMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.shardBytes, m.rejected, m.badOnDisk, m.peers, m.banned, m.offloads, m.storeBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *swarmMetrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(m.shardBytes, float64(m.servedLibp2p.Load()), "served", transportLibp2p)
	counter(m.shardBytes, float64(m.servedWebRTC.Load()), "served", transportWebRTC)
	counter(m.shardBytes, float64(m.servedHTTP.Load()), "served", transportHTTP)

	fetched := map[string]int64{transportLibp2p: 0, transportWebRTC: 0, transportHTTP: 0}
	bad := map[string]int{transportLibp2p: 0, transportWebRTC: 0, transportHTTP: 0}
	banned := 0
	for _, ps := range m.store.PeerStats() {
		t := peerTransport(ps.ID)
		fetched[t] += ps.BytesUseful
		bad[t] += ps.BadBlocks
		if len(ps.Dropped) > 0 {
			banned++
		}
	}
	for _, t := range []string{transportLibp2p, transportWebRTC, transportHTTP} {
		counter(m.shardBytes, float64(fetched[t]), "fetched", t)
		counter(m.rejected, float64(bad[t]), t)
	}
	gauge(m.banned, float64(banned))
	st := m.store.Stats()
	counter(m.badOnDisk, float64(st.BadOnDisk))
	gauge(m.storeBytes, float64(m.store.Used()))

	m.mu.Lock()
	n, p, g := m.node, m.prefill, m.gateway
	m.mu.Unlock()
	libp2pPeers := 0
	if n != nil {
		libp2pPeers = len(n.Host().Peers())
	}
	gauge(m.peers, float64(libp2pPeers), transportLibp2p)
	browsers := 0
	if g != nil {
		browsers = g.Stats().Peers
	}
	gauge(m.peers, float64(browsers), transportWebRTC)
	served := 0
	if p != nil {
		served = p.Stats().Served
	}
	counter(m.offloads, float64(served), "served")
}

// peerTransport names the transport of a peer the fetcher measured, by its
// ID: an HTTP seed's is its URL (httpseed.Client.ID); this binary fetches
// from nothing else but libp2p peers (WebRTC fetching is the browser's).
func peerTransport(id string) string {
	if strings.HasPrefix(id, "http://") || strings.HasPrefix(id, "https://") {
		return transportHTTP
	}
	return transportLibp2p
}

// servedBy is the store as one transport is handed it: every block
// (ReadBlock: the shard protocol, over libp2p or WebRTC) or byte range
// (ReadShardAt: the HTTP seed) it reads for a peer is counted. The store's
// other methods, its verified-reads marker included, are its own.
type servedBy struct {
	*swarm.Store
	blocks, ranges *atomic.Int64 // nil: not counted
}

func (s servedBy) ReadBlock(h rdrr.Hash, index int, p []byte) (int, error) {
	n, err := s.Store.ReadBlock(h, index, p)
	if err == nil && s.blocks != nil {
		s.blocks.Add(int64(n))
	}
	return n, err
}

func (s servedBy) ReadShardAt(ctx context.Context, h rdrr.Hash, p []byte, off int64) error {
	err := s.Store.ReadShardAt(ctx, h, p, off)
	if err == nil && s.ranges != nil {
		s.ranges.Add(int64(len(p)))
	}
	return err
}

// libp2pProvider is NodeOptions.WrapProvider: the libp2p host serves the
// store through a view that counts its blocks.
func (m *swarmMetrics) libp2pProvider(p2p.Provider) p2p.Provider {
	return servedBy{Store: m.store, blocks: &m.servedLibp2p}
}

// siteStore is the store the Site serves: the WebRTC gateway reads blocks,
// the HTTP seed byte ranges.
func (m *swarmMetrics) siteStore() servedBy {
	return servedBy{Store: m.store, blocks: &m.servedWebRTC, ranges: &m.servedHTTP}
}

// newRegistry returns the registry /metrics serves: the Go runtime's and
// the process's collectors, and the swarm's (m, when not nil). The API
// adds its own series to it.
func newRegistry(m *swarmMetrics) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if m != nil {
		reg.MustRegister(m)
	}
	return reg
}

// metricsOnly serves /metrics alone, where the API is not served (--no-api,
// or a build without the GPU engine).
func metricsOnly(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
