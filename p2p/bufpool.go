package p2p

import "github.com/doppler-llm/doppler/p2p/wire"

// maxIdleBufs bounds the block buffers a host keeps between transfers
// (wire.BlockFrameBuf bytes each, so about 24 MiB).
const maxIdleBufs = 24

// bufPool is a host's free list of block buffers (*[]byte of
// wire.BlockFrameBuf bytes): frames being written, Blocks being read,
// blocks being served, so a transfer allocates nothing per block. Unlike a
// sync.Pool it survives garbage collections: a buffer dropped at every GC
// is a fresh megabyte the kernel must fault in again, which cost more CPU
// than the copy itself on the machines measured (docs/dataplane.md).
// Buffers beyond maxIdleBufs go to the garbage collector.
type bufPool struct{ free chan *[]byte }

func newBufPool(n int) bufPool { return bufPool{free: make(chan *[]byte, n)} }

func (p bufPool) get() *[]byte {
	select {
	case b := <-p.free:
		return b
	default:
		b := make([]byte, wire.BlockFrameBuf)
		return &b
	}
}

func (p bufPool) put(b *[]byte) {
	if cap(*b) < wire.BlockFrameBuf {
		return
	}
	*b = (*b)[:wire.BlockFrameBuf]
	select {
	case p.free <- b:
	default:
	}
}
