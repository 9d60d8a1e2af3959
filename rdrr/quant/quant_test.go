package quant

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDTypeTable pins the ggml ids (ggml/include/ggml.h, enum ggml_type) and
// the block geometry (ggml/src/ggml-common.h) of every type.
func TestDTypeTable(t *testing.T) {
	tests := []struct {
		d                 DType
		ggml              uint32
		blockSize, blockB int
	}{
		{F32, 0, 1, 4},
		{F16, 1, 1, 2},
		{BF16, 30, 1, 2},
		{Q8_0, 8, 32, 34},
		{Q4_0, 2, 32, 18},
		{Q5_0, 6, 32, 22},
		{Q4_K, 12, 256, 144},
		{Q6_K, 14, 256, 210},
		{MXFP4, 39, 32, 17},
	}
	if len(tests) != len(All()) {
		t.Fatalf("table has %d types, All() %d", len(tests), len(All()))
	}
	for _, tt := range tests {
		if g := tt.d.GGML(); g != tt.ggml {
			t.Errorf("%s.GGML() = %d, want %d", tt.d, g, tt.ggml)
		}
		if d, ok := FromGGML(tt.ggml); !ok || d != tt.d {
			t.Errorf("FromGGML(%d) = %s, %v", tt.ggml, d, ok)
		}
		if tt.d.BlockSize() != tt.blockSize || tt.d.BlockBytes() != tt.blockB {
			t.Errorf("%s: block %d values / %d bytes, want %d / %d",
				tt.d, tt.d.BlockSize(), tt.d.BlockBytes(), tt.blockSize, tt.blockB)
		}
	}
	for _, id := range []uint32{3, 7, 9, 10, 11, 13, 15, 20, 31, 40} {
		if d, ok := FromGGML(id); ok {
			t.Errorf("FromGGML(%d) = %s, want unsupported", id, d)
		}
	}
}

// Data generators for the round-trip tests, one value per call.
type gen func(r *rand.Rand, i int) float32

var (
	genNormal   gen = func(r *rand.Rand, _ int) float32 { return float32(r.NormFloat64()) }
	genPositive gen = func(r *rand.Rand, _ int) float32 { return 0.05 + float32(math.Abs(r.NormFloat64())) }
	genMixed    gen = func(r *rand.Rand, i int) float32 { // alternating halves of ± offset data
		if i/16%2 == 0 {
			return 3 + float32(r.Float64())
		}
		return -1 + 2*float32(r.Float64())
	}
	genConst gen = func(*rand.Rand, int) float32 { return 3.7 }
	genZero  gen = func(*rand.Rand, int) float32 { return 0 }
	genTiny  gen = func(r *rand.Rand, _ int) float32 { return 1e-3 * float32(r.NormFloat64()) }
	genLarge gen = func(r *rand.Rand, _ int) float32 { return 1e3 * float32(r.NormFloat64()) }
)

func fill(n int, g gen, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	x := make([]float32, n)
	for i := range x {
		x[i] = g(r, i)
	}
	return x
}

// errStats returns the RMS error relative to the RMS of x (0 when both are
// 0) and the largest absolute error relative to the largest |x|.
func errStats(x, y []float32) (relRMS, relMax float64) {
	var se, sx, me, mx float64
	for i := range x {
		e := math.Abs(float64(y[i]) - float64(x[i]))
		se += e * e
		sx += float64(x[i]) * float64(x[i])
		me = max(me, e)
		mx = max(mx, math.Abs(float64(x[i])))
	}
	if sx == 0 {
		if se == 0 {
			return 0, 0
		}
		return math.Inf(1), math.Inf(1)
	}
	return math.Sqrt(se / sx), me / mx
}

func roundTrip(t *testing.T, d DType, x []float32) []float32 {
	t.Helper()
	b, err := Quantize(d, x)
	if err != nil {
		t.Fatalf("Quantize(%s): %v", d, err)
	}
	if n, _ := d.RowBytes(len(x)); len(b) != n {
		t.Fatalf("Quantize(%s) gave %d bytes, want %d", d, len(b), n)
	}
	y := make([]float32, len(x))
	if err := Dequantize(d, b, y); err != nil {
		t.Fatalf("Dequantize(%s): %v", d, err)
	}
	return y
}

// TestRoundTrip bounds the error of Quantize then Dequantize for every type
// on several kinds of data. The bounds are relative: RMS error over RMS
// value, and largest error over largest |value|. The max bounds follow from
// the formats (e.g. Q4_0 can clip the side opposite its extreme by one step
// of amax/8; MXFP4 clips values that scale into (6, 8) down to 6, up to
// amax/4); the RMS bounds are about 1.3× what the llama.cpp algorithms reach
// on normal data (1.1× for MXFP4 on the mixed blocks, where it is weakest).
func TestRoundTrip(t *testing.T) {
	type bound struct{ rms, max float64 }
	bounds := map[DType]bound{
		F32:   {0, 0},
		F16:   {3e-4, 1.0 / 2048},
		BF16:  {2.5e-3, 1.0 / 256},
		Q8_0:  {0.008, 0.0045},
		Q4_0:  {0.11, 0.13},
		Q5_0:  {0.055, 0.066},
		Q4_K:  {0.09, 0.2},
		Q6_K:  {0.023, 0.06},
		MXFP4: {0.18, 0.2501},
	}
	gens := []struct {
		name string
		g    gen
	}{
		{"normal", genNormal},
		{"positive", genPositive},
		{"mixed", genMixed},
		{"tiny", genTiny},
		{"large", genLarge},
	}
	for _, d := range All() {
		for gi, g := range gens {
			t.Run(d.String()+"/"+g.name, func(t *testing.T) {
				x := fill(256*16, g.g, uint64(gi))
				y := roundTrip(t, d, x)
				rms, mx := errStats(x, y)
				b := bounds[d]
				if rms > b.rms || mx > b.max {
					t.Errorf("relative RMS error %.5f (bound %.5f), max error %.5f (bound %.5f)", rms, b.rms, mx, b.max)
				}
			})
		}
	}
}

// TestRoundTripExact covers blocks every type must reproduce (almost)
// exactly: zeros decode to exact zeros and a constant block to the constant
// within the f16 rounding of its scale. MXFP4 is the exception for the
// constant: 3.7 scales to 7.4 and the nearest E2M1 value is 6.
func TestRoundTripExact(t *testing.T) {
	for _, d := range All() {
		y := roundTrip(t, d, fill(512, genZero, 0))
		for i, v := range y {
			if v != 0 {
				t.Fatalf("%s: zeros decode to %g at %d", d, v, i)
			}
		}
		want := float32(3.7)
		tol := float32(3.7 / 1024)
		if d == MXFP4 {
			want, tol = 3, 0
		}
		y = roundTrip(t, d, fill(512, genConst, 0))
		for i, v := range y {
			if abs32(v-want) > tol {
				t.Fatalf("%s: constant 3.7 decodes to %g at %d", d, v, i)
			}
		}
	}
}

// TestQ4KOffsetSubBlocks checks that Q4_K keeps the offset of one-signed
// sub-blocks. llama.cpp's reference fit clamps every min to ≤ 0, so data in
// [10, 11] is coded on [0, 11] with steps of 0.73; this package keeps the
// offset (through a negative dmin) and must reach well under a tenth of the
// range.
func TestQ4KOffsetSubBlocks(t *testing.T) {
	tests := []struct {
		name      string
		lo, hi    float32
		maxFrac   float64 // bound on the largest error, over the range
		wantNegDm bool    // a positive offset needs dmin < 0
		refLoses  float64 // the reference's RMS error is at least this × ours
	}{
		{"uniform [10,11]", 10, 11, 0.1, true, 5},
		{"uniform [-11,-10]", -11, -10, 0.1, false, 1},
		{"uniform [0.5,1]", 0.5, 1, 0.1, true, 2},
		// Offsets are coded in steps of dmin = 1010/63 ≈ 1.6× the range, so
		// the levels must span more than the data.
		{"uniform [1000,1010]", 1000, 1010, 0.2, true, 10},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			x := make([]float32, 256*32)
			for i := range x {
				x[i] = tt.lo + (tt.hi-tt.lo)*r.Float32()
			}
			b, err := Quantize(Q4_K, x)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := Dequantize(Q4_K, b, y); err != nil {
				t.Fatal(err)
			}
			rng := float64(tt.hi - tt.lo)
			var se, me float64
			for i := range x {
				e := math.Abs(float64(y[i] - x[i]))
				se += e * e
				me = max(me, e)
			}
			rms := math.Sqrt(se / float64(len(x)))
			// 4-bit levels over the range give about range/15/√12 = 0.019.
			if rms > 0.025*rng || me > tt.maxFrac*rng {
				t.Errorf("RMS error %.4f, max %.4f; want < %.4f and < %.4f", rms, me, 0.025*rng, tt.maxFrac*rng)
			}
			for blk := 0; blk < len(b); blk += 144 {
				if dm := f16At(b[blk+2:]); (dm < 0) != tt.wantNegDm {
					t.Fatalf("block %d: dmin %g", blk/144, dm)
				}
			}
			// The llama.cpp reference alone: fine for negative offsets, but it
			// drops positive ones (an error of several steps).
			var ref [144]byte
			var yr [256]float32
			var seRef float64
			for i := 0; i < len(x); i += 256 {
				encodeQ4KSigned(x[i:i+256], ref[:], false)
				decodeQ4K(ref[:], yr[:])
				for k := range 256 {
					e := float64(yr[k] - x[i+k])
					seRef += e * e
				}
			}
			rmsRef := math.Sqrt(seRef / float64(len(x)))
			if rmsRef < tt.refLoses*rms {
				t.Errorf("reference RMS %.4f vs %.4f: expected the reference to lose the offset", rmsRef, rms)
			}
			t.Logf("RMS %.4f (llama.cpp reference %.4f), max %.4f", rms, rmsRef, me)
		})
	}
}

// TestQ4KRefineNeverWorse checks that the refinement and candidate search
// on top of llama.cpp's Q4_K never increase a block's squared error.
func TestQ4KRefineNeverWorse(t *testing.T) {
	for gi, g := range []gen{genNormal, genPositive, genMixed, genTiny, genLarge} {
		x := fill(256*64, g, uint64(100+gi))
		var ref, got [144]byte
		for i := 0; i < len(x); i += 256 {
			xs := x[i : i+256]
			encodeQ4KSigned(xs, ref[:], false)
			encodeQ4K(xs, got[:])
			if r, g := blockSSE(decodeQ4K, ref[:], xs), blockSSE(decodeQ4K, got[:], xs); g > r {
				t.Fatalf("generator %d block %d: SSE %g > reference %g", gi, i/256, g, r)
			}
		}
	}
}

// f16 bit patterns used by the known-vector tests.
const (
	hQuarter   = 0x3400
	hHalf      = 0x3800
	hOne       = 0x3c00
	hTwo       = 0x4000
	hMinusHalf = 0xb800
)

func le16(h uint16) []byte { return binary.LittleEndian.AppendUint16(nil, h) }

func decodeOne(t *testing.T, d DType, blk []byte) []float32 {
	t.Helper()
	if len(blk) != d.BlockBytes() {
		t.Fatalf("%s block is %d bytes, want %d", d, len(blk), d.BlockBytes())
	}
	y := make([]float32, d.BlockSize())
	if err := Dequantize(d, blk, y); err != nil {
		t.Fatal(err)
	}
	return y
}

func expectValues(t *testing.T, d DType, got []float32, want func(i int) float32) {
	t.Helper()
	for i, g := range got {
		if w := want(i); g != w && !(math.IsNaN(float64(g)) && math.IsNaN(float64(w))) {
			t.Errorf("%s value %d = %g, want %g", d, i, g, w)
		}
	}
}

func TestKnownQ8_0(t *testing.T) {
	blk := le16(hHalf)
	for j := range 32 {
		blk = append(blk, byte(int8(-128+8*j))) // -128, -120, …, 120
	}
	y := decodeOne(t, Q8_0, blk)
	expectValues(t, Q8_0, y, func(i int) float32 { return 0.5 * float32(-128+8*i) })
	if y[0] != -64 || y[31] != 60 {
		t.Errorf("ends %g, %g; want -64, 60", y[0], y[31])
	}
}

func TestKnownQ4_0(t *testing.T) {
	// Byte j: low nibble j (value j), high nibble 15−j (value j+16); d = 2.
	blk := le16(hTwo)
	for j := range 16 {
		blk = append(blk, byte(j)|byte(15-j)<<4)
	}
	y := decodeOne(t, Q4_0, blk)
	want := []float32{-16, -14, -12, -10, -8, -6, -4, -2, 0, 2, 4, 6, 8, 10, 12, 14,
		14, 12, 10, 8, 6, 4, 2, 0, -2, -4, -6, -8, -10, -12, -14, -16}
	expectValues(t, Q4_0, y, func(i int) float32 { return want[i] })
}

func TestKnownQ5_0(t *testing.T) {
	// d = 1; qh = 0xF0F0F0F0 sets the fifth bit of values 4–7, 12–15,
	// 20–23 and 28–31; every low nibble is 3 (value j) and 12 (value j+16).
	blk := append(le16(hOne), 0xf0, 0xf0, 0xf0, 0xf0)
	for range 16 {
		blk = append(blk, 0xc3)
	}
	y := decodeOne(t, Q5_0, blk)
	expectValues(t, Q5_0, y, func(i int) float32 {
		q := 3
		if i >= 16 {
			q = 12
		}
		if i%8 >= 4 {
			q += 16
		}
		return float32(q - 16)
	})
	if y[0] != -13 || y[4] != 3 || y[16] != -4 || y[31] != 12 {
		t.Errorf("spot values %g %g %g %g", y[0], y[4], y[16], y[31])
	}
}

// The Q4_K known block: 6-bit scales and mins chosen to exercise the high
// bits of the packing, packed by hand following get_scale_min_k4.
var (
	knownQ4KSc = [8]uint8{1, 17, 33, 63, 5, 20, 40, 63}
	knownQ4KM  = [8]uint8{0, 1, 2, 3, 60, 30, 16, 63}
	// bytes 0–3: sc[j] | (sc[j+4]>>4)<<6; 4–7: m[j] | (m[j+4]>>4)<<6;
	// 8–11: sc[j+4]&15 | (m[j+4]&15)<<4.
	knownQ4KScales = []byte{0x01, 0x51, 0xa1, 0xff, 0xc0, 0x41, 0x42, 0xc3, 0xc5, 0xe4, 0x08, 0xff}
)

func knownQ4KBlock(dmin uint16) []byte {
	blk := append(le16(hOne), le16(dmin)...)
	blk = append(blk, knownQ4KScales...)
	// qs byte 32k+l: low nibble l%16 (sub-block 2k), high nibble 15−l%16
	// (sub-block 2k+1).
	for range 4 {
		for l := range 32 {
			blk = append(blk, byte(l%16)|byte(15-l%16)<<4)
		}
	}
	return blk
}

func TestKnownQ4K(t *testing.T) {
	for j := range 8 {
		sc, m := scaleMinK4(j, knownQ4KScales)
		if sc != knownQ4KSc[j] || m != knownQ4KM[j] {
			t.Errorf("scaleMinK4(%d) = %d, %d; want %d, %d", j, sc, m, knownQ4KSc[j], knownQ4KM[j])
		}
	}
	var packed [12]byte
	packScaleMinK4(packed[:], &knownQ4KSc, &knownQ4KM)
	if string(packed[:]) != string(knownQ4KScales) {
		t.Errorf("packScaleMinK4 = % x, want % x", packed, knownQ4KScales)
	}
	for _, tt := range []struct {
		name string
		dmin uint16
		dm   float32
	}{{"dmin 0.5", hHalf, 0.5}, {"dmin -0.5", hMinusHalf, -0.5}} {
		y := decodeOne(t, Q4_K, knownQ4KBlock(tt.dmin))
		expectValues(t, Q4_K, y, func(i int) float32 {
			s, l := i/32, i%32
			q := l % 16
			if s%2 == 1 {
				q = 15 - q
			}
			return float32(knownQ4KSc[s])*float32(q) - tt.dm*float32(knownQ4KM[s])
		})
		if tt.dm > 0 && (y[32] != 254.5 || y[128] != -30 || y[224] != 913.5 || y[255] != -31.5) {
			t.Errorf("%s: spot values %g %g %g %g", tt.name, y[32], y[128], y[224], y[255])
		}
	}
}

func TestKnownQ6K(t *testing.T) {
	// In each half, ql[l] = 0x31 and ql[l+32] = 0x42, qh[l] = 0xE4, so the
	// four values sharing l have q = 1, 2|1<<4, 3|2<<4, 4|3<<4 = 1, 18, 35,
	// 52, i.e. q−32 = −31, −14, 3, 20. Scales are 1, −2, 3, −4, …; d = ¼.
	blk := make([]byte, 0, 210)
	for range 2 {
		for range 32 {
			blk = append(blk, 0x31)
		}
		for range 32 {
			blk = append(blk, 0x42)
		}
	}
	for range 64 {
		blk = append(blk, 0xe4)
	}
	var sc [16]int8
	for i := range sc {
		sc[i] = int8((i + 1) * (1 - 2*(i%2)))
		blk = append(blk, byte(sc[i]))
	}
	blk = append(blk, le16(hQuarter)...)
	y := decodeOne(t, Q6_K, blk)
	qm32 := [4]float32{-31, -14, 3, 20}
	expectValues(t, Q6_K, y, func(i int) float32 {
		// value i of the super-block: half i/128, position p within it.
		p := i % 128
		return 0.25 * float32(sc[i/16]) * qm32[p/32]
	})
	if y[0] != -7.75 || y[16] != 15.5 || y[255] != -80 {
		t.Errorf("spot values %g %g %g", y[0], y[16], y[255])
	}
}

func TestKnownMXFP4(t *testing.T) {
	e2m1 := []float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}
	for q := range 16 {
		if v := E2M1ToF32(uint8(q)); v != e2m1[q] || math.Signbit(float64(v)) != (q >= 8) {
			t.Errorf("E2M1ToF32(%d) = %g, want %g", q, v, e2m1[q])
		}
	}
	for _, tt := range []struct {
		e     uint8
		scale float32
	}{{127, 1}, {128, 2}, {130, 8}, {120, 0x1p-7}, {1, 0x1p-126}, {0, 0x1p-127}, {254, 0x1p127}} {
		if s := E8M0ToF32(tt.e); s != tt.scale {
			t.Errorf("E8M0ToF32(%d) = %g, want %g", tt.e, s, tt.scale)
		}
		// Byte j holds codes j (low) and 15−j (high).
		blk := []byte{tt.e}
		for j := range 16 {
			blk = append(blk, byte(j)|byte(15-j)<<4)
		}
		y := decodeOne(t, MXFP4, blk)
		expectValues(t, MXFP4, y, func(i int) float32 {
			if i < 16 {
				return e2m1[i] * tt.scale
			}
			return e2m1[15-(i-16)] * tt.scale
		})
	}
	// Scale byte 128 (×2): the codes 0..15 give 0, 1, 2, 3, 4, 6, 8, 12 and
	// their negatives.
	blk := []byte{128}
	for j := range 16 {
		blk = append(blk, byte(j))
	}
	y := decodeOne(t, MXFP4, blk)
	want := []float32{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}
	expectValues(t, MXFP4, y[:16], func(i int) float32 { return want[i] })
	expectValues(t, MXFP4, y[16:], func(int) float32 { return 0 })
}

// TestQuantizeKnown checks encoder outputs that follow from the llama.cpp
// reference algorithms by hand.
func TestQuantizeKnown(t *testing.T) {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i - 16) // −16..15: amax 16
	}
	b, _ := Quantize(Q8_0, x)
	if d := f16At(b); d != F16ToF32(F32ToF16(16.0/127)) {
		t.Errorf("Q8_0 d = %g", d)
	}
	if int8(b[2]) != -127 || b[2+16] != 0 || int8(b[2+31]) != 119 {
		t.Errorf("Q8_0 qs %d %d %d", int8(b[2]), b[18], int8(b[33]))
	}
	// Q4_0: the extreme −16 maps to code 0 (value −8·d), d = −16/−8 = 2.
	b, _ = Quantize(Q4_0, x)
	if d := f16At(b); d != 2 || b[2]&0x0f != 0 {
		t.Errorf("Q4_0 d = %g, first code %d", d, b[2]&0x0f)
	}
	// MXFP4: amax 16 → e = floor(log2 16) − 2 + 127 = 129 (scale 4); 15/4 =
	// 3.75 rounds to code 6 (value 4) and −16/4 = −4 is code 14.
	b, _ = Quantize(MXFP4, x)
	if b[0] != 129 || b[1]&0x0f != 14 || b[16]>>4 != 6 {
		t.Errorf("MXFP4 e %d, codes %d %d", b[0], b[1]&0x0f, b[16]>>4)
	}
}

func TestErrors(t *testing.T) {
	for _, d := range All() {
		bs := d.BlockSize()
		n, _ := d.RowBytes(2 * bs)
		if err := Dequantize(d, make([]byte, n-1), make([]float32, 2*bs)); !errors.Is(err, ErrShortSource) {
			t.Errorf("%s short source: %v", d, err)
		}
		if err := Dequantize(d, make([]byte, n+5), make([]float32, 2*bs)); err != nil {
			t.Errorf("%s longer source: %v", d, err)
		}
		if bs > 1 {
			if err := Dequantize(d, make([]byte, n), make([]float32, bs+1)); !errors.Is(err, ErrLength) {
				t.Errorf("%s partial block: %v", d, err)
			}
			if _, err := Quantize(d, make([]float32, bs-1)); !errors.Is(err, ErrLength) {
				t.Errorf("%s quantize partial block: %v", d, err)
			}
			x := make([]float32, bs)
			x[bs-1] = float32(math.NaN())
			if _, err := Quantize(d, x); !errors.Is(err, ErrNonFinite) {
				t.Errorf("%s NaN: %v", d, err)
			}
			x[bs-1] = float32(math.Inf(-1))
			if _, err := Quantize(d, x); !errors.Is(err, ErrNonFinite) {
				t.Errorf("%s -Inf: %v", d, err)
			}
		}
		if err := QuantizeTo(d, make([]byte, n-1), make([]float32, 2*bs)); !errors.Is(err, ErrShortDest) {
			t.Errorf("%s short destination: %v", d, err)
		}
		if b, err := Quantize(d, nil); err != nil || len(b) != 0 {
			t.Errorf("%s empty: %v, %d bytes", d, err, len(b))
		}
	}
	if err := Dequantize(Invalid, nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("invalid dtype: %v", err)
	}
	if _, err := Quantize(DType(200), nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("dtype 200: %v", err)
	}
}
