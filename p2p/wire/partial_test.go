package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

// partialInventory is sampleInventory holding shards 2 and 5 partly.
func partialInventory() *Inventory {
	inv := sampleInventory()
	b2 := NewBitmap(4)
	b2.Set(0)
	b2.Set(3)
	b5 := NewBitmap(9)
	b5.Set(8)
	inv.Partial = []Partial{{Shard: 2, Blocks: b2}, {Shard: 5, Blocks: b5}}
	return inv
}

func TestPartialKnownEncodings(t *testing.T) {
	v1 := "00000001" + "70" + strings.Repeat("44", 32) + "00000003" + "05" + "0000" + "00000000" +
		"0000000000000000" + "0000000000000000" + "0000000000000000" + "0000000000000000" + "0000001e"
	cases := []struct {
		m   Message
		hex string
	}{
		// No partial shard: byte for byte revision 1.
		{&Inventory{Peer: "p", Model: h(0x44), Have: Bitmap{N: 3, Bits: []byte{0x05}}, TTL: 30},
			"0000005507" + v1},
		// Shard 1 held partly: blocks 0 and 9 of 10.
		{&Inventory{Peer: "p", Model: h(0x44), Have: Bitmap{N: 3, Bits: []byte{0x05}}, TTL: 30,
			Partial: []Partial{{Shard: 1, Blocks: Bitmap{N: 10, Bits: []byte{0x01, 0x02}}}}},
			"0000006107" + v1 + "0001" + "00000001" + "0000000a" + "0102"},
		{&InventoryRequest{Model: h(0x55)}, "0000002108" + strings.Repeat("55", 32)},
	}
	knownEncodings(t, cases, MaxFrame)
}

func TestPartialRoundTrip(t *testing.T) {
	for _, m := range []Message{partialInventory(), &InventoryRequest{Model: h(3)}} {
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadMessage(bytes.NewReader(b), MaxInventoryFrame)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("got %+v, want %+v", got, m)
		}
	}
}

// TestPartialHostile: each case is a revision-1 inventory (3 shards,
// shard 0 and 2 held) followed by a partial section that must be refused.
func TestPartialHostile(t *testing.T) {
	hash := bytes.Repeat([]byte{9}, 32)
	head := [][]byte{be32(1), []byte{'p'}, hash, be32(3), []byte{0x05}, []byte{0, 0}, be32(0), make([]byte, 32), be32(30)}
	inv := func(tail ...[]byte) []byte { return frame(7, append(append([][]byte{}, head...), tail...)...) }
	u16 := func(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"one stray byte", inv([]byte{0}), ErrMalformed},
		{"zero partial shards", inv(u16(0)), ErrMalformed},
		{"too many partial shards", inv(u16(MaxPartials + 1)), ErrMalformed},
		{"entry truncated", inv(u16(1), be32(1)), ErrMalformed},
		{"blocks huge", inv(u16(1), be32(1), be32(0xffffffff)), ErrMalformed},
		{"blocks just over", inv(u16(1), be32(1), be32(MaxPartialBlocks+1)), ErrMalformed},
		{"bitmap truncated", inv(u16(1), be32(1), be32(16), []byte{1}), ErrMalformed},
		{"zero blocks", inv(u16(1), be32(1), be32(0)), ErrMalformed},
		{"no block set", inv(u16(1), be32(1), be32(4), []byte{0}), ErrMalformed},
		{"stray block bit", inv(u16(1), be32(1), be32(4), []byte{0x11}), ErrMalformed},
		{"shard out of range", inv(u16(1), be32(3), be32(4), []byte{1}), ErrMalformed},
		{"shard held complete", inv(u16(1), be32(0), be32(4), []byte{1}), ErrMalformed},
		{"shards not increasing", inv(u16(2), be32(1), be32(4), []byte{1}, be32(1), be32(4), []byte{1}), ErrMalformed},
		{"trailing after section", inv(u16(1), be32(1), be32(4), []byte{1}, []byte{0}), ErrMalformed},
		{"request short", frame(8, hash[:31]), ErrMalformed},
		{"request trailing", frame(8, hash, []byte{0}), ErrMalformed},
	}
	for _, c := range cases {
		_, err := ReadMessage(bytes.NewReader(c.in), MaxInventoryFrame)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// The same head with a valid section decodes.
	m, err := ReadMessage(bytes.NewReader(inv(u16(1), be32(1), be32(4), []byte{0x09})), MaxInventoryFrame)
	if err != nil {
		t.Fatal(err)
	}
	if p := m.(*Inventory).Partial; len(p) != 1 || p[0].Shard != 1 || p[0].Blocks.Count() != 2 {
		t.Errorf("partial %+v", p)
	}
}

func TestPartialEncodeRejects(t *testing.T) {
	base := func(p ...Partial) *Inventory {
		return &Inventory{Peer: "p", TTL: 1, Have: Bitmap{N: 3, Bits: []byte{0x01}}, Partial: p}
	}
	one := Bitmap{N: 2, Bits: []byte{1}}
	cases := []struct {
		name string
		m    *Inventory
	}{
		{"shard held complete", base(Partial{Shard: 0, Blocks: one})},
		{"shard past the table", base(Partial{Shard: 3, Blocks: one})},
		{"empty blocks", base(Partial{Shard: 1, Blocks: NewBitmap(2)})},
		{"no blocks", base(Partial{Shard: 1})},
		{"short bitmap", base(Partial{Shard: 1, Blocks: Bitmap{N: 9, Bits: []byte{1}}})},
		{"bits past the end", base(Partial{Shard: 1, Blocks: Bitmap{N: 2, Bits: []byte{4}}})},
		{"too many blocks", base(Partial{Shard: 1, Blocks: func() Bitmap { b := NewBitmap(MaxPartialBlocks + 1); b.Set(0); return b }()})},
		{"unordered", base(Partial{Shard: 2, Blocks: one}, Partial{Shard: 1, Blocks: one})},
		{"duplicate", base(Partial{Shard: 1, Blocks: one}, Partial{Shard: 1, Blocks: one})},
	}
	for _, c := range cases {
		if _, err := Marshal(c.m); err == nil {
			t.Errorf("%s: encoded", c.name)
		}
	}
	many := &Inventory{Peer: "p", TTL: 1, Have: NewBitmap(MaxPartials + 1)}
	for i := range MaxPartials + 1 {
		many.Partial = append(many.Partial, Partial{Shard: uint32(i), Blocks: one})
	}
	if _, err := Marshal(many); err == nil {
		t.Errorf("%d partial shards: encoded", len(many.Partial))
	}
	many.Partial = many.Partial[:MaxPartials]
	if b, err := Marshal(many); err != nil || len(b) > MaxInventoryFrame {
		t.Errorf("%d partial shards: %d bytes, %v", MaxPartials, len(b), err)
	}
}

// The largest inventory fits MaxInventoryFrame.
func TestPartialLargestFits(t *testing.T) {
	inv := &Inventory{Peer: strings.Repeat("p", MaxPeerID), TTL: 1, Have: NewBitmap(MaxShards),
		Models: make([]rdrr.ModelID, MaxModels), Experts: make([]Expert, MaxExperts)}
	for i := range MaxPartials {
		b := NewBitmap(MaxPartialBlocks)
		b.Set(i)
		inv.Partial = append(inv.Partial, Partial{Shard: uint32(i), Blocks: b})
	}
	b, err := Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)-4 > MaxInventoryFrame {
		t.Errorf("largest inventory: %d bytes > %d", len(b)-4, MaxInventoryFrame)
	}
	if _, err := Unmarshal(b, MaxInventoryFrame); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeInventoryRequest(f *testing.F) {
	fuzzType(f, TypeInventoryRequest, []Message{&InventoryRequest{Model: h(1)}}, MaxInventoryFrame)
}

func FuzzDecodeInventoryPartial(f *testing.F) {
	fuzzType(f, TypeInventory, []Message{partialInventory(), sampleInventory()}, MaxInventoryFrame)
}
