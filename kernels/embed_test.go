//go:build cgo || js

package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// splitWeight uploads a table as parts of at most per rows, each in its
// own buffer at an aligned non-zero offset, as UploadWeight would split a
// table above the binding limit.
func splitWeight(t testing.TB, d *Device, dt quant.DType, rows, cols int, data []byte, per int) *Weight {
	t.Helper()
	rb, _ := dt.RowBytes(cols)
	w := &Weight{Name: "table", DType: dt, Rows: rows, Cols: cols}
	off := uint64(d.Limits().MinStorageOffsetAlignment)
	for r0 := 0; r0 < rows; r0 += per {
		n := min(per, rows-r0)
		buf := make([]byte, off+uint64(n*rb))
		copy(buf[off:], data[r0*rb:(r0+n)*rb])
		b, err := d.NewBufferInit(fmt.Sprintf("table[%d:]", r0), buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Parts = append(w.Parts, WeightPart{Buf: b, Offset: off, Row0: r0, Rows: n})
	}
	return w
}

func TestEmbed(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, dt := range quant.All() {
		for _, c := range []struct{ vocab, dim, per int }{{5, 1, 5}, {37, 64, 37}, {37, 96, 10}, {19, 512, 7}} {
			dim := c.dim
			if bs := dt.BlockSize(); dim%bs != 0 {
				dim = (dim + bs - 1) / bs * bs
			}
			t.Run(fmt.Sprintf("%s/vocab%d/dim%d/per%d", dt, c.vocab, dim, c.per), func(t *testing.T) {
				data, err := quant.Quantize(dt, randF32(r, c.vocab*dim, 2))
				if err != nil {
					t.Fatal(err)
				}
				w := splitWeight(t, d, dt, c.vocab, dim, data, c.per)
				defer w.Release()
				// repeated, unordered ids, plus one out of range (zero row)
				ids := []uint32{uint32(c.vocab - 1), 0, uint32(c.vocab / 2), 0, uint32(c.vocab + 3), uint32(c.vocab - 1), 1 % uint32(c.vocab)}
				idBuf, err := d.NewBufferInit("ids", asBytes(ids))
				if err != nil {
					t.Fatal(err)
				}
				defer idBuf.Release()
				out, err := d.NewBuffer("out", uint64(len(ids)*dim*4))
				if err != nil {
					t.Fatal(err)
				}
				defer out.Release()
				// poison out so that a missed write shows
				poison := make([]float32, len(ids)*dim)
				for i := range poison {
					poison[i] = 12345
				}
				d.WriteF32(out, 0, poison)
				const scale = 1.5
				ops, err := d.Embed(w, Whole(idBuf), Whole(out), len(ids), scale)
				if err != nil {
					t.Fatal(err)
				}
				if len(ops) != len(w.Parts) {
					t.Errorf("%d ops for %d parts", len(ops), len(w.Parts))
				}
				e := d.NewEncoder()
				e.Run(ops...)
				raw, err := e.SubmitRead(out, 0, uint64(len(ids)*dim*4))
				for _, op := range ops {
					op.Release()
				}
				if err != nil {
					t.Fatal(err)
				}
				got := fromBytes[float32](raw)
				want, err := EmbedRef(dt, data, c.vocab, dim, ids, scale)
				if err != nil {
					t.Fatal(err)
				}
				bad := 0
				for i := range want {
					if !closeTo(got[i], want[i], 1e-6, 1e-6) {
						if bad++; bad <= 5 {
							t.Errorf("out[%d][%d] (id %d) = %v, want %v", i/dim, i%dim, ids[i/dim], got[i], want[i])
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

func TestEmbedErrors(t *testing.T) {
	d := testDevice(t)
	data, _ := quant.Quantize(quant.F32, make([]float32, 4*8))
	w := splitWeight(t, d, quant.F32, 4, 8, data, 4)
	defer w.Release()
	b, _ := d.NewBuffer("b", 64)
	defer b.Release()
	o, _ := d.NewBuffer("o", 64)
	defer o.Release()
	if _, err := d.Embed(w, Whole(b), Whole(o), 3, 1); err == nil {
		t.Error("out too small accepted")
	}
	if _, err := d.Embed(w, Whole(b), Whole(o), 0, 1); err == nil {
		t.Error("m=0 accepted")
	}
}

func BenchmarkEmbed(b *testing.B) {
	d := testDevice(b)
	const vocab, dim, m = 1024, 2048, 1
	data, _ := quant.Quantize(quant.Q8_0, randF32(rand.New(rand.NewPCG(1, 1)), vocab*dim, 1))
	w, err := d.UploadWeight("emb", quant.Q8_0, vocab, dim, data)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Release()
	ids, _ := d.NewBufferInit("ids", asBytes([]uint32{5}))
	out, _ := d.NewBuffer("out", dim*4*m)
	defer ids.Release()
	defer out.Release()
	ops, err := d.Embed(w, Whole(ids), Whole(out), m, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	e := d.NewEncoder()
	for range b.N {
		e.Run(ops...)
	}
	if _, err := e.SubmitRead(out, 0, 4); err != nil {
		b.Fatal(err)
	}
}
