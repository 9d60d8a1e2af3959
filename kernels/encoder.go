//go:build cgo || js

package kernels

import (
	"errors"
	"fmt"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// Encoder records one submit: dispatches go into a single compute pass
// (opened lazily, closed by Copy or Submit). The first error is kept and
// returned by Submit/SubmitRead; an Encoder is used once, by one goroutine.
type Encoder struct {
	d    *Device
	enc  *wgpu.CommandEncoder
	pass *wgpu.ComputePassEncoder
	last *Pipeline
	err  error
	done bool
	// pos, m: the tokens this pass computes (SetPositions); m 0 = unknown.
	pos, m int
}

// SetPositions tells the encoder that the ops it runs next compute the
// tokens at positions pos … pos+m-1 (the value of the position buffer they
// read), so ops whose work grows with the position — split attention,
// whose grid otherwise covers the whole cache capacity — dispatch only the
// workgroups that have keys to read. Without it such ops dispatch the grid
// sized for any position: the same result, more idle workgroups (which cost
// little on a GPU and much on a CPU rasterizer). Ops over several
// sequences (KVSlots) read each row's position from a table: there
// pos+m-1 must be the furthest row's position.
func (e *Encoder) SetPositions(pos, m int) {
	if pos >= 0 && m > 0 {
		e.pos, e.m = pos, m
	}
}

// NewEncoder starts recording.
func (d *Device) NewEncoder() *Encoder {
	e := &Encoder{d: d}
	var enc *wgpu.CommandEncoder
	var err error
	d.serial(func() { enc, err = d.dev.TryCreateCommandEncoder(nil) })
	if err != nil {
		e.err = fmt.Errorf("kernels: command encoder: %w", err)
		return e
	}
	e.enc = enc
	return e
}

// Run records ops, in order, into the current compute pass.
func (e *Encoder) Run(ops ...*Op) {
	if e.err != nil || e.done {
		return
	}
	for _, op := range ops {
		if err := op.check(); err != nil {
			e.err = err
			return
		}
	}
	if e.pass == nil {
		e.pass = e.enc.BeginComputePass(nil)
		e.last = nil
		e.d.stats.passes.Add(1)
	}
	for _, op := range ops {
		if op.p != e.last {
			e.pass.SetPipeline(op.p.pipe)
			e.last = op.p
		}
		e.pass.SetBindGroup(0, op.bg, nil)
		g := op.groups
		if op.grid != nil && e.m > 0 {
			g = op.grid(e.pos, e.m)
		}
		e.pass.DispatchWorkgroups(g[0], g[1], g[2])
	}
	e.d.stats.dispatches.Add(uint64(len(ops)))
}

// Copy records a buffer-to-buffer copy (offsets and size multiples of 4).
// It ends the current compute pass; a later Run opens a new one.
func (e *Encoder) Copy(src *Buffer, srcOff uint64, dst *Buffer, dstOff, size uint64) {
	if e.err != nil || e.done {
		return
	}
	switch {
	case src.released.Load() || dst.released.Load():
		e.err = fmt.Errorf("kernels: copy %q → %q: %w", src.label, dst.label, ErrReleased)
		return
	case srcOff%4 != 0 || dstOff%4 != 0 || size%4 != 0 || srcOff+size > src.cap || dstOff+size > dst.cap:
		e.err = fmt.Errorf("kernels: copy %q[%d:+%d] → %q[%d]: misaligned or out of range", src.label, srcOff, size, dst.label, dstOff)
		return
	}
	e.endPass()
	if e.err == nil {
		if err := e.enc.TryCopyBufferToBuffer(src.buf, srcOff, dst.buf, dstOff, size); err != nil {
			e.err = fmt.Errorf("kernels: copy %q → %q: %w", src.label, dst.label, err)
		}
	}
}

func (e *Encoder) endPass() {
	if e.pass == nil {
		return
	}
	err := endPass(e.pass)
	e.pass.Release() // before Finish (DESIGN.md §2)
	e.pass = nil
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("kernels: end compute pass: %w", err)
	}
}

// finish ends recording and submits; the encoder cannot be reused.
func (e *Encoder) finish() error {
	if e.done {
		return errors.New("kernels: encoder already submitted")
	}
	e.done = true
	e.endPass()
	if e.enc == nil {
		return e.err
	}
	defer e.enc.Release()
	if e.err != nil {
		return e.err
	}
	if err := e.d.gpuErr(); err != nil {
		return err
	}
	var err error
	e.d.serial(func() {
		var cmd *wgpu.CommandBuffer
		if cmd, err = e.enc.TryFinish(nil); err != nil {
			return
		}
		e.d.queue.Submit(cmd)
		cmd.Release()
	})
	if err != nil {
		return fmt.Errorf("kernels: finish: %w", err)
	}
	e.d.stats.submits.Add(1)
	return nil
}

// Submit ends the pass and submits everything recorded. It does not wait.
func (e *Encoder) Submit() error { return e.finish() }

// SubmitRead records a copy of b[off:off+size] into a staging buffer,
// submits it with everything recorded before (one submit), waits and
// returns the bytes. This is how a token's sampled id comes back.
func (e *Encoder) SubmitRead(b *Buffer, off, size uint64) ([]byte, error) {
	r, err := e.SubmitReadAsync(b, off, size)
	if err != nil {
		return nil, err
	}
	return r.Wait()
}

// SubmitReadAsync is SubmitRead without the wait: it submits and returns
// at once, and the bytes come from the Readback's Wait. Work submitted in
// between queues behind this submit, so a decode loop can submit the next
// token's step before it reads this one's token back.
func (e *Encoder) SubmitReadAsync(b *Buffer, off, size uint64) (*Readback, error) {
	if e.err == nil && !e.done && size == 0 {
		e.err = errors.New("kernels: read of 0 bytes")
	}
	if e.err != nil || e.done {
		return nil, e.finish()
	}
	// Copies need 4-byte alignment: widen the range, trim after.
	aoff := off &^ 3
	n := round4(off+size) - aoff
	stage, _, err := e.d.getStaging(n)
	if err != nil {
		e.err = err
		return nil, e.finish()
	}
	e.Copy(b, aoff, &Buffer{d: e.d, buf: stage, label: "staging", size: n, cap: n}, 0, n)
	if err := e.finish(); err != nil {
		e.d.putStaging(stage)
		return nil, err
	}
	return &Readback{d: e.d, stage: stage, wait: e.d.startMap(stage, n), lo: off - aoff, size: size}, nil
}

// Readback is a submitted read whose bytes have not been taken yet. Wait
// must be called once, by one goroutine, to get them and to give its
// staging buffer back.
type Readback struct {
	d        *Device
	stage    *wgpu.Buffer
	wait     func() ([]byte, error)
	lo, size uint64
	done     bool
}

// Wait blocks until the GPU has run everything submitted with the read
// and returns the bytes.
func (r *Readback) Wait() ([]byte, error) {
	if r.done {
		return nil, errors.New("kernels: readback already taken")
	}
	r.done = true
	raw, err := r.wait()
	if err != nil {
		// Its map state is unknown: drop it rather than pool it.
		r.d.mu.Lock()
		r.d.allocated.Add(-r.d.stageSize[r.stage])
		delete(r.d.stageSize, r.stage)
		r.d.mu.Unlock()
		r.d.serial(func() {
			r.stage.Destroy()
			r.stage.Release()
		})
		return nil, err
	}
	r.d.putStaging(r.stage)
	r.d.stats.readbacks.Add(1)
	r.d.stats.readbackBytes.Add(r.size)
	return raw[r.lo : r.lo+r.size], nil
}
