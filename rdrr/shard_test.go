package rdrr

import "testing"

func TestBlockLen(t *testing.T) {
	for _, c := range []struct {
		size, bs int64
		want     []int
	}{
		{0, 1024, []int{0}},
		{1024, 1024, []int{1024}},
		{2500, 1024, []int{1024, 1024, 452}},
		{3072, 1024, []int{1024, 1024, 1024}},
	} {
		sh := Shard{Size: c.size, BlockSize: c.bs}
		if n := NumBlocks(c.size, c.bs); n != len(c.want) {
			t.Fatalf("size %d: NumBlocks %d, want %d", c.size, n, len(c.want))
		}
		for i, want := range c.want {
			if got := sh.BlockLen(i); got != want {
				t.Errorf("size %d block size %d: BlockLen(%d) = %d, want %d", c.size, c.bs, i, got, want)
			}
		}
	}
}
