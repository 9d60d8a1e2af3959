package wire

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

func haveSamples() []Message {
	return []Message{
		&Have{Seq: 7, Shards: []uint32{3}},
		&Have{Seq: 1 << 40, Blocks: []HaveBlock{{Shard: 2, N: 4, Block: 3}}},
		&Have{Seq: 9, Shards: []uint32{0, 5}, Blocks: []HaveBlock{{Shard: 1, N: 16, Block: 0}, {Shard: 1, N: 16, Block: 15}}},
	}
}

func TestHaveKnownEncodings(t *testing.T) {
	knownEncodings(t, []struct {
		m   Message
		hex string
	}{
		{&Have{Seq: 7, Shards: []uint32{3}}, "0000001109" + "0000000000000007" + "0001" + "00000003" + "0000"},
		{&Have{Seq: 2, Blocks: []HaveBlock{{Shard: 2, N: 4, Block: 3}}}, "0000001909" + "0000000000000002" + "0000" + "0001" + "00000002" + "00000004" + "00000003"},
	}, MaxInventoryFrame)
}

func TestHaveRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		h    Have
	}{
		{"empty", Have{Seq: 1}},
		{"shard out of range", Have{Shards: []uint32{MaxShards}}},
		{"block past n", Have{Blocks: []HaveBlock{{Shard: 1, N: 4, Block: 4}}}},
		{"no blocks", Have{Blocks: []HaveBlock{{Shard: 1, N: 0, Block: 0}}}},
		{"too many blocks in a shard", Have{Blocks: []HaveBlock{{Shard: 1, N: MaxPartialBlocks + 1, Block: 0}}}},
		{"too many shards", Have{Shards: make([]uint32, MaxHave+1)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Marshal(&c.h); err == nil {
				t.Fatal("encoded")
			}
		})
	}
	// A frame listing more entries than it holds is truncated, not read
	// past its end.
	b, _ := Marshal(&Have{Seq: 1, Shards: []uint32{1}})
	b[HeaderSize+8+1] = 5
	if _, err := Decode(TypeHave, b[HeaderSize:]); err == nil {
		t.Fatal("decoded a short frame")
	}
}

// inv builds an inventory of n shards: held complete, and partial shards
// with their blocks held (of nb each).
func inv(n int, held []int, nb int, part map[int][]int) Inventory {
	m := Inventory{Peer: "p", Model: h(1), Have: NewBitmap(n), TTL: 90, Seq: 1}
	for _, s := range held {
		m.Have.Set(s)
	}
	for s := range n {
		if bs, ok := part[s]; ok {
			p := Partial{Shard: uint32(s), Blocks: NewBitmap(nb)}
			for _, b := range bs {
				p.Blocks.Set(b)
			}
			m.Partial = append(m.Partial, p)
		}
	}
	return m
}

func TestHaveDiffApply(t *testing.T) {
	for _, c := range []struct {
		name     string
		old, new Inventory
		want     *Have // nil: not expressible, send the inventory
	}{
		{"a block of a new partial shard", inv(8, nil, 4, nil), inv(8, nil, 4, map[int][]int{2: {1}}),
			&Have{Blocks: []HaveBlock{{2, 4, 1}}}},
		{"more blocks", inv(8, []int{0}, 4, map[int][]int{2: {1}}), inv(8, []int{0}, 4, map[int][]int{2: {0, 1, 3}, 5: {2}}),
			&Have{Blocks: []HaveBlock{{2, 4, 0}, {2, 4, 3}, {5, 4, 2}}}},
		{"a partial shard completed", inv(8, nil, 4, map[int][]int{2: {0, 1, 3}}), inv(8, []int{2}, 4, nil),
			&Have{Shards: []uint32{2}}},
		{"shards completed", inv(16, []int{1}, 4, nil), inv(16, []int{1, 9, 15}, 4, nil),
			&Have{Shards: []uint32{9, 15}}},
		{"a shard lost", inv(8, []int{1, 2}, 4, nil), inv(8, []int{1}, 4, nil), nil},
		{"a block lost", inv(8, nil, 4, map[int][]int{2: {0, 1}}), inv(8, nil, 4, map[int][]int{2: {1}}), nil},
		{"a partial shard dropped", inv(8, nil, 4, map[int][]int{2: {0}}), inv(8, nil, 4, nil), nil},
		{"nothing gained", inv(8, []int{1}, 4, nil), inv(8, []int{1}, 4, nil), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.new.Seq = 2
			got, ok := c.new.Diff(&c.old)
			if c.want == nil {
				if ok {
					t.Fatalf("Diff = %+v, want none", got)
				}
				return
			}
			c.want.Seq = 2
			if !ok || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Diff = %+v %v, want %+v", got, ok, c.want)
			}
			applied, err := c.old.Apply(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(applied, c.new) {
				t.Fatalf("Apply:\n got %+v\nwant %+v", applied, c.new)
			}
		})
	}
	t.Run("other fields", func(t *testing.T) {
		old := inv(8, nil, 4, nil)
		for _, f := range []func(*Inventory){
			func(m *Inventory) { m.Models = append(m.Models, m.Model) },
			func(m *Inventory) { m.UploadFree = 1 },
			func(m *Inventory) { m.DecodeTokS = 1 },
			func(m *Inventory) { m.Peer = "q" },
		} {
			m := inv(8, []int{1}, 4, nil)
			f(&m)
			if h, ok := m.Diff(&old); ok {
				t.Errorf("Diff over a changed field: %+v", h)
			}
		}
	})
}

func TestHaveApplyRejects(t *testing.T) {
	base := inv(8, []int{1}, 4, map[int][]int{2: {0}})
	for _, c := range []struct {
		name string
		h    Have
	}{
		{"shard past the bitmap", Have{Shards: []uint32{8}}},
		{"block of a shard past the bitmap", Have{Blocks: []HaveBlock{{8, 4, 0}}}},
		{"another block count", Have{Blocks: []HaveBlock{{2, 8, 5}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := base.Clone()
			if got, err := base.Apply(&c.h); err == nil {
				t.Fatalf("applied: %+v", got)
			}
			if !reflect.DeepEqual(base, before) {
				t.Fatal("Apply modified the inventory")
			}
		})
	}
	// A block of a shard held complete changes nothing but Seq.
	got, err := base.Apply(&Have{Seq: 5, Blocks: []HaveBlock{{1, 4, 0}}})
	if err != nil || got.Seq != 5 || !reflect.DeepEqual(got.Partial, base.Partial) || !reflect.DeepEqual(got.Have, base.Have) {
		t.Fatalf("%+v %v", got, err)
	}
}

// TestHaveRandom checks Apply(old, Diff(new, old)) == new for random
// inventories that only gain.
func TestHaveRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		n, nb := 1+r.IntN(40), 1+r.IntN(20)
		old := inv(n, nil, nb, nil)
		cur := old.Clone()
		for range 1 + r.IntN(8) {
			next := cur.Clone()
			s := r.IntN(n)
			switch {
			case next.Have.Has(s):
			case r.IntN(4) == 0:
				next.Have.Set(s)
				next.Partial = deletePartial(next.Partial, uint32(s))
			default:
				blocks := map[int][]int{}
				for _, p := range next.Partial {
					for b := range p.Blocks.N {
						if p.Blocks.Has(b) {
							blocks[int(p.Shard)] = append(blocks[int(p.Shard)], b)
						}
					}
				}
				blocks[s] = append(blocks[s], r.IntN(nb))
				held := []int{}
				for i := range n {
					if next.Have.Has(i) {
						held = append(held, i)
					}
				}
				next = inv(n, held, nb, blocks)
			}
			next.Seq = cur.Seq + 1
			h, ok := next.Diff(&cur)
			if !ok {
				if reflect.DeepEqual(next.Have, cur.Have) && reflect.DeepEqual(next.Partial, cur.Partial) {
					cur = next
					continue // nothing gained
				}
				t.Fatalf("no Diff from %+v to %+v", cur, next)
			}
			got, err := cur.Apply(h)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, next) {
				t.Fatalf("Apply(%+v):\n got %+v\nwant %+v", h, got, next)
			}
			cur = next
		}
	}
}

func deletePartial(ps []Partial, s uint32) []Partial {
	var out []Partial
	for _, p := range ps {
		if p.Shard != s {
			out = append(out, p)
		}
	}
	return out
}

func FuzzDecodeHave(f *testing.F) { fuzzType(f, TypeHave, haveSamples(), MaxInventoryFrame) }
