package swarmbench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/gostream"

	"github.com/doppler-llm/doppler/rdrr"
)

// httpTag is the libp2p protocol HTTP runs over in sim mode.
const httpTag = "/doppler-bench/http/1"

// maxSimHTTPClients bounds the HTTP clients run at once in sim mode: at
// 1,000 peers, every one downloading the whole model through the seed's
// uplink would take a thousand single downloads. The seed's uplink binds
// from the second client on, so http_s is scaled up from what this many
// took (Result.HTTPClients says how many ran).
const maxSimHTTPClients = 8

// httpServer is where the HTTP baseline's seed serves the model's
// directory, and how each client dials it.
type httpServer struct {
	base  string // URL of the model directory
	dial  func(client int) func(ctx context.Context, network, addr string) (net.Conn, error)
	close func()
}

// loopbackHTTP serves src on 127.0.0.1, unshaped.
func loopbackHTTP(src string) (*httpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(src)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	var d net.Dialer
	return &httpServer{base: "http://" + ln.Addr().String() + "/",
		dial:  func(int) func(context.Context, string, string) (net.Conn, error) { return d.DialContext },
		close: func() { srv.Close() }}, nil
}

// simHTTP serves src from a fresh shaped mocknet host over libp2p streams
// (gostream), to clients on shaped hosts of their own: the same rates and
// latency as the swarm's nodes, one TCP-like stream per connection.
func simHTTP(rate int64, latency time.Duration, src string, clients int) (*httpServer, error) {
	sn := newSimNet(rate, latency)
	seed, err := sn.host()
	if err != nil {
		sn.Close()
		return nil, err
	}
	hosts := make([]*simHost, clients)
	for i := range hosts {
		h, err := sn.host()
		if err != nil {
			sn.Close()
			return nil, err
		}
		hosts[i] = h.(*simHost)
	}
	ln, err := gostream.Listen(seed, httpTag)
	if err != nil {
		sn.Close()
		return nil, err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(src)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &httpServer{base: "http://seed/",
		dial: func(c int) func(context.Context, string, string) (net.Conn, error) {
			return func(ctx context.Context, _, _ string) (net.Conn, error) {
				return gostream.Dial(ctx, hosts[c], seed.ID(), httpTag)
			}
		},
		close: func() { srv.Close(); sn.Close() }}, nil
}

// httpBaseline has one client alone, then every honest peer at once (in
// sim at most maxSimHTTPClients, scaled up), download every shard file
// from the seed over HTTP, each to disk and hashed, and fills
// OneHTTPSeconds, HTTPSeconds and HTTPClients.
func httpBaseline(ctx context.Context, e *runEnv) error {
	o, res := e.o, e.res
	k := e.plan.honest
	if o.Mode == ModeSim {
		k = min(k, maxSimHTTPClients)
	}
	var srv *httpServer
	var err error
	if o.Mode == ModeSim {
		srv, err = simHTTP(o.Rate, o.Latency, e.src, k)
	} else {
		srv, err = loopbackHTTP(e.src)
	}
	if err != nil {
		return fmt.Errorf("http baseline: %w", err)
	}
	defer srv.close()
	one, err := httpClients(ctx, o, e.man, srv, 1)
	if err != nil {
		return fmt.Errorf("http baseline, 1 client: %w", err)
	}
	fmt.Fprintf(o.Progress, "http: 1 client in %.2fs\n", one.Seconds())
	all, err := httpClients(ctx, o, e.man, srv, k)
	if err != nil {
		return fmt.Errorf("http baseline, %d clients: %w", k, err)
	}
	res.OneHTTPSeconds, res.HTTPClients = one.Seconds(), k
	res.HTTPSeconds = all.Seconds() * float64(e.plan.honest) / float64(k)
	if k < e.plan.honest {
		fmt.Fprintf(o.Progress, "http: %d clients at once in %.2fs, scaled to %d: %.2fs\n", k, all.Seconds(), e.plan.honest, res.HTTPSeconds)
	}
	return nil
}

// httpClients has n clients download every shard file at once and returns
// the time until the last one finished.
func httpClients(ctx context.Context, o *Options, m *rdrr.Manifest, srv *httpServer, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	t0 := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for c := range n {
		wg.Go(func() {
			out := filepath.Join(o.Dir, fmt.Sprintf("http%d", c))
			defer os.RemoveAll(out)
			if errs[c] = os.MkdirAll(out, 0o755); errs[c] != nil {
				return
			}
			tr := &http.Transport{DialContext: srv.dial(c)}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			for _, sh := range m.Shards {
				if errs[c] = httpGet(ctx, cl, srv.base+sh.Hash.String(), filepath.Join(out, sh.Hash.String()), sh.Hash); errs[c] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

// httpGet downloads url to path and checks that it hashes to want.
func httpGet(ctx context.Context, cl *http.Client, url, path string, want rdrr.Hash) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if got := rdrr.Hash(h.Sum(nil)); got != want {
		return fmt.Errorf("GET %s: content hashes to %s", url, got.Short())
	}
	return f.Close()
}
