package wire

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/doppler-llm/doppler/rdrr"
)

// Prefill offload (/doppler/prefill/1): a client sends PrefillRequest; the
// server prefills the prompt and answers PrefillHeader, then
// PrefillHeader.Payload bytes in PrefillChunk frames, then End — or an Error
// at any point.

// Prefill message types (0x20…0x2f are the prefill protocol's).
const (
	TypePrefillRequest Type = 0x20
	TypePrefillHeader  Type = 0x21
	TypePrefillChunk   Type = 0x22
)

// Prefill limits.
const (
	MaxPrefillTokens = 1 << 15                                 // prompt tokens in one PrefillRequest
	MaxLogits        = 1 << 20                                 // vocabulary size of the logits in a PrefillHeader
	MaxKVBytes       = 1 << 38                                 // KV bytes announced in a PrefillHeader (256 GiB)
	MaxChunkData     = 1 << 20                                 // bytes in one PrefillChunk
	MaxPrefillFrame  = 1 + 1 + 1 + 4 + 8 + 8 + 4 + 4*MaxLogits // a PrefillHeader with the most logits; also fits every chunk and request
	prefillSample    = 1 << 20                                 // bytes EncodeKV test-compresses before deciding
	minSaving        = 10                                      // percent: compress only when it saves at least this much
)

// KV cache element types.
const (
	KVF16 uint8 = 1
	KVF32 uint8 = 2
)

// KV payload encodings.
const (
	EncodingRaw   uint8 = 0
	EncodingFlate uint8 = 1 // RFC 1951 DEFLATE of the raw bytes
)

// PrefillRequest asks a peer to prefill Tokens with model Model and send the
// KV cache back in element type KV.
type PrefillRequest struct {
	Model  rdrr.ModelID
	KV     uint8    // KVF16 or KVF32
	Tokens []uint32 // 1 … MaxPrefillTokens token ids
}

// PrefillHeader starts a prefill answer.
type PrefillHeader struct {
	Positions uint32 // prompt positions in the cache (= the request's token count)
	KV        uint8  // element type, as requested
	Encoding  uint8  // EncodingRaw or EncodingFlate
	KVSize    uint64 // bytes of the raw cache (engine.Session.ExportKV's layout), ≤ MaxKVBytes
	Payload   uint64 // bytes sent in PrefillChunks: KVSize when raw, ≤ KVSize when flate
	// Logits of the last prompt position (f32), for the client's check.
	Logits []float32
}

// PrefillChunk carries the next bytes of the KV payload.
type PrefillChunk struct {
	Data []byte // 1 … MaxChunkData bytes
}

func (*PrefillRequest) Type() Type { return TypePrefillRequest }
func (*PrefillHeader) Type() Type  { return TypePrefillHeader }
func (*PrefillChunk) Type() Type   { return TypePrefillChunk }

func newPrefillMessage(t Type) Message {
	switch t {
	case TypePrefillRequest:
		return &PrefillRequest{}
	case TypePrefillHeader:
		return &PrefillHeader{}
	case TypePrefillChunk:
		return &PrefillChunk{}
	}
	return nil
}

func prefillTypeName(t Type) string {
	switch t {
	case TypePrefillRequest:
		return "PrefillRequest"
	case TypePrefillHeader:
		return "PrefillHeader"
	case TypePrefillChunk:
		return "PrefillChunk"
	}
	return ""
}

func (m *PrefillRequest) validate() error {
	if m.KV != KVF16 && m.KV != KVF32 {
		return bad("kv type %d", m.KV)
	}
	if len(m.Tokens) == 0 || len(m.Tokens) > MaxPrefillTokens {
		return bad("%d tokens", len(m.Tokens))
	}
	return nil
}

func (m *PrefillRequest) appendBody(b []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, err
	}
	b = append(b, m.Model[:]...)
	b = append(b, m.KV)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Tokens)))
	for _, t := range m.Tokens {
		b = binary.BigEndian.AppendUint32(b, t)
	}
	return b, nil
}

func (m *PrefillRequest) decode(d *decoder) error {
	m.Model = d.hash()
	m.KV = d.u8()
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if n == 0 || n > MaxPrefillTokens {
		return fmt.Errorf("%w: %d tokens (want 1…%d)", ErrMalformed, n, MaxPrefillTokens)
	}
	if !d.need(int(n) * 4) {
		return nil
	}
	m.Tokens = make([]uint32, n)
	for i := range m.Tokens {
		m.Tokens[i] = d.u32()
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

func (m *PrefillHeader) validate() error {
	if m.Positions == 0 || m.Positions > MaxPrefillTokens {
		return bad("%d positions", m.Positions)
	}
	if m.KV != KVF16 && m.KV != KVF32 {
		return bad("kv type %d", m.KV)
	}
	if m.KVSize == 0 || m.KVSize > MaxKVBytes {
		return bad("kv of %d bytes", m.KVSize)
	}
	switch m.Encoding {
	case EncodingRaw:
		if m.Payload != m.KVSize {
			return bad("raw payload of %d bytes for %d KV bytes", m.Payload, m.KVSize)
		}
	case EncodingFlate:
		if m.Payload == 0 || m.Payload > m.KVSize {
			return bad("compressed payload of %d bytes for %d KV bytes", m.Payload, m.KVSize)
		}
	default:
		return bad("encoding %d", m.Encoding)
	}
	if len(m.Logits) == 0 || len(m.Logits) > MaxLogits {
		return bad("%d logits", len(m.Logits))
	}
	for _, f := range m.Logits {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return bad("logit %v", f)
		}
	}
	return nil
}

func (m *PrefillHeader) appendBody(b []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint32(b, m.Positions)
	b = append(b, m.KV, m.Encoding)
	b = binary.BigEndian.AppendUint64(b, m.KVSize)
	b = binary.BigEndian.AppendUint64(b, m.Payload)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Logits)))
	for _, f := range m.Logits {
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b, nil
}

func (m *PrefillHeader) decode(d *decoder) error {
	m.Positions = d.u32()
	m.KV = d.u8()
	m.Encoding = d.u8()
	m.KVSize = d.u64()
	m.Payload = d.u64()
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if n == 0 || n > MaxLogits {
		return fmt.Errorf("%w: %d logits (want 1…%d)", ErrMalformed, n, MaxLogits)
	}
	if !d.need(int(n) * 4) {
		return nil
	}
	m.Logits = make([]float32, n)
	for i := range m.Logits {
		m.Logits[i] = math.Float32frombits(d.u32())
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

func (m *PrefillChunk) appendBody(b []byte) ([]byte, error) {
	if len(m.Data) == 0 || len(m.Data) > MaxChunkData {
		return b, bad("chunk of %d bytes", len(m.Data))
	}
	return appendBytes(b, m.Data), nil
}

func (m *PrefillChunk) decode(d *decoder) error {
	m.Data = d.bytes(1, MaxChunkData, "chunk")
	return nil
}

// EncodeKV chooses the encoding of a KV payload: DEFLATE (fastest level)
// when a test compression of the first MiB saves at least 10 % and the
// whole does too, else the raw bytes (returned as is, not copied).
func EncodeKV(kv []byte) (encoding uint8, payload []byte) {
	sample := kv[:min(len(kv), prefillSample)]
	if c := deflate(sample); c == nil || len(c)*100 > len(sample)*(100-minSaving) {
		return EncodingRaw, kv
	}
	c := deflate(kv)
	if len(c) == 0 || len(c)*100 > len(kv)*(100-minSaving) {
		return EncodingRaw, kv
	}
	return EncodingFlate, c
}

func deflate(p []byte) []byte {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		return nil
	}
	if _, err := w.Write(p); err != nil {
		return nil
	}
	if err := w.Close(); err != nil {
		return nil
	}
	return buf.Bytes()
}

// DecodeKV returns the raw KV bytes of a payload: exactly size bytes, no
// more (a stream that inflates past size or stops short is ErrMalformed).
// Memory is bounded by size, which the caller checked before.
func DecodeKV(encoding uint8, payload []byte, size uint64) ([]byte, error) {
	switch encoding {
	case EncodingRaw:
		if uint64(len(payload)) != size {
			return nil, fmt.Errorf("%w: %d raw KV bytes, want %d", ErrMalformed, len(payload), size)
		}
		return payload, nil
	case EncodingFlate:
		if size > MaxKVBytes {
			return nil, fmt.Errorf("%w: kv of %d bytes", ErrMalformed, size)
		}
		r := flate.NewReader(bytes.NewReader(payload))
		defer r.Close()
		out := make([]byte, size)
		if _, err := io.ReadFull(r, out); err != nil {
			return nil, fmt.Errorf("%w: inflating the KV cache: %v", ErrMalformed, err)
		}
		var one [1]byte
		if k, _ := r.Read(one[:]); k != 0 {
			return nil, fmt.Errorf("%w: the KV cache inflates past %d bytes", ErrMalformed, size)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: encoding %d", ErrMalformed, encoding)
}
