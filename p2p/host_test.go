package p2p

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

func TestAddrsAndKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "sub", "node.key")
	a := newHost(t, nil, func(o *Options) { o.KeyFile = key })
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	addrs := a.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("addrs %v: want TCP and QUIC", addrs)
	}
	for _, s := range addrs {
		if strings.Contains(s, "/tcp/0/") || strings.Contains(s, "/udp/0/") || !strings.HasSuffix(s, "/p2p/"+a.ID()) {
			t.Errorf("address %s: want a real port and /p2p/%s", s, a.ID())
		}
	}
	id := a.ID()
	a.Close()
	b := newHost(t, nil, func(o *Options) { o.KeyFile = key })
	if b.ID() != id {
		t.Errorf("reused key file: ID %s, want %s", b.ID(), id)
	}
	c := newHost(t, nil, func(o *Options) { o.KeyFile = filepath.Join(dir, "other.key") })
	if c.ID() == id {
		t.Error("a different key file gave the same ID")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, b.Addrs()[1]); err != nil { // QUIC
		t.Errorf("connect over QUIC: %v", err)
	}
	if _, err := c.Connect(ctx, "/ip4/127.0.0.1/tcp/1/p2p/"+c.ID()); err == nil {
		t.Error("connected to itself")
	}
	// The loopback host refuses to dial elsewhere.
	k, _ := loadKey("")
	stranger, _ := peer.IDFromPrivateKey(k)
	if _, err := c.Connect(ctx, "/ip4/192.0.2.1/tcp/4001/p2p/"+stranger.String()); err == nil {
		t.Error("a loopback host dialled a non-loopback address")
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.key"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, Options{KeyFile: filepath.Join(dir, "bad.key")}, nil); err == nil {
		t.Error("a junk key file was accepted")
	}
}

func TestManifest(t *testing.T) {
	plain, signed := newFixture(t, 1, false), newFixture(t, 2, true)
	a := newHost(t, &memProvider{models: []*fixture{plain, signed}}, nil)
	b := newHost(t, nil, nil)
	connect(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := b.Remote(a.ID())
	for _, f := range []*fixture{plain, signed} {
		man, sig, err := r.Manifest(ctx, f.id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(man, f.manifest) || !bytes.Equal(sig, f.sig) {
			t.Error("manifest or signature differs")
		}
	}
	if _, _, err := r.Manifest(ctx, rdrr.Sum([]byte("nope"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown model: %v, want ErrNotFound", err)
	}

	// A peer that answers with other bytes, or a forged signature.
	tampered := bytes.Replace(plain.manifest, []byte(`"llama"`), []byte(`"mistral"`), 1)
	spaced := append([]byte(" "), plain.manifest...)
	badSig, _ := rdrr.Sign(plain.manifest, nil2key())
	for _, c := range []struct {
		name string
		man  []byte
		sig  []byte
		id   rdrr.ModelID
		want error
	}{
		{"tampered", tampered, nil, plain.id, ErrBadManifest},
		{"not canonical, with its own ID", spaced, nil, rdrr.Sum(spaced), ErrBadManifest},
		{"forged signature", plain.manifest, signed.sig, plain.id, rdrr.ErrBadSignature},
		{"other key's signature", plain.manifest, badSig[:len(badSig)-4], plain.id, rdrr.ErrBadSignature},
	} {
		man, sig := c.man, c.sig
		a.h.SetStreamHandler(ManifestProtocol, func(s network.Stream) {
			defer s.Close()
			s.SetDeadline(time.Now().Add(time.Second))
			wire.ReadMessage(s, wire.MaxFrame)
			wire.WriteMessage(s, &wire.ManifestResponse{Manifest: man, Sig: sig})
		})
		if _, _, err := r.Manifest(ctx, c.id); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func nil2key() []byte {
	k := make([]byte, 64)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func TestBlocks(t *testing.T) {
	f := newFixture(t, 3, false)
	a := newHost(t, &memProvider{models: []*fixture{f}}, nil)
	b := newHost(t, nil, nil)
	connect(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := b.Remote(a.ID())
	for _, sh := range f.m.Shards {
		for _, rg := range [][2]int{{0, len(sh.Blocks)}, {3, 2}, {len(sh.Blocks) - 1, 1}} {
			var got []byte
			next := rg[0]
			err := r.ReadBlocks(ctx, sh, rg[0], rg[1], func(i int, data []byte) error {
				if i != next {
					t.Fatalf("block %d, want %d", i, next)
				}
				next++
				got = append(got, data...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			lo := int64(rg[0]) * sh.BlockSize
			hi := min(int64(rg[0]+rg[1])*sh.BlockSize, sh.Size)
			if !bytes.Equal(got, f.data[sh.Hash][lo:hi]) {
				t.Errorf("shard %s blocks %v: bytes differ", sh.Hash.Short(), rg)
			}
		}
	}
	st := a.Stats()
	if st.Uploaded < uint64(f.m.TotalSize()) || st.Peers[b.ID()].Uploaded != st.Uploaded {
		t.Errorf("upload counters %+v, want ≥ %d to %s", st, f.m.TotalSize(), b.ID())
	}
	if bs := b.Stats(); bs.Downloaded != st.Uploaded {
		t.Errorf("downloaded %d, uploaded %d", bs.Downloaded, st.Uploaded)
	}
	// Bad requests.
	unknown := f.m.Shards[0]
	unknown.Hash = rdrr.Sum(nil)
	noop := func(int, []byte) error { return nil }
	if err := r.ReadBlocks(ctx, unknown, 0, 1, noop); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown shard: %v", err)
	}
	if err := r.ReadBlocks(ctx, f.m.Shards[1], 5, 4, noop); err == nil {
		t.Error("range past the end accepted")
	}
	stop := errors.New("stop")
	if err := r.ReadBlocks(ctx, f.m.Shards[0], 0, 5, func(i int, _ []byte) error {
		if i == 2 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) {
		t.Errorf("fn error: %v", err)
	}
}

// A malicious shard server: serves honest blocks through edit, which may
// change or drop them, and may stall or send garbage.
func evilShardServer(t *testing.T, a *Host, f *fixture, edit func(ctx context.Context, s network.Stream, b *wire.Block) (send bool, stop bool)) {
	p := &memProvider{models: []*fixture{f}}
	a.h.SetStreamHandler(ShardProtocol, func(s network.Stream) {
		defer s.Close()
		s.SetReadDeadline(time.Now().Add(time.Second))
		m, err := wire.ReadMessage(s, wire.MaxFrame)
		if err != nil {
			return
		}
		req := m.(*wire.BlocksRequest)
		sh, _ := p.Shard(req.Shard)
		for i := int(req.First); i < int(req.First+req.Count); i++ {
			buf := make([]byte, sh.BlockSize)
			k, _ := p.ReadBlock(sh.Hash, i, buf)
			b := &wire.Block{Index: uint32(i), Data: buf[:k], Proof: rdrr.MerkleProof(sh.Blocks, i)}
			send, stop := edit(t.Context(), s, b)
			if send {
				wire.WriteMessage(s, b)
			}
			if stop {
				return
			}
		}
		wire.WriteMessage(s, &wire.End{})
	})
}

func TestMaliciousServers(t *testing.T) {
	f := newFixture(t, 4, false)
	sh := f.m.Shards[0]
	const bad = 3
	cases := []struct {
		name string
		edit func(ctx context.Context, s network.Stream, b *wire.Block) (bool, bool)
		want []error
		good int // blocks delivered before the error
	}{
		{"flipped byte", func(_ context.Context, _ network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				b.Data[17] ^= 1
			}
			return true, false
		}, []error{rdrr.ErrBadBlock}, bad},
		{"bad proof", func(_ context.Context, _ network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				b.Proof[0][0] ^= 1
			}
			return true, false
		}, []error{rdrr.ErrBadBlock, rdrr.ErrBadProof}, bad},
		{"short block", func(_ context.Context, _ network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				b.Data = b.Data[:100]
			}
			return true, false
		}, []error{rdrr.ErrBadBlock}, bad},
		{"truncated stream", func(_ context.Context, _ network.Stream, b *wire.Block) (bool, bool) {
			return b.Index < bad, b.Index == bad
		}, []error{ErrGone}, bad},
		{"early End", func(ctx context.Context, s network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				wire.WriteMessage(s, &wire.End{})
				return false, true
			}
			return true, false
		}, []error{ErrProtocol}, bad},
		{"out of order", func(_ context.Context, _ network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				b.Index++
			}
			return true, false
		}, []error{ErrProtocol}, bad},
		{"stall", func(ctx context.Context, s network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				// Say nothing until the client gives up (its FrameTimeout is 1 s).
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
				return false, true
			}
			return true, false
		}, []error{ErrTimeout}, bad},
		{"oversize frame", func(ctx context.Context, s network.Stream, b *wire.Block) (bool, bool) {
			if b.Index == bad {
				s.Write([]byte{0x7f, 0xff, 0xff, 0xff, byte(wire.TypeBlock)})
				return false, true
			}
			return true, false
		}, []error{ErrProtocol, wire.ErrFrameTooLarge}, bad},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			a := newHost(t, nil, nil)
			b := newHost(t, nil, nil)
			connect(t, b, a)
			evilShardServer(t, a, f, c.edit)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got := 0
			start := time.Now()
			err := b.Remote(a.ID()).ReadBlocks(ctx, sh, 0, len(sh.Blocks), func(i int, data []byte) error {
				if !bytes.Equal(data, f.data[sh.Hash][int64(i)*sh.BlockSize:][:len(data)]) {
					t.Fatalf("fn got a bad block %d", i)
				}
				got++
				return nil
			})
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("error %v, want %v", err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), a.ID()) {
				t.Errorf("error %q does not name the peer", err)
			}
			if got != c.good {
				t.Errorf("%d blocks delivered, want %d", got, c.good)
			}
			if d := time.Since(start); d > 2500*time.Millisecond {
				t.Errorf("took %v", d)
			}
			t.Logf("%s: %v", c.name, err)
		})
	}
}

// A client that opens a stream and sends nothing is cut off.
func TestServerCutsOffStalledClient(t *testing.T) {
	f := newFixture(t, 5, false)
	a := newHost(t, &memProvider{models: []*fixture{f}}, nil)
	b := newHost(t, nil, nil)
	connect(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, proto := range []string{ShardProtocol, ManifestProtocol} {
		pid, _ := peer.Decode(a.ID())
		s, err := b.h.NewStream(ctx, pid, protoID(proto))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		s.SetReadDeadline(time.Now().Add(4 * time.Second))
		_, err = s.Read(make([]byte, 1))
		if err == nil || isTimeout(err) {
			t.Errorf("%s: read %v, want the server to reset the stream", proto, err)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("%s: cut off after %v, want ~1 s", proto, d)
		}
		s.Reset()
	}
	// And a client that asks for too much gets an Error, not an allocation.
	pid, _ := peer.Decode(a.ID())
	s, err := b.h.NewStream(ctx, pid, protoID(ShardProtocol))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.Write([]byte{0xff, 0xff, 0xff, 0xff, byte(wire.TypeBlocksRequest)})
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := wire.ReadMessage(s, wire.MaxFrame); err == nil {
		t.Error("server answered an oversize request")
	}
}
