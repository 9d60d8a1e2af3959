//go:build !js

package rtc

import (
	"context"
	"fmt"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// remoteChannel takes a channel the remote opened.
func (p *Peer) remoteChannel(dc *webrtc.DataChannel) {
	if !dc.Ordered() || dc.MaxRetransmits() != nil || dc.MaxPacketLifeTime() != nil {
		p.log.Debug("closing an unordered or unreliable channel", "label", dc.Label())
		go dc.Close()
		return
	}
	switch dc.Label() {
	case ShardLabel:
		p.onOpen(dc, func(raw datachannel.ReadWriteCloserDeadliner) {
			s := p.newStream(raw, p.opts.RequestTimeout)
			s.watch(p.ctx)
			p.mu.Lock()
			serve := p.serve
			p.mu.Unlock()
			serve(s)
		})
	case InvLabel:
		p.onOpen(dc, p.setInventory)
	default:
		p.log.Debug("closing a channel of an unknown protocol", "label", dc.Label())
		go dc.Close()
	}
}

// serveShard answers the one request of a shard channel, exactly as the
// libp2p stream handlers do, and closes the channel.
func (p *Peer) serveShard(s *stream) {
	defer s.close()
	select {
	case p.sem <- struct{}{}:
	default:
		s.WriteMsg(&wire.Error{Code: wire.CodeBusy, Msg: "too many channels"})
		return
	}
	defer func() { <-p.sem }()
	req, err := s.ReadMsg(wire.MaxFrame)
	switch req.(type) {
	case *wire.ManifestRequest, *wire.BlocksRequest:
	default:
		p.log.Debug("shard channel: bad request", "err", err, "msg", fmt.Sprintf("%T", req))
		s.abort()
		return
	}
	s.timeout = p.opts.FrameTimeout
	opts := p2p.ServeOptions{MaxBlocksPerRequest: p.opts.MaxBlocksPerRequest, ServeUnverified: p.opts.ServeUnverified,
		Logger: p.log, OnBlock: func() { p.blk.Add(1) }}
	if err := p2p.Answer(s, p.prov, req, opts); err != nil {
		p.log.Debug("shard channel: write", "err", err)
		s.abort()
	}
}

// OnInventory sets the callback for Inventory frames the remote sends on
// the inventory channel (called on one goroutine, in order; it must not
// block long). Frames before it is set are dropped.
func (p *Peer) OnInventory(f func(*wire.Inventory)) {
	p.mu.Lock()
	p.onInv = f
	p.mu.Unlock()
}

// setInventory adopts the inventory channel and reads it until it closes.
func (p *Peer) setInventory(raw datachannel.ReadWriteCloserDeadliner) {
	s := p.newStream(raw, p.opts.FrameTimeout)
	p.mu.Lock()
	if p.inv != nil || p.closed {
		p.mu.Unlock()
		p.log.Debug("closing a second inventory channel")
		raw.Close()
		return
	}
	p.inv = s
	close(p.invReady)
	p.mu.Unlock()
	s.watch(p.ctx)
	defer s.abort()
	// No deadline: the channel idles between announcements.
	err := shardproto.ReadInventories(s.frames, func(inv *wire.Inventory) {
		p.mu.Lock()
		f := p.onInv
		p.mu.Unlock()
		if f != nil {
			f(inv)
		}
	})
	if p.ctx.Err() == nil {
		p.log.Debug("inventory channel", "err", err)
	}
}

// SendInventory sends one Inventory frame on the inventory channel, waiting
// (bounded by ctx) for it to open. A ctx that ends mid-frame closes the
// channel, since a half-sent frame cannot be taken back.
func (p *Peer) SendInventory(ctx context.Context, inv *wire.Inventory) error {
	b, err := wire.Marshal(inv)
	if err != nil {
		return err
	}
	if len(b)-4 > wire.MaxInventoryFrame {
		return fmt.Errorf("inventory: %w: %d bytes", wire.ErrFrameTooLarge, len(b)-4)
	}
	select {
	case <-p.invReady:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return ErrClosed
	}
	p.mu.Lock()
	s := p.inv
	p.mu.Unlock()
	p.invWrite.Lock()
	defer p.invWrite.Unlock()
	dl := time.Now().Add(p.opts.FrameTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if err := s.setDeadlines(false, dl); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	stop := context.AfterFunc(ctx, s.abort)
	defer stop()
	if _, err := s.Write(b); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("inventory: %w", err)
	}
	return nil
}
