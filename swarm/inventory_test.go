package swarm

import (
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

type holdSet map[rdrr.Hash]bool

func (s holdSet) Has(h rdrr.Hash) bool { return s[h] }

func TestHaveBitmap(t *testing.T) {
	m := &rdrr.Manifest{}
	for i := range 10 {
		m.Shards = append(m.Shards, rdrr.Shard{Hash: rdrr.Sum([]byte{byte(i)})})
	}
	held := holdSet{m.Shards[0].Hash: true, m.Shards[3].Hash: true, m.Shards[9].Hash: true}
	have, all := HaveBitmap(m, held)
	if all || have.N != 10 {
		t.Fatalf("all %v, N %d; want false, 10", all, have.N)
	}
	for i, sh := range m.Shards {
		if have.Has(i) != held[sh.Hash] {
			t.Errorf("bit %d is %v, want %v", i, have.Has(i), held[sh.Hash])
		}
	}
	for _, sh := range m.Shards {
		held[sh.Hash] = true
	}
	if _, all := HaveBitmap(m, held); !all {
		t.Error("every shard held, all false")
	}
	if have, all := HaveBitmap(&rdrr.Manifest{}, held); !all || have.N != 0 {
		t.Errorf("no shards: %v, %v; want an empty bitmap, true", have, all)
	}
}
