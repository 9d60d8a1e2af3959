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
