package signaling

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling/sigwire"
	"github.com/doppler-llm/doppler/signaling/web"
)

// SiteStore is what a Site serves from: the seed's Store and the
// gateway's Holdings, with notices of changes (swarm.Store is one).
type SiteStore interface {
	Store
	Holdings
	// Changes returns a channel that receives after the store changed,
	// and a function that stops the notices.
	Changes() (<-chan struct{}, func())
	// HoldsModel reports whether every shard of a model is held.
	HoldsModel(id rdrr.ModelID) bool
}

// SiteOptions configures a Site. Zero values take the defaults shown.
type SiteOptions struct {
	// Addr is the HTTP listen address (port 0 picks a free one).
	Addr string
	// TLS, when set, serves HTTPS (browsers allow WebGPU only on https://
	// or localhost).
	TLS *tls.Config
	// Models are answered in their rooms from the start.
	Models []rdrr.ModelID
	// Follow also answers for every model that becomes complete in the
	// store later (a pull), and leaves those removed.
	Follow bool
	// API, when set, serves /v1/, /health and /metrics (the
	// OpenAI-compatible API).
	API http.Handler
	// OnModel is called once for each model served: Models at start, and
	// those Follow finds later.
	OnModel func(rdrr.ModelID)
	Logger  *slog.Logger
}

// Site is the HTTP side of a node: WebSocket signaling at /signal (a room
// per model held), the WebRTC gateway answering browsers' offers in the
// rooms of the models served, the page at /d, the HTTP seed under
// sigwire.SeedPrefix and, when given, the API. Bound to a loopback
// address, WebRTC uses loopback UDP4 candidates only and a TURN relay on
// the same address lets browsers reach each other.
type Site struct {
	ln     net.Listener
	scheme string
	log    *slog.Logger
	srv    *http.Server
	sig    *Server
	gw     *Gateway
	relay  *Relay     // on loopback: TURN for browser-to-browser channels
	errc   chan error // the HTTP server's end

	stop     context.CancelFunc // ends the rooms and the store watch
	watching sync.WaitGroup
}

// StartSite listens on o.Addr and serves store until Run's ctx ends.
func StartSite(ctx context.Context, store SiteStore, o SiteOptions) (*Site, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", o.Addr, err)
	}
	loopback := false
	var ip net.IP
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		loopback, ip = a.IP.IsLoopback(), a.IP
	}
	sopts := Options{
		// Rooms are the models this store holds.
		Allow: func(room rdrr.ModelID) bool { _, _, ok := store.Manifest(room); return ok },
		// The SDK (/sdk/doppler.js) joins from pages of other origins.
		AnyOrigin: true,
		Logger:    log,
	}
	// Browsers never gather loopback candidates: on loopback they reach
	// each other through the node's TURN relay on the same address.
	var relay *Relay
	if loopback {
		if relay, err = NewRelay(ip, RelayOptions{Logger: log}); err != nil {
			ln.Close()
			return nil, err
		}
		sopts.ICEServers = []ICEServer{relay.ICEServer()}
	}
	sig := New(sopts)
	gw, err := NewGateway(sig, store, GatewayOptions{Loopback: loopback, Logger: log})
	if err != nil {
		ln.Close()
		if relay != nil {
			relay.Close()
		}
		return nil, err
	}
	s := &Site{ln: ln, scheme: "http", log: log, sig: sig, gw: gw, relay: relay, errc: make(chan error, 1)}
	var rctx context.Context
	rctx, s.stop = context.WithCancel(ctx)
	for _, id := range o.Models {
		if err := gw.Add(rctx, id); err != nil {
			s.Close()
			return nil, fmt.Errorf("model %s: answering browsers: %w", id.Short(), err)
		}
		if o.OnModel != nil {
			o.OnModel(id)
		}
	}
	if o.Follow {
		s.follow(rctx, store, o.Models, o.OnModel)
	}
	s.srv = &http.Server{
		Handler:           s.routes(store, o.API),
		TLSConfig:         o.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if o.TLS != nil {
		s.scheme = "https"
	} else if !loopback {
		log.Warn("serving plain HTTP beyond loopback: browsers allow WebGPU only on https:// or localhost, so the page needs --tls-cert and --tls-key there", "http", ln.Addr().String())
	}
	go func() {
		if o.TLS != nil {
			s.errc <- s.srv.ServeTLS(ln, "", "")
		} else {
			s.errc <- s.srv.Serve(ln)
		}
	}()
	return s, nil
}

func (s *Site) routes(store SiteStore, api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/signal", s.sig.Handler())
	// The web page and its assets (the browser client in WebAssembly).
	page := web.Handler()
	mux.Handle("/d", page)
	mux.Handle("/d/", page)
	mux.Handle("/sdk/", page) // the browser SDK, /sdk/doppler.js
	mux.Handle(sigwire.SeedPrefix+"/", NewSeed(store, SeedOptions{Logger: s.log}).Handler())
	if api != nil {
		mux.Handle("/v1/", api)
		mux.Handle("/health", api)
		mux.Handle("/metrics", api)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/d", http.StatusFound)
	})
	return mux
}

// Gateway returns the site's WebRTC gateway (its Stats, for monitoring).
func (s *Site) Gateway() *Gateway { return s.gw }

// URL is the address served, for the "listening <url>" line.
func (s *Site) URL() string { return s.scheme + "://" + s.ln.Addr().String() }

// URLs are the addresses that reach the site: URL when it is bound to one
// address; bound to all (0.0.0.0, [::]), one per interface address, so a
// user gets something to paste (link-local IPv6, which needs a zone, is
// left out).
func (s *Site) URLs() []string {
	a, ok := s.ln.Addr().(*net.TCPAddr)
	if !ok || !a.IP.IsUnspecified() {
		return []string{s.URL()}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		s.log.Warn("listing interface addresses", "err", err)
	}
	if urls := interfaceURLs(s.scheme, a, addrs); len(urls) > 0 {
		return urls
	}
	return []string{s.URL()}
}

// interfaceURLs lists scheme://addr:port for each interface address a
// listener bound to all addresses (bound) is reachable on.
func interfaceURLs(scheme string, bound *net.TCPAddr, addrs []net.Addr) []string {
	v4only := bound.IP.To4() != nil
	var urls []string
	for _, ad := range addrs {
		ipn, ok := ad.(*net.IPNet)
		if !ok || ipn.IP.IsLinkLocalUnicast() || (v4only && ipn.IP.To4() == nil) {
			continue
		}
		urls = append(urls, scheme+"://"+net.JoinHostPort(ipn.IP.String(), fmt.Sprint(bound.Port)))
	}
	return urls
}

// follow answers browsers in the rooms of the models that become complete
// in the store (a pull) until ctx ends, and leaves those of models removed.
func (s *Site) follow(ctx context.Context, store SiteStore, have []rdrr.ModelID, onModel func(rdrr.ModelID)) {
	ch, stop := store.Changes()
	added := make(map[rdrr.ModelID]bool)
	for _, id := range have {
		added[id] = true
	}
	s.watching.Add(1)
	go func() {
		defer s.watching.Done()
		defer stop()
		for {
			for _, id := range store.Models() {
				if added[id] || !store.HoldsModel(id) {
					continue
				}
				if err := s.gw.Add(ctx, id); err != nil {
					if ctx.Err() == nil {
						s.log.Warn("model complete, but not answering browsers for it", "model", id, "err", err)
					}
					continue
				}
				added[id] = true
				s.log.Info("answering browsers", "model", id)
				if onModel != nil {
					onModel(id)
				}
			}
			for id := range added {
				if _, _, ok := store.Manifest(id); !ok {
					s.gw.Remove(id)
					delete(added, id)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
	}()
}

// Run serves until ctx ends or the HTTP server fails, then shuts down.
func (s *Site) Run(ctx context.Context) error {
	select {
	case err := <-s.errc:
		s.Close()
		return err
	case <-ctx.Done():
		return s.Close()
	}
}

// Close closes the browsers' WebRTC connections, the signaling (its
// connections are hijacked: http.Server.Shutdown does not see them) and
// the HTTP server, within 5 s for the last two.
func (s *Site) Close() error {
	s.stop()
	s.watching.Wait()
	s.gw.Close()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.sig.Shutdown(shut)
	if s.relay != nil {
		s.relay.Close()
	}
	if s.srv == nil {
		return s.ln.Close()
	}
	return s.srv.Shutdown(shut)
}
