//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestActParamsSize(t *testing.T) {
	if n := binary.Size(actParams{}); n%16 != 0 {
		t.Fatalf("actParams is %d bytes", n)
	}
}

func TestGatedAct(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(11, 12))
	type shape struct{ m, n, stride, upOff int }
	var shapes []shape
	for _, mn := range [][2]int{{1, 1}, {1, 7}, {3, 100}, {5, 1031}} {
		m, n := mn[0], mn[1]
		shapes = append(shapes,
			shape{m, n, 2 * n, n},       // fused [gate|up]
			shape{m, n, 2*n + 3, n + 1}, // padded rows, gap between halves
			shape{m, n, n, 0},           // gate and up the same values (upOffset 0)
		)
	}
	for _, act := range []Act{SiLU, GELUTanh, SwiGLUOAI} {
		for _, s := range shapes {
			t.Run(fmt.Sprintf("%v/m%d/n%d/stride%d/up%d", act, s.m, s.n, s.stride, s.upOff), func(t *testing.T) {
				x := randF32(r, (s.m-1)*s.stride+max(s.n, s.upOff+s.n), 12) // wide: exercises the clamps and exp overflow
				xb, _ := d.NewBufferInit("x", asBytes(x))
				defer xb.Release()
				ob, _ := d.NewBuffer("out", uint64(s.m*s.n*4))
				defer ob.Release()
				op, err := d.GatedAct(Whole(xb), Whole(ob), s.m, s.n, s.stride, s.upOff, act)
				if err != nil {
					t.Fatal(err)
				}
				defer op.Release()
				e := d.NewEncoder()
				e.Run(op)
				raw, err := e.SubmitRead(ob, 0, uint64(s.m*s.n*4))
				if err != nil {
					t.Fatal(err)
				}
				got := fromBytes[float32](raw)
				want := GatedActRef(x, s.m, s.n, s.stride, s.upOff, act)
				bad := 0
				for i := range want {
					if !closeTo(got[i], want[i], 1e-5, 1e-5) {
						if bad++; bad <= 5 {
							t.Errorf("out[%d][%d] = %v, want %v", i/s.n, i%s.n, got[i], want[i])
						}
					}
				}
				if bad > 0 {
					t.Errorf("%d of %d values off", bad, len(want))
				}
			})
		}
	}
}

func TestGatedActErrors(t *testing.T) {
	d := testDevice(t)
	x, _ := d.NewBuffer("x", 64)
	defer x.Release()
	o, _ := d.NewBuffer("o", 64)
	defer o.Release()
	if _, err := d.GatedAct(Whole(x), Whole(o), 2, 4, 8, 4, SiLU); err != nil {
		t.Errorf("exact fit rejected: %v", err)
	}
	if _, err := d.GatedAct(Whole(x), Whole(o), 2, 4, 8, 5, SiLU); err == nil {
		t.Error("x overrun accepted")
	}
	if _, err := d.GatedAct(Whole(x), Whole(x), 1, 4, 8, 4, SiLU); err == nil {
		t.Error("out aliasing x accepted")
	}
	if _, err := d.GatedAct(Whole(x), Whole(o), 1, 4, 8, 4, Act(9)); err == nil {
		t.Error("unknown act accepted")
	}
}

func BenchmarkGatedAct(b *testing.B) {
	d := testDevice(b)
	const m, n = 1, 8192
	x, _ := d.NewBuffer("x", 2*m*n*4)
	o, _ := d.NewBuffer("o", m*n*4)
	defer x.Release()
	defer o.Release()
	op, err := d.GatedAct(Whole(x), Whole(o), m, n, 2*n, n, SiLU)
	if err != nil {
		b.Fatal(err)
	}
	defer op.Release()
	b.SetBytes(3 * m * n * 4)
	b.ResetTimer()
	e := d.NewEncoder()
	for range b.N {
		e.Run(op)
	}
	if _, err := e.SubmitRead(o, 0, 4); err != nil {
		b.Fatal(err)
	}
}
