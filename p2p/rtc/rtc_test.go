//go:build !js

package rtc

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/leaktest"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/swarm"
)

// A Peer is a swarm.Peer.
var _ swarm.Peer = (*Peer)(nil)

var (
	storeOnce sync.Once
	storeDir  string
	storeErr  error
)

// openStore converts stories260K once (64 KiB blocks: a Block frame spans
// several data channel messages and proofs are non-trivial) and opens a
// swarm.Store on it.
func openStore(t *testing.T) (*swarm.Store, rdrr.ModelID) {
	t.Helper()
	src := testenv.Path(t, "models/stories260K.gguf")
	storeOnce.Do(func() {
		base, err := testTemp()
		if err != nil {
			storeErr = err
			return
		}
		dir := filepath.Join(base, "m")
		opts := convert.Options{Writer: rdrr.WriterOptions{BlockSize: 64 << 10}}
		if _, storeErr = convert.ToRDRR(context.Background(), src, dir, opts); storeErr != nil {
			return
		}
		storeDir = dir
	})
	if storeErr != nil {
		t.Fatal(storeErr)
	}
	st, err := swarm.Open(filepath.Join(t.TempDir(), "store"), swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	id, err := st.ImportDir(context.Background(), storeDir)
	if err != nil {
		t.Fatal(err)
	}
	return st, id
}

// pair connects a client Peer (the offerer) to a server Peer (the
// answerer) over loopback, relaying SDP and candidates in memory; cands
// collects every candidate and SDP candidate line either side produced.
type pair struct {
	srv, cli *Peer
	mu       sync.Mutex
	cands    []string
}

func (p *pair) record(s string) {
	p.mu.Lock()
	p.cands = append(p.cands, s)
	p.mu.Unlock()
}

func newPair(t *testing.T, prov p2p.Provider, edit func(*Options)) *pair {
	t.Helper()
	so := Options{Loopback: true, PeerID: "client", RequestTimeout: 5 * time.Second, FrameTimeout: 5 * time.Second}
	if edit != nil {
		edit(&so)
	}
	srv, err := NewPeer(so, prov)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, offer, err := Dial(ctx, Options{Loopback: true, PeerID: "server", FrameTimeout: 5 * time.Second, DialTimeout: 10 * time.Second})
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	p := &pair{srv: srv, cli: cli}
	relay := func(to *Peer) func(string) {
		return func(c string) {
			p.record(c)
			if err := to.AddCandidate(c); err != nil {
				t.Errorf("AddCandidate: %v", err)
			}
		}
	}
	srv.OnCandidate(relay(cli))
	cli.OnCandidate(relay(srv))
	// The offer as a browser's RTCSessionDescription JSON.
	jo, _ := json.Marshal(map[string]string{"type": "offer", "sdp": offer})
	answer, err := srv.Answer(ctx, string(jo))
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Accept(ctx, answer); err != nil {
		t.Fatal(err)
	}
	for _, peer := range []*Peer{cli, srv} {
		sdp, err := peer.LocalDescription(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(sdp, "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "a=candidate:") {
				p.record(l)
			}
		}
	}
	return p
}

func TestManifestBlocksInventory(t *testing.T) {
	st, id := openStore(t)
	p := newPair(t, st, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	man, sig, err := p.cli.Manifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want, wsig, _ := st.Manifest(id)
	if !bytes.Equal(man, want) || !bytes.Equal(sig, wsig) {
		t.Fatal("manifest differs from the store's")
	}
	m, err := rdrr.ParseManifest(man)
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for _, sh := range m.Shards {
		nb := len(sh.Blocks)
		got := make([]byte, 0, sh.Size)
		next := 0
		err := p.cli.ReadBlocks(ctx, sh, 0, nb, func(i int, data []byte) error {
			if i != next {
				return fmt.Errorf("block %d, want %d", i, next)
			}
			next++
			got = append(got, data...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, sh.Size)
		for i := range nb {
			off := int64(i) * sh.BlockSize
			if _, err := st.ReadBlock(sh.Hash, i, buf[off:min(off+sh.BlockSize, sh.Size)]); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, buf) {
			t.Fatalf("shard %s: bytes differ", sh.Hash.Short())
		}
		total += nb
	}
	// A middle range, then a range the server refuses.
	sh := m.Shards[0]
	if len(sh.Blocks) >= 3 {
		n := 0
		if err := p.cli.ReadBlocks(ctx, sh, 1, 2, func(int, []byte) error { n++; return nil }); err != nil || n != 2 {
			t.Fatalf("range [1,3): %v, %d blocks", err, n)
		}
		total += 2
	}
	if _, _, err := p.cli.Manifest(ctx, rdrr.ModelID{1}); !errors.Is(err, p2p.ErrNotFound) {
		t.Errorf("unknown model: %v, want ErrNotFound", err)
	}
	if st := p.srv.Stats(); st.BlocksServed != uint64(total) || st.Uploaded == 0 {
		t.Errorf("server stats %+v, want %d blocks", st, total)
	}
	t.Logf("%d shards, %d blocks verified over a data channel; %d bytes down", len(m.Shards), total, p.cli.Stats().Downloaded)

	// Inventory both ways.
	got := make(chan *wire.Inventory, 2)
	p.srv.OnInventory(func(inv *wire.Inventory) { got <- inv })
	p.cli.OnInventory(func(inv *wire.Inventory) { got <- inv })
	have := wire.NewBitmap(len(m.Shards))
	have.Set(0)
	for _, pair := range []struct {
		from *Peer
		name string
	}{{p.cli, "browser"}, {p.srv, "node"}} {
		inv := &wire.Inventory{Peer: pair.name, Model: id, Have: have, Models: []rdrr.ModelID{id}, Seq: 7, TTL: 60}
		if err := pair.from.SendInventory(ctx, inv); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-got:
			if r.Peer != pair.name || r.Model != id || !r.Have.Has(0) || r.Seq != 7 {
				t.Errorf("inventory from %s: %+v", pair.name, r)
			}
		case <-ctx.Done():
			t.Fatalf("no inventory from %s", pair.name)
		}
	}
}

// flipProvider flips one byte of one block.
type flipProvider struct {
	p2p.Provider
	block int
}

func (p flipProvider) ReadBlock(h rdrr.Hash, i int, buf []byte) (int, error) {
	k, err := p.Provider.ReadBlock(h, i, buf)
	if i == p.block {
		buf[0] ^= 0x80
	}
	return k, err
}

func TestCorruptBlock(t *testing.T) {
	st, id := openStore(t)
	prov := flipProvider{st, 2}
	man, _, _ := st.Manifest(id)
	m, err := rdrr.ParseManifest(man)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.Shards[0]
	if len(sh.Blocks) < 4 {
		t.Fatalf("shard of %d blocks", len(sh.Blocks))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	liar := newPair(t, prov, func(o *Options) { o.ServeUnverified = true })
	var seen []int
	err = liar.cli.ReadBlocks(ctx, sh, 0, 4, func(i int, _ []byte) error { seen = append(seen, i); return nil })
	if !errors.Is(err, rdrr.ErrBadBlock) || !strings.Contains(err.Error(), "block 2") || !strings.Contains(err.Error(), "peer server") {
		t.Fatalf("lying server: %v, want rdrr.ErrBadBlock naming the peer and block 2", err)
	}
	if len(seen) != 2 {
		t.Errorf("blocks delivered before the bad one: %v", seen)
	}
	t.Log(err)

	honest := newPair(t, prov, nil)
	if err := honest.cli.ReadBlocks(ctx, sh, 0, 4, func(int, []byte) error { return nil }); !errors.Is(err, p2p.ErrRemote) || errors.Is(err, rdrr.ErrBadBlock) {
		t.Errorf("honest server with a bad store: %v, want ErrRemote", err)
	}
}

func TestOversizeFrame(t *testing.T) {
	st, id := openStore(t)
	man, _, _ := st.Manifest(id)
	m, _ := rdrr.ParseManifest(man)
	sh := m.Shards[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A server that announces a frame one byte over wire.MaxFrame.
	p := newPair(t, st, nil)
	p.srv.setServe(func(s *stream) {
		defer s.close()
		if _, err := s.ReadMsg(wire.MaxFrame); err != nil {
			return
		}
		var hdr [wire.HeaderSize]byte
		binary.BigEndian.PutUint32(hdr[:], wire.MaxFrame+1)
		hdr[4] = byte(wire.TypeBlock)
		s.setDeadlines(false, time.Now().Add(5*time.Second))
		s.Write(hdr[:])
		s.Write(make([]byte, 2*MaxMessage)) // the start of a body
	})
	start := time.Now()
	err := p.cli.ReadBlocks(ctx, sh, 0, 1, func(int, []byte) error { return nil })
	if !errors.Is(err, p2p.ErrProtocol) || !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("oversize frame: %v, want ErrProtocol and wire.ErrFrameTooLarge", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}

	// An oversize request to an honest server: the channel is closed at once.
	q := newPair(t, st, nil)
	s, err := q.cli.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var hdr [wire.HeaderSize]byte
	binary.BigEndian.PutUint32(hdr[:], wire.MaxFrame+1)
	hdr[4] = byte(wire.TypeBlocksRequest)
	s.setDeadlines(false, time.Now().Add(5*time.Second))
	if _, err := s.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if m, err := s.ReadMsg(wire.MaxFrame); err == nil {
		t.Fatalf("oversize request answered with %v", m.Type())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("server took %v to drop the channel", d)
	}
	// The connection still serves.
	if _, _, err := q.cli.Manifest(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackCandidates(t *testing.T) {
	st, id := openStore(t)
	p := newPair(t, st, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := p.cli.Manifest(ctx, id); err != nil { // connected
		t.Fatal(err)
	}
	p.mu.Lock()
	cands := append([]string(nil), p.cands...)
	p.mu.Unlock()
	if len(cands) == 0 {
		t.Fatal("no candidates")
	}
	for _, c := range cands {
		line := c
		if strings.HasPrefix(c, "{") {
			var init struct{ Candidate string }
			if err := json.Unmarshal([]byte(c), &init); err != nil {
				t.Fatal(err)
			}
			line = init.Candidate
		}
		f := strings.Fields(strings.TrimPrefix(line, "a="))
		if len(f) < 8 || f[4] != "127.0.0.1" || !strings.EqualFold(f[2], "udp") || f[7] != "host" {
			t.Errorf("candidate %q: want a UDP host candidate on 127.0.0.1", c)
		}
	}
	t.Logf("%d candidates, all 127.0.0.1", len(cands))

	// Which lines are loopback candidates: package loopback's tests.
	// End of candidates, as signaling relays it.
	if err := p.cli.AddCandidate("null"); err != nil {
		t.Error(err)
	}
	// A non-loopback remote candidate is dropped without error.
	if err := p.cli.AddCandidate(`{"candidate":"candidate:9 1 udp 1 192.168.1.5 4000 typ host","sdpMid":"0","sdpMLineIndex":0}`); err != nil {
		t.Error(err)
	}
	if _, err := NewPeer(Options{Loopback: true, ICEServers: []string{"stun:127.0.0.1:3478"}}, nil); err == nil {
		t.Error("loopback peer with an ICE server")
	}
}

// Peers leave no goroutine behind, and Close is bounded.
func TestNoLeak(t *testing.T) {
	st, id := openStore(t)
	leaktest.Check(t, 10*time.Second)
	for range 2 {
		func() {
			p := newPair(t, st, nil) // its cleanup closes again: a no-op
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, _, err := p.cli.Manifest(ctx, id); err != nil {
				t.Fatal(err)
			}
			// A request cut off by its context.
			cctx, ccancel := context.WithCancel(ctx)
			man, _, _ := st.Manifest(id)
			m, _ := rdrr.ParseManifest(man)
			err := p.cli.ReadBlocks(cctx, m.Shards[0], 0, 2, func(int, []byte) error { ccancel(); return nil })
			if !errors.Is(err, context.Canceled) {
				t.Errorf("canceled read: %v", err)
			}
			ccancel()
			done := make(chan struct{})
			go func() { p.cli.Close(); p.srv.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs")
			}
		}()
	}
}

// A writer never queues much more than HighWater on a channel: it waits
// for the bufferedamountlow event.
func TestBackpressure(t *testing.T) {
	st, _ := openStore(t)
	p := newPair(t, st, nil)
	const total = 4 << 20
	maxQueued := make(chan uint64, 1)
	p.srv.setServe(func(s *stream) {
		defer s.close()
		if _, err := s.ReadMsg(wire.MaxFrame); err != nil {
			return
		}
		var peak uint64
		buf := make([]byte, 64<<10)
		for sent := 0; sent < total; sent += len(buf) {
			s.setDeadlines(false, time.Now().Add(5*time.Second))
			if _, err := s.Write(buf); err != nil {
				t.Error(err)
				break
			}
			peak = max(peak, s.buf.BufferedAmount())
		}
		maxQueued <- peak
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := p.cli.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.WriteMsg(&wire.ManifestRequest{}); err != nil {
		t.Fatal(err)
	}
	s.setDeadlines(true, time.Now().Add(15*time.Second))
	buf := make([]byte, 4096)
	for got := 0; got < total; {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		got += n
	}
	select {
	case peak := <-maxQueued:
		if peak > HighWater+MaxMessage {
			t.Errorf("%d bytes queued, limit %d", peak, HighWater)
		}
		t.Logf("peak queue %d bytes", peak)
	case <-ctx.Done():
		t.Fatal("writer did not finish")
	}
}

func (p *Peer) setServe(f func(s *stream)) {
	p.mu.Lock()
	p.serve = f
	p.mu.Unlock()
}
