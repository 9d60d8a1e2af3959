package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// fakePrefill answers with a KV cache of kvPer bytes per position (all
// zeros when zeros, else incompressible) and vocab logits.
type fakePrefill struct {
	kvPer, vocab int
	zeros        bool
	err          error
}

func (f *fakePrefill) Prefill(ctx context.Context, peer string, req *wire.PrefillRequest) (*PrefillResult, error) {
	if f.err != nil {
		return nil, f.err
	}
	n := len(req.Tokens)
	kv := make([]byte, n*f.kvPer)
	if !f.zeros {
		x := uint32(1)
		for i := range kv {
			x = x*1664525 + 1013904223
			kv[i] = byte(x >> 24)
		}
	}
	lg := make([]float32, f.vocab)
	lg[int(req.Tokens[n-1])%f.vocab] = 1
	return &PrefillResult{Positions: n, KV: kv, Logits: lg}, nil
}

func prefillPair(t *testing.T, svc PrefillService) (*Host, *Remote) {
	srv := newHost(t, nil, nil)
	if svc != nil {
		srv.HandlePrefill(svc)
	}
	cli := newHost(t, nil, nil)
	connect(t, cli, srv)
	return srv, cli.Remote(srv.ID())
}

func TestPrefillExchange(t *testing.T) {
	req := &wire.PrefillRequest{Model: rdrr.ModelID{7}, KV: wire.KVF16, Tokens: []uint32{1, 2, 3, 4}}
	for _, zeros := range []bool{false, true} {
		f := &fakePrefill{kvPer: 600 << 10, vocab: 32, zeros: zeros} // > 1 MiB: several chunks
		_, r := prefillPair(t, f)
		exp := PrefillExpect{KVBytes: func(n int) int { return n * f.kvPer }, Vocab: 32}
		res, st, err := r.Prefill(context.Background(), req, exp)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := f.Prefill(context.Background(), "", req)
		if string(res.KV) != string(want.KV) || res.Logits[4] != 1 || res.Positions != 4 {
			t.Fatalf("zeros=%v: result differs", zeros)
		}
		if st.Compressed != zeros || (zeros && st.Received >= uint64(len(res.KV))/10) || (!zeros && st.Received != uint64(len(res.KV))) {
			t.Fatalf("zeros=%v: %+v for %d KV bytes", zeros, st, len(res.KV))
		}
	}
	// Busy and not-found answers are remote errors.
	_, r := prefillPair(t, &fakePrefill{err: &wire.Error{Code: wire.CodeBusy, Msg: "full"}})
	if _, _, err := r.Prefill(context.Background(), req, PrefillExpect{KVBytes: func(int) int { return 1 }, Vocab: 1}); !errors.Is(err, ErrRemote) {
		t.Fatalf("busy: %v", err)
	}
	// A host without the service: the stream cannot be opened.
	_, r = prefillPair(t, nil)
	if _, _, err := r.Prefill(context.Background(), req, PrefillExpect{KVBytes: func(int) int { return 1 }, Vocab: 1}); err == nil {
		t.Fatal("a host without the prefill service answered")
	}
}

func frameBytes(t *testing.T, m wire.Message) []byte {
	b, err := wire.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPrefillHostileServers: every bad answer is an error, promptly, with
// nothing allocated beyond what the client expects.
func TestPrefillHostileServers(t *testing.T) {
	req := &wire.PrefillRequest{Model: rdrr.ModelID{7}, KV: wire.KVF16, Tokens: []uint32{1, 2}}
	exp := PrefillExpect{KVBytes: func(n int) int { return n * 100 }, Vocab: 4, Wait: 500 * time.Millisecond}
	hdr := func(edit func(h *wire.PrefillHeader)) *wire.PrefillHeader {
		h := &wire.PrefillHeader{Positions: 2, KV: wire.KVF16, Encoding: wire.EncodingRaw, KVSize: 200, Payload: 200, Logits: make([]float32, 4)}
		if edit != nil {
			edit(h)
		}
		return h
	}
	chunk := &wire.PrefillChunk{Data: make([]byte, 100)}
	cases := []struct {
		name   string
		frames [][]byte
		want   error
	}{
		{"oversize frame", [][]byte{{0x7f, 0xff, 0xff, 0xff, byte(wire.TypePrefillHeader)}}, ErrProtocol},
		{"garbage", [][]byte{{0, 0, 0, 3, byte(wire.TypePrefillHeader), 1, 2}}, ErrProtocol},
		{"wrong message", [][]byte{frameBytes(t, &wire.End{})}, ErrProtocol},
		{"wrong positions", [][]byte{frameBytes(t, hdr(func(h *wire.PrefillHeader) { h.Positions = 3 }))}, ErrProtocol},
		{"huge KV", [][]byte{frameBytes(t, hdr(func(h *wire.PrefillHeader) { h.KVSize, h.Payload = 1<<37, 1<<37 }))}, ErrProtocol},
		{"wrong vocab", [][]byte{frameBytes(t, hdr(func(h *wire.PrefillHeader) { h.Logits = make([]float32, 5) }))}, ErrProtocol},
		{"wrong KV type", [][]byte{frameBytes(t, hdr(func(h *wire.PrefillHeader) { h.KV = wire.KVF32 }))}, ErrProtocol},
		{"too many bytes", [][]byte{frameBytes(t, hdr(nil)), frameBytes(t, chunk), frameBytes(t, chunk), frameBytes(t, chunk)}, ErrProtocol},
		{"early End", [][]byte{frameBytes(t, hdr(nil)), frameBytes(t, chunk), frameBytes(t, &wire.End{})}, ErrProtocol},
		{"bad deflate", [][]byte{frameBytes(t, hdr(func(h *wire.PrefillHeader) { h.Encoding, h.Payload = wire.EncodingFlate, 3 })),
			frameBytes(t, &wire.PrefillChunk{Data: []byte{0xff, 0xff, 0xff}}), frameBytes(t, &wire.End{})}, ErrProtocol},
		{"cut off", [][]byte{frameBytes(t, hdr(nil)), frameBytes(t, chunk)}, ErrGone},
		{"stall before the header", nil, ErrTimeout},
		{"stall after the header", [][]byte{frameBytes(t, hdr(nil)), nil}, ErrTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, r := prefillPair(t, nil)
			srv.h.SetStreamHandler(PrefillProtocol, func(s network.Stream) {
				defer s.Close()
				wire.ReadMessage(s, wire.MaxPrefillFrame)
				if c.frames == nil {
					time.Sleep(3 * time.Second)
					return
				}
				for _, f := range c.frames {
					if f == nil {
						time.Sleep(3 * time.Second)
						return
					}
					s.Write(f)
				}
			})
			start := time.Now()
			_, _, err := r.Prefill(context.Background(), req, exp)
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if el := time.Since(start); el > 2500*time.Millisecond {
				t.Fatalf("took %v", el)
			}
		})
	}
}

// TestPrefillHostileClients: malformed or oversize requests get the stream
// reset without calling the service; the server keeps serving.
func TestPrefillHostileClients(t *testing.T) {
	f := &fakePrefill{kvPer: 10, vocab: 4}
	srv, r := prefillPair(t, f)
	cli := r.n
	for _, raw := range [][]byte{
		{0, 0, 0, 3, byte(wire.TypePrefillRequest), 1, 2},
		{0x7f, 0xff, 0xff, 0xff, byte(wire.TypePrefillRequest)},
		binary.BigEndian.AppendUint32(nil, 1<<30),
		frameBytes(t, &wire.End{}),
		{},
	} {
		s, err := cli.h.NewStream(context.Background(), srv.h.ID(), PrefillProtocol)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(raw)
		s.CloseWrite()
		s.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(s)
		if len(b) != 0 || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%x: answered %x (%v)", raw, b, err)
		}
		s.Close()
	}
	req := &wire.PrefillRequest{Model: rdrr.ModelID{7}, KV: wire.KVF16, Tokens: []uint32{1, 2}}
	if _, _, err := r.Prefill(context.Background(), req, PrefillExpect{KVBytes: func(n int) int { return n * 10 }, Vocab: 4}); err != nil {
		t.Fatalf("after hostile clients: %v", err)
	}
}
