package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// apiFlags are the OpenAI-compatible API's flags of serve and node --http.
type apiFlags struct {
	key     string
	public  bool
	off     bool
	ctxLen  int
	queue   int
	adapter string
}

func (f *apiFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.key, "api-key", os.Getenv("DOPPLER_API_KEY"), "require this key (Authorization: Bearer KEY) on the API's generation endpoints (default $DOPPLER_API_KEY)")
	fl.BoolVar(&f.public, "public", false, "serve the API's generation endpoints without a key on a non-loopback --http address")
	fl.BoolVar(&f.off, "no-api", false, "do not serve the OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models, /health; /metrics stays, with the swarm's series)")
	fl.IntVar(&f.ctxLen, "api-ctx", 0, "the API's context (KV cache) length per model; default min(model's, 4096)")
	fl.IntVar(&f.queue, "api-queue", 16, "requests that may wait per model before the API answers 429")
	fl.StringVar(&f.adapter, "adapter", "", "GPU adapter for the API (a substring of its name); default: the fastest found")
}

// check decides, before anything listens, whether the API may be served on
// addr: on loopback always; elsewhere with --api-key, or openly with
// --public (logged).
func (f *apiFlags) check(addr string) error {
	if f.off || f.key != "" || isLoopbackAddr(addr) {
		return nil
	}
	if !f.public {
		return fmt.Errorf("--http %s is not a loopback address: give the API a key (--api-key KEY or $DOPPLER_API_KEY), pass --public to let anyone generate, or --no-api", addr)
	}
	slog.Warn("the API's generation endpoints are open to anyone who reaches this address (--public)", "http", addr)
	return nil
}

// isLoopbackAddr reports whether a listen address (host:port) binds to
// loopback only.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiHost is the API as serve and node --http run it: a handler, the hook
// that loads each model served, and the GPU to free at the end.
type apiHost struct {
	handler http.Handler
	add     func(*rdrr.Model)
	close   func()
}

// startAPI returns the API over store's models, or nil when it is off or
// this build has no GPU engine (then the log says so).
func startAPI(ctx context.Context, f apiFlags, store *swarm.Store, reg *prometheus.Registry) (*apiHost, error) {
	if f.off {
		return nil, nil
	}
	h, err := newEngineAPI(f, reg)
	if errors.Is(err, errNoGPU) {
		slog.Warn("this build has no GPU engine: the OpenAI-compatible API is not served")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the API (--no-api to serve without it): %w", err)
	}
	return h, nil
}

// onModel is the Site's OnModel: the API loads each model it serves from
// the store.
func (h *apiHost) onModel(store *swarm.Store) func(rdrr.ModelID) {
	return func(id rdrr.ModelID) {
		rm, err := store.OpenModel(id)
		if err != nil {
			slog.Error("the API cannot open the model", "model", id.Short(), "err", err)
			return
		}
		h.add(rm)
	}
}
