//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"testing"
)

// TestConcurrentUse drives one device from several goroutines at once, as
// the API server's sessions do: each creates buffers and ops, writes
// params, submits, reads back and releases, in a bounded loop. wgpu-core
// takes its device-wide locks in different orders on different paths, and
// unserialized these calls deadlocked (Device.serial); every goroutine
// must also get its own sums back.
func TestConcurrentUse(t *testing.T) {
	d := testDevice(t)
	const workers, rounds, n = 4, 25, 1024
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { errs[w] = concurrentRounds(d, w, rounds, n) })
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v", w, err)
		}
	}
}

// concurrentRounds adds two vectors that depend on the worker and round,
// each round on fresh buffers and a fresh op, and checks the sum.
func concurrentRounds(d *Device, w, rounds, n int) error {
	for r := range rounds {
		a, b := make([]float32, n), make([]float32, n)
		for i := range n {
			a[i], b[i] = float32(w*1000+i), float32(r)
		}
		want := AddRef(a, b)
		err := func() error {
			bufs := make([]*Buffer, 3)
			for i := range bufs {
				var err error
				if bufs[i], err = d.NewBuffer(fmt.Sprint("w", w, "r", r, "b", i), uint64(n*4)); err != nil {
					return err
				}
				defer bufs[i].Release()
			}
			if err := d.WriteF32(bufs[0], 0, a); err != nil {
				return err
			}
			if err := d.WriteF32(bufs[1], 0, b); err != nil {
				return err
			}
			op, err := d.Add(Whole(bufs[0]), Whole(bufs[1]), Whole(bufs[2]), n)
			if err != nil {
				return err
			}
			defer op.Release()
			e := d.NewEncoder()
			e.Run(op)
			raw, err := e.SubmitRead(bufs[2], 0, uint64(n*4))
			if err != nil {
				return err
			}
			for i := range n {
				if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != want[i] {
					return fmt.Errorf("round %d: sum[%d] = %v, want %v", r, i, got, want[i])
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}
