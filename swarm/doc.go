// Package swarm is the policy side of DOPPLER's peer-to-peer layer: the
// content-addressed shard store on disk, peer choice by measured speed,
// rarest-first multi-source fetching with per-block verification, expert
// paging and prefill offload. It implements rdrr.ShardSource so the engine
// can run a model straight from the swarm without importing p2p.
package swarm
