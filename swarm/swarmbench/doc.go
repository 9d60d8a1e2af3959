// Package swarmbench measures the swarm: one seed and N peers pull a
// synthetic model over the real swarm code (swarm.Node, the Fetcher, the
// shard protocol over libp2p), then the same peers download it from the
// seed over plain HTTP, and the two are compared (Result, one JSON line).
//
// Three modes:
//
//   - loopback: every node in this process on 127.0.0.1, unshaped (the
//     CPU binds; it measures the data path's cost);
//   - sim: every node in this process on go-libp2p's mocknet, each link
//     given a latency and every node's upload and download capped at one
//     rate (a token bucket per node and direction), so 100 or 1,000 peers
//     run the real protocol code on one machine;
//   - link: real processes, the seed and every peer a `doppler node`
//     child in its own Linux network namespace on one bridge, each node's
//     upload and download capped with tc tbf (root only).
//
// Faults run in every mode: Churn kills a fraction of the honest peers
// mid-transfer (SIGKILL for processes, an abrupt close in-process) and
// starts as many fresh ones; Malicious peers flip bits, truncate blocks,
// claim shards they cannot serve, stall mid-block, send oversize frames
// and flood the gossip topic. At the end every honest peer's store is
// checked block by block (Result.BadBytesStored).
package swarmbench

//go:generate go run ./cmd/swarmplot -in ../../docs/swarm-scale.jsonl -out ../../docs/swarm-scale.svg
