package wire

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

func h(b byte) (x rdrr.Hash) {
	for i := range x {
		x[i] = b
	}
	return x
}

func sampleInventory() *Inventory {
	have := NewBitmap(10)
	have.Set(0)
	have.Set(9)
	return &Inventory{
		Peer: "12D3KooWpeer", Model: h(0xaa), Have: have,
		Models:     []rdrr.ModelID{h(0xaa)},
		Experts:    []Expert{{Layer: 1, Expert: 7}},
		UploadFree: 1 << 20, PrefillTokS: 1000.5, DecodeTokS: 42, Seq: 3, TTL: 60,
	}
}

func samples() []Message {
	return []Message{
		&ManifestRequest{ModelID: h(1)},
		&ManifestResponse{Manifest: []byte(`{"format":"rdrr/1"}`), Sig: []byte("sig")},
		&ManifestResponse{Manifest: []byte(`{}`)},
		&BlocksRequest{Shard: h(2), First: 5, Count: 3},
		&Block{Index: 4, Data: []byte("hello"), Proof: []rdrr.Hash{h(3), h(4)}},
		&Block{Index: 0, Data: []byte{0}},
		&End{},
		&Error{Code: CodeNotFound, Msg: "no such model"},
		sampleInventory(),
	}
}

func TestKnownEncodings(t *testing.T) {
	cases := []struct {
		m   Message
		hex string
	}{
		{&End{}, "0000000105"},
		{&BlocksRequest{Shard: h(0x11), First: 2, Count: 3},
			"0000002903" + strings.Repeat("11", 32) + "00000002" + "00000003"},
		{&Error{Code: 1, Msg: "no"}, "0000000906" + "0001" + "00000002" + "6e6f"},
		{&Block{Index: 7, Data: []byte{0xde, 0xad}, Proof: []rdrr.Hash{h(0x22)}},
			"0000002c04" + "00000007" + "00000002" + "dead" + "01" + strings.Repeat("22", 32)},
		{&ManifestRequest{ModelID: h(0x33)}, "0000002101" + strings.Repeat("33", 32)},
		{&ManifestResponse{Manifest: []byte("{}")}, "0000000b02" + "00000002" + "7b7d" + "00000000"},
		{&Inventory{Peer: "p", Model: h(0x44), Have: Bitmap{N: 3, Bits: []byte{0x05}}, TTL: 30},
			"0000005507" + "00000001" + "70" + strings.Repeat("44", 32) + "00000003" + "05" + "0000" + "00000000" +
				"0000000000000000" + "0000000000000000" + "0000000000000000" + "0000000000000000" + "0000001e"},
	}
	knownEncodings(t, cases, MaxFrame)
}

func TestRoundTripStream(t *testing.T) {
	var buf bytes.Buffer
	ms := samples()
	for _, m := range ms {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	// An unknown frame in the middle is skipped.
	buf.Write([]byte{0, 0, 0, 4, 0x7f, 1, 2, 3})
	WriteMessage(&buf, &End{})
	for _, want := range append(ms, &End{}) {
		got, err := ReadMessage(&buf, MaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
	if _, err := ReadMessage(&buf, MaxFrame); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

func frame(typ byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	out := []byte{0, 0, 0, 0, typ}
	n := len(b) + 1
	out[0], out[1], out[2], out[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return append(out, b...)
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

func TestHostile(t *testing.T) {
	hash := bytes.Repeat([]byte{9}, 32)
	goodInv, _ := Marshal(sampleInventory())
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty header", []byte{0, 0}, ErrTruncated},
		{"zero length", []byte{0, 0, 0, 0, 5}, ErrMalformed},
		{"oversize length", []byte{0xff, 0xff, 0xff, 0xff, 4}, ErrFrameTooLarge},
		{"just over MaxFrame", append(be32(MaxFrame+1), 4), ErrFrameTooLarge},
		{"truncated body", []byte{0, 0, 0, 10, 4, 1, 2}, ErrTruncated},
		{"short hash", frame(1, hash[:31]), ErrMalformed},
		{"trailing byte", frame(1, hash, []byte{0}), ErrMalformed},
		{"end with body", frame(5, []byte{0}), ErrMalformed},
		{"count 0", frame(3, hash, be32(0), be32(0)), ErrMalformed},
		{"block data len huge", frame(4, be32(0), be32(0xffffffff)), ErrMalformed},
		{"block data len past body", frame(4, be32(0), be32(100), []byte{1}), ErrMalformed},
		{"block empty data", frame(4, be32(0), be32(0), []byte{0}), ErrMalformed},
		{"proof count too big", frame(4, be32(0), be32(1), []byte{1}, []byte{200}), ErrMalformed},
		{"proof truncated", frame(4, be32(0), be32(1), []byte{1}, []byte{2}, hash), ErrMalformed},
		{"manifest empty", frame(2, be32(0), be32(0)), ErrMalformed},
		{"manifest len > max", frame(2, be32(MaxManifest+1)), ErrMalformed},
		{"sig too big", frame(2, be32(1), []byte{'x'}, be32(MaxSig+1)), ErrMalformed},
		{"error code 0", frame(6, []byte{0, 0}, be32(0)), ErrMalformed},
		{"error bad utf8", frame(6, []byte{0, 1}, be32(1), []byte{0xff}), ErrMalformed},
		{"error msg too long", frame(6, []byte{0, 1}, be32(MaxErrorMsg+1)), ErrMalformed},
		{"inventory truncated", goodInv[:len(goodInv)-1], ErrTruncated},
		{"inventory bitmap bits huge", frame(7, be32(1), []byte{'p'}, hash, be32(0xffffffff)), ErrMalformed},
		{"inventory stray bitmap bit", frame(7, be32(1), []byte{'p'}, hash, be32(3), []byte{0x08}, []byte{0, 0}, be32(0),
			make([]byte, 32), be32(30)), ErrMalformed},
		{"inventory models huge", frame(7, be32(1), []byte{'p'}, hash, be32(0), []byte{0xff, 0xff}), ErrMalformed},
		{"inventory experts huge", frame(7, be32(1), []byte{'p'}, hash, be32(0), []byte{0, 0}, be32(0xffffffff)), ErrMalformed},
		{"inventory NaN", frame(7, be32(1), []byte{'p'}, hash, be32(0), []byte{0, 0}, be32(0),
			make([]byte, 8), []byte{0x7f, 0xf8, 0, 0, 0, 0, 0, 1}, make([]byte, 16), be32(30)), ErrMalformed},
		{"inventory ttl 0", frame(7, be32(1), []byte{'p'}, hash, be32(0), []byte{0, 0}, be32(0),
			make([]byte, 32), be32(0)), ErrMalformed},
		{"inventory no peer", frame(7, be32(0)), ErrMalformed},
		{"unknown frame truncated", []byte{0, 0, 0, 9, 0x70, 1}, ErrTruncated},
	}
	for _, c := range cases {
		_, err := ReadMessage(bytes.NewReader(c.in), MaxFrame)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Too many unknown frames in a row.
	var b bytes.Buffer
	for range MaxSkip + 2 {
		b.Write([]byte{0, 0, 0, 1, 0x70})
	}
	if _, err := ReadMessage(&b, MaxFrame); !errors.Is(err, ErrTooManySkips) {
		t.Errorf("skips: %v", err)
	}
}

// A frame that claims a large size but sends nothing must not allocate it.
func TestNoAllocationBeforeData(t *testing.T) {
	in := append(be32(MaxManifestFrame), 2)
	allocs := testing.AllocsPerRun(5, func() {
		ReadMessage(bytes.NewReader(in), MaxManifestFrame)
	})
	var ms testingMem
	ms.measure(func() { ReadMessage(bytes.NewReader(in), MaxManifestFrame) })
	if ms.bytes > 1<<20 {
		t.Errorf("a stalled %d-byte frame allocated %d bytes (%v allocs)", MaxManifestFrame, ms.bytes, allocs)
	}
}

func TestEncodeRejects(t *testing.T) {
	bad := []Message{
		&BlocksRequest{Count: 0},
		&Block{Data: nil},
		&Block{Data: make([]byte, MaxBlockData+1)},
		&Block{Data: []byte{1}, Proof: make([]rdrr.Hash, MaxProof+1)},
		&ManifestResponse{},
		&ManifestResponse{Manifest: []byte{1}, Sig: make([]byte, MaxSig+1)},
		&Error{Code: 0},
		&Inventory{Peer: "", TTL: 1},
		&Inventory{Peer: "p", TTL: 0},
		&Inventory{Peer: "p", TTL: 1, DecodeTokS: math.Inf(1)},
		&Inventory{Peer: "p", TTL: 1, Have: Bitmap{N: 9, Bits: []byte{1}}},
	}
	for _, m := range bad {
		if _, err := Marshal(m); err == nil {
			t.Errorf("%v %+v: encoded", m.Type(), m)
		}
	}
	// Long error messages are cut, keeping UTF-8 valid.
	b, err := Marshal(&Error{Code: 1, Msg: strings.Repeat("é", MaxErrorMsg)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Unmarshal(b, MaxFrame); err != nil {
		t.Fatal(err)
	}
}

func TestBitmap(t *testing.T) {
	b := NewBitmap(17)
	for _, i := range []int{0, 8, 16, -1, 17} {
		b.Set(i)
	}
	if b.Count() != 3 || !b.Has(16) || b.Has(1) || b.Has(17) {
		t.Errorf("bitmap %+v", b)
	}
}
