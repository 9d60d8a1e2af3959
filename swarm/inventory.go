package swarm

import (
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// ShardHolder is what holds shards: the Store, a browser's store, a
// signaling gateway's holdings.
type ShardHolder interface {
	// Has reports whether shard h is held complete.
	Has(h rdrr.Hash) bool
}

// HaveBitmap returns the bitmap of an inventory of model m (wire.Inventory's
// Have): bit i is set when s holds shard i of m's shard table complete. all
// reports whether s holds every shard, so that the model belongs in the
// inventory's Models.
func HaveBitmap(m *rdrr.Manifest, s ShardHolder) (have wire.Bitmap, all bool) {
	have = wire.NewBitmap(len(m.Shards))
	all = true
	for i, sh := range m.Shards {
		if s.Has(sh.Hash) {
			have.Set(i)
		} else {
			all = false
		}
	}
	return have, all
}

// PartialHolder is a ShardHolder that can also tell which blocks of a shard
// it holds only partly are verified (the Store).
type PartialHolder interface {
	ShardHolder
	// PartialBlocks returns the verified blocks of a shard held only
	// partly; nil when the shard is complete, absent or has none.
	PartialBlocks(h rdrr.Hash) []bool
}

// PartialShards returns the wire.Inventory Partial entries of model m: the
// shards s holds only partly with the blocks it holds verified, in
// manifest order, at most wire.MaxPartials (the first ones; the others
// are announced as they complete or once earlier ones do).
func PartialShards(m *rdrr.Manifest, s PartialHolder) []wire.Partial {
	var out []wire.Partial
	for i, sh := range m.Shards {
		if len(out) == wire.MaxPartials {
			break
		}
		blocks := s.PartialBlocks(sh.Hash)
		if len(blocks) == 0 || len(blocks) > wire.MaxPartialBlocks {
			continue
		}
		bm := wire.NewBitmap(len(blocks))
		for b, ok := range blocks {
			if ok {
				bm.Set(b)
			}
		}
		if bm.Any() {
			out = append(out, wire.Partial{Shard: uint32(i), Blocks: bm})
		}
	}
	return out
}
