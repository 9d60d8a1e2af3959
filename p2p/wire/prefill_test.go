package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

func prefillSamples() []Message {
	return []Message{
		&PrefillRequest{Model: h(9), KV: KVF16, Tokens: []uint32{1, 403, 407}},
		&PrefillRequest{Model: h(1), KV: KVF32, Tokens: []uint32{0}},
		&PrefillHeader{Positions: 3, KV: KVF16, Encoding: EncodingRaw, KVSize: 120, Payload: 120, Logits: []float32{1.5, -2, 0}},
		&PrefillHeader{Positions: 1, KV: KVF32, Encoding: EncodingFlate, KVSize: 4096, Payload: 10, Logits: []float32{-math.MaxFloat32, 7}},
		&PrefillChunk{Data: []byte("kv bytes")},
	}
}

func TestPrefillRoundTrip(t *testing.T) {
	for _, m := range prefillSamples() {
		b, err := Marshal(m)
		if err != nil {
			t.Fatalf("%v: %v", m.Type(), err)
		}
		got, err := ReadMessage(bytes.NewReader(b), MaxPrefillFrame)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("%v: %+v, %v", m.Type(), got, err)
		}
		if m.Type().String() == "" || m.Type().String()[0] != 'P' {
			t.Fatalf("name %q", m.Type().String())
		}
	}
}

func TestPrefillRejects(t *testing.T) {
	hash := make([]byte, 32)
	bads := []struct {
		name string
		m    Message
	}{
		{"no tokens", &PrefillRequest{KV: KVF16}},
		{"too many tokens", &PrefillRequest{KV: KVF16, Tokens: make([]uint32, MaxPrefillTokens+1)}},
		{"bad kv type", &PrefillRequest{KV: 3, Tokens: []uint32{1}}},
		{"zero positions", &PrefillHeader{KV: KVF16, KVSize: 1, Payload: 1, Logits: []float32{0}}},
		{"raw size mismatch", &PrefillHeader{Positions: 1, KV: KVF16, KVSize: 10, Payload: 9, Logits: []float32{0}}},
		{"compressed larger", &PrefillHeader{Positions: 1, KV: KVF16, Encoding: EncodingFlate, KVSize: 10, Payload: 11, Logits: []float32{0}}},
		{"huge kv", &PrefillHeader{Positions: 1, KV: KVF16, KVSize: MaxKVBytes + 1, Payload: MaxKVBytes + 1, Logits: []float32{0}}},
		{"nan logit", &PrefillHeader{Positions: 1, KV: KVF16, KVSize: 1, Payload: 1, Logits: []float32{float32(math.NaN())}}},
		{"no logits", &PrefillHeader{Positions: 1, KV: KVF16, KVSize: 1, Payload: 1}},
		{"empty chunk", &PrefillChunk{}},
		{"big chunk", &PrefillChunk{Data: make([]byte, MaxChunkData+1)}},
	}
	for _, c := range bads {
		if _, err := Marshal(c.m); err == nil {
			t.Errorf("%s: encoded", c.name)
		}
	}
	frames := []struct {
		name string
		b    []byte
	}{
		{"token count huge", frame(0x20, hash, []byte{1}, be32(0xffffffff))},
		{"tokens truncated", frame(0x20, hash, []byte{1}, be32(3), be32(1))},
		{"logit count huge", frame(0x21, be32(1), []byte{1, 0}, make([]byte, 16), be32(0xffffffff))},
		{"chunk len huge", frame(0x22, be32(0xffffffff))},
	}
	for _, c := range frames {
		if _, err := Unmarshal(c.b, MaxPrefillFrame); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// An oversize header is refused before its body is read.
	big := []byte{0x7f, 0xff, 0xff, 0xff, byte(TypePrefillHeader)}
	if _, err := ReadMessage(bytes.NewReader(big), MaxPrefillFrame); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize header: %v", err)
	}
}

func TestEncodeKV(t *testing.T) {
	zeros := make([]byte, 3<<20)
	enc, p := EncodeKV(zeros)
	if enc != EncodingFlate || len(p) >= len(zeros)/10 {
		t.Fatalf("zeros: encoding %d, %d bytes", enc, len(p))
	}
	back, err := DecodeKV(enc, p, uint64(len(zeros)))
	if err != nil || !bytes.Equal(back, zeros) {
		t.Fatalf("decode: %v", err)
	}
	if _, err := DecodeKV(enc, p, uint64(len(zeros)-1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("inflates past the size: %v", err)
	}
	if _, err := DecodeKV(enc, p, uint64(len(zeros)+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("inflates short: %v", err)
	}
	if _, err := DecodeKV(enc, []byte("garbage"), 100); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
	var rnd []byte
	for i := uint32(1); len(rnd) < 1<<16; i = i*1664525 + 1013904223 {
		rnd = append(rnd, byte(i>>24))
	}
	if enc, p := EncodeKV(rnd); enc != EncodingRaw || &p[0] != &rnd[0] {
		t.Fatalf("random bytes: encoding %d", enc)
	}
}

func FuzzDecodePrefillRequest(f *testing.F) {
	fuzzType(f, TypePrefillRequest, prefillSamples(), MaxManifestFrame)
}
func FuzzDecodePrefillHeader(f *testing.F) {
	fuzzType(f, TypePrefillHeader, prefillSamples(), MaxManifestFrame)
}
func FuzzDecodePrefillChunk(f *testing.F) {
	fuzzType(f, TypePrefillChunk, prefillSamples(), MaxManifestFrame)
}

// FuzzDecodeKV: whatever the payload, decoding never returns other than
// exactly size bytes or an error.
func FuzzDecodeKV(f *testing.F) {
	_, p := EncodeKV(make([]byte, 4096))
	f.Add(p, uint16(4096))
	f.Add([]byte{1, 2, 3}, uint16(3))
	f.Fuzz(func(t *testing.T, payload []byte, size uint16) {
		for _, enc := range []uint8{EncodingRaw, EncodingFlate, 7} {
			out, err := DecodeKV(enc, payload, uint64(size))
			if err == nil && len(out) != int(size) {
				t.Fatalf("encoding %d: %d bytes, want %d", enc, len(out), size)
			}
		}
	})
}
