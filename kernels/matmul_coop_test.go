//go:build cgo || js

package kernels

import (
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestMatMulCoop checks matmul_coop.wgsl against MatMulCoopRef for every
// dtype and several tiles, at token and row counts that fill a tile, leave
// one partly empty and span several, with bias, accumulation and split
// weights. Adapters without cooperative matrices (lavapipe) run the
// register-blocked kernel instead, which TestMatMulRegisterBlocked checks.
func TestMatMulCoop(t *testing.T) {
	d := testDevice(t)
	if !d.coopUsable() {
		testenv.Skip(t, "adapter %q has no cooperative matrices (features %v): MatMul runs the register-blocked kernel", d.Info().Name, d.Features().Names())
	}
	r := rand.New(rand.NewPCG(41, 42))
	tiles := []coopShape{{4, 2, 4}, {4, 2, 2}, {4, 1, 2}, {2, 1, 1}, {8, 1, 1}, {2, 4, 2}}
	for i, dt := range quant.All() {
		cols := matmulCols(dt)
		for j, m := range []int{33, 64, 130} {
			c := matmulCase{dt: dt, rows: []int{7, 65, 300}[(i+j)%3], cols: cols[(i+2*j)%len(cols)], m: m,
				opts: MatMulOpts{coop: tiles[(i+j)%len(tiles)]}}
			if c.cols%4 != 0 {
				c.cols = 160
			}
			t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
		}
	}
	for _, c := range []matmulCase{
		{dt: quant.Q4_K, rows: 300, cols: 512, m: 100, bias: true, acc: true},
		{dt: quant.Q6_K, rows: 129, cols: 256, m: 129, maxRows: 70, bias: true},
		{dt: quant.F16, rows: 65, cols: 8, m: 40, acc: true},
		{dt: quant.F32, rows: 200, cols: 256, m: 70, maxRows: 64, bias: true, acc: true},
		{dt: quant.Q8_0, rows: 64, cols: 96, m: 256},
		// A fixed tile takes any m > 1.
		{dt: quant.Q4_K, rows: 130, cols: 256, m: 5, opts: MatMulOpts{coop: coopShape{8, 1, 1}}},
	} {
		t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
	}
}

// TestMatMulCoopTile checks the tile MatMul takes on cooperative matrices
// (pure logic: it runs on every adapter).
func TestMatMulCoopTile(t *testing.T) {
	w := func(rows ...int) *Weight {
		wt := &Weight{Name: "w", DType: quant.Q4_K, Cols: 4096}
		for _, n := range rows {
			wt.Parts = append(wt.Parts, WeightPart{Row0: wt.Rows, Rows: n})
			wt.Rows += n
		}
		return wt
	}
	const storage = 32 << 10
	for _, c := range []struct {
		name  string
		w     *Weight
		m     int
		fixed coopShape
		want  coopShape
	}{
		// 28672 rows × 512 tokens: 224 × 4 workgroups at 128 × 128.
		{"gate+up 8B", w(28672), 512, coopShape{}, coopShape{4, 2, 4}},
		// 4096 × 512: 32 × 4 = 128 at 128 × 128, 32 × 8 = 256 at 128 × 64, 64 × 8 at 64 × 64.
		{"q 8B m512", w(4096), 512, coopShape{}, coopShape{4, 1, 2}},
		{"parts", w(14336, 14336), 512, coopShape{}, coopShape{4, 2, 4}},
		{"small", w(64), 64, coopShape{}, coopShape{4, 1, 2}},
		{"fixed", w(64), 64, coopShape{8, 1, 1}, coopShape{8, 1, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := coopTile(c.w, c.m, c.fixed, storage)
			if err != nil || !ok || got != c.want {
				t.Errorf("tile = %+v, %v, %v; want %+v", got, ok, err, c.want)
			}
		})
	}
	for _, s := range []coopShape{{3, 1, 1}, {4, 0, 1}, {4, 4, 4}, {2, 8, 4}} {
		if _, _, err := coopTile(w(64), 64, s, storage); err == nil {
			t.Errorf("tile %+v accepted", s)
		}
	}
}
