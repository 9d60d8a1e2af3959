// Package swarm is the policy side of DOPPLER's peer-to-peer layer: the
// content-addressed shard store on disk, peer choice by measured speed,
// rarest-first multi-source fetching with per-block verification, expert
// paging and prefill offload. It implements rdrr.ShardSource so the engine
// can run a model straight from the swarm without importing p2p.
//
// # Fetch policy
//
// A seed's upload is the scarce resource: every peer that joins knows the
// seed first, so if each asks it for what it lacks the seed sends the model
// once per peer. Store.Fetch spends it so that the seed sends each shard
// about once and the peers send each other the rest:
//
//   - Seeds and fetchers. A holder that held every shard of the model when
//     the fetch first saw it is a seed. A peer that held nothing then, or
//     whose holdings have changed since, is a fetcher (it is downloading
//     too). Peers that complete during the fetch stay ordinary holders.
//   - Rarest first. Incomplete shards are scheduled by how many holders
//     announce them, fewest first; a shard held by no one waits.
//   - Territories (stagger). The fetchers (this node included) are sorted
//     by a hash of (model, peer ID), and the model's shards, rotated to start
//     at the first fetcher's hash, are cut into equal runs, one per fetcher.
//     A node asks a seed for a shard that only seeds hold only within its
//     own run (its territory), starting at its first place; every fetcher
//     computes the same cut, so the seed serves each shard to one fetcher
//     and the others get it from that fetcher once it is announced. Ties
//     among equally rare shards are otherwise broken in a random order of
//     this fetch (FetchOptions.Seed), so peers start on different shards.
//     Outside its territory a node asks a seed for a seed-only shard only
//     after it has had nothing in flight for about twice the time the seed
//     takes to send a shard, and at least 16 × FetchOptions.Poll (4 s; the
//     owner may be gone or not be fetching); 4 times as long for a shard
//     that other peers hold part of while that part grows (its owner is
//     fetching it). A fetcher whose holdings have not moved for that wait
//     (killed mid-transfer, its inventory not yet expired) drops off the
//     ring, and its territory is cut among the others.
//     Requests to a seed are a quarter of BlocksPerRequest. A fetch asks
//     the seed at once, before it knows the other fetchers (every shard
//     then looks like its own): a super-seed (p2p.Options.SuperSeed)
//     answers busy to a block it is sending to another, so N fetchers
//     starting together still take each block from it once, and any wait
//     leaves the seed's upload, the swarm's critical path, idle.
//     A fetch limited to some shards (FetchOptions.Shards, the engine
//     reading a tensor) has no territory: it must not wait.
//   - Holder choice. Among a shard's holders the fetch asks the one with
//     the lowest cost: its expected time for a request (measured RTT plus
//     size over throughput; an unmeasured holder first gets a one-block
//     probe, which measures latency only, and is assumed the median
//     throughput until a longer request measures it) times (1 + this
//     node's requests in flight to it) times (1 + its load). Load is the
//     expected number of fetchers asking it: for each shard it holds, the
//     fetchers lacking the shard, divided among the shard's holders for a
//     peer and undivided for a seed. A seed thus costs the whole swarm's
//     demand at first and loses to any peer holding the shard, and to a
//     busy one too: when the cheapest holder has no free slot nothing else
//     is asked for that shard, since waiting for it is expected to be
//     cheaper than the next. A seed is considered for a shard that peers
//     hold only when this node has nothing in flight (its peers failed,
//     left or were set aside). While a request to a seed is in flight, a
//     whole fetch keeps at most one other (seedCompanions): the others
//     share its download link with the seed's upload, which then ran at
//     its receivers' shares.
//   - Upload slots. A node answers at most p2p.Options.UploadSlots block
//     requests at once (4) and answers more wire.CodeBusy at once, so its
//     upload is split among few requests: each block leaves it soon and
//     can be shared on, and the requests that would have queued at a
//     popular holder go to holders with upload to spare. A busy answer is
//     no failure: the fetch leaves that peer alone for about a quarter of
//     a block's time on its link (doubling with each busy answer in a
//     row, up to 8 times, jittered) and asks another holder meanwhile. Without slots,
//     measured on a 30-peer simulated swarm, a handful of holders carried
//     30–50 requests each while most carried none. A seed (doppler seed)
//     also super-seeds (p2p.Options.SuperSeed): a block it sent to one
//     peer is answered CodeBusy to another for a short while (twice as
//     long after each further send of it), so that the first receiver
//     shares it on.
//   - Partial holders. A peer downloading a shard announces the blocks of it
//     it holds verified (wire.Inventory's Partial, read through PartialSet)
//     and serves them at once from its partial file. It counts as a holder
//     of the shard while it has a block this node is missing, and is asked
//     only for runs of the blocks it lists. A shard is "seed-only" while
//     no other peer holds it complete or holds a block this node misses,
//     so the territory's owner keeps asking the seed for the rest while
//     the others take the first blocks from the owner as they arrive.
//     A fetching Node watches its connected peers that are still fetching
//     (p2p.WatchProtocol: each pushes every block and shard it gains, as
//     it verifies them) and is woken by each push (FetchOptions.Changed);
//     peers it cannot watch it asks every RefreshInterval. Gossip, rate
//     limited, follows blocks too slowly on a large topic.
//   - Several sources and endgame. A shard's missing blocks are split into
//     runs of FetchOptions.BlocksPerRequest asked of different holders. When
//     every missing block is in flight and few remain, idle holders are
//     asked for the same blocks, one a request, and the first verified copy
//     wins; the duplicates are bounded (FetchOptions.EndgameShare) and seeds
//     are left out of the endgame for shards that other peers hold.
//   - Trust. Every block is hashed against the manifest before it is
//     written; a peer that sends a bad one is dropped for the model (the
//     only drop).
//   - Slow is not dead. A request is cut off only when it makes no
//     progress for a time that scales with the peer's measured link
//     (FetchOptions.RequestTimeout); repeated failures set a peer aside
//     for a capped exponential backoff, after which it is asked again; a
//     peer going away mid-block (shardproto.ErrGone) is churn, never held
//     against it. A fetch gives up only when no reachable peer has held a
//     missing shard for WaitPeers.
package swarm
