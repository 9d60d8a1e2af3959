//go:build cgo || js

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestMatMulGated: a gated product (MatMulOpts.Gated) of n vectors gives
// bit for bit what MatMul of each vector into a buffer and then GatedAct
// give — so fusing it changes no token — and agrees with the references.
func TestMatMulGated(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(31, 32))
	cases := []struct {
		dt        quant.DType
		ffn, cols int
		n         int
		act       Act
		xPad      int
	}{
		{quant.Q4_K, 37, 512, 1, SiLU, 0},
		{quant.Q4_K, 40, 4608, 8, SiLU, 0}, // two units a step
		{quant.Q6_K, 19, 512, 3, GELUTanh, 0},
		{quant.Q6_K, 9, 4608, 1, SwiGLUOAI, 0},
		{quant.Q8_0, 33, 160, 5, SiLU, 32},
		{quant.Q8_0, 6, 4128, 2, SwiGLUOAI, 0},
		{quant.F16, 21, 1032, 4, GELUTanh, 8},
		{quant.F16, 3, 2056, 16, SiLU, 0},
	}
	// Some cases again with the batched kernel in row groups (rowGroups),
	// against the same MatMul + GatedAct.
	groups := map[int]int{1: 4, 3: 2, 6: 3}
	for i, c := range cases {
		name := fmt.Sprintf("%s/ffn%d/cols%d/n%d/%v", c.dt, c.ffn, c.cols, c.n, c.act)
		g := groups[i]
		if g > 1 {
			name += fmt.Sprintf("/g%d", g)
		}
		t.Run(name, func(t *testing.T) {
			rows := 2 * c.ffn
			data := randWeight(r, c.dt, rows, c.cols)
			w, err := d.UploadWeight("gate_up", c.dt, rows, c.cols, data)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Release()
			if !w.CanGate() {
				t.Fatalf("%s %dx%d cannot gate", c.dt, rows, c.cols)
			}
			xs := c.cols + c.xPad
			x := randF32(r, c.n*xs, 1)
			buf := func(name string, v []float32, n int) *Buffer {
				var b *Buffer
				var err error
				if v != nil {
					b, err = d.NewBufferInit(name, asBytes(v))
				} else {
					b, err = d.NewBuffer(name, uint64(n*4))
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(b.Release)
				return b
			}
			xb := buf("x", x, 0)
			fused := buf("h", nil, c.n*c.ffn)
			gu := buf("gate_up", nil, rows)
			h := buf("h alone", nil, c.ffn)
			one := buf("x alone", nil, c.cols)

			ops, err := d.MatMulBatch(w, Whole(xb), Whole(fused), c.n, BatchOpts{MatMulOpts: MatMulOpts{Gated: true, Act: c.act, vecGroups: g}, XStride: xs})
			if err != nil {
				t.Fatal(err)
			}
			defer releaseOps(ops)
			e := d.NewEncoder()
			e.Run(ops...)
			raw, err := e.SubmitRead(fused, 0, uint64(c.n*c.ffn*4))
			if err != nil {
				t.Fatal(err)
			}
			got := fromBytes[float32](raw)

			// Each vector alone: MatMul, then GatedAct.
			mm, err := d.MatMul(w, Whole(one), Whole(gu), 1, MatMulOpts{})
			if err != nil {
				t.Fatal(err)
			}
			defer releaseOps(mm)
			act, err := d.GatedAct(Whole(gu), Whole(h), 1, c.ffn, rows, c.ffn, c.act)
			if err != nil {
				t.Fatal(err)
			}
			defer act.Release()
			for b := range c.n {
				xv := x[b*xs : b*xs+c.cols]
				if err := d.WriteF32(one, 0, xv); err != nil {
					t.Fatal(err)
				}
				e := d.NewEncoder()
				e.Run(mm...)
				e.Run(act)
				raw, err := e.SubmitRead(h, 0, uint64(c.ffn*4))
				if err != nil {
					t.Fatal(err)
				}
				alone := fromBytes[float32](raw)
				ref := GatedActRef(MatMulRef(c.dt, data, rows, c.cols, xv, 1, nil, nil), 1, c.ffn, rows, c.ffn, c.act)
				for i := range c.ffn {
					g := got[b*c.ffn+i]
					if math.Float32bits(g) != math.Float32bits(alone[i]) {
						t.Fatalf("vector %d, row %d: gated %v, MatMul + GatedAct %v", b, i, g, alone[i])
					}
					if !closeTo(g, ref[i], 1e-3, 1e-3) {
						t.Errorf("vector %d, row %d: %v, reference %v", b, i, g, ref[i])
					}
				}
			}
		})
	}
}

func TestMatMulGatedErrors(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(33, 34))
	q4, err := d.UploadWeight("w", quant.Q4_K, 8, 256, randWeight(r, quant.Q4_K, 8, 256))
	if err != nil {
		t.Fatal(err)
	}
	defer q4.Release()
	odd, err := d.UploadWeight("odd", quant.Q4_K, 7, 256, randWeight(r, quant.Q4_K, 7, 256))
	if err != nil {
		t.Fatal(err)
	}
	defer odd.Release()
	f32, err := d.UploadWeight("f32", quant.F32, 8, 64, randWeight(r, quant.F32, 8, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Release()
	x, _ := d.NewBuffer("x", 4*256*4)
	defer x.Release()
	out, _ := d.NewBuffer("out", 4*8*4)
	defer out.Release()
	gated := MatMulOpts{Gated: true}
	for _, c := range []struct {
		name string
		w    *Weight
		m    int
		o    MatMulOpts
	}{
		{"odd rows", odd, 1, gated},
		{"no fast kernel", f32, 1, gated},
		{"several tokens", q4, 2, gated},
		{"bias", q4, 1, MatMulOpts{Gated: true, Bias: Whole(out)}},
		{"accumulate", q4, 1, MatMulOpts{Gated: true, Accumulate: true}},
		{"unknown activation", q4, 1, MatMulOpts{Gated: true, Act: SwiGLUOAI + 1}},
	} {
		if ops, err := d.MatMul(c.w, Whole(x), Whole(out), c.m, c.o); err == nil {
			releaseOps(ops)
			t.Errorf("%s: accepted", c.name)
		}
	}
}
