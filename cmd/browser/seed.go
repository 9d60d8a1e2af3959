//go:build js && wasm

package main

import (
	"context"
	"fmt"
	"syscall/js"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling/sigwire"
)

// httpPeer is the node's HTTP seed (signaling.Seed) as a swarm.Peer: the
// fallback for shards no WebRTC peer offers. Blocks are checked against
// the manifest's hashes before the fetcher sees them.
type httpPeer struct {
	c    *client
	base string
}

// ID names the seed in the fetcher's statistics.
func (h *httpPeer) ID() string { return "http-seed" }

// get fetches url (with an optional Range) and returns the body; status
// 404 gives ok false.
func (h *httpPeer) get(ctx context.Context, url, rng string) (body []byte, ok bool, err error) {
	ac := js.Global().Get("AbortController").New()
	stop := context.AfterFunc(ctx, func() { ac.Call("abort") })
	defer stop()
	init := map[string]any{"signal": ac.Get("signal"), "cache": "no-store"}
	if rng != "" {
		init["headers"] = object(map[string]any{"Range": rng})
	}
	resp, err := callAwait(ctx, js.Global(), "fetch", url, object(init))
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: %w", url, err)
	}
	status := resp.Get("status").Int()
	if status == 404 {
		return nil, false, nil
	}
	if status != 200 && status != 206 {
		return nil, false, fmt.Errorf("GET %s: HTTP %d", url, status)
	}
	ab, err := callAwait(ctx, resp, "arrayBuffer")
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: %w", url, err)
	}
	return goBytes(ab), true, nil
}

// Manifest fetches a model's manifest (and signature) and verifies it.
func (h *httpPeer) Manifest(ctx context.Context, id rdrr.ModelID) (manifest, sig []byte, err error) {
	dir := h.base + sigwire.SeedPrefix + "/models/" + id.String() + "/"
	raw, ok, err := h.get(ctx, dir+rdrr.ManifestFile, "")
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("model %s: not on the HTTP seed: %w", id.Short(), shardproto.ErrNotFound)
	}
	if rdrr.Sum(raw) != id {
		return nil, nil, fmt.Errorf("HTTP seed: model %s: %w", id.Short(), shardproto.ErrBadManifest)
	}
	if sig, _, err = h.get(ctx, dir+rdrr.SignatureFile, ""); err != nil {
		return nil, nil, err
	}
	return raw, sig, nil
}

// ReadBlocks fetches a byte range of a shard and hands it over block by
// block, each checked against the manifest (swarm.Peer).
func (h *httpPeer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	if err := shardproto.CheckRange(sh, first, count); err != nil {
		return err
	}
	lo := int64(first) * sh.BlockSize
	hi := min(int64(first+count)*sh.BlockSize, sh.Size)
	body, ok, err := h.get(ctx, h.base+sigwire.SeedPrefix+"/shards/"+sh.Hash.String(), fmt.Sprintf("bytes=%d-%d", lo, hi-1))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("HTTP seed: shard %s: %w", sh.Hash.Short(), shardproto.ErrNotFound)
	}
	off := 0
	for i := first; i < first+count; i++ {
		n := sh.BlockLen(i)
		if off+n > len(body) {
			return nil // short: the fetcher asks again for the rest
		}
		b := body[off : off+n]
		off += n
		if err := sh.CheckBlock(i, b); err != nil {
			err = fmt.Errorf("HTTP seed: %w", err)
			h.c.rejected(h.ID(), err)
			return err
		}
		h.c.received("http", n)
		if err := fn(i, b); err != nil {
			return err
		}
	}
	return nil
}
