//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// The helpers are exercised by a tiny kernel: invocation i reads bytes at
// byte offset i of `src` and writes u8, u16, u32, f16, bf16, i8 results.
const helpersTestWGSL = `
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= arrayLength(&src) * 4u - 4u) {
        return;
    }
    dst[6u * i + 0u] = src_u8(i);
    dst[6u * i + 1u] = src_u16(i);
    dst[6u * i + 2u] = src_u32(i);
    dst[6u * i + 3u] = bitcast<u32>(src_f16(i));
    dst[6u * i + 4u] = bitcast<u32>(src_bf16(i));
    dst[6u * i + 5u] = bitcast<u32>(i8_to_i32(src_u8(i)));
}
`

func TestHelpersWGSL(t *testing.T) {
	d := testDevice(t)
	p, err := d.Pipeline("test/helpers", helpersWGSL("src")+helpersTestWGSL, "main", []Binding{ReadOnly, Storage})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 256)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	// Some exact f16/bf16 patterns at odd offsets: 1.5 (f16 0x3e00), -2 (bf16 0xc000).
	data[33], data[34] = 0x00, 0x3e
	data[67], data[68] = 0x00, 0xc0
	src, err := d.NewBufferInit("src", data)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Release()
	n := len(data) - 4
	dst, err := d.NewBuffer("dst", uint64(6*n*4))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Release()
	op, err := d.NewOp(p, nil, [3]uint32{uint32((n + 63) / 64), 1, 1}, Whole(src), Whole(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer op.Release()
	e := d.NewEncoder()
	e.Run(op)
	raw, err := e.SubmitRead(dst, 0, dst.Size())
	if err != nil {
		t.Fatal(err)
	}
	got := fromBytes[uint32](raw)
	for i := range n {
		u16 := uint32(binary.LittleEndian.Uint16(data[i:]))
		want := [6]uint32{
			uint32(data[i]),
			u16,
			binary.LittleEndian.Uint32(data[i:]),
			math.Float32bits(f16ToF32(uint16(u16))),
			u16 << 16,
			uint32(int32(int8(data[i]))),
		}
		g := [6]uint32(got[6*i : 6*i+6])
		for k := range want {
			if k == 3 && math.IsNaN(float64(f16ToF32(uint16(u16)))) && math.IsNaN(float64(math.Float32frombits(g[k]))) {
				continue // NaN payloads may differ
			}
			if g[k] != want[k] {
				t.Errorf("offset %d helper %d: got %#x, want %#x", i, k, g[k], want[k])
			}
		}
	}
	if f := math.Float32frombits(got[6*33+3]); f != 1.5 {
		t.Errorf("f16 at offset 33 = %v, want 1.5", f)
	}
	if f := math.Float32frombits(got[6*67+4]); f != -2 {
		t.Errorf("bf16 at offset 67 = %v, want -2", f)
	}
}

// f16ToF32 is the scalar reference for f16 → f32 (subnormals included).
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: man · 2^-24.
	f := float32(man) * (1.0 / (1 << 24))
	if sign != 0 {
		f = -f
	}
	return f
}
