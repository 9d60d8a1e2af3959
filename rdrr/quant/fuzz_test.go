package quant

import (
	"math"
	"testing"
)

// FuzzDequantize feeds arbitrary bytes to every decoder: the first byte
// picks the type, the second how many blocks to ask for (possibly more than
// the bytes hold). Decoding must never panic, must fail exactly when the
// bytes are too few, and any finite result must re-encode and decode.
func FuzzDequantize(f *testing.F) {
	for _, d := range All() {
		n, _ := d.RowBytes(d.BlockSize())
		f.Add(append([]byte{byte(d), 1}, make([]byte, n)...))
	}
	f.Add(append([]byte{byte(Q4_K), 1, 0x00, 0x7c, 0xff, 0xfb}, knownQ4KScales...))
	f.Add(append([]byte{byte(MXFP4), 2, 255}, make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		all := All()
		d := all[int(data[0])%len(all)]
		blocks := int(data[1] % 8)
		src := data[2:]
		dst := make([]float32, blocks*d.BlockSize())
		need, _ := d.RowBytes(len(dst))
		err := Dequantize(d, src, dst)
		if (err != nil) != (len(src) < need) {
			t.Fatalf("%s: %d blocks from %d bytes: err %v", d, blocks, len(src), err)
		}
		if err != nil {
			return
		}
		for _, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return
			}
		}
		b, err := Quantize(d, dst)
		if err != nil {
			t.Fatalf("%s: re-encoding decoded values: %v", d, err)
		}
		if err := Dequantize(d, b, dst); err != nil {
			t.Fatalf("%s: decoding re-encoded values: %v", d, err)
		}
	})
}

// benchValues returns n normal-ish values for the benchmarks.
func benchValues(n int) []float32 { return fill(n, genNormal, 42) }

func BenchmarkDequantize(b *testing.B) {
	const n = 1 << 16
	x := benchValues(n)
	for _, d := range All() {
		b.Run(d.String(), func(b *testing.B) {
			src, err := Quantize(d, x)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]float32, n)
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if err := Dequantize(d, src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDequantizeQ4K is the Q4_K decoder on 1M values (the hot path of
// the CPU reference): bytes/s are encoded bytes read.
func BenchmarkDequantizeQ4K(b *testing.B) {
	const n = 1 << 20
	src, err := Quantize(Q4_K, benchValues(n))
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]float32, n)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := Dequantize(Q4_K, src, dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQuantize(b *testing.B) {
	const n = 1 << 14
	x := benchValues(n)
	for _, d := range All() {
		b.Run(d.String(), func(b *testing.B) {
			dst := make([]byte, func() int { m, _ := d.RowBytes(n); return m }())
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := QuantizeTo(d, dst, x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
