package wire

import (
	"bytes"
	"reflect"
	"testing"
)

// fuzzType decodes arbitrary bodies of one type; whatever decodes must
// re-encode to the same bytes and decode to the same message.
func fuzzType(f *testing.F, t Type) {
	for _, m := range samples() {
		if m.Type() == t {
			b, _ := Marshal(m)
			f.Add(b[HeaderSize:])
		}
	}
	f.Fuzz(func(tt *testing.T, body []byte) {
		m, err := Decode(t, body)
		if err != nil {
			return
		}
		b, err := Marshal(m)
		if err != nil {
			tt.Fatalf("decoded %+v but cannot encode it: %v", m, err)
		}
		if !bytes.Equal(b[HeaderSize:], body) {
			tt.Fatalf("re-encoding differs:\n in %x\nout %x", body, b[HeaderSize:])
		}
		m2, err := Unmarshal(b, MaxManifestFrame)
		if err != nil || !reflect.DeepEqual(m, m2) {
			tt.Fatalf("round trip: %+v vs %+v (%v)", m, m2, err)
		}
	})
}

func FuzzDecodeManifestRequest(f *testing.F)  { fuzzType(f, TypeManifestRequest) }
func FuzzDecodeManifestResponse(f *testing.F) { fuzzType(f, TypeManifestResponse) }
func FuzzDecodeBlocksRequest(f *testing.F)    { fuzzType(f, TypeBlocksRequest) }
func FuzzDecodeBlock(f *testing.F)            { fuzzType(f, TypeBlock) }
func FuzzDecodeEnd(f *testing.F)              { fuzzType(f, TypeEnd) }
func FuzzDecodeError(f *testing.F)            { fuzzType(f, TypeError) }
func FuzzDecodeInventory(f *testing.F)        { fuzzType(f, TypeInventory) }

// FuzzReadMessage feeds a byte stream to the frame reader.
func FuzzReadMessage(f *testing.F) {
	var all bytes.Buffer
	for _, m := range samples() {
		b, _ := Marshal(m)
		f.Add(b)
		all.Write(b)
	}
	f.Add(all.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for range 64 {
			m, err := ReadMessage(r, MaxFrame)
			if err != nil {
				return
			}
			b, err := Marshal(m)
			if err != nil {
				t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
			}
			if _, err := Unmarshal(b, MaxFrame); err != nil {
				t.Fatal(err)
			}
		}
	})
}
