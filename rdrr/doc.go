// Package rdrr implements DOPPLER's model package format: a canonical JSON
// manifest (config, tokenizer, tensor table, shard table, expert map) plus
// content-addressed shards, each verified block by block against a SHA-256
// Merkle root before use. docs/rdrr.md is the specification.
//
// This package is the format core: manifests, model IDs and hashes, Merkle
// trees and proofs, block geometry, signatures, and the Writer, Reader and
// verifier of RDRR directories. It imports none of its converters; those
// (GGUF and HF safetensors import, requantization, synthetic models) are in
// rdrr/convert, and tensor storage types are in rdrr/dtype.
package rdrr
