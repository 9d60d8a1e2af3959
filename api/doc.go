// Package api serves models over an OpenAI-compatible HTTP API, the way
// llama.cpp's llama-server and ollama do: POST /v1/chat/completions and
// /v1/completions (streamed as Server-Sent Events with "stream": true),
// GET /v1/models, /health and Prometheus /metrics.
//
// Each model has a worker that runs one request at a time on its own KV
// state, fed by a bounded queue that is fair between clients; /health and
// /metrics never wait behind generation. The package knows the engine and
// the tokenizer but no network beyond HTTP: where the weights come from
// (a directory, the store, the swarm) is the caller's business, through
// Options.Load.
//
// It serves the engine, so natively it needs cgo: in a build without cgo
// the package is this comment alone (see kernels), and cmd/node serves no
// API, saying so in its log.
package api
