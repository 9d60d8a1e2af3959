package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// A minimal GGUF v2/v3 tensor directory, enough to find the raw bytes of
// each tensor in the shared test models. The project's real reader lives in
// rdrr/gguf; this one is kept here so the codec tests stand alone.

// ggufTensor is one tensor's name, ggml type, element count and raw bytes.
type ggufTensor struct {
	name  string
	ggml  uint32
	dims  []uint64
	count int
	data  []byte // nil when the type is unknown to this package
}

// openModel reads a shared GGUF model (testenv.Path: a missing one skips
// the test, or fails it under CI; one that does not parse always fails).
func openModel(t testing.TB, name string) map[string]ggufTensor {
	t.Helper()
	b, err := os.ReadFile(testenv.Path(t, "models/"+name))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := parseGGUF(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return ts
}

type ggufReader struct {
	b   []byte
	off int
	err error
}

func (r *ggufReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || r.off+n > len(r.b) {
		r.err = fmt.Errorf("truncated at offset %d (need %d bytes)", r.off, n)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *ggufReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *ggufReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *ggufReader) str() string { return string(r.take(int(r.u64()))) }

// skipValue skips a metadata value of type t, returning it when it is an
// integer (for general.alignment).
func (r *ggufReader) skipValue(t uint32) uint64 {
	sizes := map[uint32]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	switch t {
	case 8:
		r.str()
		return 0
	case 9:
		et := r.u32()
		n := r.u64()
		for i := uint64(0); i < n && r.err == nil; i++ {
			r.skipValue(et)
		}
		return 0
	}
	sz, ok := sizes[t]
	if !ok {
		r.err = fmt.Errorf("unknown metadata type %d", t)
		return 0
	}
	p := r.take(sz)
	var v uint64
	for i := len(p) - 1; i >= 0; i-- {
		v = v<<8 | uint64(p[i])
	}
	return v
}

func parseGGUF(b []byte) (map[string]ggufTensor, error) {
	r := &ggufReader{b: b}
	if string(r.take(4)) != "GGUF" {
		return nil, errors.New("not a GGUF file")
	}
	if v := r.u32(); v != 2 && v != 3 {
		return nil, fmt.Errorf("GGUF version %d", v)
	}
	nt, nkv := r.u64(), r.u64()
	align := uint64(32)
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		k := r.str()
		v := r.skipValue(r.u32())
		if k == "general.alignment" {
			align = v
		}
	}
	type info struct {
		t   ggufTensor
		off uint64
	}
	var infos []info
	for i := uint64(0); i < nt && r.err == nil; i++ {
		var in info
		in.t.name = r.str()
		nd := r.u32()
		in.t.count = 1
		for range nd {
			d := r.u64()
			in.t.dims = append(in.t.dims, d)
			in.t.count *= int(d)
		}
		in.t.ggml = r.u32()
		in.off = r.u64()
		infos = append(infos, in)
	}
	if r.err != nil {
		return nil, r.err
	}
	base := (uint64(r.off) + align - 1) / align * align
	out := make(map[string]ggufTensor, len(infos))
	for _, in := range infos {
		if d, ok := FromGGML(in.t.ggml); ok {
			n, err := d.RowBytes(in.t.count)
			if err != nil {
				return nil, fmt.Errorf("tensor %s: %w", in.t.name, err)
			}
			start := base + in.off
			if start+uint64(n) > uint64(len(b)) {
				return nil, fmt.Errorf("tensor %s: data past end of file", in.t.name)
			}
			in.t.data = b[start : start+uint64(n)]
		}
		out[in.t.name] = in.t
	}
	return out, nil
}

// decodeTensor dequantizes a tensor of a known type.
func decodeTensor(t testing.TB, tt ggufTensor) []float32 {
	t.Helper()
	d, ok := FromGGML(tt.ggml)
	if !ok {
		t.Fatalf("%s: ggml type %d unknown", tt.name, tt.ggml)
	}
	y := make([]float32, tt.count)
	if err := Dequantize(d, tt.data, y); err != nil {
		t.Fatalf("%s: %v", tt.name, err)
	}
	return y
}

// refEncode encodes x with llama.cpp's reference algorithm for d: Quantize
// for every type but Q4_K, whose exported encoder improves on the reference.
func refEncode(t testing.TB, d DType, x []float32) []byte {
	t.Helper()
	if d != Q4_K {
		b, err := Quantize(d, x)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := make([]byte, len(x)/256*144)
	for i := 0; i < len(x)/256; i++ {
		encodeQ4KSigned(x[256*i:256*i+256], b[144*i:144*i+144], false)
	}
	return b
}

// TestLlamaCppTensors checks the codecs against tensors that llama.cpp
// quantized from the shared F32 models: each decodes to within the type's
// error of the F32 weights (Q8_0 within 1% RMS), and re-encoding the F32
// weights with the llama.cpp reference algorithms gives the file's bytes,
// block for block. That pins every block layout, the f16 and E8M0 scale
// conversions and the quantizers to llama.cpp's real output.
func TestLlamaCppTensors(t *testing.T) {
	maxRelRMS := map[DType]float64{
		F16: 3e-4, Q8_0: 0.01, Q4_0: 0.11, Q5_0: 0.055, Q4_K: 0.08, Q6_K: 0.022, MXFP4: 0.13,
	}
	pairs := []struct{ f32, quant string }{
		{"stories260K.gguf", "stories260K-F16.gguf"},
		{"stories260K.gguf", "stories260K-Q8_0.gguf"},
		{"stories260K.gguf", "stories260K-Q4_0.gguf"},
		{"stories260K.gguf", "stories260K-Q4_K_M.gguf"}, // Q5_0, Q8_0
		{"tiny-mixtral-F32.gguf", "tiny-mixtral-F16.gguf"},
		{"tiny-mixtral-F32.gguf", "tiny-mixtral-Q8_0.gguf"},
		{"tiny-mixtral-F32.gguf", "tiny-mixtral-Q4_K_M.gguf"}, // Q4_K, Q6_K
		{"tiny-gptoss-F32.gguf", "tiny-gptoss-Q8_0.gguf"},
		{"tiny-gptoss-F32.gguf", "tiny-gptoss-MXFP4_MOE.gguf"},
	}
	seen := map[DType]int{}
	for _, p := range pairs {
		ref := openModel(t, p.f32)
		q := openModel(t, p.quant)
		for name, tt := range q {
			d, ok := FromGGML(tt.ggml)
			if !ok {
				t.Errorf("%s %s: unsupported ggml type %d", p.quant, name, tt.ggml)
				continue
			}
			if d == F32 {
				continue
			}
			rt, ok := ref[name]
			if !ok || rt.count != tt.count || rt.ggml != F32.GGML() {
				t.Errorf("%s %s: no F32 counterpart in %s", p.quant, name, p.f32)
				continue
			}
			seen[d]++
			x := decodeTensor(t, rt)
			y := decodeTensor(t, tt)
			if rms, _ := errStats(x, y); rms > maxRelRMS[d] {
				t.Errorf("%s %s (%s): relative RMS error %.5f > %.5f", p.quant, name, d, rms, maxRelRMS[d])
			}
			b := refEncode(t, d, x)
			bb := d.BlockBytes()
			for i := 0; i < len(b); i += bb {
				if string(b[i:i+bb]) != string(tt.data[i:i+bb]) {
					t.Errorf("%s %s (%s): block %d re-encodes to\n% x\nfile has\n% x",
						p.quant, name, d, i/bb, b[i:i+bb], tt.data[i:i+bb])
					break
				}
			}
			if d == Q4_K {
				// The exported encoder must do at least as well as llama.cpp.
				yq := make([]float32, len(x))
				bq, err := Quantize(Q4_K, x)
				if err != nil {
					t.Fatal(err)
				}
				if err := Dequantize(Q4_K, bq, yq); err != nil {
					t.Fatal(err)
				}
				ours, _ := errStats(x, yq)
				theirs, _ := errStats(x, y)
				if ours > theirs {
					t.Errorf("%s %s: Quantize(Q4_K) relative RMS %.5f > llama.cpp's %.5f", p.quant, name, ours, theirs)
				}
			}
		}
	}
	for _, d := range []DType{F16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K, MXFP4} {
		if seen[d] == 0 {
			t.Errorf("no %s tensor checked", d)
		}
	}
	t.Logf("tensors checked per type: %v", seen)
}
