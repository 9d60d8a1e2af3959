//go:build cgo || js

package kernels

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestMatMulRegisterBlocked checks matmul_tiled.wgsl against MatMulRef for
// every dtype and register block, at token counts that fill a tile, leave
// one partly empty and span several; odd column counts of the plain floats
// take the scalar x loader.
func TestMatMulRegisterBlocked(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(21, 22))
	blocks := []tiledShape{{4, 4, 32}, {8, 4, 64}, {4, 8, 32}, {8, 8, 32}, {4, 4, 64}}
	for i, dt := range quant.All() {
		cols := matmulCols(dt)
		for j, m := range []int{33, 64, 130} {
			// Rotate shapes and blocks through the dtypes to keep lavapipe fast.
			b := blocks[(i+j)%len(blocks)]
			if matmulTiledStorage(b) > d.Limits().MaxWorkgroupStorage {
				b = tiledShape{4, 4, 32}
			}
			c := matmulCase{dt: dt, rows: []int{7, 65, 300}[(i+j)%3], cols: cols[(i+2*j)%len(cols)], m: m,
				opts: MatMulOpts{tileRN: b.rn, tileTN: b.tn, tileKS: b.ks}}
			t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
		}
	}
	for _, c := range []matmulCase{
		// The default pick, bias, accumulation and split weights.
		{dt: quant.Q4_K, rows: 300, cols: 512, m: 100, bias: true, acc: true},
		{dt: quant.Q6_K, rows: 129, cols: 256, m: 129, maxRows: 70, bias: true},
		{dt: quant.F16, rows: 65, cols: 7, m: 40, acc: true},
		{dt: quant.F32, rows: 200, cols: 258, m: 70, maxRows: 64, bias: true, acc: true},
		{dt: quant.Q8_0, rows: 64, cols: 96, m: 256},
		{dt: quant.Q4_K, rows: 130, cols: 768, m: 90, acc: true, opts: MatMulOpts{tileRN: 4, tileTN: 4, tileKS: 64}},
		{dt: quant.F32, rows: 65, cols: 90, m: 40, opts: MatMulOpts{tileRN: 4, tileTN: 4, tileKS: 64}},
		// The kernel before it, at a size the new one would take.
		{dt: quant.Q4_K, rows: 65, cols: 256, m: 70, opts: MatMulOpts{tileOld: true}},
	} {
		t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
	}
}

// TestMatMulTiledPick checks the register block MatMul takes: the largest
// that still gives the GPU matmulTiledTarget workgroups, none below
// matmulTiledMinM tokens or with tileOld, and errors for bad knobs.
func TestMatMulTiledPick(t *testing.T) {
	d := testDevice(t)
	big := matmulTiledStorage(tiledShape{8, 8, 32}) <= d.Limits().MaxWorkgroupStorage
	w := func(rows ...int) *Weight {
		wt := &Weight{Name: "w", DType: quant.Q4_K, Cols: 4096}
		for _, n := range rows {
			wt.Parts = append(wt.Parts, WeightPart{Row0: wt.Rows, Rows: n})
			wt.Rows += n
		}
		return wt
	}
	for _, c := range []struct {
		name string
		w    *Weight
		m    int
		opts MatMulOpts
		want tiledShape
		ok   bool
	}{
		{"few tokens", w(4096), matmulTiledMinM - 1, MatMulOpts{}, tiledShape{}, false},
		{"old", w(4096), 256, MatMulOpts{tileOld: true}, tiledShape{}, false},
		// 28672 rows × 256 tokens: 224 × 2 = 448 workgroups at 128 × 128.
		{"gate+up 8B", w(28672), 256, MatMulOpts{}, tiledShape{8, 8, 32}, true},
		// 4096 × 256: 32 × 2 = 64 at 128 × 128, 32 × 4 = 128 at 128 × 64, 64 × 4 at 64 × 64.
		{"down 8B", w(4096), 256, MatMulOpts{}, tiledShape{4, 4, 32}, true},
		// 4096 × 512: 32 × 8 = 256 at 128 × 64: not enough either.
		{"q 8B m512", w(4096), 512, MatMulOpts{}, tiledShape{4, 4, 32}, true},
		// Parts count together: 2 × 14336 rows as 2 × 112 × 2.
		{"parts", w(14336, 14336), 256, MatMulOpts{}, tiledShape{8, 8, 32}, true},
		// Nothing reaches the target: the smallest tile, the most workgroups.
		{"small", w(64), 64, MatMulOpts{}, tiledShape{4, 4, 32}, true},
		{"knob", w(64), 64, MatMulOpts{tileRN: 4, tileTN: 8}, tiledShape{4, 8, 32}, true},
		{"knob k64", w(64), 64, MatMulOpts{tileRN: 4, tileTN: 4, tileKS: 64}, tiledShape{4, 4, 64}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := d.matmulTiledPick(c.w, c.m, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if !big && want == (tiledShape{8, 8, 32}) {
				want = tiledShape{8, 4, 32}
			}
			if ok != c.ok || (ok && got != want) {
				t.Errorf("pick = %v, %v; want %v, %v", got, ok, want, c.ok)
			}
		})
	}
	for _, o := range []MatMulOpts{{tileRN: 2, tileTN: 4}, {tileRN: 8}, {tileRN: 8, tileTN: 16}, {tileRN: 4, tileTN: 4, tileKS: 16}} {
		if _, _, err := d.matmulTiledPick(w(64), 64, o); err == nil {
			t.Errorf("register block %d×%d, k step %d accepted", o.tileRN, o.tileTN, o.tileKS)
		}
	}
}

// BenchmarkMatMulPrefill times the prefill matmul (m > 1) on the Q4_K
// weights of the Llama-3-8B and Llama-3.2-1B shapes (out × in: stacked
// q/k/v, o, stacked gate/up, down) at 256 and 512 tokens, per kernel:
// "old" (matmul_tile.wgsl, the kernel before the register-blocked one),
// "default" (what MatMul picks) and each register block rRtT. Ops run back
// to back in one pass and one submit; TFLOP/s counts 2·m·out·in.
func BenchmarkMatMulPrefill(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	type shape struct {
		name       string
		rows, cols int
	}
	shapes := []shape{
		{"8b-qkv", 6144, 4096}, {"8b-o", 4096, 4096}, {"8b-gateup", 28672, 4096}, {"8b-down", 4096, 14336},
		{"1b-qkv", 3072, 2048}, {"1b-o", 2048, 2048}, {"1b-gateup", 16384, 2048}, {"1b-down", 2048, 8192},
	}
	variants := []struct {
		name string
		o    MatMulOpts
	}{
		{"old", MatMulOpts{tileOld: true}}, {"default", MatMulOpts{}},
		{"r4t4", MatMulOpts{tileRN: 4, tileTN: 4}}, {"r8t4", MatMulOpts{tileRN: 8, tileTN: 4}},
		{"r4t8", MatMulOpts{tileRN: 4, tileTN: 8}}, {"r8t8", MatMulOpts{tileRN: 8, tileTN: 8}},
		{"r4t4k64", MatMulOpts{tileRN: 4, tileTN: 4, tileKS: 64}}, {"r8t4k64", MatMulOpts{tileRN: 8, tileTN: 4, tileKS: 64}},
	}
	r := rand.New(rand.NewPCG(23, 24))
	for _, s := range shapes {
		// 64 random rows tiled to rows (quantizing the whole matrix is slow).
		tile := randWeight(r, quant.Q4_K, 64, s.cols)
		data := make([]byte, 0, len(tile)*s.rows/64)
		for len(data) < len(tile)*s.rows/64 {
			data = append(data, tile...)
		}
		w, err := d.UploadWeight("w", quant.Q4_K, s.rows, s.cols, data)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range []int{256, 512} {
			x, _ := d.NewBuffer("x", uint64(m*s.cols*4))
			y, _ := d.NewBuffer("y", uint64(m*s.rows*4))
			d.WriteF32(x, 0, randF32(r, m*s.cols, 1))
			for _, v := range variants {
				if v.o.tileRN > 0 && matmulTiledStorage(tiledShape{v.o.tileRN, v.o.tileTN, cmp.Or(v.o.tileKS, 32)}) > d.Limits().MaxWorkgroupStorage {
					continue
				}
				ops, err := d.MatMul(w, Whole(x), Whole(y), m, v.o)
				if err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("%s/m%d/%s", s.name, m, v.name), func(b *testing.B) {
					e := d.NewEncoder()
					for range b.N {
						e.Run(ops...)
					}
					b.ResetTimer() // time the GPU (and the submit), not the recording
					if _, err := e.SubmitRead(y, 0, 4); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					sec := b.Elapsed().Seconds()
					b.ReportMetric(sec*1e6/float64(b.N), "us/op")
					b.ReportMetric(2*float64(m)*float64(s.rows)*float64(s.cols)*float64(b.N)/sec/1e12, "TFLOP/s")
				})
				releaseOps(ops)
			}
			x.Release()
			y.Release()
		}
		w.Release()
	}
}
