// Package prefilltest is the prefill-offload test suite, run against any
// swarm.PrefillLoader: swarm's own tests run it over [Reference], a small
// pure-Go model with the engine's KV cache contract (no GPU, no cgo), and
// cmd/node's run it over the GPU engine through its engine wiring, so the
// same checks hold for both.
//
// [Offload] exercises forced, refused, automatic, lying, stalling and busy
// peers between real libp2p nodes on loopback; [ProtocolErrors] sends
// malformed requests and checks the errors. Both need the shared test
// data (stories260K, found through internal/testenv).
package prefilltest
