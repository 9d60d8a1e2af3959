package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// SDKPath is where Handler serves the browser SDK, an ES module
// (docs/sdk.md).
const SDKPath = "/sdk/doppler.js"

// Handler serves the page at /d (and /d/), its assets under /d/, and the
// browser SDK at SDKPath (mount it for /d, /d/ and /sdk/). The wasm is
// served gzip-encoded to clients that accept it (every browser),
// decompressed otherwise. Assets carry a content-hash ETag. Every answer
// allows any origin (Access-Control-Allow-Origin: *): the SDK, its glue
// and the wasm are loaded by pages of other sites, and nothing here is
// private.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return &handler{fs: sub, etags: map[string]string{}}
}

type handler struct {
	fs fs.FS

	mu    sync.Mutex
	etags map[string]string
	plain []byte // the wasm decompressed, for clients without gzip
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var name string
	switch p := r.URL.Path; {
	case p == SDKPath:
		name = "sdk.js"
	case p == "/d" || strings.HasPrefix(p, "/d/"):
		name = strings.TrimPrefix(strings.TrimPrefix(p, "/d"), "/")
	default:
		http.NotFound(w, r)
		return
	}
	if name == "" {
		name = "index.html"
	}
	if name != path.Clean(name) || strings.Contains(name, "..") {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Origin", "*")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-cache")
	if name == "doppler.wasm" {
		h.wasm(w, r)
		return
	}
	b, err := fs.ReadFile(h.fs, name)
	if err != nil || strings.HasSuffix(name, ".gz") {
		http.NotFound(w, r)
		return
	}
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		hdr.Set("Content-Type", ct)
	}
	if name == "index.html" {
		// connect-src reaches beyond 'self' for share links: their seed
		// (HTTP and signaling) may be another node.
		hdr.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self' http: https: ws: wss:; style-src 'self'; img-src 'self' data:")
	}
	h.send(w, r, name, b)
}

// send writes b with its ETag, answering a matching If-None-Match with 304.
func (h *handler) send(w http.ResponseWriter, r *http.Request, name string, b []byte) {
	tag := h.etag(name, b)
	w.Header().Set("ETag", tag)
	if r.Header.Get("If-None-Match") == tag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b)) // no Last-Modified: the ETag validates
}

func (h *handler) etag(name string, b []byte) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.etags[name]; ok {
		return t
	}
	sum := sha256.Sum256(b)
	t := `"` + hex.EncodeToString(sum[:16]) + `"`
	h.etags[name] = t
	return t
}

func (h *handler) wasm(w http.ResponseWriter, r *http.Request) {
	gz, err := fs.ReadFile(h.fs, "doppler.wasm.gz")
	if err != nil {
		http.Error(w, "the browser client was not built into this binary (go generate ./signaling/web)", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/wasm")
	w.Header().Add("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		h.send(w, r, "doppler.wasm.gz", gz)
		return
	}
	plain, err := h.decompressed(gz)
	if err != nil {
		http.Error(w, "corrupt embedded wasm: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h.send(w, r, "doppler.wasm", plain)
}

func (h *handler) decompressed(gz []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.plain != nil {
		return h.plain, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	h.plain = b
	return b, nil
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
