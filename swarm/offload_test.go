package swarm_test

import (
	"testing"

	"github.com/doppler-llm/doppler/internal/prefilltest"
)

// The prefill-offload suite over the pure-Go reference model: the swarm's
// side of offload (peer choice, the estimate, the protocol, the check of a
// peer's KV cache) without a GPU. cmd/node runs the same suite over the
// GPU engine.

// TestOffload: forced, refused, automatic, lying, stalling and busy peers.
func TestOffload(t *testing.T) { prefilltest.Offload(t, prefilltest.Reference) }

// TestPrefillProtocolErrors: malformed requests and answers end in errors,
// never a crash or an unbounded allocation.
func TestPrefillProtocolErrors(t *testing.T) { prefilltest.ProtocolErrors(t, prefilltest.Reference) }
