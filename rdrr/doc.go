// Package rdrr implements DOPPLER's model package format: a canonical JSON
// manifest (config, tokenizer, tensor table, shard table, expert map) plus
// content-addressed shards, each verified block by block against a SHA-256
// Merkle root before use. docs/rdrr.md is the specification.
//
// Converters from GGUF and from HF safetensors directories write RDRR
// directories; Reader reads tensors lazily from any ShardSource.
package rdrr
