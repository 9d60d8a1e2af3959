package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling"
	"github.com/doppler-llm/doppler/signaling/web"
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
			site, err := startWeb(ctx, hf, store, ids, false)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "listening %s\n", site.url())
			for _, id := range ids {
				fmt.Fprintf(out, "serving %s\n", id)
				slog.Info("browser page", "url", site.url()+"/d?model="+id.String())
			}
			return site.run(ctx)
		},
	}
	cmd.Flags().StringVar(&storeFlag, "store", "", storeFlagHelp)
	hf.register(cmd, "127.0.0.1:8080", "HTTP listen address (port 0 picks a free one)")
	return cmd
}

// httpFlags are the HTTP flags of serve and node.
type httpFlags struct {
	addr, cert, key string
	tls             *tls.Config // loaded by check
}

func (f *httpFlags) register(cmd *cobra.Command, def, help string) {
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "http", def, help)
	fl.StringVar(&f.cert, "tls-cert", "", "TLS certificate (PEM) for serving beyond localhost")
	fl.StringVar(&f.key, "tls-key", "", "TLS private key (PEM)")
}

// check validates the flags and loads the TLS certificate, before any
// slow work.
func (f *httpFlags) check() error {
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

// webServer is the HTTP side of serve and node --http: WebSocket signaling
// at /signal (a room per model in the store), the WebRTC gateway answering
// browsers' offers in the rooms of the models served, the web page at /d
// (package signaling/web) and the HTTP seed at /.
type webServer struct {
	ln     net.Listener
	scheme string
	srv    *http.Server
	sig    *signaling.Server
	gw     *signaling.Gateway
	relay  *signaling.Relay // on a loopback node: TURN for browser-to-browser channels
	errc   chan error       // the HTTP server's end

	stop     context.CancelFunc // ends the rooms and the store watch
	watching sync.WaitGroup
}

// startWeb listens on f.addr (f checked) and serves store: the gateway
// answers in the rooms of models and, with follow, of every model that
// becomes complete in the store later. When the listener is bound to a
// loopback address, WebRTC uses loopback UDP4 candidates only.
func startWeb(ctx context.Context, f httpFlags, store *swarm.Store, models []rdrr.ModelID, follow bool) (*webServer, error) {
	tlsConf := f.tls
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", f.addr, err)
	}
	loopback := false
	var ip net.IP
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		loopback, ip = a.IP.IsLoopback(), a.IP
	}
	log := slog.Default()
	sopts := signaling.Options{
		// Rooms are the models this store holds.
		Allow: func(room rdrr.ModelID) bool { _, _, ok := store.Manifest(room); return ok },
		Log:   log,
	}
	// Browsers never gather loopback candidates: on loopback they reach
	// each other through the node's TURN relay on the same address.
	var relay *signaling.Relay
	if loopback {
		if relay, err = signaling.NewRelay(ip, signaling.RelayOptions{Logger: log}); err != nil {
			ln.Close()
			return nil, err
		}
		sopts.ICEServers = []signaling.ICEServer{relay.ICEServer()}
	}
	sig := signaling.New(sopts)
	gw, err := signaling.NewGateway(sig, store, signaling.GatewayOptions{Loopback: loopback, Logger: log})
	if err != nil {
		ln.Close()
		if relay != nil {
			relay.Close()
		}
		return nil, err
	}
	w := &webServer{ln: ln, scheme: "http", sig: sig, gw: gw, relay: relay, errc: make(chan error, 1)}
	var rctx context.Context
	rctx, w.stop = context.WithCancel(ctx)
	for _, id := range models {
		if err := gw.Add(rctx, id); err != nil {
			w.shutdown()
			return nil, fmt.Errorf("model %s: answering browsers: %w", id.Short(), err)
		}
	}
	if follow {
		w.follow(rctx, store, models)
	}
	mux := http.NewServeMux()
	mux.Handle("/signal", sig.Handler())
	// The web page and its assets (the browser client in WebAssembly).
	page := web.Handler()
	mux.Handle("/d", page)
	mux.Handle("/d/", page)
	mux.Handle("/", signaling.NewSeed(store, log).Handler())
	w.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if tlsConf != nil {
		w.scheme = "https"
	}
	go func() {
		if tlsConf != nil {
			w.errc <- w.srv.ServeTLS(ln, "", "")
		} else {
			w.errc <- w.srv.Serve(ln)
		}
	}()
	return w, nil
}

// url is the address served, for the "listening <url>" line.
func (w *webServer) url() string { return w.scheme + "://" + w.ln.Addr().String() }

// follow answers browsers in the rooms of the models that become complete
// in the store (a pull) until ctx ends, and leaves those of models removed.
func (w *webServer) follow(ctx context.Context, store *swarm.Store, have []rdrr.ModelID) {
	ch, stop := store.Changes()
	added := make(map[rdrr.ModelID]bool)
	for _, id := range have {
		added[id] = true
	}
	w.watching.Add(1)
	go func() {
		defer w.watching.Done()
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			for _, id := range completeModels(store) {
				if added[id] {
					continue
				}
				if err := w.gw.Add(ctx, id); err != nil {
					if ctx.Err() == nil {
						slog.Warn("model complete, but not answering browsers for it", "model", id, "err", err)
					}
					continue
				}
				added[id] = true
				slog.Info("answering browsers", "model", id)
			}
			for id := range added {
				if _, ok := store.Status(id); !ok {
					w.gw.Remove(id)
					delete(added, id)
				}
			}
		}
	}()
}

// run serves until ctx ends or the HTTP server fails, then shuts down.
func (w *webServer) run(ctx context.Context) error {
	select {
	case err := <-w.errc:
		w.shutdown()
		return err
	case <-ctx.Done():
		return w.shutdown()
	}
}

// shutdown closes the browsers' WebRTC connections, the signaling (its
// connections are hijacked: http.Server.Shutdown does not see them) and
// the HTTP server, within 5 s for the last two.
func (w *webServer) shutdown() error {
	w.stop()
	w.watching.Wait()
	w.gw.Close()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.sig.Shutdown(shut)
	if w.relay != nil {
		w.relay.Close()
	}
	if w.srv == nil {
		return w.ln.Close()
	}
	return w.srv.Shutdown(shut)
}
