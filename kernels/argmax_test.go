//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestArgmaxParamsSize(t *testing.T) {
	if n := binary.Size(argmaxParams{}); n%16 != 0 {
		t.Fatalf("argmaxParams is %d bytes", n)
	}
}

func runArgmax(t *testing.T, d *Device, x []float32) int {
	t.Helper()
	xb, _ := d.NewBufferInit("logits", asBytes(x))
	defer xb.Release()
	ob, _ := d.NewBuffer("out", 4)
	defer ob.Release()
	op, err := d.Argmax(Whole(xb), Whole(ob), len(x))
	if err != nil {
		t.Fatal(err)
	}
	defer op.Release()
	e := d.NewEncoder()
	e.Run(op)
	raw, err := e.SubmitRead(ob, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	return int(fromBytes[uint32](raw)[0])
}

func TestArgmax(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(13, 14))
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	cases := map[string][]float32{
		"one":         {-3},
		"all-equal":   {2, 2, 2, 2, 2, 2, 2},
		"all-neg-inf": {-inf, -inf, -inf},
		"all-nan":     {nan, nan},
		"nan-first":   {nan, -5, -1, nan, -1},
		"inf":         {1, inf, 3, inf},
	}
	for _, n := range []int{1, 1000, 151936} {
		x := randF32(r, n, 10)
		cases[fmt.Sprintf("rand%d", n)] = x
		// ties: quantize so many values repeat, then plant the max twice
		y := make([]float32, n)
		for i := range y {
			y[i] = float32(math.Round(float64(x[i])))
		}
		if n > 2 {
			y[n-1], y[n/2+1] = 11, 11
		}
		cases[fmt.Sprintf("ties%d", n)] = y
	}
	for name, x := range cases {
		t.Run(name, func(t *testing.T) {
			if got, want := runArgmax(t, d, x), ArgmaxRef(x); got != want {
				t.Errorf("argmax = %d, want %d", got, want)
			}
		})
	}
}

func BenchmarkArgmax(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	const n = 128256
	x, _ := d.NewBufferInit("logits", asBytes(randF32(rand.New(rand.NewPCG(1, 2)), n, 10)))
	o, _ := d.NewBuffer("out", 4)
	defer x.Release()
	defer o.Release()
	op, err := d.Argmax(Whole(x), Whole(o), n)
	if err != nil {
		b.Fatal(err)
	}
	defer op.Release()
	b.SetBytes(n * 4)
	b.ResetTimer()
	e := d.NewEncoder()
	for range b.N {
		e.Run(op)
	}
	if _, err := e.SubmitRead(o, 0, 4); err != nil {
		b.Fatal(err)
	}
}
