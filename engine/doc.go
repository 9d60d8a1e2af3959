// Package engine runs LLMs on the GPU: it builds a model's forward pass from
// an RDRR manifest out of the WGSL kernels of package kernels, keeps the KV
// cache on the GPU, and generates tokens — each decode step one compute pass
// in one queue submit that reads back only the sampled token id.
//
// The engine reads weights through rdrr.Model, whose ShardSource may be a
// local directory or the swarm; it never imports the network packages.
//
// It runs on package kernels, so natively it needs cgo too: in a build
// without cgo the package is this comment alone (see kernels).
package engine
