// Package wire is DOPPLER's peer-to-peer message encoding, shared by the
// libp2p streams (/doppler/manifest/1, /doppler/shard/1), the inventory
// gossip topics and, in the browser, WebRTC data channels. It imports no
// libp2p code and builds for GOOS=js GOARCH=wasm.
//
// # Frames
//
// Every message travels as one frame. All integers are big-endian.
//
//	offset  size  field
//	0       4     N: u32, the number of bytes that follow (type + body);
//	              1 ≤ N ≤ the reader's limit, checked before anything is
//	              allocated
//	4       1     type (below)
//	5       N-1   body
//
// A reader skips frames of a type it does not know (reading them into
// io.Discard, at most MaxSkip in a row), so a later minor revision may add
// message types. A body must be consumed exactly: a known type with
// trailing or missing bytes is rejected as ErrMalformed. The major version
// (Version) is in the protocol ID (/doppler/shard/1) or, on a WebRTC data
// channel, in the channel's label; an incompatible change bumps it.
//
// # Bodies
//
// Variable-length byte strings are written as u32 length then the bytes
// ("bytes32"); each field has its own maximum, checked before allocating.
// A hash is 32 raw bytes (SHA-256). A float64 is its IEEE 754 bits as u64;
// NaN, ±Inf and negative values are rejected.
//
//	0x01 ManifestRequest  model-id [32]
//	0x02 ManifestResponse manifest bytes32 (1 … MaxManifest), sig bytes32 (0 … MaxSig)
//	0x03 BlocksRequest    shard [32], first u32, count u32 (count ≥ 1)
//	0x04 Block            index u32, data bytes32 (1 … MaxBlockData),
//	                      nproof u8 (≤ MaxProof), nproof × hash [32]
//	                      (the RFC 6962 audit path, bottom-up, as rdrr.MerkleProof)
//	0x05 End              (empty body)
//	0x06 Error            code u16 (≠ 0), msg bytes32 (0 … MaxErrorMsg, UTF-8)
//	0x07 Inventory        peer bytes32 (1 … MaxPeerID)
//	                      model [32]: the model the shard bitmap refers to
//	                      nbits u32 (≤ MaxShards), ⌈nbits/8⌉ bytes of bitmap:
//	                        bit i (byte i/8, mask 1<<(i%8)) set = the peer holds
//	                        shard i of the model's manifest shard table, verified;
//	                        unused high bits of the last byte must be 0
//	                      nmodels u16 (≤ MaxModels), nmodels × model-id [32]:
//	                        models the peer holds complete
//	                      nexperts u32 (≤ MaxExperts), nexperts × (layer u16, expert u16)
//	                      upload-free u64 (bytes/s the peer can still upload)
//	                      prefill f64, decode f64 (measured tokens/s; 0 = unknown)
//	                      seq u64 (increases with every announcement of a peer)
//	                      ttl u32 (seconds the entry stays valid, 1 … MaxTTL)
//	                      revision 2, only when npartial ≥ 1 (else the body ends here):
//	                      npartial u16 (1 … MaxPartials), npartial × (shard u32
//	                        (< nbits, not set in the bitmap, strictly increasing),
//	                        nblocks u32 (1 … MaxPartialBlocks), ⌈nblocks/8⌉ bytes:
//	                        bit b set = block b of that shard is held, verified;
//	                        at least one set, unused high bits 0)
//	0x08 InventoryRequest model [32]: answered with the peer's Inventory of it, or an Error
//	0x09 Have             seq u64, nshards u16 (≤ MaxHave), nshards × shard u32 (< MaxShards),
//	                      nblocks u16 (≤ MaxHave), nblocks × (shard u32, n u32 (1 …
//	                        MaxPartialBlocks), block u32 (< n)); at least one entry:
//	                        what the sender gained since the last inventory on the
//	                        same stream (Inventory.Apply), on the inventory watch only
//	0x10 Usage            peer bytes32 (1 … MaxPeerID), model [32], seq u64, tokens u64,
//	                      ncounts u32 (≤ MaxUsageCounts), ncounts × (layer u16, expert u16, n u32)
//	                        (strictly increasing by expert, n ≥ 1),
//	                      npairs u32 (≤ MaxUsagePairs), npairs × (layer u16, expert u16,
//	                        layer u16, expert u16, n u32) (a < b, strictly increasing, n ≥ 1)
//	0x11 Clusters         peer bytes32 (1 … MaxPeerID), model [32], version u64,
//	                      nclusters u32 (≤ MaxClusters), nclusters × (n u16 (2 … MaxClusterSize),
//	                        n × (layer u16, expert u16), strictly increasing);
//	                      clusters disjoint, ≤ MaxClusterExperts experts in all
//	0x20 PrefillRequest   model [32], kv u8 (1 f16, 2 f32), ntok u32 (1 … MaxPrefillTokens),
//	                      ntok × token id u32
//	0x21 PrefillHeader    positions u32 (1 … MaxPrefillTokens), kv u8, encoding u8
//	                      (0 raw, 1 DEFLATE), kvsize u64 (1 … MaxKVBytes), payload u64
//	                      (= kvsize when raw, ≤ kvsize when DEFLATE), nlogits u32
//	                      (1 … MaxLogits), nlogits × f32 (finite): the last position's logits
//	0x22 PrefillChunk     data bytes32 (1 … MaxChunkData)
//
// # Exchanges
//
// Manifest: the client sends ManifestRequest; the server answers one
// ManifestResponse or one Error. Shard: the client sends BlocksRequest; the
// server answers Count Block frames in index order starting at First, then
// End, or an Error at any point. Error codes are the Code constants.
// Prefill (/doppler/prefill/1): the client sends PrefillRequest; the server
// answers PrefillHeader, then Payload bytes in PrefillChunk frames, then End,
// or an Error at any point (CodeBusy when its queue is full). The raw KV
// bytes are engine.Session.ExportKV's layout; EncodeKV/DecodeKV choose and
// undo the encoding. A reader uses MaxPrefillFrame on this protocol.
package wire
