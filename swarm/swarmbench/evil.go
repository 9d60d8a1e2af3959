package swarmbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// EvilKind is how a malicious peer misbehaves. Every kind announces the
// whole model on the model's gossip topic.
type EvilKind string

// The kinds.
const (
	EvilFlip     EvilKind = "flip"     // serves blocks with a bit flipped
	EvilTruncate EvilKind = "truncate" // serves blocks cut to half
	EvilClaim    EvilKind = "claim"    // holds nothing: answers "not found"
	EvilStall    EvilKind = "stall"    // sends half a block's frame, then nothing
	EvilOversize EvilKind = "oversize" // answers with a frame header claiming 2 GiB
	EvilFlood    EvilKind = "flood"    // announces 200 times a second; holds nothing
)

// EvilKinds are the kinds in the order malicious peers take them.
var EvilKinds = []EvilKind{EvilFlip, EvilTruncate, EvilClaim, EvilStall, EvilOversize, EvilFlood}

// ParseEvilKind checks a kind's name.
func ParseEvilKind(s string) (EvilKind, error) {
	for _, k := range EvilKinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown malicious kind %q (want one of %v)", s, EvilKinds)
}

// RunEvil makes h, a bare libp2p host (not a DOPPLER node), a malicious
// peer of model id, whose RDRR directory is src (flip, truncate and stall
// serve its real blocks, spoiled), until ctx ends. Once on the model's
// gossip topic it connects to the peers it attacks, targets (one that
// cannot be reached is skipped).
func RunEvil(ctx context.Context, h host.Host, kind EvilKind, src string, id rdrr.ModelID, targets []peer.AddrInfo) error {
	m, err := rdrr.OpenDir(src)
	if err != nil {
		return err
	}
	prov := &spoiled{dir: src, kind: kind, shards: map[rdrr.Hash]rdrr.Shard{}}
	for _, sh := range m.Manifest.Shards {
		prov.shards[sh.Hash] = sh
	}
	h.SetStreamHandler(p2p.ManifestProtocol, func(s network.Stream) { s.Reset() })
	h.SetStreamHandler(p2p.ShardProtocol, func(s network.Stream) { serveEvil(ctx, s, kind, prov) })
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMaxMessageSize(1<<20))
	if err != nil {
		return fmt.Errorf("gossipsub: %w", err)
	}
	topic, err := ps.Join(p2p.TopicName(id))
	if err != nil {
		return err
	}
	sub, err := topic.Subscribe()
	if err != nil {
		return err
	}
	defer sub.Cancel()
	for _, ai := range targets {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		h.Connect(cctx, ai)
		cancel()
	}
	have := wire.NewBitmap(len(m.Manifest.Shards))
	for i := range m.Manifest.Shards {
		have.Set(i)
	}
	every := time.Second
	if kind == EvilFlood {
		every = 5 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		b, err := wire.Marshal(&wire.Inventory{Peer: h.ID().String(), Model: id, Have: have, Seq: seq, TTL: 30})
		if err != nil {
			return err
		}
		topic.Publish(ctx, b)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// serveEvil answers one shard-protocol stream the way kind misbehaves.
func serveEvil(ctx context.Context, s network.Stream, kind EvilKind, prov *spoiled) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(time.Minute))
	m, err := wire.ReadMessage(s, wire.MaxFrame)
	req, ok := m.(*wire.BlocksRequest)
	if err != nil || !ok {
		s.Reset()
		return
	}
	c := shardproto.Frames(s)
	switch kind {
	case EvilFlip, EvilTruncate:
		shardproto.Answer(c, prov, req, shardproto.ServeOptions{ServeUnverified: true})
	case EvilClaim, EvilFlood:
		c.WriteMsg(&wire.Error{Code: wire.CodeNotFound, Msg: "unknown shard " + req.Shard.String()})
	case EvilOversize:
		s.Write([]byte{0x7f, 0xff, 0xff, 0xff, byte(wire.TypeBlock)})
	case EvilStall:
		sh, ok := prov.shards[req.Shard]
		if !ok || int(req.First) >= len(sh.Blocks) {
			s.Reset()
			return
		}
		buf := make([]byte, sh.BlockLen(int(req.First)))
		n, err := prov.read(sh, int(req.First), buf)
		if err != nil {
			s.Reset()
			return
		}
		b, err := wire.Marshal(&wire.Block{Index: req.First, Data: buf[:n]})
		if err != nil {
			s.Reset()
			return
		}
		s.Write(b[:len(b)/2])
		select { // hold the stream open, sending nothing
		case <-ctx.Done():
		case <-time.After(time.Minute):
		}
		s.Reset()
	}
}

// spoiled serves a model directory's blocks spoiled as kind says.
type spoiled struct {
	dir    string
	kind   EvilKind
	shards map[rdrr.Hash]rdrr.Shard
}

func (p *spoiled) Manifest(rdrr.ModelID) ([]byte, []byte, bool) { return nil, nil, false }

func (p *spoiled) Shard(h rdrr.Hash) (rdrr.Shard, bool) {
	sh, ok := p.shards[h]
	return sh, ok
}

func (p *spoiled) ReadBlock(h rdrr.Hash, index int, buf []byte) (int, error) {
	sh, ok := p.shards[h]
	if !ok {
		return 0, fmt.Errorf("unknown shard %s", h.Short())
	}
	n, err := p.read(sh, index, buf)
	if err != nil {
		return 0, err
	}
	switch p.kind {
	case EvilFlip:
		buf[n/2] ^= 0x10
	case EvilTruncate:
		n = max(n/2, 1)
	}
	return n, nil
}

// read reads block index of sh, unspoiled.
func (p *spoiled) read(sh rdrr.Shard, index int, buf []byte) (int, error) {
	f, err := os.Open(filepath.Join(p.dir, sh.Hash.String()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := sh.BlockLen(index)
	if _, err := f.ReadAt(buf[:n], int64(index)*sh.BlockSize); err != nil {
		return 0, err
	}
	return n, nil
}
