package shardproto

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

func TestReadInventories(t *testing.T) {
	inv := func(seq uint64) *wire.Inventory {
		return &wire.Inventory{Peer: "p", Model: rdrr.Sum([]byte("m")), Have: wire.NewBitmap(3), Seq: seq, TTL: 60}
	}
	cases := []struct {
		name  string
		msgs  []wire.Message
		seqs  []uint64
		isErr error
	}{
		{"two then EOF", []wire.Message{inv(1), inv(2)}, []uint64{1, 2}, io.EOF},
		{"a block on an inventory channel", []wire.Message{inv(1), &wire.End{}, inv(3)}, []uint64{1}, ErrProtocol},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			for _, m := range c.msgs {
				if err := wire.WriteMessage(&buf, m); err != nil {
					t.Fatal(err)
				}
			}
			var got []uint64
			err := ReadInventories(Frames(&buf), func(inv *wire.Inventory) { got = append(got, inv.Seq) })
			if !errors.Is(err, c.isErr) {
				t.Fatalf("err %v, want %v", err, c.isErr)
			}
			if len(got) != len(c.seqs) || (len(got) > 0 && got[len(got)-1] != c.seqs[len(c.seqs)-1]) {
				t.Fatalf("got %v, want %v", got, c.seqs)
			}
		})
	}
}
