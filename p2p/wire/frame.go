package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the major version of this encoding, carried in protocol IDs.
const Version = 1

// Limits. A reader passes its own frame limit to ReadMessage; the field
// limits below hold whatever the frame limit.
const (
	HeaderSize   = 5        // u32 length + type byte
	MaxBlockData = 1 << 20  // rdrr.MaxBlockSize
	MaxProof     = 48       // sibling hashes in one audit path
	MaxManifest  = 64 << 20 // manifest bytes in one ManifestResponse
	MaxSig       = 4 << 10
	MaxErrorMsg  = 1 << 10
	MaxPeerID    = 128
	MaxShards    = 1 << 20 // bits in an inventory bitmap (128 KiB)
	MaxModels    = 256
	MaxExperts   = 1 << 16
	MaxTTL       = 24 * 3600
	MaxSkip      = 16 // unknown frames skipped in a row before giving up
	// MaxPartials bounds the partial shards of one inventory, and
	// MaxPartialBlocks the blocks of each (8 KiB of bitmap): 512 KiB in
	// all, within MaxInventoryFrame beside a full shard bitmap.
	MaxPartials      = 64
	MaxPartialBlocks = 1 << 16

	// MaxFrame fits one Block with a full proof: the limit for shard
	// streams and the default everywhere except manifest responses.
	MaxFrame = 1 + 4 + 4 + MaxBlockData + 1 + MaxProof*32
	// BlockFrameBuf is the size of a buffer that holds the body of any
	// Block frame (ReadMessageBuf) or the whole of one (AppendFrame).
	BlockFrameBuf = 4 + MaxFrame
	// MaxManifestFrame fits one ManifestResponse.
	MaxManifestFrame = 1 + 4 + MaxManifest + 4 + MaxSig
	// MaxInventoryFrame bounds an Inventory (gossip messages are ≤ 1 MiB).
	MaxInventoryFrame = 1 << 20
)

// Errors. Every decoding failure wraps one of them.
var (
	ErrFrameTooLarge = errors.New("wire: frame exceeds the size limit")
	ErrTruncated     = errors.New("wire: truncated frame")
	ErrMalformed     = errors.New("wire: malformed message")
	ErrTooManySkips  = errors.New("wire: too many unknown frames")
)

// Type is a message type byte.
type Type byte

// Message types.
const (
	TypeManifestRequest  Type = 0x01
	TypeManifestResponse Type = 0x02
	TypeBlocksRequest    Type = 0x03
	TypeBlock            Type = 0x04
	TypeEnd              Type = 0x05
	TypeError            Type = 0x06
	TypeInventory        Type = 0x07
	TypeInventoryRequest Type = 0x08
	TypeHave             Type = 0x09 // have.go
	TypeUsage            Type = 0x10 // usage.go
	TypeClusters         Type = 0x11
)

func (t Type) String() string {
	switch t {
	case TypeManifestRequest:
		return "ManifestRequest"
	case TypeManifestResponse:
		return "ManifestResponse"
	case TypeBlocksRequest:
		return "BlocksRequest"
	case TypeBlock:
		return "Block"
	case TypeEnd:
		return "End"
	case TypeError:
		return "Error"
	case TypeInventory:
		return "Inventory"
	case TypeInventoryRequest:
		return "InventoryRequest"
	case TypeHave:
		return "Have"
	case TypeUsage:
		return "Usage"
	case TypeClusters:
		return "Clusters"
	}
	if name := prefillTypeName(t); name != "" {
		return name
	}
	return fmt.Sprintf("Type(0x%02x)", byte(t))
}

func (t Type) known() bool { return newMessage(t) != nil }

// Message is one of the message types of this package.
type Message interface {
	Type() Type
	// appendBody validates the message and appends its body.
	appendBody(b []byte) ([]byte, error)
	// decode parses and validates a body into the message.
	decode(d *decoder) error
}

// Marshal returns the whole frame of m (header and body).
func Marshal(m Message) ([]byte, error) {
	return AppendFrame(nil, m)
}

// AppendFrame appends the frame of m to b.
func AppendFrame(b []byte, m Message) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(m.Type()))
	b, err := m.appendBody(b)
	if err != nil {
		return b[:start], fmt.Errorf("encode %v: %w", m.Type(), err)
	}
	n := len(b) - start - 4
	if uint64(n) > 0xffffffff {
		return b[:start], fmt.Errorf("encode %v: %w", m.Type(), ErrFrameTooLarge)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

// BlockFrame returns the frame of b in the parts head ‖ b.Data ‖ tail
// (AppendFrame's bytes), head and tail appended to dst[:0], so a writer
// can send a block's data from where it lies instead of copying it into
// a frame.
func BlockFrame(dst []byte, b *Block) (head, tail []byte, err error) {
	if len(b.Data) == 0 || len(b.Data) > MaxBlockData || len(b.Proof) > MaxProof {
		_, err := b.appendBody(nil)
		return nil, nil, fmt.Errorf("encode %v: %w", TypeBlock, err)
	}
	n := 1 + 4 + 4 + len(b.Data) + 1 + 32*len(b.Proof)
	dst = binary.BigEndian.AppendUint32(dst[:0], uint32(n))
	dst = append(dst, byte(TypeBlock))
	dst = binary.BigEndian.AppendUint32(dst, b.Index)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b.Data)))
	k := len(dst)
	dst = append(dst, byte(len(b.Proof)))
	for _, h := range b.Proof {
		dst = append(dst, h[:]...)
	}
	return dst[:k:k], dst[k:], nil
}

// WriteMessage writes the frame of m to w in one Write.
func WriteMessage(w io.Writer, m Message) error {
	b, err := Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Unmarshal decodes one whole frame (as Marshal returns it). The frame must
// hold exactly one message of a known type, no larger than max.
func Unmarshal(frame []byte, max int) (Message, error) {
	if len(frame) < HeaderSize {
		return nil, fmt.Errorf("%w: %d-byte frame", ErrTruncated, len(frame))
	}
	n := binary.BigEndian.Uint32(frame)
	if n == 0 {
		return nil, fmt.Errorf("%w: zero length", ErrMalformed)
	}
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, max)
	}
	if uint64(len(frame)-4) < uint64(n) {
		return nil, fmt.Errorf("%w: have %d of %d bytes", ErrTruncated, len(frame)-4, n)
	}
	if uint64(len(frame)-4) > uint64(n) {
		return nil, fmt.Errorf("%w: %d bytes after the frame", ErrMalformed, uint64(len(frame)-4)-uint64(n))
	}
	return Decode(Type(frame[4]), frame[5:])
}

// Decode decodes a body of a known type.
func Decode(t Type, body []byte) (Message, error) {
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown type %v", ErrMalformed, t)
	}
	d := &decoder{b: body}
	if err := m.decode(d); err != nil {
		return nil, fmt.Errorf("decode %v: %w", t, err)
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode %v: %w", t, d.err)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("decode %v: %w: %d trailing bytes", t, ErrMalformed, len(d.b))
	}
	return m, nil
}

func newMessage(t Type) Message {
	switch t {
	case TypeManifestRequest:
		return &ManifestRequest{}
	case TypeManifestResponse:
		return &ManifestResponse{}
	case TypeBlocksRequest:
		return &BlocksRequest{}
	case TypeBlock:
		return &Block{}
	case TypeEnd:
		return &End{}
	case TypeError:
		return &Error{}
	case TypeInventory:
		return &Inventory{}
	case TypeInventoryRequest:
		return &InventoryRequest{}
	case TypeHave:
		return &Have{}
	case TypeUsage:
		return &Usage{}
	case TypeClusters:
		return &Clusters{}
	}
	return newPrefillMessage(t) // prefill.go
}

// ReadMessage reads one message from r. Frames longer than max are refused
// before anything is allocated for them; frames of unknown types are
// discarded (at most MaxSkip in a row). Bodies above 1 MiB are read into a
// buffer that grows only as bytes arrive, so a peer that announces a large
// frame and stalls costs no memory.
func ReadMessage(r io.Reader, max int) (Message, error) {
	return ReadMessageBuf(r, max, nil)
}

// ReadMessageBuf is ReadMessage that reads the body of a Block frame into
// the buffer buf returns (called only for a Block) when it fits, so a
// reader of many blocks allocates nothing per block: the Block's Data (and
// nothing else) then aliases that buffer and is valid only until it is
// used again. Frames of other types, and Blocks larger than the buffer,
// get memory of their own as in ReadMessage. A buffer of BlockFrameBuf
// bytes fits every Block a shard stream may carry.
func ReadMessageBuf(r io.Reader, max int, buf func() []byte) (Message, error) {
	var hdr [HeaderSize]byte
	for skipped := 0; ; skipped++ {
		if skipped > MaxSkip {
			return nil, ErrTooManySkips
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: header: %v", ErrTruncated, err)
			}
			return nil, err // io.EOF: the stream ended cleanly between frames
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			return nil, fmt.Errorf("%w: zero length", ErrMalformed)
		}
		if uint64(n) > uint64(max) {
			return nil, fmt.Errorf("%w: %v frame of %d bytes > %d", ErrFrameTooLarge, Type(hdr[4]), n, max)
		}
		t := Type(hdr[4])
		size := int64(n) - 1
		if !t.known() {
			if _, err := io.CopyN(io.Discard, r, size); err != nil {
				return nil, fmt.Errorf("%w: skipping %v: %v", ErrTruncated, t, err)
			}
			continue
		}
		var body []byte
		var err error
		if b := blockBuf(t, buf); size <= int64(len(b)) {
			body = b[:size]
			_, err = io.ReadFull(r, body)
		} else {
			body, err = readBody(r, size)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v body: %v", ErrTruncated, t, err)
		}
		return Decode(t, body)
	}
}

func blockBuf(t Type, buf func() []byte) []byte {
	if t != TypeBlock || buf == nil {
		return nil
	}
	return buf()
}

func readBody(r io.Reader, size int64) ([]byte, error) {
	if size <= 1<<20+64<<10 {
		b := make([]byte, size)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, size); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
