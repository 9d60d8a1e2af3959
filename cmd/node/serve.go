package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/swarm"
)

// importModel makes a model complete in the store: a model ID (or unique
// prefix) already there, or a GGUF file / HF or RDRR directory, converted
// if needed and imported.
func importModel(ctx context.Context, store *swarm.Store, arg string) (rdrr.ModelID, error) {
	if looksLikeModelID(arg) {
		id, err := parseModelID(store, arg)
		if err != nil {
			return id, err
		}
		st, ok := store.Status(id)
		if !ok {
			return id, fmt.Errorf("unknown model id %s (not in store %s)", id, store.Dir())
		}
		if st.CompleteShards < st.Shards {
			return id, fmt.Errorf("model %s: the store holds %d of %d shards; run doppler pull first", id, st.CompleteShards, st.Shards)
		}
		return id, nil
	}
	dir, err := resolveModel(ctx, arg)
	if err != nil {
		return rdrr.ModelID{}, err
	}
	return store.ImportDir(ctx, dir)
}

func newServe() *cobra.Command {
	var (
		storeFlag, addr, cert, key string
	)
	cmd := &cobra.Command{
		Use:   "serve MODEL... --http ADDR",
		Short: "Serve models over HTTP for browsers and plain clients: the seed (manifests, shards with Range, block proofs) and WebSocket signaling at /signal",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if (cert == "") != (key == "") {
				return errors.New("--tls-cert and --tls-key go together")
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
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--http %s: %w", addr, err)
			}
			sig := signaling.New(signaling.Options{
				// Rooms are the models this store holds.
				Allow: func(room rdrr.ModelID) bool { _, _, ok := store.Manifest(room); return ok },
				Log:   slog.Default(),
			})
			mux := http.NewServeMux()
			mux.Handle("/signal", sig.Handler())
			mux.Handle("/", signaling.NewSeed(store, slog.Default()).Handler())
			srv := &http.Server{
				Handler:           mux,
				ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout:       2 * time.Minute,
			}
			scheme := "http"
			if cert != "" {
				scheme = "https"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "listening %s://%s\n", scheme, ln.Addr())
			for _, id := range ids {
				fmt.Fprintf(out, "serving %s\n", id)
			}
			errc := make(chan error, 1)
			go func() {
				if cert != "" {
					errc <- srv.ServeTLS(ln, cert, key)
				} else {
					errc <- srv.Serve(ln)
				}
			}()
			select {
			case err := <-errc:
				shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				sig.Shutdown(shut)
				return err
			case <-ctx.Done():
				// Signaling connections are hijacked: http.Server.Shutdown
				// does not see them, so close them first.
				shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				sig.Shutdown(shut)
				return srv.Shutdown(shut)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&storeFlag, "store", "", storeFlagHelp)
	f.StringVar(&addr, "http", "127.0.0.1:8080", "HTTP listen address (port 0 picks a free one)")
	f.StringVar(&cert, "tls-cert", "", "TLS certificate (PEM) for serving beyond localhost")
	f.StringVar(&key, "tls-key", "", "TLS private key (PEM)")
	return cmd
}
