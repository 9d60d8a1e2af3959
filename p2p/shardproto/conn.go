package shardproto

import (
	"fmt"
	"io"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// MsgConn carries the shard protocol's messages over one exchange (one
// request and its answer) on any transport. The implementation bounds
// every call (a deadline per frame, a context) and counts traffic if it
// wants to; ReadMsg refuses frames over max before allocating them. An
// implementation that can half-close (CloseWrite() error) is half-closed
// after the request is sent.
type MsgConn interface {
	ReadMsg(max int) (wire.Message, error)
	WriteMsg(m wire.Message) error
}

// Frames returns a MsgConn that frames messages over a byte stream with
// wire.ReadMessage and wire.WriteMessage (one Write per frame); rw bounds
// its own calls.
func Frames(rw io.ReadWriter) MsgConn { return frames{rw} }

type frames struct{ rw io.ReadWriter }

func (f frames) ReadMsg(max int) (wire.Message, error) { return wire.ReadMessage(f.rw, max) }
func (f frames) WriteMsg(m wire.Message) error         { return wire.WriteMessage(f.rw, m) }

// Provider is what a server serves (the swarm's store, a browser's OPFS
// store).
type Provider interface {
	// Manifest returns manifest.json's bytes and manifest.sig's (nil when
	// unsigned) of a model the provider holds.
	Manifest(id rdrr.ModelID) (manifest, sig []byte, ok bool)
	// Shard returns the table entry of a shard, from a manifest the
	// provider trusts.
	Shard(h rdrr.Hash) (rdrr.Shard, bool)
	// ReadBlock fills p with the verified bytes of one block and returns
	// their count (the block's size; the last block may be short).
	ReadBlock(h rdrr.Hash, index int, p []byte) (int, error)
}

// ReadInventories reads Inventory frames (at most wire.MaxInventoryFrame
// bytes) from an inventory channel and hands each to fn, in order, until
// the channel fails; anything but an Inventory is a protocol violation
// (ErrProtocol). c sets its own deadlines (none: the channel idles between
// announcements).
func ReadInventories(c MsgConn, fn func(*wire.Inventory)) error {
	for {
		m, err := c.ReadMsg(wire.MaxInventoryFrame)
		if err != nil {
			return err
		}
		inv, ok := m.(*wire.Inventory)
		if !ok {
			return fmt.Errorf("%w: %v on an inventory channel", ErrProtocol, m.Type())
		}
		fn(inv)
	}
}
