package rdrr

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

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

func TestCheckBlock(t *testing.T) {
	data := make([]byte, 2500)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	sh := Shard{Size: int64(len(data)), BlockSize: 1024}
	for i := range NumBlocks(sh.Size, sh.BlockSize) {
		lo := int64(i) * sh.BlockSize
		sh.Blocks = append(sh.Blocks, Sum(data[lo:lo+int64(sh.BlockLen(i))]))
	}
	if err := sh.CheckBlock(2, data[2048:]); err != nil {
		t.Fatalf("good block: %v", err)
	}
	flipped := append([]byte(nil), data[:1024]...)
	flipped[5] ^= 1
	for _, c := range []struct {
		name string
		i    int
		data []byte
	}{
		{"other block", 1, data[:1024]},
		{"flipped bit", 0, flipped},
		{"short", 2, data[2048:2499]},
		{"long", 2, data[2047:]},
		{"negative index", -1, data[:1024]},
		{"past the end", 3, data[:1024]},
	} {
		err := sh.CheckBlock(c.i, c.data)
		if !errors.Is(err, ErrBadBlock) || !strings.Contains(err.Error(), fmt.Sprintf("shard %s block %d", sh.Hash.Short(), c.i)) {
			t.Errorf("%s: %v, want an error naming the block and wrapping ErrBadBlock", c.name, err)
		}
	}
}
