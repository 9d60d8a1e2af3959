package wire

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"
)

// fuzzType decodes arbitrary bodies of one type; whatever decodes must
// re-encode to the same bytes and decode to the same message.
// fuzzType fuzzes the decoder of type t, seeded with the seeds of that
// type: whatever decodes must re-encode to the same bytes and survive a
// round trip through Unmarshal with frame limit max.
func fuzzType(f *testing.F, t Type, seeds []Message, max int) {
	for _, m := range seeds {
		if m.Type() == t {
			b, err := Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
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
		m2, err := Unmarshal(b, max)
		if err != nil || !reflect.DeepEqual(m, m2) {
			tt.Fatalf("round trip: %+v vs %+v (%v)", m, m2, err)
		}
	})
}

// knownEncodings checks that each message marshals to its hex and the hex
// unmarshals (frame limit max) to the message.
func knownEncodings(t *testing.T, cases []struct {
	m   Message
	hex string
}, max int) {
	t.Helper()
	for _, c := range cases {
		b, err := Marshal(c.m)
		if err != nil {
			t.Fatalf("%v: %v", c.m.Type(), err)
		}
		if got := hex.EncodeToString(b); got != c.hex {
			t.Errorf("%v:\n got %s\nwant %s", c.m.Type(), got, c.hex)
		}
		want, _ := hex.DecodeString(c.hex)
		m, err := Unmarshal(want, max)
		if err != nil {
			t.Fatalf("%v: decode: %v", c.m.Type(), err)
		}
		if !reflect.DeepEqual(m, c.m) {
			t.Errorf("%v: decoded %+v, want %+v", c.m.Type(), m, c.m)
		}
	}
}

func FuzzDecodeManifestRequest(f *testing.F) {
	fuzzType(f, TypeManifestRequest, samples(), MaxManifestFrame)
}
func FuzzDecodeManifestResponse(f *testing.F) {
	fuzzType(f, TypeManifestResponse, samples(), MaxManifestFrame)
}
func FuzzDecodeBlocksRequest(f *testing.F) {
	fuzzType(f, TypeBlocksRequest, samples(), MaxManifestFrame)
}
func FuzzDecodeBlock(f *testing.F)     { fuzzType(f, TypeBlock, samples(), MaxManifestFrame) }
func FuzzDecodeEnd(f *testing.F)       { fuzzType(f, TypeEnd, samples(), MaxManifestFrame) }
func FuzzDecodeError(f *testing.F)     { fuzzType(f, TypeError, samples(), MaxManifestFrame) }
func FuzzDecodeInventory(f *testing.F) { fuzzType(f, TypeInventory, samples(), MaxManifestFrame) }

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
