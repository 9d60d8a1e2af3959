//go:build cgo || js

package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus series. Names are stable:
// doppler_tokens_generated_total in particular is what dashboards count.
type metrics struct {
	requests   *prometheus.CounterVec   // by endpoint and status code
	latency    *prometheus.HistogramVec // by endpoint: request to last byte
	ttft       *prometheus.HistogramVec // by model: queueing to first token
	tokensIn   *prometheus.CounterVec   // by model: prompt tokens
	tokensOut  *prometheus.CounterVec   // by model: generated tokens
	decodeRate *prometheus.GaugeVec     // by model: tokens/s of the last request
	queueDepth *prometheus.GaugeVec     // by model: requests waiting
	expertHits *prometheus.CounterVec   // by model: expert lookups served from the GPU cache
	expertMiss *prometheus.CounterVec   // by model: expert lookups paged in
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "doppler_http_requests_total", Help: "API requests answered, by endpoint and HTTP status.",
		}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "doppler_http_request_duration_seconds", Help: "API request latency, arrival to the last byte.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}, []string{"endpoint"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "doppler_time_to_first_token_seconds", Help: "Time from a request's arrival to its first generated token, queueing included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}, []string{"model"}),
		tokensIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "doppler_tokens_prompt_total", Help: "Prompt tokens processed.",
		}, []string{"model"}),
		tokensOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "doppler_tokens_generated_total", Help: "Tokens generated.",
		}, []string{"model"}),
		decodeRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "doppler_decode_tokens_per_second", Help: "Decode speed of the last finished request.",
		}, []string{"model"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "doppler_queue_depth", Help: "Requests waiting for a model's worker.",
		}, []string{"model"}),
		expertHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "doppler_expert_cache_hits_total", Help: "MoE expert lookups found in the GPU expert cache (expert paging).",
		}, []string{"model"}),
		expertMiss: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "doppler_expert_cache_misses_total", Help: "MoE expert lookups that paged the expert in (expert paging).",
		}, []string{"model"}),
	}
	reg.MustRegister(m.requests, m.latency, m.ttft, m.tokensIn, m.tokensOut, m.decodeRate, m.queueDepth, m.expertHits, m.expertMiss)
	return m
}
