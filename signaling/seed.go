package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling/sigwire"
)

// Store is what the seed serves; swarm.Store implements it.
type Store interface {
	Models() []rdrr.ModelID
	Manifest(id rdrr.ModelID) (manifest, sig []byte, ok bool)
	Shard(h rdrr.Hash) (rdrr.Shard, bool)
	Has(h rdrr.Hash) bool // the whole shard is stored and verified
	ReadShardAt(ctx context.Context, h rdrr.Hash, p []byte, off int64) error
}

// Seed serves manifests and shards over HTTP, for browsers (and anything
// else that speaks HTTP) when no peer has what they need:
//
//	GET /rdrr/v1/models                          JSON {"models": [model IDs]}
//	GET /rdrr/v1/models/<id>/manifest.json       the manifest, ETag "<id>"
//	GET /rdrr/v1/models/<id>/manifest.sig        the publisher signature, when there is one
//	GET /rdrr/v1/shards/<hash>                   the shard; Range supported; ETag "<hash>"
//	GET /rdrr/v1/shards/<hash>/blocks/<i>/proof  JSON {index, blocks, block, root, proof}: the
//	                                             Merkle audit path of block i (docs/rdrr.md)
//
// (The prefix is sigwire.SeedPrefix, so /v1/ is left to the
// OpenAI-compatible API.)
//
// Everything is content-addressed, so responses are immutable and cached
// forever. CORS is open: the bytes are public and verified by the client.
type Seed struct {
	store Store
	log   *slog.Logger
}

// SeedOptions configures a Seed.
type SeedOptions struct {
	Logger *slog.Logger
}

// NewSeed returns a seed serving store.
func NewSeed(store Store, o SeedOptions) *Seed {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Seed{store: store, log: log}
}

// Handler returns the seed's HTTP handler.
func (s *Seed) Handler() http.Handler {
	mux := http.NewServeMux()
	const p = sigwire.SeedPrefix
	mux.HandleFunc("GET "+p+"/models", s.models)
	mux.HandleFunc("GET "+p+"/models/{id}/{file}", s.manifest)
	mux.HandleFunc("GET "+p+"/shards/{hash}", s.shard)
	mux.HandleFunc("GET "+p+"/shards/{hash}/blocks/{index}/proof", s.proof)
	return cors(mux)
}

func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Headers", "Range")
		h.Set("Access-Control-Expose-Headers", "Content-Range, Content-Length, ETag, Accept-Ranges")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func immutable(w http.ResponseWriter, etag string) {
	w.Header().Set("ETag", `"`+etag+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
}

func (s *Seed) models(w http.ResponseWriter, r *http.Request) {
	ids := s.store.Models()
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, id.String())
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"models": out})
}

func (s *Seed) manifest(w http.ResponseWriter, r *http.Request) {
	id, err := rdrr.ParseHash(r.PathValue("id"))
	if err != nil {
		http.Error(w, "bad model id", http.StatusBadRequest)
		return
	}
	m, sig, ok := s.store.Manifest(id)
	if !ok {
		http.Error(w, "unknown model", http.StatusNotFound)
		return
	}
	var body []byte
	switch r.PathValue("file") {
	case rdrr.ManifestFile:
		body = m
		w.Header().Set("Content-Type", "application/json")
		immutable(w, id.String())
	case rdrr.SignatureFile:
		if sig == nil {
			http.Error(w, "model is unsigned", http.StatusNotFound)
			return
		}
		body = sig
		w.Header().Set("Content-Type", "application/json")
		immutable(w, rdrr.Sum(sig).String())
	default:
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(body)))
}

func (s *Seed) shard(w http.ResponseWriter, r *http.Request) {
	h, sh, ok := s.lookup(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	immutable(w, h.String())
	// ServeContent answers Range (single and multi) and If-None-Match.
	rs := io.NewSectionReader(&shardReader{ctx: r.Context(), s: s.store, h: h}, 0, sh.Size)
	http.ServeContent(w, r, "", time.Time{}, rs)
}

func (s *Seed) proof(w http.ResponseWriter, r *http.Request) {
	_, sh, ok := s.lookup(w, r)
	if !ok {
		return
	}
	i, err := strconv.Atoi(r.PathValue("index"))
	if err != nil || i < 0 || i >= len(sh.Blocks) {
		http.Error(w, fmt.Sprintf("block index must be in [0, %d)", len(sh.Blocks)), http.StatusBadRequest)
		return
	}
	proof := rdrr.MerkleProof(sh.Blocks, i)
	hex := make([]string, len(proof))
	for j, p := range proof {
		hex[j] = p.String()
	}
	w.Header().Set("Content-Type", "application/json")
	immutable(w, fmt.Sprintf("%s-%d", sh.Hash, i))
	json.NewEncoder(w).Encode(map[string]any{
		"index": i, "blocks": len(sh.Blocks), "block": sh.Blocks[i], "root": sh.Root, "proof": hex,
	})
}

// lookup parses the shard hash and checks the shard is complete here.
func (s *Seed) lookup(w http.ResponseWriter, r *http.Request) (rdrr.Hash, rdrr.Shard, bool) {
	h, err := rdrr.ParseHash(r.PathValue("hash"))
	if err != nil {
		http.Error(w, "bad shard hash", http.StatusBadRequest)
		return h, rdrr.Shard{}, false
	}
	sh, ok := s.store.Shard(h)
	if !ok || !s.store.Has(h) {
		http.Error(w, "unknown shard", http.StatusNotFound)
		return h, rdrr.Shard{}, false
	}
	return h, sh, true
}

// shardReader adapts Store.ReadShardAt to io.ReaderAt.
type shardReader struct {
	ctx context.Context
	s   Store
	h   rdrr.Hash
}

func (r *shardReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.s.ReadShardAt(r.ctx, r.h, p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, err
	}
	return len(p), nil
}
