package wire

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
)

// MaxHave bounds the shards and the blocks one Have lists, each.
const MaxHave = 1024

// Have is what a peer gained since the last inventory it sent on the same
// ordered stream (the inventory watch): shards now held complete and
// blocks of shards held partly, with its new Seq. It is only ever applied
// to that inventory (Inventory.Apply): every other change — a shard lost,
// another model, a new TTL — is sent as a whole Inventory. BitTorrent's
// HAVE, for shards and blocks; 20–40 bytes where an inventory takes
// hundreds.
type Have struct {
	Seq    uint64
	Shards []uint32    // held complete now
	Blocks []HaveBlock // held verified now, of shards held partly
}

// HaveBlock is one block of a Have: block Block of shard Shard, whose
// block count is N (the Partial entry's bitmap size).
type HaveBlock struct {
	Shard, N, Block uint32
}

func (*Have) Type() Type { return TypeHave }

func (m *Have) validate() error {
	if len(m.Shards) > MaxHave || len(m.Blocks) > MaxHave || len(m.Shards)+len(m.Blocks) == 0 {
		return bad("have of %d shards and %d blocks", len(m.Shards), len(m.Blocks))
	}
	for _, s := range m.Shards {
		if s >= MaxShards {
			return bad("have: shard %d", s)
		}
	}
	for _, b := range m.Blocks {
		if b.Shard >= MaxShards || b.N == 0 || b.N > MaxPartialBlocks || b.Block >= b.N {
			return bad("have: block %d of %d in shard %d", b.Block, b.N, b.Shard)
		}
	}
	return nil
}

func (m *Have) appendBody(b []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Shards)))
	for _, s := range m.Shards {
		b = binary.BigEndian.AppendUint32(b, s)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Blocks)))
	for _, x := range m.Blocks {
		b = binary.BigEndian.AppendUint32(b, x.Shard)
		b = binary.BigEndian.AppendUint32(b, x.N)
		b = binary.BigEndian.AppendUint32(b, x.Block)
	}
	return b, nil
}

func (m *Have) decode(d *decoder) error {
	m.Seq = d.u64()
	ns := int(d.u16())
	if ns > MaxHave {
		return fmt.Errorf("%w: have of %d shards", ErrMalformed, ns)
	}
	if ns > 0 && d.need(4*ns) {
		m.Shards = make([]uint32, ns)
		for i := range m.Shards {
			m.Shards[i] = d.u32()
		}
	}
	nb := int(d.u16())
	if nb > MaxHave {
		return fmt.Errorf("%w: have of %d blocks", ErrMalformed, nb)
	}
	if nb > 0 && d.need(12*nb) {
		m.Blocks = make([]HaveBlock, nb)
		for i := range m.Blocks {
			m.Blocks[i] = HaveBlock{Shard: d.u32(), N: d.u32(), Block: d.u32()}
		}
	}
	if d.err != nil {
		return d.err
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// Clone returns a copy of b that shares no memory with it.
func (b Bitmap) Clone() Bitmap { return Bitmap{N: b.N, Bits: slices.Clone(b.Bits)} }

// Clone returns a copy of inv that shares no memory with it.
func (m *Inventory) Clone() Inventory {
	c := *m
	c.Have = m.Have.Clone()
	c.Models = slices.Clone(m.Models)
	c.Experts = slices.Clone(m.Experts)
	c.Partial = make([]Partial, len(m.Partial))
	for i, p := range m.Partial {
		c.Partial[i] = Partial{Shard: p.Shard, Blocks: p.Blocks.Clone()}
	}
	if len(c.Partial) == 0 {
		c.Partial = nil
	}
	return c
}

// Diff returns the Have that turns old into m, the inventory it replaces
// on a stream, and true; false when m differs from old in anything but
// shards and blocks gained (a shard or block lost, another model list,
// peer, model or speeds, a different shard count): then m itself is to
// be sent, as it is when old is nil. TTL and Seq are not compared (the Have carries m's Seq; the
// receiver keeps old's TTL).
func (m *Inventory) Diff(old *Inventory) (*Have, bool) {
	if old == nil || m.Peer != old.Peer || m.Model != old.Model || m.Have.N != old.Have.N ||
		!slices.Equal(m.Models, old.Models) || !slices.Equal(m.Experts, old.Experts) ||
		m.UploadFree != old.UploadFree || m.PrefillTokS != old.PrefillTokS || m.DecodeTokS != old.DecodeTokS {
		return nil, false
	}
	h := &Have{Seq: m.Seq}
	for i, nb := range m.Have.Bits {
		ob := old.Have.Bits[i]
		if ob&^nb != 0 {
			return nil, false
		}
		for gained := nb &^ ob; gained != 0; gained &= gained - 1 {
			h.Shards = append(h.Shards, uint32(8*i+bits.TrailingZeros8(gained)))
		}
	}
	oldPart := func(s uint32) (Bitmap, bool) {
		i, ok := slices.BinarySearchFunc(old.Partial, s, byShard)
		if !ok {
			return Bitmap{}, false
		}
		return old.Partial[i].Blocks, true
	}
	for _, p := range old.Partial {
		if m.Have.Has(int(p.Shard)) {
			continue // completed: listed in Shards
		}
		if _, ok := slices.BinarySearchFunc(m.Partial, p.Shard, byShard); !ok {
			return nil, false // no longer held partly, nor complete
		}
	}
	for _, p := range m.Partial {
		ob, had := oldPart(p.Shard)
		if had && ob.N != p.Blocks.N {
			return nil, false
		}
		for b := range p.Blocks.N {
			has, held := p.Blocks.Has(b), had && ob.Has(b)
			if held && !has {
				return nil, false
			}
			if has && !held {
				h.Blocks = append(h.Blocks, HaveBlock{Shard: p.Shard, N: uint32(p.Blocks.N), Block: uint32(b)})
			}
		}
	}
	if len(h.Shards)+len(h.Blocks) == 0 || len(h.Shards) > MaxHave || len(h.Blocks) > MaxHave {
		return nil, false // nothing gained (send m: a new Seq or TTL), or too much
	}
	return h, true
}

// Apply returns inv with h applied (inv is not modified): the shards set
// complete (their partial entries dropped), the blocks added to their
// shards' partial entries (created as needed), Seq set to h's. It fails
// when h does not fit inv: a shard or block out of range, a block's
// shard count unlike its entry's, or too many partial shards.
func (m *Inventory) Apply(h *Have) (Inventory, error) {
	if err := h.validate(); err != nil {
		return Inventory{}, err
	}
	c := m.Clone()
	c.Seq = h.Seq
	for _, s := range h.Shards {
		if int64(s) >= int64(c.Have.N) {
			return Inventory{}, bad("have: shard %d of %d", s, c.Have.N)
		}
		c.Have.Set(int(s))
		c.Partial = slices.DeleteFunc(c.Partial, func(p Partial) bool { return p.Shard == s })
	}
	for _, b := range h.Blocks {
		if int64(b.Shard) >= int64(c.Have.N) {
			return Inventory{}, bad("have: shard %d of %d", b.Shard, c.Have.N)
		}
		if c.Have.Has(int(b.Shard)) {
			continue
		}
		i, ok := slices.BinarySearchFunc(c.Partial, b.Shard, byShard)
		if !ok {
			c.Partial = slices.Insert(c.Partial, i, Partial{Shard: b.Shard, Blocks: NewBitmap(int(b.N))})
		}
		if c.Partial[i].Blocks.N != int(b.N) {
			return Inventory{}, bad("have: shard %d has %d blocks, not %d", b.Shard, c.Partial[i].Blocks.N, b.N)
		}
		c.Partial[i].Blocks.Set(int(b.Block))
	}
	if len(c.Partial) == 0 {
		c.Partial = nil
	}
	if err := c.validate(); err != nil {
		return Inventory{}, err
	}
	return c, nil
}

// byShard orders partial entries by shard (slices.BinarySearchFunc).
func byShard(p Partial, s uint32) int { return cmp.Compare(p.Shard, s) }
