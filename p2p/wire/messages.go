package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/doppler-llm/doppler/rdrr"
)

// ManifestRequest asks for the manifest of a model.
type ManifestRequest struct {
	ModelID rdrr.ModelID
}

// ManifestResponse carries manifest.json's bytes and, when the model is
// signed, manifest.sig's bytes. The receiver checks both.
type ManifestResponse struct {
	Manifest []byte
	Sig      []byte
}

// BlocksRequest asks for Count blocks of a shard starting at block First.
type BlocksRequest struct {
	Shard rdrr.Hash
	First uint32
	Count uint32
}

// Block is one verification block of a shard with its Merkle audit path.
type Block struct {
	Index uint32
	Data  []byte
	Proof []rdrr.Hash
}

// End closes a successful block stream.
type End struct{}

// Error codes.
const (
	CodeNotFound   uint16 = 1 // unknown model or shard
	CodeBadRequest uint16 = 2 // malformed request or block range out of bounds
	CodeBusy       uint16 = 3 // too many streams; try another peer
	CodeInternal   uint16 = 4 // the server failed to read its own data
)

// Error ends an exchange with a reason.
type Error struct {
	Code uint16
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("remote error %d: %s", e.Code, e.Msg) }

// Expert names one MoE expert.
type Expert struct {
	Layer, Expert uint16
}

// Inventory is what a peer announces on a model's gossip topic.
type Inventory struct {
	Peer string // the announcing peer's ID; receivers check it is the sender
	// Model is the model that Have refers to (the topic's model).
	Model rdrr.ModelID
	// Have is a bitmap over Model's manifest shard table: see Bitmap.
	Have Bitmap
	// Models lists the models the peer holds complete.
	Models      []rdrr.ModelID
	Experts     []Expert
	UploadFree  uint64  // bytes/s the peer can still upload
	PrefillTokS float64 // measured prefill tokens/s, 0 = unknown
	DecodeTokS  float64 // measured decode tokens/s, 0 = unknown
	Seq         uint64  // increases with each announcement of a peer
	TTL         uint32  // seconds the entry stays valid
	// Partial lists the shards the peer holds only partly, by strictly
	// increasing Shard, with the blocks it holds verified (revision 2 of
	// the inventory: a trailing section, written only when not empty, so
	// an inventory without partial shards encodes as revision 1 did).
	Partial []Partial
}

// Partial is a shard an inventory's peer holds only partly: which of its
// blocks the peer holds, verified, and serves.
type Partial struct {
	Shard  uint32 // index in the manifest's shard table (< Have.N, not set in Have)
	Blocks Bitmap // bit b = block b of the shard; at least one set
}

// Bitmap is a set of shard indices: bit i is byte i/8, mask 1<<(i%8).
type Bitmap struct {
	N    int // number of bits (the model's shard count)
	Bits []byte
}

// NewBitmap returns an empty bitmap of n bits.
func NewBitmap(n int) Bitmap { return Bitmap{N: n, Bits: make([]byte, (n+7)/8)} }

// Set sets bit i; out-of-range indices are ignored.
func (b Bitmap) Set(i int) {
	if i >= 0 && i < b.N {
		b.Bits[i/8] |= 1 << (i % 8)
	}
}

// Has reports whether bit i is set.
func (b Bitmap) Has(i int) bool {
	return i >= 0 && i < b.N && i/8 < len(b.Bits) && b.Bits[i/8]&(1<<(i%8)) != 0
}

// valid reports whether the bitmap holds exactly ⌈N/8⌉ bytes with no bit
// set past N.
func (b Bitmap) valid(max int) bool {
	if b.N < 0 || b.N > max || len(b.Bits) != (b.N+7)/8 {
		return false
	}
	r := b.N % 8
	return r == 0 || b.Bits[len(b.Bits)-1]>>r == 0
}

// Any reports whether a bit is set.
func (b Bitmap) Any() bool {
	for _, x := range b.Bits {
		if x != 0 {
			return true
		}
	}
	return false
}

// Count returns the number of set bits.
func (b Bitmap) Count() int {
	c := 0
	for i := 0; i < b.N; i++ {
		if b.Has(i) {
			c++
		}
	}
	return c
}

func (*ManifestRequest) Type() Type  { return TypeManifestRequest }
func (*ManifestResponse) Type() Type { return TypeManifestResponse }
func (*BlocksRequest) Type() Type    { return TypeBlocksRequest }
func (*Block) Type() Type            { return TypeBlock }
func (*End) Type() Type              { return TypeEnd }
func (*Error) Type() Type            { return TypeError }
func (*Inventory) Type() Type        { return TypeInventory }

var errField = errors.New("field out of range")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errField, fmt.Sprintf(format, args...))
}

func (m *ManifestRequest) appendBody(b []byte) ([]byte, error) {
	return append(b, m.ModelID[:]...), nil
}

func (m *ManifestRequest) decode(d *decoder) error {
	m.ModelID = d.hash()
	return nil
}

func (m *ManifestResponse) appendBody(b []byte) ([]byte, error) {
	if len(m.Manifest) == 0 || len(m.Manifest) > MaxManifest {
		return b, bad("manifest of %d bytes", len(m.Manifest))
	}
	if len(m.Sig) > MaxSig {
		return b, bad("signature of %d bytes", len(m.Sig))
	}
	b = appendBytes(b, m.Manifest)
	return appendBytes(b, m.Sig), nil
}

func (m *ManifestResponse) decode(d *decoder) error {
	m.Manifest = d.bytes(1, MaxManifest, "manifest")
	m.Sig = d.bytes(0, MaxSig, "sig")
	if len(m.Sig) == 0 {
		m.Sig = nil
	}
	return nil
}

func (m *BlocksRequest) appendBody(b []byte) ([]byte, error) {
	if m.Count == 0 {
		return b, bad("count 0")
	}
	b = append(b, m.Shard[:]...)
	b = binary.BigEndian.AppendUint32(b, m.First)
	return binary.BigEndian.AppendUint32(b, m.Count), nil
}

func (m *BlocksRequest) decode(d *decoder) error {
	m.Shard = d.hash()
	m.First = d.u32()
	m.Count = d.u32()
	if d.err == nil && m.Count == 0 {
		return fmt.Errorf("%w: count 0", ErrMalformed)
	}
	return nil
}

func (m *Block) appendBody(b []byte) ([]byte, error) {
	if len(m.Data) == 0 || len(m.Data) > MaxBlockData {
		return b, bad("block of %d bytes", len(m.Data))
	}
	if len(m.Proof) > MaxProof {
		return b, bad("proof of %d hashes", len(m.Proof))
	}
	b = binary.BigEndian.AppendUint32(b, m.Index)
	b = appendBytes(b, m.Data)
	b = append(b, byte(len(m.Proof)))
	for _, h := range m.Proof {
		b = append(b, h[:]...)
	}
	return b, nil
}

func (m *Block) decode(d *decoder) error {
	m.Index = d.u32()
	m.Data = d.bytes(1, MaxBlockData, "data")
	n := int(d.u8())
	if n > MaxProof {
		return fmt.Errorf("%w: proof of %d hashes > %d", ErrMalformed, n, MaxProof)
	}
	if !d.need(n * 32) {
		return nil
	}
	m.Proof = nil
	if n > 0 {
		m.Proof = make([]rdrr.Hash, n)
		for i := range m.Proof {
			m.Proof[i] = d.hash()
		}
	}
	return nil
}

func (*End) appendBody(b []byte) ([]byte, error) { return b, nil }
func (*End) decode(*decoder) error               { return nil }

func (m *Error) appendBody(b []byte) ([]byte, error) {
	if m.Code == 0 {
		return b, bad("error code 0")
	}
	msg := m.Msg
	if len(msg) > MaxErrorMsg {
		msg = msg[:MaxErrorMsg]
	}
	msg = toValidUTF8(msg)
	b = binary.BigEndian.AppendUint16(b, m.Code)
	return appendBytes(b, []byte(msg)), nil
}

func (m *Error) decode(d *decoder) error {
	m.Code = d.u16()
	msg := d.bytes(0, MaxErrorMsg, "msg")
	if d.err != nil {
		return nil
	}
	if m.Code == 0 {
		return fmt.Errorf("%w: error code 0", ErrMalformed)
	}
	if !utf8.Valid(msg) {
		return fmt.Errorf("%w: error message is not UTF-8", ErrMalformed)
	}
	m.Msg = string(msg)
	return nil
}

// toValidUTF8 drops bytes that a cut in the middle of a rune left behind.
func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]rune, 0, len(s))
	for _, r := range s {
		if r != utf8.RuneError {
			b = append(b, r)
		}
	}
	return string(b)
}

func (m *Inventory) validate() error {
	if len(m.Peer) == 0 || len(m.Peer) > MaxPeerID || !utf8.ValidString(m.Peer) {
		return bad("peer ID of %d bytes", len(m.Peer))
	}
	if !m.Have.valid(MaxShards) {
		return bad("bitmap of %d bits in %d bytes, or bits set past the end", m.Have.N, len(m.Have.Bits))
	}
	if len(m.Models) > MaxModels {
		return bad("%d models", len(m.Models))
	}
	if len(m.Experts) > MaxExperts {
		return bad("%d experts", len(m.Experts))
	}
	for _, f := range []float64{m.PrefillTokS, m.DecodeTokS} {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return bad("speed %v", f)
		}
	}
	if m.TTL == 0 || m.TTL > MaxTTL {
		return bad("ttl %d", m.TTL)
	}
	if len(m.Partial) > MaxPartials {
		return bad("%d partial shards", len(m.Partial))
	}
	for i, p := range m.Partial {
		if i > 0 && p.Shard <= m.Partial[i-1].Shard {
			return bad("partial shards not strictly increasing at %d", p.Shard)
		}
		if int64(p.Shard) >= int64(m.Have.N) || m.Have.Has(int(p.Shard)) {
			return bad("partial shard %d of %d, or held complete", p.Shard, m.Have.N)
		}
		if p.Blocks.N == 0 || !p.Blocks.valid(MaxPartialBlocks) || !p.Blocks.Any() {
			return bad("partial shard %d: block bitmap of %d bits in %d bytes, empty or with bits set past the end",
				p.Shard, p.Blocks.N, len(p.Blocks.Bits))
		}
	}
	return nil
}

func (m *Inventory) appendBody(b []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, err
	}
	b = appendBytes(b, []byte(m.Peer))
	b = append(b, m.Model[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.Have.N))
	b = append(b, m.Have.Bits...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Models)))
	for _, h := range m.Models {
		b = append(b, h[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Experts)))
	for _, e := range m.Experts {
		b = binary.BigEndian.AppendUint16(b, e.Layer)
		b = binary.BigEndian.AppendUint16(b, e.Expert)
	}
	b = binary.BigEndian.AppendUint64(b, m.UploadFree)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(m.PrefillTokS))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(m.DecodeTokS))
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint32(b, m.TTL)
	if len(m.Partial) == 0 {
		return b, nil // revision 1
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Partial)))
	for _, p := range m.Partial {
		b = binary.BigEndian.AppendUint32(b, p.Shard)
		b = binary.BigEndian.AppendUint32(b, uint32(p.Blocks.N))
		b = append(b, p.Blocks.Bits...)
	}
	return b, nil
}

func (m *Inventory) decode(d *decoder) error {
	m.Peer = string(d.bytes(1, MaxPeerID, "peer"))
	m.Model = d.hash()
	n := d.u32()
	if n > MaxShards {
		return fmt.Errorf("%w: bitmap of %d bits > %d", ErrMalformed, n, MaxShards)
	}
	m.Have = Bitmap{N: int(n)}
	if nb := (int(n) + 7) / 8; d.need(nb) {
		m.Have.Bits = append([]byte{}, d.take(nb)...)
	}
	nm := int(d.u16())
	if nm > MaxModels {
		return fmt.Errorf("%w: %d models > %d", ErrMalformed, nm, MaxModels)
	}
	if d.need(nm * 32) {
		m.Models = nil
		for range nm {
			m.Models = append(m.Models, d.hash())
		}
	}
	ne := d.u32()
	if ne > MaxExperts {
		return fmt.Errorf("%w: %d experts > %d", ErrMalformed, ne, MaxExperts)
	}
	if d.need(int(ne) * 4) {
		m.Experts = nil
		if ne > 0 {
			m.Experts = make([]Expert, ne)
			for i := range m.Experts {
				m.Experts[i] = Expert{Layer: d.u16(), Expert: d.u16()}
			}
		}
	}
	m.UploadFree = d.u64()
	m.PrefillTokS = math.Float64frombits(d.u64())
	m.DecodeTokS = math.Float64frombits(d.u64())
	m.Seq = d.u64()
	m.TTL = d.u32()
	if d.err == nil && len(d.b) > 0 {
		// Revision 2: partial shards (at least one when present).
		np := int(d.u16())
		if d.err == nil && (np == 0 || np > MaxPartials) {
			return fmt.Errorf("%w: %d partial shards (want 1…%d)", ErrMalformed, np, MaxPartials)
		}
		m.Partial = nil
		for range np {
			p := Partial{Shard: d.u32()}
			nb := d.u32()
			if d.err != nil {
				return nil
			}
			if nb > MaxPartialBlocks {
				return fmt.Errorf("%w: partial shard of %d blocks > %d", ErrMalformed, nb, MaxPartialBlocks)
			}
			p.Blocks = Bitmap{N: int(nb)}
			if k := (int(nb) + 7) / 8; d.need(k) {
				p.Blocks.Bits = append([]byte{}, d.take(k)...)
			}
			m.Partial = append(m.Partial, p)
		}
	}
	if d.err != nil {
		return nil
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

func appendBytes(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// decoder reads a body front to back. The first failure sticks in err and
// every later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: need %d bytes, have %d", ErrMalformed, n, len(d.b))
		return false
	}
	return true
}

func (d *decoder) take(n int) []byte {
	if !d.need(n) {
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) hash() (h rdrr.Hash) {
	copy(h[:], d.take(32))
	return h
}

// bytes reads a u32 length and that many bytes, checking [min, max] before
// touching them. The result aliases the body.
func (d *decoder) bytes(min, max int, what string) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n) < uint64(min) || uint64(n) > uint64(max) {
		d.err = fmt.Errorf("%w: %s of %d bytes (want %d…%d)", ErrMalformed, what, n, min, max)
		return nil
	}
	return d.take(int(n))
}

// InventoryRequest asks a peer directly for its current Inventory of a
// model (/doppler/inv/1), so a node that just connected or just followed a
// model need not wait for the next rate-limited gossip round.
type InventoryRequest struct {
	Model rdrr.ModelID
}

func (*InventoryRequest) Type() Type { return TypeInventoryRequest }

func (m *InventoryRequest) appendBody(b []byte) ([]byte, error) {
	return append(b, m.Model[:]...), nil
}

func (m *InventoryRequest) decode(d *decoder) error {
	m.Model = d.hash()
	return nil
}
