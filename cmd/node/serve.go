package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/swarm"
)

func newServe() *cobra.Command {
	var (
		storeFlag string
		hf        httpFlags
	)
	cmd := &cobra.Command{
		Use:   "serve MODEL... --http ADDR",
		Short: "Serve models over HTTP for browsers and plain clients: the page at /d?model=<id>, the seed (manifests, shards with Range, block proofs), WebSocket signaling at /signal and WebRTC connections answered in each model's room",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := hf.check(); err != nil {
				return err
			}
			store, err := openStore(storeFlag)
			if err != nil {
				return err
			}
			defer store.Close()
			var ids []rdrr.ModelID
			for _, a := range args {
				id, err := importModel(ctx, store, a)
				if err != nil {
					return err
				}
				ids = append(ids, id)
			}
			site, err := startSite(ctx, hf, store, ids, false, newSwarmMetrics(store))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, u := range site.URLs() {
				fmt.Fprintf(out, "listening %s\n", u)
			}
			for _, id := range ids {
				fmt.Fprintf(out, "serving %s\n", id)
				slog.Info("browser page", "url", site.URL()+"/d?model="+id.String())
			}
			return site.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&storeFlag, "store", "", storeFlagHelp)
	hf.register(cmd, "127.0.0.1:8080", "HTTP listen address (port 0 picks a free one)")
	return cmd
}

// httpFlags are the HTTP flags of serve and node.
type httpFlags struct {
	addr, cert, key string
	api             apiFlags
	tls             *tls.Config // loaded by check
}

func (f *httpFlags) register(cmd *cobra.Command, def, help string) {
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "http", def, help)
	fl.StringVar(&f.cert, "tls-cert", "", "TLS certificate (PEM) for serving beyond localhost")
	fl.StringVar(&f.key, "tls-key", "", "TLS private key (PEM)")
	f.api.register(cmd)
}

// check validates the flags and loads the TLS certificate, before any
// slow work.
func (f *httpFlags) check() error {
	if f.addr != "" {
		if err := f.api.check(f.addr); err != nil {
			return err
		}
	}
	if (f.cert == "") != (f.key == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if f.cert == "" {
		return nil
	}
	if f.addr == "" {
		return errors.New("--tls-cert needs --http")
	}
	crt, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	f.tls = &tls.Config{Certificates: []tls.Certificate{crt}}
	return nil
}

// site is serve's and node --http's HTTP side: the page, the seed,
// signaling and WebRTC for browsers (package signaling), and the
// OpenAI-compatible API on the models served (package api).
type site struct {
	*signaling.Site
	api *apiHost // nil: not served
}

// startSite serves store over HTTP (f checked), with met's series and the
// API's on /metrics.
func startSite(ctx context.Context, f httpFlags, store *swarm.Store, models []rdrr.ModelID, follow bool, met *swarmMetrics) (*site, error) {
	reg := newRegistry(met)
	a, err := startAPI(ctx, f.api, store, reg)
	if err != nil {
		return nil, err
	}
	o := signaling.SiteOptions{Addr: f.addr, TLS: f.tls, Models: models, Follow: follow, Logger: slog.Default(),
		API: metricsOnly(reg)}
	if a != nil {
		o.API, o.OnModel = a.handler, a.onModel(store)
	}
	s, err := signaling.StartSite(ctx, met.siteStore(), o)
	if err != nil {
		if a != nil {
			a.close()
		}
		return nil, err
	}
	met.setGateway(s.Gateway())
	return &site{Site: s, api: a}, nil
}

// Run serves until ctx ends, then frees the API's GPU state.
func (s *site) Run(ctx context.Context) error {
	err := s.Site.Run(ctx)
	if s.api != nil {
		s.api.close()
	}
	return err
}
