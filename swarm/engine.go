package swarm

import (
	"context"
	"log/slog"

	"github.com/doppler-llm/doppler/rdrr"
)

// What the swarm needs of an inference engine, declared here so that the
// swarm imports none (cmd/node wires the engine to these): a session for
// prefill offload and a loader for the prefill service (prefill.go,
// offload.go), and the expert references of the gatekeeper's read-ahead
// hints (gatekeeper.go). The file has no build constraint: the types are
// the same in every build.

// PrefillSession is what prefill offload needs of an inference session on
// one model: a KV cache that Forward fills and that moves in and out as
// bytes. The engine's Session implements it.
//
// An exported cache is laid out as the engine stores it: for each layer,
// K then V; for each KV head, positions 0..n-1; each a row of head_dim
// elements (2 bytes each for f16, 4 for f32). Offload relies on that
// layout to cut a cache down to a prefix.
type PrefillSession interface {
	// Context is the KV cache capacity in tokens.
	Context() int
	// Pos is the number of positions in the cache.
	Pos() int
	// Reset empties the cache: the next token is at position 0.
	Reset()
	// Forward appends ids to the cache and returns the logits of the last.
	Forward(ids []int) ([]float32, error)
	// KVBytes is the size of an exported cache of n positions.
	KVBytes(n int) int
	// KVF16 reports whether the cache holds f16 elements (else f32).
	KVF16() bool
	// ExportKV returns the cache of positions [0, n).
	ExportKV(n int) ([]byte, error)
	// ImportKV replaces the cache with positions [0, n) from data, laid
	// out as ExportKV writes it, and sets Pos to n.
	ImportKV(n int, data []byte) error
	// Close frees the session (for one a PrefillLoader returned, the
	// model too).
	Close()
}

// PrefillLoad says what a PrefillLoader loads.
type PrefillLoad struct {
	// Context is the KV cache length in tokens.
	Context int
	// KVF32 asks for an f32 cache (else f16).
	KVF32  bool
	Logger *slog.Logger
}

// PrefillLoader loads model m and returns an empty session on it; closing
// the session frees the model. The prefill service calls it from one
// goroutine, and closes a session before loading the next.
type PrefillLoader func(ctx context.Context, m *rdrr.Model, o PrefillLoad) (PrefillSession, error)

// ExpertRef names one expert of one MoE layer: a read-ahead hint.
type ExpertRef struct{ Layer, Expert int }
