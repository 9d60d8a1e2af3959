// Package convert writes RDRR directories from other model formats: GGUF
// files and HF safetensors checkpoint directories (ToRDRR), with optional
// requantization (Options.Quant), and synthetic random-weight models for
// benchmarks (Synthesize). It also reads a model's config and tokenizer
// out of GGUF metadata or an HF tokenizer.json (ConfigFromGGUF,
// TokenizerFromGGUF, TokenizerFromHF).
//
// The converters live apart from the format core (package rdrr) so that
// the peer-to-peer side and the browser's WebAssembly client, which only
// read, verify and serve RDRR directories, do not carry the GGUF and
// safetensors parsers or the quantization codecs.
package convert
