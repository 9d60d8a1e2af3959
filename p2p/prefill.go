package p2p

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/p2p/wire"
)

// PrefillProtocol is prefill offload: the client sends a
// wire.PrefillRequest; the server prefills the prompt and answers a
// wire.PrefillHeader, the KV payload in wire.PrefillChunk frames and
// wire.End, or a wire.Error at any point (CodeBusy when its queue is full).
const PrefillProtocol = "/doppler/prefill/1"

// PrefillResult is a prefilled prompt: the KV cache of its Positions
// positions (engine.Session.ExportKV's layout and element type) and the
// logits of its last position.
type PrefillResult struct {
	Positions int
	KVF32     bool
	KV        []byte
	Logits    []float32
}

// PrefillService computes prefills for the host (package swarm's prefill
// server implements it). An error that is a *wire.Error is sent as is;
// any other is sent as CodeInternal.
type PrefillService interface {
	Prefill(ctx context.Context, peer string, req *wire.PrefillRequest) (*PrefillResult, error)
}

// HandlePrefill serves /doppler/prefill/1 with svc; nil stops serving it.
// Requests share the host's serving slots (Options.MaxServing); the
// service bounds its own queue.
func (n *Host) HandlePrefill(svc PrefillService) {
	if svc == nil {
		n.h.RemoveStreamHandler(PrefillProtocol)
		return
	}
	n.h.SetStreamHandler(PrefillProtocol, func(s network.Stream) { n.servePrefill(s, svc) })
}

func (n *Host) servePrefill(s network.Stream, svc PrefillService) {
	c := n.wrap(n.ctx, s, n.opts.RequestTimeout)
	defer c.close()
	if !n.acquire(c) {
		return
	}
	defer n.release()
	m, err := c.read(wire.MaxPrefillFrame)
	req, ok := m.(*wire.PrefillRequest)
	if err != nil || !ok {
		n.log.Debug("prefill: bad request", "from", c.peer, "err", err, "msg", fmt.Sprintf("%T", m))
		c.reset()
		return
	}
	c.timeout = n.opts.FrameTimeout
	// The service bounds its own time; closing the host cancels it.
	res, err := svc.Prefill(n.ctx, c.peer, req)
	if err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			n.log.Warn("prefill: failed", "from", c.peer, "model", req.Model.Short(), "err", err)
			we = &wire.Error{Code: wire.CodeInternal, Msg: err.Error()}
		}
		c.write(we)
		return
	}
	if err := n.sendPrefill(c, req, res); err != nil {
		n.log.Debug("prefill: write", "to", c.peer, "err", err)
		c.reset()
	}
}

func (n *Host) sendPrefill(c *conn, req *wire.PrefillRequest, res *PrefillResult) error {
	kv := uint8(wire.KVF16)
	if res.KVF32 {
		kv = wire.KVF32
	}
	enc, payload := wire.EncodeKV(res.KV)
	hdr := &wire.PrefillHeader{Positions: uint32(res.Positions), KV: kv, Encoding: enc,
		KVSize: uint64(len(res.KV)), Payload: uint64(len(payload)), Logits: res.Logits}
	if _, err := wire.Marshal(hdr); err != nil { // a result this host cannot encode (NaN logits, say)
		n.log.Warn("prefill: bad result", "model", req.Model.Short(), "err", err)
		return c.write(&wire.Error{Code: wire.CodeInternal, Msg: err.Error()})
	}
	if err := c.write(hdr); err != nil {
		return err
	}
	for len(payload) > 0 {
		k := min(len(payload), wire.MaxChunkData)
		if err := c.write(&wire.PrefillChunk{Data: payload[:k]}); err != nil {
			return err
		}
		payload = payload[k:]
	}
	return c.write(&wire.End{})
}

// PrefillExpect is what the client knows of the answer before it asks:
// the size of the raw KV cache of n positions and the vocabulary size.
// Nothing larger than these is allocated.
type PrefillExpect struct {
	KVBytes func(positions int) int
	Vocab   int
	// Wait bounds the time to the answer's header (the peer's prefill);
	// 0 = Options.FrameTimeout. Every later frame has FrameTimeout.
	Wait time.Duration
}

// PrefillStats describes one exchange.
type PrefillStats struct {
	Received   uint64        // payload bytes received (compressed when Compressed)
	Compressed bool          // the peer sent the KV cache DEFLATE-compressed
	Wait       time.Duration // request sent → header received (the peer's prefill)
	Total      time.Duration // the whole exchange, decompression included
}

// Prefill asks the peer to prefill req and returns its result, checked
// against exp: positions = len(req.Tokens), the requested KV element type,
// KV size = exp.KVBytes(positions), exp.Vocab logits. An error wraps
// ErrProtocol (bad answer), ErrRemote (a wire.Error, e.g. CodeBusy),
// ErrNotFound, ErrTimeout, ErrGone (the stream ended) or the context's error.
func (r *Remote) Prefill(ctx context.Context, req *wire.PrefillRequest, exp PrefillExpect) (*PrefillResult, PrefillStats, error) {
	var st PrefillStats
	start := time.Now()
	c, err := r.open(ctx, PrefillProtocol)
	if err != nil {
		return nil, st, err
	}
	defer c.close()
	fail := func(err error) (*PrefillResult, PrefillStats, error) {
		c.reset()
		return nil, st, err
	}
	if err := c.write(req); err != nil {
		return fail(classify(ctx, c.peer, err))
	}
	c.s.CloseWrite()
	if exp.Wait > 0 {
		c.timeout = exp.Wait
	}
	m, err := c.read(wire.MaxPrefillFrame)
	if err != nil {
		return fail(classify(ctx, c.peer, err))
	}
	c.timeout = r.n.opts.FrameTimeout
	st.Wait = time.Since(start)
	var hdr *wire.PrefillHeader
	switch m := m.(type) {
	case *wire.Error:
		return nil, st, remoteError(c.peer, m)
	case *wire.PrefillHeader:
		hdr = m
	default:
		return fail(fmt.Errorf("peer %s: %w: %v in answer to PrefillRequest", c.peer, ErrProtocol, m.Type()))
	}
	n := len(req.Tokens)
	want := exp.KVBytes(n)
	switch {
	case int(hdr.Positions) != n:
		return fail(fmt.Errorf("peer %s: %w: %d positions for a %d-token prompt", c.peer, ErrProtocol, hdr.Positions, n))
	case hdr.KV != req.KV:
		return fail(fmt.Errorf("peer %s: %w: KV type %d, asked %d", c.peer, ErrProtocol, hdr.KV, req.KV))
	case want <= 0 || hdr.KVSize != uint64(want):
		return fail(fmt.Errorf("peer %s: %w: %d KV bytes, want %d", c.peer, ErrProtocol, hdr.KVSize, want))
	case len(hdr.Logits) != exp.Vocab:
		return fail(fmt.Errorf("peer %s: %w: %d logits, want %d", c.peer, ErrProtocol, len(hdr.Logits), exp.Vocab))
	}
	// Payload ≤ KVSize = want: bounded by what this node computed itself.
	payload := make([]byte, 0, hdr.Payload)
	for {
		m, err := c.read(wire.MaxPrefillFrame)
		if err != nil {
			return fail(classify(ctx, c.peer, err))
		}
		switch m := m.(type) {
		case *wire.Error:
			return fail(remoteError(c.peer, m))
		case *wire.PrefillChunk:
			if uint64(len(payload))+uint64(len(m.Data)) > hdr.Payload {
				return fail(fmt.Errorf("peer %s: %w: more than the %d payload bytes announced", c.peer, ErrProtocol, hdr.Payload))
			}
			payload = append(payload, m.Data...)
			continue
		case *wire.End:
			if uint64(len(payload)) != hdr.Payload {
				return fail(fmt.Errorf("peer %s: %w: End after %d of %d payload bytes", c.peer, ErrProtocol, len(payload), hdr.Payload))
			}
		default:
			return fail(fmt.Errorf("peer %s: %w: %v in a prefill answer", c.peer, ErrProtocol, m.Type()))
		}
		break
	}
	st.Received = uint64(len(payload))
	st.Compressed = hdr.Encoding == wire.EncodingFlate
	kv, err := wire.DecodeKV(hdr.Encoding, payload, hdr.KVSize)
	if err != nil {
		return fail(fmt.Errorf("peer %s: %w: %w", c.peer, ErrProtocol, err))
	}
	st.Total = time.Since(start)
	return &PrefillResult{Positions: n, KVF32: hdr.KV == wire.KVF32, KV: kv, Logits: hdr.Logits}, st, nil
}
