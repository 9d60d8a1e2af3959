//go:build cgo || js

package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/rdrr"
)

// Options configures a Server. Zero values take the defaults shown.
type Options struct {
	// Load puts a model's weights on the GPU (required).
	Load func(ctx context.Context, m *rdrr.Model) (*engine.Model, error)
	// Queue bounds the requests waiting per model (16); more are answered
	// 429 at once.
	Queue int
	// Batch is how many of a model's requests generate at once (4), each
	// on its own session (a KV cache of the model's context), their decode
	// steps batched: one pass over the weights advances them all. 1 serves
	// one request at a time. Models whose experts are paged take 1.
	Batch int
	// MaxBody bounds a request body (8 MiB); more is answered 413.
	MaxBody int64
	// APIKey, when set, is required as "Authorization: Bearer KEY" on the
	// generation endpoints. /v1/models, /health and /metrics stay open.
	APIKey string
	// OwnedBy is /v1/models' owned_by ("doppler").
	OwnedBy string
	// Registry receives the API's metrics and is what /metrics serves, so
	// a caller can add its own collectors (a new registry with the Go and
	// process collectors).
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Server is the OpenAI-compatible API over a set of models.
type Server struct {
	o   Options
	log *slog.Logger
	met *metrics

	ctx    context.Context // ends the workers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	models []*model
}

// New returns a server with no models; Add them.
func New(o Options) *Server {
	if o.Queue <= 0 {
		o.Queue = 16
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 8 << 20
	}
	if o.Batch <= 0 {
		o.Batch = 4
	}
	o.Batch = min(o.Batch, engine.MaxBatch)
	if o.OwnedBy == "" {
		o.OwnedBy = "doppler"
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, log: o.Logger, met: newMetrics(o.Registry)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Add serves rm: its weights load in the background (the model is listed
// as "loading" meanwhile, and /health answers 503 until some model is
// ready), then its worker starts. A model that fails to load is listed as
// "failed" and logged.
func (s *Server) Add(rm *rdrr.Model) {
	m := &model{id: rm.ID, name: rm.Info.Name, created: time.Now().Unix(),
		log: s.log.With("model", rm.ID.Short()), q: newFairQueue(s.o.Queue), state: stateLoading}
	s.mu.Lock()
	s.models = append(s.models, m)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		start := time.Now()
		if err := m.load(s.ctx, rm, s.o.Load, s.o.Batch); err != nil {
			m.log.Error("model failed to load", "err", err)
			m.setState(stateFailed, err)
			return
		}
		m.setState(stateReady, nil)
		m.log.Info("model ready", "name", m.name, "context", m.ctxLen, "batch", len(m.sess), "load_s", time.Since(start).Seconds())
		m.run(s.ctx, s.met)
	}()
}

// WaitReady waits until every model added is ready or failed, and returns
// the first load error.
func (s *Server) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		loading := false
		var first error
		for _, m := range s.list() {
			switch st, err := m.status(); st {
			case stateLoading:
				loading = true
			case stateFailed:
				first = cmpOr(first, fmt.Errorf("model %s: %w", m.id.Short(), err))
			}
		}
		if !loading {
			return first
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Close stops the workers (requests in flight are cancelled) and frees
// every model's GPU state.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
	for _, m := range s.list() {
		m.close()
	}
}

func (s *Server) list() []*model {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.models)
}

// Handler serves the API's routes: /v1/chat/completions,
// /v1/completions, /v1/models, /health and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/chat/completions", s.endpoint("chat", s.auth(s.chat)))
	mux.Handle("POST /v1/completions", s.endpoint("completions", s.auth(s.completions)))
	mux.Handle("GET /v1/models", s.endpoint("models", s.modelsList))
	mux.Handle("GET /health", s.endpoint("health", s.health))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.o.Registry, promhttp.HandlerOpts{}))
	return mux
}

// statusWriter records the status code for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// endpoint counts and times requests and answers CORS preflights, so a
// page on another origin can call the API.
func (s *Server) endpoint(name string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set("Access-Control-Allow-Origin", "*")
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		s.met.requests.WithLabelValues(name, fmt.Sprint(cmp0(sw.code, http.StatusOK))).Inc()
		s.met.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	})
}

func cmp0(a, b int) int {
	if a == 0 {
		return b
	}
	return a
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	if s.o.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.o.APIKey)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong API key (Authorization: Bearer KEY)", "invalid_api_key")
			return
		}
		h(w, r)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ready, loading := 0, 0
	for _, m := range s.list() {
		switch st, _ := m.status(); st {
		case stateReady:
			ready++
		case stateLoading:
			loading++
		}
	}
	status, code := "ok", http.StatusOK
	switch {
	case ready > 0:
	case loading > 0:
		status, code = "loading", http.StatusServiceUnavailable
	default:
		status, code = "no model", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "models_ready": ready, "models_loading": loading})
}

func (s *Server) modelsList(w http.ResponseWriter, r *http.Request) {
	out := modelList{Object: "list", Data: []modelObject{}}
	for _, m := range s.list() {
		st, _ := m.status()
		out.Data = append(out.Data, modelObject{ID: m.id.String(), Object: "model", Created: m.created,
			OwnedBy: s.o.OwnedBy, Name: m.name, Status: st})
	}
	writeJSON(w, http.StatusOK, out)
}

// lookup finds the model a request names: its full ID, a unique prefix of
// the ID, or its name. An empty name picks the only model served.
func (s *Server) lookup(name string) (*model, *httpError) {
	ms := s.list()
	if name == "" {
		if len(ms) == 1 {
			return ms[0], nil
		}
		return nil, badRequest("model", "model_not_found", "model: required when %d models are served", len(ms))
	}
	var found []*model
	for _, m := range ms {
		if m.id.String() == name || m.name == name {
			return m, nil
		}
		if len(name) >= 4 && strings.HasPrefix(m.id.String(), strings.ToLower(name)) {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return nil, badRequest("model", "model_not_found", "model %q: not served here (GET /v1/models lists them)", name)
	case 1:
		return found[0], nil
	default:
		return nil, badRequest("model", "model_not_found", "model %q: ambiguous, %d models' IDs start so", name, len(found))
	}
}

// httpError is an error answered in OpenAI's shape.
type httpError struct {
	code        int
	typ, param  string
	errCode     string
	msg         string
	retryAfterS int
}

func badRequest(param, code, format string, args ...any) *httpError {
	return &httpError{code: http.StatusBadRequest, typ: "invalid_request_error", param: param, errCode: code, msg: fmt.Sprintf(format, args...)}
}

func (e *httpError) write(w http.ResponseWriter) {
	if e.retryAfterS > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.retryAfterS))
	}
	body := apiError{Error: errorBody{Message: e.msg, Type: e.typ}}
	if e.param != "" {
		body.Error.Param = &e.param
	}
	if e.errCode != "" {
		body.Error.Code = &e.errCode
	}
	writeJSON(w, e.code, body)
}

func writeError(w http.ResponseWriter, code int, typ, msg, errCode string) {
	(&httpError{code: code, typ: typ, msg: msg, errCode: errCode}).write(w)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// decode reads a JSON body of at most MaxBody bytes into v.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *httpError {
	r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBody)
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &httpError{code: http.StatusRequestEntityTooLarge, typ: "invalid_request_error",
				msg: fmt.Sprintf("request body over %d bytes", s.o.MaxBody), errCode: "request_too_large"}
		}
		return badRequest("", "invalid_json", "malformed JSON body: %v", err)
	}
	return nil
}

// clientKey names the client for the fair queue: its API key's user
// would be better, but one key is all there is, so the remote host.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
