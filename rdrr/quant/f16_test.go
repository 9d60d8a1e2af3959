package quant

import (
	"math"
	"testing"
)

func TestF32ToF16(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"one third", 1.0 / 3, 0x3555},
		{"max", 65504, 0x7bff},
		{"below overflow tie", 65519.996, 0x7bff},
		{"overflow tie to even is inf", 65520, 0x7c00},
		{"overflow", 1e6, 0x7c00},
		{"negative overflow", -1e6, 0xfc00},
		{"smallest normal", 0x1p-14, 0x0400},
		{"largest subnormal", 1023 * 0x1p-24, 0x03ff},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"subnormal tie to even (down)", 0x1p-25, 0x0000},
		{"subnormal just above tie", math.Nextafter32(0x1p-25, 1), 0x0001},
		{"subnormal tie to even (up)", 3 * 0x1p-25, 0x0002},
		{"subnormal rounds into normal", 0x1p-14 - 0x1p-26, 0x0400},
		{"underflow", 0x1p-30, 0x0000},
		{"negative underflow", -0x1p-30, 0x8000},
		{"tie to even (down)", 1 + 0x1p-11, 0x3c00},
		{"tie to even (up)", 1 + 3*0x1p-11, 0x3c02},
		{"above tie", math.Nextafter32(1+0x1p-11, 2), 0x3c01},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
	}
	for _, tt := range tests {
		if got := F32ToF16(tt.in); got != tt.want {
			t.Errorf("%s: F32ToF16(%g) = %#04x, want %#04x", tt.name, tt.in, got, tt.want)
		}
	}
	nan := F32ToF16(float32(math.NaN()))
	if nan&0x7c00 != 0x7c00 || nan&0x3ff == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, not a NaN", nan)
	}
}

func TestF16ToF32(t *testing.T) {
	tests := []struct {
		in   uint16
		want float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x7bff, 65504},
		{0x0400, 0x1p-14},
		{0x0001, 0x1p-24},
		{0x03ff, 1023 * 0x1p-24},
		{0x8001, -0x1p-24},
		{0x3555, 0.333251953125},
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
	}
	for _, tt := range tests {
		if got := F16ToF32(tt.in); got != tt.want {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", tt.in, got, tt.want)
		}
	}
	if got := F16ToF32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("F16ToF32(0x8000) = %g, want -0", got)
	}
	for _, h := range []uint16{0x7e00, 0x7c01, 0xfe00, 0x7fff} {
		if got := F16ToF32(h); !math.IsNaN(float64(got)) {
			t.Errorf("F16ToF32(%#04x) = %g, want NaN", h, got)
		}
	}
}

// TestF16Exhaustive checks every half: decoding then encoding is the
// identity (NaNs stay NaN), and for each pair of neighbouring finite halves
// the float32s just below, at and just above their midpoint round to the
// nearer one, ties to the even one.
func TestF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := F16ToF32(h)
		if math.IsNaN(float64(f)) {
			if g := F32ToF16(f); g&0x7c00 != 0x7c00 || g&0x3ff == 0 || g&0x8000 != h&0x8000 {
				t.Fatalf("NaN %#04x re-encodes to %#04x", h, g)
			}
			continue
		}
		if g := F32ToF16(f); g != h {
			t.Fatalf("F32ToF16(F16ToF32(%#04x) = %g) = %#04x", h, f, g)
		}
	}
	for _, sign := range []uint16{0, 0x8000} {
		for m := uint16(0); m < 0x7bff; m++ {
			lo, hi := sign|m, sign|(m+1)
			a, b := F16ToF32(lo), F16ToF32(hi)
			mid := (a + b) / 2 // exact: halves have 11 significant bits
			even := lo
			if lo&1 == 1 {
				even = hi
			}
			if g := F32ToF16(mid); g != even {
				t.Fatalf("tie %g between %#04x and %#04x → %#04x, want %#04x", mid, lo, hi, g, even)
			}
			if g := F32ToF16(math.Nextafter32(mid, a)); g != lo {
				t.Fatalf("%g (below tie) → %#04x, want %#04x", math.Nextafter32(mid, a), g, lo)
			}
			if g := F32ToF16(math.Nextafter32(mid, b)); g != hi {
				t.Fatalf("%g (above tie) → %#04x, want %#04x", math.Nextafter32(mid, b), g, hi)
			}
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		name string
		bits uint32 // float32 bits in
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"minus one", 0xbf800000, 0xbf80},
		{"pi truncates", 0x40490fdb, 0x4049},
		{"tie to even (down)", 0x3f808000, 0x3f80},
		{"tie to even (up)", 0x3f818000, 0x3f82},
		{"above tie", 0x3f808001, 0x3f81},
		{"max float rounds to inf", 0x7f7fffff, 0x7f80},
		{"largest bf16", 0x7f7f0000, 0x7f7f},
		{"subnormal", 0x00010000, 0x0001},
		{"subnormal tie to even", 0x00018000, 0x0002},
		{"inf", 0x7f800000, 0x7f80},
		{"-inf", 0xff800000, 0xff80},
		{"negative zero", 0x80000000, 0x8000},
	}
	for _, tt := range tests {
		if got := F32ToBF16(math.Float32frombits(tt.bits)); got != tt.want {
			t.Errorf("%s: F32ToBF16(%#08x) = %#04x, want %#04x", tt.name, tt.bits, got, tt.want)
		}
	}
	// A NaN whose payload lies only in the low 16 bits must stay NaN.
	if got := F32ToBF16(math.Float32frombits(0x7f800001)); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("F32ToBF16(sNaN) = %#04x, not a NaN", got)
	}
	for i := range 1 << 16 {
		h := uint16(i)
		f := BF16ToF32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToF32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		if !math.IsNaN(float64(f)) && F32ToBF16(f) != h {
			t.Fatalf("BF16 %#04x does not round-trip", h)
		}
	}
}
