package p2p

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// flipProvider flips one byte of one block.
type flipProvider struct {
	*memProvider
	block int
}

func (p flipProvider) ReadBlock(h rdrr.Hash, i int, buf []byte) (int, error) {
	k, err := p.memProvider.ReadBlock(h, i, buf)
	if i == p.block {
		buf[0] ^= 0x80
	}
	return k, err
}

// An honest server never sends a block its store corrupted; with
// ServeUnverified a Provider wrapper makes a lying peer.
func TestServerChecksBlocks(t *testing.T) {
	f := newFixture(t, 7, false)
	prov := flipProvider{&memProvider{models: []*fixture{f}}, 2}
	honest := newHost(t, prov, nil)
	liar := newHost(t, prov, func(o *Options) { o.ServeUnverified = true })
	c := newHost(t, nil, nil)
	connect(t, c, honest)
	connect(t, c, liar)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	noop := func(int, []byte) error { return nil }
	sh := f.m.Shards[0]
	if err := c.Remote(honest.ID()).ReadBlocks(ctx, sh, 0, 5, noop); !errors.Is(err, ErrRemote) || errors.Is(err, rdrr.ErrBadBlock) {
		t.Errorf("honest server with a bad store: %v, want ErrRemote", err)
	}
	if err := c.Remote(liar.ID()).ReadBlocks(ctx, sh, 0, 5, noop); !errors.Is(err, rdrr.ErrBadBlock) {
		t.Errorf("lying server: %v, want rdrr.ErrBadBlock", err)
	}
}
