package wire

import (
	"bytes"
	"reflect"
	"testing"
	"unsafe"

	"github.com/doppler-llm/doppler/rdrr"
)

// TestReadMessageBuf: a Block that fits is read into the caller's buffer
// (no allocation per block); other messages, and a Block too large for the
// buffer, get memory of their own and decode exactly as ReadMessage does.
func TestReadMessageBuf(t *testing.T) {
	big := &Block{Index: 9, Data: bytes.Repeat([]byte{7}, 4096), Proof: []rdrr.Hash{h(5)}}
	cases := []struct {
		name    string
		m       Message
		bufSize int
		aliased bool
	}{
		{"block fits", big, BlockFrameBuf, true},
		{"block fits exactly", big, 4 + 4 + 4096 + 1 + 32, true},
		{"block larger than buf", big, 100, false},
		{"manifest never aliases", &ManifestResponse{Manifest: []byte(`{"a":1}`)}, BlockFrameBuf, false},
		{"inventory never aliases", sampleInventory(), BlockFrameBuf, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w bytes.Buffer
			if err := WriteMessage(&w, c.m); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, c.bufSize)
			got, err := ReadMessageBuf(&w, MaxFrame, func() []byte { return buf })
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.m) {
				t.Fatalf("decoded %+v, want %+v", got, c.m)
			}
			var data []byte
			switch m := got.(type) {
			case *Block:
				data = m.Data
			case *ManifestResponse:
				data = m.Manifest
			case *Inventory:
				data = m.Have.Bits
			}
			lo := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
			p := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
			if aliased := p >= lo && p < lo+uintptr(len(buf)); aliased != c.aliased {
				t.Fatalf("data inside the caller's buffer: %v, want %v", aliased, c.aliased)
			}
		})
	}
}

// TestReadMessageBufAllocs: reading a stream of 1 MiB blocks into one
// buffer allocates a few small objects per block, never the block.
func TestReadMessageBufAllocs(t *testing.T) {
	blk := &Block{Index: 1, Data: make([]byte, MaxBlockData), Proof: []rdrr.Hash{h(1), h(2)}}
	frame, err := Marshal(blk)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, BlockFrameBuf)
	r := bytes.NewReader(frame)
	var m testingMem
	m.measure(func() {
		for range 16 {
			r.Reset(frame)
			if _, err := ReadMessageBuf(r, MaxFrame, func() []byte { return buf }); err != nil {
				t.Fatal(err)
			}
		}
	})
	if m.bytes > 16<<10 {
		t.Fatalf("16 blocks of 1 MiB allocated %d bytes", m.bytes)
	}
}

// TestBlockFrame: head ‖ data ‖ tail is exactly the block's frame, and an
// invalid block is refused as AppendFrame refuses it.
func TestBlockFrame(t *testing.T) {
	cases := []struct {
		name string
		b    *Block
		ok   bool
	}{
		{"with a proof", &Block{Index: 7, Data: []byte{0xde, 0xad}, Proof: []rdrr.Hash{h(0x22), h(0x23)}}, true},
		{"no proof", &Block{Index: 0, Data: bytes.Repeat([]byte{1}, 1000)}, true},
		{"empty data", &Block{Index: 1}, false},
		{"proof too long", &Block{Index: 1, Data: []byte{1}, Proof: make([]rdrr.Hash, MaxProof+1)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			head, tail, err := BlockFrame(make([]byte, 64), c.b)
			want, werr := Marshal(c.b)
			if (err == nil) != c.ok || (werr == nil) != c.ok {
				t.Fatalf("BlockFrame: %v, Marshal: %v, want ok=%v", err, werr, c.ok)
			}
			if !c.ok {
				return
			}
			got := append(append(append([]byte(nil), head...), c.b.Data...), tail...)
			if !bytes.Equal(got, want) {
				t.Fatalf("parts %x, want %x", got, want)
			}
		})
	}
}
