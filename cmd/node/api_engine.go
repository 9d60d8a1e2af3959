//go:build cgo

package main

import (
	"context"
	"log/slog"

	"github.com/doppler-llm/doppler/api"
	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
)

// newEngineAPI opens the GPU and serves the API's models on it.
func newEngineAPI(f apiFlags) (*apiHost, error) {
	dev, err := kernels.Open(kernels.Options{Adapter: f.adapter, Logger: slog.Default()})
	if err != nil {
		return nil, err
	}
	srv := api.New(api.Options{
		Load: func(ctx context.Context, m *rdrr.Model) (*engine.Model, error) {
			return engine.Load(ctx, dev, m, engine.Options{Context: f.ctxLen, Logger: slog.Default()})
		},
		Queue:  f.queue,
		APIKey: f.key,
		Logger: slog.Default(),
	})
	return &apiHost{handler: srv.Handler(), add: srv.Add, close: func() { srv.Close(); dev.Close() }}, nil
}
