//go:build cgo || js

package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/doppler-llm/doppler/kernels"
)

// MaxBatch is the most sessions a [Batch] decodes together.
const MaxBatch = kernels.MatMulBatchMax

// Batch decodes several sessions of one model in one step: continuous
// batching. Each session keeps its own KV cache, position and sampler
// (temperature, seed, stops: whatever its Generate was given); a step
// reads every weight matrix once for all of them (kernels.MatMulBatch)
// and runs one RoPEKV and one attention over all of them, each row on its
// own position and cache, then each session's sampling, in one submit
// that reads back the sampled tokens.
//
// The batch holds the KV caches of its sessions, made by its NewSession:
// per layer one K and one V buffer of max slots (kernels.KVSlots), so
// that one dispatch reaches every session's cache. A session takes part
// in steps between Join and Leave: while joined, the decode steps of its
// Generate (and GenerateText) wait for the other joined sessions' and run
// with them, one step ahead as alone (a session submits its next step
// before it reads this one's token, so the CPU's encoding overlaps the
// GPU's work); its prefill still runs alone. Sessions join and leave at any
// time, each Generate on its own goroutine. A step runs once every joined
// session waits for one, so a session that is joined but not generating
// holds the others up: leave when done. Every session's tokens are the
// ones it gets alone, bit for bit (the batched kernels do each sequence's
// arithmetic as the one-token ones).
type Batch struct {
	m   *Model
	max int

	mu      sync.Mutex
	members []*Session
	waiting map[*Session]*waiter
	taken   []bool // per KV slot: a session of NewSession holds it

	kc, vc []*kernels.Buffer // per layer: max KV caches, kv.Stride apart
	kv     kernels.KVSlots
	cache  uint64 // bytes of one cache

	run                         sync.Mutex // one step at a time; guards the fields below
	qkvL                        qkvLayout  // q, k and v of up to max tokens in qkv
	x, xn, qkv, att, gu, h      *kernels.Buffer
	qRaw, kRaw, tmp, tmp2       *kernels.Buffer
	rlog, sel, wts, egu, eh, ey *kernels.Buffer
	logits, ids, out, table     *kernels.Buffer
	xq                          *kernels.Buffer // a matmul's input in 8 bits (Options.Q8X)
	bufs                        []*kernels.Buffer
	plans                       map[int][]*kernels.Op // a step's forward pass over n sessions
	steps, rows, ahead          uint64
	prev                        *batchStep // the last step submitted
}

// waiter is a session's place in the next step: its row, once the step
// that holds it is submitted.
type waiter struct {
	s   *Session
	smp *gpuSampler
	pos int // where the token this step feeds back goes in s's cache

	// Set before ok is closed, when the step is submitted.
	row int
	st  *batchStep
	err error
	ok  chan struct{}
}

// batchStep is a submitted step whose tokens have not been read back.
type batchStep struct {
	once sync.Once
	read atomic.Bool // its tokens were read back
	rb   *kernels.Readback
	raw  []byte
	err  error
}

// token returns the token sampled for row i, reading the step's tokens
// back the first time it is called.
func (st *batchStep) token(i int) (int, error) {
	st.once.Do(func() {
		st.raw, st.err = st.rb.Wait()
		st.read.Store(true)
	})
	if st.err != nil {
		return 0, st.err
	}
	return int(binary.LittleEndian.Uint32(st.raw[4*i:])), nil
}

// BatchStats counts a Batch's steps.
type BatchStats struct {
	Steps uint64 // decode steps run
	Rows  uint64 // sessions advanced, summed over steps
	Ahead uint64 // steps submitted before the previous step's tokens were read
}

// NewBatch allocates the activations of steps of up to max sessions (1
// to MaxBatch) of m, and the KV caches of max sessions (NewSession).
// Models whose experts are paged decode alone.
func (m *Model) NewBatch(max int) (*Batch, error) {
	if max < 1 || max > MaxBatch {
		return nil, fmt.Errorf("batch of %d sessions: must be 1 to %d", max, MaxBatch)
	}
	if m.pager != nil {
		return nil, errors.New("batched decode: the model's experts are paged; sessions decode alone")
	}
	c := m.Config
	b := &Batch{m: m, max: max, waiting: map[*Session]*waiter{}, taken: make([]bool, max), plans: map[int][]*kernels.Op{}}
	lim := m.dev.Limits()
	f16 := !m.opts.KVF32
	// Every slot starts at a bindable offset (a session's prefill binds
	// its own cache) and a whole number of head rows from the first.
	b.cache = kernels.KVCacheBytes(c.KVHeads, m.opts.Context, c.HeadDim, f16)
	unit := lcm(kernels.KVCacheBytes(1, 1, c.HeadDim, f16), uint64(lim.MinStorageOffsetAlignment))
	b.kv = kernels.KVSlots{N: max, Stride: (b.cache + unit - 1) / unit * unit}
	if kvBytes := uint64(max) * b.kv.Stride; kvBytes > lim.MaxStorageBufferBindingSize {
		return nil, fmt.Errorf("batch of %d: the KV caches of %d sessions of %d tokens take %d MiB a layer, more than one binding holds (%d MiB): shorten the context or the batch",
			max, max, m.opts.Context, kvBytes>>20, lim.MaxStorageBufferBindingSize>>20)
	}
	b.qkvL = newQKVLayout(c, max, lim.MinStorageOffsetAlignment/4)
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	n := uint64(max)
	nb := func(need bool, v uint64) uint64 {
		if need {
			return v
		}
		return 0
	}
	for _, a := range []struct {
		dst   **kernels.Buffer
		name  string
		bytes uint64
	}{
		{&b.x, "batch_x", n * uint64(c.HiddenSize) * 4},
		{&b.xn, "batch_xn", n * uint64(c.HiddenSize) * 4},
		{&b.qkv, "batch_qkv", uint64(b.qkvL.size) * 4},
		{&b.qRaw, "batch_q_raw", nb(c.QKNorm, n*uint64(qDim)*4)},
		{&b.kRaw, "batch_k_raw", nb(c.QKNorm, n*uint64(kvDim)*4)},
		{&b.att, "batch_att", n * uint64(qDim) * 4},
		{&b.gu, "batch_gate_up", nb(!m.fam.moe, n*uint64(2*c.FFN)*4)},
		{&b.h, "batch_ffn_h", nb(!m.fam.moe, n*uint64(c.FFN)*4)},
		{&b.tmp, "batch_tmp", nb(m.fam.sandwich, n*uint64(c.HiddenSize)*4)},
		{&b.tmp2, "batch_tmp2", nb(m.fam.sandwich, n*uint64(c.HiddenSize)*4)},
		{&b.rlog, "batch_router_logits", nb(m.fam.moe, n*uint64(c.Experts)*4)},
		{&b.sel, "batch_experts_sel", nb(m.fam.moe, n*uint64(c.ExpertsUsed)*4)},
		{&b.wts, "batch_experts_wts", nb(m.fam.moe, n*uint64(c.ExpertsUsed)*4)},
		{&b.egu, "batch_experts_gate_up", nb(m.fam.moe, n*uint64(c.ExpertsUsed*2*c.ExpertFFN)*4)},
		{&b.eh, "batch_experts_h", nb(m.fam.moe, n*uint64(c.ExpertsUsed*c.ExpertFFN)*4)},
		{&b.ey, "batch_experts_y", nb(m.fam.moe, n*uint64(c.ExpertsUsed*c.HiddenSize)*4)},
		{&b.logits, "batch_logits", n * uint64(c.VocabSize) * 4},
		{&b.ids, "batch_ids", n * 4},
		{&b.out, "batch_tokens", n * 4},
		{&b.table, "batch_positions", n * 8},
		{&b.xq, "batch_x_q8", nb(m.opts.Q8X, n*kernels.Q8RowBytes(slices.Max([]int{c.HiddenSize, qDim, c.FFN})))},
	} {
		if err := b.alloc(a.dst, a.name, a.bytes); err != nil {
			return nil, err
		}
	}
	for l := range c.Layers {
		var k, v *kernels.Buffer
		if err := b.alloc(&k, fmt.Sprintf("batch_kv%d", l), n*b.kv.Stride); err != nil {
			return nil, err
		}
		if err := b.alloc(&v, fmt.Sprintf("batch_kv%d", l), n*b.kv.Stride); err != nil {
			return nil, err
		}
		b.kc, b.vc = append(b.kc, k), append(b.vc, v)
	}
	return b, nil
}

// alloc makes one of the batch's buffers (none for 0 bytes); on an error
// it frees the batch.
func (b *Batch) alloc(dst **kernels.Buffer, name string, bytes uint64) error {
	if bytes == 0 {
		return nil
	}
	buf, err := b.m.dev.NewBuffer(name, bytes)
	if err != nil {
		b.Close()
		return fmt.Errorf("batch of %d: %w", b.max, err)
	}
	*dst = buf
	b.bufs = append(b.bufs, buf)
	return nil
}

func lcm(a, b uint64) uint64 {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}

// NewSession makes a session whose KV cache is one of the batch's slots:
// only such sessions join the batch. It fails once all max slots are
// held; Session.Close gives the slot back. Close the batch's sessions
// before the batch.
func (b *Batch) NewSession() (*Session, error) {
	b.mu.Lock()
	i := slices.Index(b.taken, false)
	if i >= 0 {
		b.taken[i] = true
	}
	b.mu.Unlock()
	if i < 0 {
		return nil, fmt.Errorf("batch: all %d KV slots are held by sessions", b.max)
	}
	off := uint64(i) * b.kv.Stride
	s, err := b.m.newSession(func(l int) (k, v kernels.BufferRange) {
		return kernels.BufferRange{Buf: b.kc[l], Offset: off, Size: b.cache}, kernels.BufferRange{Buf: b.vc[l], Offset: off, Size: b.cache}
	})
	if err != nil {
		b.mu.Lock()
		b.taken[i] = false
		b.mu.Unlock()
		return nil, err
	}
	s.home, s.slot = b, i
	return s, nil
}

// free gives s's KV slot back (Session.Close).
func (b *Batch) free(s *Session) {
	b.mu.Lock()
	b.taken[s.slot] = false
	b.mu.Unlock()
}

// Max is the most sessions the batch steps together.
func (b *Batch) Max() int { return b.max }

// Stats returns the batch's step counters.
func (b *Batch) Stats() BatchStats {
	b.run.Lock()
	defer b.run.Unlock()
	return BatchStats{Steps: b.steps, Rows: b.rows, Ahead: b.ahead}
}

// Close frees the batch's GPU memory, its sessions' KV caches with it. No
// session may be joined.
func (b *Batch) Close() {
	b.run.Lock()
	defer b.run.Unlock()
	b.m.dev.Sync()
	for _, ops := range b.plans {
		releaseOps(ops)
	}
	b.plans = nil
	for _, buf := range b.bufs {
		buf.Release()
	}
	b.bufs = nil
}

func releaseOps(ops []*kernels.Op) {
	for _, op := range ops {
		op.Release()
	}
}

// Join adds s to the batch: its decode steps run with the other joined
// sessions' until it leaves.
func (b *Batch) Join(s *Session) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case s.home != b:
		return errors.New("batch: the session's KV cache is not in this batch (make it with Batch.NewSession)")
	case s.joined != nil:
		return errors.New("batch: the session is already in a batch")
	case len(b.members) >= b.max:
		return fmt.Errorf("batch: full (%d sessions)", b.max)
	}
	s.joined = b
	b.members = append(b.members, s)
	return nil
}

// Leave takes s out of the batch (call it once its Generate returned);
// the others' steps no longer wait for it.
func (b *Batch) Leave(s *Session) {
	b.mu.Lock()
	if i := slices.Index(b.members, s); i >= 0 {
		b.members = slices.Delete(b.members, i, i+1)
		s.joined = nil
	}
	ws := b.readyLocked()
	b.mu.Unlock()
	if ws != nil {
		b.step(ws)
	}
}

// readyLocked returns the waiters of the next step, in join order, once
// every member waits; nil before.
func (b *Batch) readyLocked() []*waiter {
	if len(b.waiting) == 0 || len(b.waiting) < len(b.members) {
		return nil
	}
	ws := make([]*waiter, 0, len(b.members))
	for _, s := range b.members {
		ws = append(ws, b.waiting[s])
	}
	clear(b.waiting)
	return ws
}

// enqueue puts s's next decode step (feeding back its last sampled token)
// in the batch and returns at once: the step is submitted, without
// waiting for the GPU, once every member has enqueued one, and its token
// comes from the pendingStep's wait. So a session submits its next step
// before it reads this one's token, as it does alone (Generate). s's
// position moves here, on s's goroutine, whichever goroutine submits. A
// session's next enqueue waits until its previous step is submitted.
func (b *Batch) enqueue(s *Session, smp *gpuSampler) *waiter {
	if q := s.queued; q != nil {
		// One step of s's waits at a time: the batch keeps one place a
		// session, and the next step reads what this one samples.
		<-q.ok
	}
	w := &waiter{s: s, smp: smp, pos: s.pos, ok: make(chan struct{})}
	s.queued = w
	s.pos++
	b.mu.Lock()
	b.waiting[s] = w
	ws := b.readyLocked()
	b.mu.Unlock()
	if ws != nil {
		b.step(ws)
	}
	return w
}

// step submits one step advancing the waiters by a token each and wakes
// them.
func (b *Batch) step(ws []*waiter) {
	b.run.Lock()
	st, err := b.stepLocked(ws)
	b.run.Unlock()
	for i, w := range ws {
		w.row, w.st, w.err = i, st, err
		close(w.ok)
	}
}

func (b *Batch) stepLocked(ws []*waiter) (*batchStep, error) {
	n := len(ws)
	if len(b.bufs) == 0 {
		return nil, errors.New("batch: closed")
	}
	d := b.m.dev
	for _, w := range ws {
		if w.pos+1 > w.s.ctxLen {
			return nil, fmt.Errorf("%w: %d tokens in the cache + 1 new > %d", ErrContextFull, w.pos, w.s.ctxLen)
		}
	}
	ops, err := b.plan(n)
	if err != nil {
		return nil, err
	}
	// Row i: session i's position and KV slot; each sampler takes the
	// token its row feeds back (before prepare: it counts it).
	e := d.NewEncoder()
	table := make([]byte, 8*n)
	last := 0
	for i, w := range ws {
		w.smp.feed(e)
		if err := w.smp.prepare(); err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(table[8*i:], uint32(w.pos))
		binary.LittleEndian.PutUint32(table[8*i+4:], uint32(w.s.slot))
		last = max(last, w.pos)
	}
	if err := d.Write(b.table, 0, table); err != nil {
		return nil, err
	}
	for i, w := range ws {
		e.Copy(w.s.tok, 0, b.ids, uint64(4*i), 4)
	}
	e.SetPositions(last, 1) // the attention's grid covers the furthest row
	e.Run(ops...)
	vb := uint64(b.m.Config.VocabSize) * 4
	for i, w := range ws {
		e.Copy(b.logits, uint64(i)*vb, w.s.logits, 0, vb)
		e.Run(w.smp.ops...)
		e.Copy(w.s.tok, 0, b.out, uint64(4*i), 4)
	}
	rb, err := e.SubmitReadAsync(b.out, 0, uint64(4*n))
	if err != nil {
		return nil, err
	}
	st := &batchStep{rb: rb}
	if b.prev != nil && !b.prev.read.Load() {
		b.ahead++
	}
	b.prev = st
	b.steps++
	b.rows += uint64(n)
	return st, nil
}

// plan returns (building once) the forward pass of a step over n
// sessions: row i is the i-th waiter's token.
func (b *Batch) plan(n int) ([]*kernels.Op, error) {
	if ops, ok := b.plans[n]; ok {
		return ops, nil
	}
	c := b.m.Config
	d := b.m.dev
	var ops []*kernels.Op
	var err error
	q8 := &q8Inputs{d: d, xq: b.xq}
	add := func(op *kernels.Op, e error) {
		if err == nil && e != nil {
			err = e
		}
		if op != nil {
			ops = append(ops, op)
		}
		q8.forget()
	}
	addN := func(o []*kernels.Op, e error) {
		if err == nil && e != nil {
			err = e
		}
		ops = append(ops, o...)
		q8.forget()
	}
	// matmul is d.MatMulBatch, through 8-bit activations as a session's
	// decode step (q8Inputs), so each row gets the bits it gets alone.
	matmul := func(w *kernels.Weight, in *kernels.Buffer, out kernels.BufferRange, o kernels.BatchOpts) ([]*kernels.Op, error) {
		return q8.matmul(w, in, n, &o.MatMulOpts, func(x kernels.BufferRange) ([]*kernels.Op, error) { return d.MatMulBatch(w, x, out, n, o) })
	}
	scale := float32(1)
	if c.EmbedScale != 0 {
		scale = float32(c.EmbedScale)
	}
	eps := float32(c.NormEps)
	// norm is RMSNorm over the step's rows into out, with its 8-bit form
	// too where the products that read out take it (q8ok).
	norm := func(x, g, out *kernels.Buffer, q8ok bool) {
		op, holds, e := q8.norm(x, g, out, n, c.HiddenSize, eps, c.NormAddOne, q8ok)
		add(op, e)
		q8.held = holds
	}
	// normFor is Session.build's: the products ws of the norm of x read
	// x with the norm folded in, where they all can (foldsNorm), else
	// xn, normed by a dispatch.
	normFor := func(g *kernels.Buffer, q8ok bool, ws ...*kernels.Weight) (*kernels.Buffer, kernels.NormIn) {
		if !foldsNorm(q8ok && q8.xq != nil, ws...) {
			norm(b.x, g, b.xn, q8ok)
			return b.xn, kernels.NormIn{}
		}
		return b.x, kernels.NormIn{G: whole(g), Eps: eps, AddOne: c.NormAddOne}
	}
	attnScale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	if c.AttnScale != 0 {
		attnScale = float32(c.AttnScale)
	}
	ctxLen := b.m.opts.Context
	f16 := !b.m.opts.KVF32
	table := whole(b.table)
	bo := func(bias *kernels.Buffer) kernels.BatchOpts {
		var o kernels.BatchOpts
		if bias != nil {
			o.Bias = whole(bias)
		}
		return o
	}
	addN(d.Embed(b.m.embed, whole(b.ids), whole(b.x), n, scale))
	for l, ly := range b.m.layers {
		qkvIn, qkvNorm := normFor(ly.attnNorm, ly.qkvQ8X(), ly.qkvWeights()...)
		rows := b.qkvL.rows(c, ly.qkv != nil, n, 0)
		rows.Slots = b.kv
		mm := func(w *kernels.Weight, out kernels.BufferRange, bias *kernels.Buffer) ([]*kernels.Op, error) {
			o := bo(bias)
			o.Norm = qkvNorm
			return matmul(w, qkvIn, out, o)
		}
		addN(b.m.qkvOps(&ly, mm, b.qkv, b.qRaw, b.kRaw, rows, n))
		// Every row on its own position and KV slot (the table).
		rope, sliding := b.m.rope, c.LayerSliding(l)
		if sliding {
			rope = b.m.ropeLocal
		}
		ao := kernels.AttnOpts{Scale: attnScale, F16: f16, Softcap: float32(c.AttnSoftcap), QStride: rows.QStride, Slots: b.kv}
		q := at(b.qkv, rows.QOff)
		if b.m.opts.RoPEInAttention && kernels.CanRoPE(n, c.HeadDim, true) {
			// The attention rotates q and k and writes k and v itself.
			ao.RoPE, q = &kernels.AttnRoPE{Rows: rows, Params: rope}, whole(b.qkv)
		} else {
			add(d.RoPEKV(whole(b.qkv), whole(b.kc[l]), whole(b.vc[l]), table, rows, ctxLen, f16, rope))
		}
		if sliding && c.SlidingWindow < ctxLen {
			ao.Window = c.SlidingWindow
		}
		if ly.sinks != nil {
			ao.Sinks = whole(ly.sinks)
		}
		addN(d.Attention(q, whole(b.kc[l]), whole(b.vc[l]), whole(b.att), table, n, c.Heads, c.KVHeads, c.HeadDim, ctxLen, ao))
		if ly.postAttnNorm == nil {
			o := bo(ly.oBias)
			o.Accumulate = true
			addN(matmul(ly.o, b.att, whole(b.x), o))
		} else {
			addN(matmul(ly.o, b.att, whole(b.tmp), bo(ly.oBias)))
			add(d.RMSNorm(whole(b.tmp), whole(ly.postAttnNorm), whole(b.tmp2), n, c.HiddenSize, eps, c.NormAddOne))
			add(d.AddInPlace(whole(b.x), whole(b.tmp2), n*c.HiddenSize))
		}
		if e := ly.moe; e != nil {
			norm(b.x, ly.ffnNorm, b.xn, false)
			k, ffn := c.ExpertsUsed, c.ExpertFFN
			addN(d.MatMulBatch(e.router, whole(b.xn), whole(b.rlog), n, bo(e.routerBias)))
			add(d.MoERoute(whole(b.rlog), whole(b.sel), whole(b.wts), n, c.Experts, k, e.gating))
			addN(d.MatMulExperts(e.gateUp, whole(b.xn), whole(b.sel), whole(b.egu), n, k, false, optional(e.gateUpBias)))
			add(d.GatedAct(whole(b.egu), whole(b.eh), n*k, ffn, 2*ffn, ffn, activation(c.Activation)))
			addN(d.MatMulExperts(e.down, whole(b.eh), whole(b.sel), whole(b.ey), n, k, true, optional(e.downBias)))
			add(d.MoECombine(whole(b.ey), whole(b.wts), whole(b.x), n, k, c.HiddenSize, true))
		} else {
			in, nin := normFor(ly.ffnNorm, ly.gateUp.CanQ8X(), ly.gateUp)
			if act := activation(c.Activation); ly.gateUp.CanGate() {
				gated := kernels.MatMulOpts{Gated: true, Act: act, Norm: nin}
				addN(matmul(ly.gateUp, in, whole(b.h), kernels.BatchOpts{MatMulOpts: gated}))
			} else {
				addN(matmul(ly.gateUp, in, whole(b.gu), kernels.BatchOpts{MatMulOpts: kernels.MatMulOpts{Norm: nin}}))
				add(d.GatedAct(whole(b.gu), whole(b.h), n, c.FFN, 2*c.FFN, c.FFN, act))
			}
			if ly.postFFNNorm == nil {
				addN(matmul(ly.down, b.h, whole(b.x), kernels.BatchOpts{MatMulOpts: kernels.MatMulOpts{Accumulate: true}}))
			} else {
				addN(matmul(ly.down, b.h, whole(b.tmp), kernels.BatchOpts{}))
				add(d.RMSNorm(whole(b.tmp), whole(ly.postFFNNorm), whole(b.tmp2), n, c.HiddenSize, eps, c.NormAddOne))
				add(d.AddInPlace(whole(b.x), whole(b.tmp2), n*c.HiddenSize))
			}
		}
		if err != nil {
			releaseOps(ops)
			return nil, fmt.Errorf("batch of %d, layer %d: %w", n, l, err)
		}
	}
	in, nin := normFor(b.m.outNorm, b.m.output.CanQ8X(), b.m.output)
	addN(matmul(b.m.output, in, whole(b.logits), kernels.BatchOpts{MatMulOpts: kernels.MatMulOpts{Norm: nin}}))
	if err != nil {
		releaseOps(ops)
		return nil, fmt.Errorf("batch of %d: %w", n, err)
	}
	b.plans[n] = ops
	return ops, nil
}
