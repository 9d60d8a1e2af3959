package p2p

import (
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// acquire takes a serving slot or answers CodeBusy.
func (n *Host) acquire(c *conn) bool {
	select {
	case n.sem <- struct{}{}:
		return true
	default:
		c.write(&wire.Error{Code: wire.CodeBusy, Msg: "too many streams"})
		return false
	}
}

func (n *Host) release() { <-n.sem }

// serveOne returns the handler of a protocol whose streams carry one
// request of type R (a ManifestRequest or a BlocksRequest); what names the
// protocol in logs. Anything else read first resets the stream.
func serveOne[R wire.Message](n *Host, what string) network.StreamHandler {
	return func(s network.Stream) {
		c := n.wrap(n.ctx, s, n.opts.RequestTimeout)
		defer c.close()
		if !n.acquire(c) {
			return
		}
		defer n.release()
		m, err := c.read(wire.MaxFrame)
		req, ok := m.(R)
		if err != nil || !ok {
			n.log.Debug(what+": bad request", "from", c.peer, "err", err, "msg", fmt.Sprintf("%T", m))
			c.reset()
			return
		}
		c.timeout = n.opts.FrameTimeout
		var spreadDone func(sent bool, now time.Time)
		var want uint32 // blocks asked for
		if br, ok := m.(*wire.BlocksRequest); ok {
			if spreadDone, ok = n.spread.claim(br.Shard, br.First, br.Count, c.peer, time.Now()); !ok {
				n.stats.busy.Add(1)
				c.write(&wire.Error{Code: wire.CodeBusy, Msg: "blocks sent to another peer just now"})
				return
			}
			want = br.Count
			select {
			case n.upload <- struct{}{}:
				defer func() { <-n.upload }()
			default:
				spreadDone(false, time.Now())
				n.stats.busy.Add(1)
				c.write(&wire.Error{Code: wire.CodeBusy, Msg: "upload slots full"})
				return
			}
			done := n.serving.start(c.peer)
			defer done()
		}
		bp := n.bufs.get()
		defer n.bufs.put(bp)
		var served uint32
		opts := ServeOptions{MaxBlocksPerRequest: n.opts.MaxBlocksPerRequest, ServeUnverified: n.opts.ServeUnverified,
			Logger: n.log, OnBlock: func() { served++; n.stats.blocks.Add(1) }, Buf: *bp}
		err = shardproto.Answer(c, n.prov, req, opts)
		if spreadDone != nil {
			spreadDone(err == nil && served == want, time.Now())
		}
		if err != nil {
			n.log.Debug(what+": write", "to", c.peer, "err", err)
			c.reset()
		}
	}
}

// ServeOptions are the limits a shard-protocol server honours on any
// transport (the Host fills them from its Options).
type ServeOptions = shardproto.ServeOptions

// Answer writes the answer to one request on c (see shardproto.Answer).
func Answer(c MsgConn, prov Provider, req wire.Message, opts ServeOptions) error {
	return shardproto.Answer(c, prov, req, opts)
}

// servingState tracks the block requests served to each peer: how many
// are being answered now and when the last one ended. The zero value is
// ready.
type servingState struct {
	mu    sync.Mutex
	peers map[string]*servingPeer
}

type servingPeer struct {
	active int
	last   time.Time
}

// start notes a block request from peer being answered; the func returned
// notes its end.
func (s *servingState) start(peer string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers == nil {
		s.peers = map[string]*servingPeer{}
	}
	p := s.peers[peer]
	if p == nil {
		p = &servingPeer{}
		s.peers[peer] = p
	}
	p.active++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		p.active--
		p.last = time.Now()
	}
}

// Fetching returns the peers this host is answering a block request for
// now, or answered one for within the last d.
func (n *Host) Fetching(d time.Duration) []string {
	s := &n.serving
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := time.Now().Add(-d)
	var out []string
	for id, p := range s.peers {
		switch {
		case p.active > 0 || p.last.After(cutoff):
			out = append(out, id)
		case p.last.Before(time.Now().Add(-time.Hour)):
			delete(s.peers, id)
		}
	}
	return out
}
