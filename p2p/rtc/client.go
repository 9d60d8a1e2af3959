//go:build !js

package rtc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pion/datachannel"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/rdrr"
)

// open opens a shard channel and waits (DialTimeout, ctx) for it; the
// stream is aborted when ctx ends.
func (p *Peer) open(ctx context.Context) (*stream, error) {
	if err := p.usable(ctx); err != nil {
		return nil, fmt.Errorf("peer %s: %w", p.ID(), err)
	}
	dc, err := p.pc.CreateDataChannel(ShardLabel, nil)
	if err != nil {
		return nil, fmt.Errorf("peer %s: open %s: %w", p.ID(), ShardLabel, err)
	}
	var mu sync.Mutex
	abandoned := false
	ch := make(chan datachannel.ReadWriteCloserDeadliner, 1)
	dc.OnOpen(func() {
		raw, err := dc.DetachWithDeadline()
		if err != nil {
			dc.Close()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			raw.Close()
			return
		}
		ch <- raw
	})
	t := time.NewTimer(p.opts.DialTimeout)
	defer t.Stop()
	select {
	case raw := <-ch:
		s := p.newStream(raw, p.opts.FrameTimeout)
		s.watch(ctx)
		return s, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-p.ctx.Done():
		err = ErrClosed
	case <-t.C:
		err = fmt.Errorf("%w: channel not open after %v", p2p.ErrTimeout, p.opts.DialTimeout)
	}
	mu.Lock()
	abandoned = true
	select {
	case raw := <-ch:
		raw.Close()
	default:
	}
	mu.Unlock()
	dc.Close()
	return nil, fmt.Errorf("peer %s: open %s: %w", p.ID(), ShardLabel, err)
}

// Manifest fetches a model's manifest and signature over a shard channel
// and verifies them exactly as p2p.Remote.Manifest does.
func (p *Peer) Manifest(ctx context.Context, id rdrr.ModelID) (manifest, sig []byte, err error) {
	s, err := p.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer s.close()
	manifest, sig, err = p2p.FetchManifest(ctx, s, p.ID(), id)
	if err != nil {
		s.abort()
	}
	return manifest, sig, err
}

// ReadBlocks fetches blocks [first, first+count) of a shard over a shard
// channel, verifying each (hash and Merkle proof) before fn sees it, with
// p2p.Remote.ReadBlocks' semantics and errors (rdrr.ErrBadBlock naming the
// peer and block, p2p.ErrProtocol, p2p.ErrTimeout, …).
func (p *Peer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	if err := p2p.CheckRange(sh, first, count); err != nil {
		return err
	}
	s, err := p.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	if err := p2p.FetchBlocks(ctx, s, p.ID(), sh, first, count, fn); err != nil {
		s.abort()
		return err
	}
	return nil
}
