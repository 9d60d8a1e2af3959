//go:build cgo || js

package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/doppler-llm/doppler/kernels"
)

// MaxBatch is the most sessions a [Batch] decodes together.
const MaxBatch = kernels.MatMulBatchMax

// Batch decodes several sessions of one model in one step: continuous
// batching. Each session keeps its own KV cache, position and sampler
// (temperature, seed, stops: whatever its Generate was given); a step
// reads every weight matrix once for all of them (kernels.MatMulBatch),
// then runs each session's RoPE, KV write, attention and sampling on its
// own state, in one submit that reads back the sampled tokens.
//
// A session takes part between Join and Leave: while joined, the decode
// steps of its Generate (and GenerateText) wait for the other joined
// sessions' and run with them; its prefill still runs alone. Sessions
// join and leave at any time, each Generate on its own goroutine. A
// step runs once every joined session waits for one, so a session that
// is joined but not generating holds the others up: leave when done.
// Every session's tokens are the ones it gets alone, bit for bit (the
// batched kernels do each sequence's arithmetic as the one-token ones).
type Batch struct {
	m   *Model
	max int

	mu      sync.Mutex
	members []*Session
	waiting map[*Session]*waiter

	run                         sync.Mutex // one step at a time; guards the fields below
	qkvL                        qkvLayout  // q, k and v in qkv, every token's rows at aligned offsets
	attS                        int        // f32 per token in att
	x, xn, qkv, att, gu, h      *kernels.Buffer
	qRaw, kRaw, tmp, tmp2       *kernels.Buffer
	rlog, sel, wts, egu, eh, ey *kernels.Buffer
	logits, ids, out            *kernels.Buffer
	bufs                        []*kernels.Buffer
	plans                       map[int]*batchPlan
	seqs                        map[seqKey]*seqOps
	steps, rows                 uint64
}

// batchPlan is the shared part of a step over n sessions: stages[l] runs
// before layer l's per-session attention ops, the last stage after them
// (the final norm and the LM head).
type batchPlan struct {
	stages [][]*kernels.Op
}

// seqOps are one session's ops at one slot of a step: per layer, what
// runs on its own position and KV cache.
type seqOps struct {
	layers [][]*kernels.Op
}

type seqKey struct {
	s    *Session
	slot int
}

type waiter struct {
	s   *Session
	smp *gpuSampler
	tok int
	err error
	ok  chan struct{}
}

// BatchStats counts a Batch's steps.
type BatchStats struct {
	Steps uint64 // decode steps run
	Rows  uint64 // sessions advanced, summed over steps
}

// NewBatch allocates the activations of steps of up to max sessions (1
// to MaxBatch) of m. Models whose experts are paged decode alone.
func (m *Model) NewBatch(max int) (*Batch, error) {
	if max < 1 || max > MaxBatch {
		return nil, fmt.Errorf("batch of %d sessions: must be 1 to %d", max, MaxBatch)
	}
	if m.pager != nil {
		return nil, errors.New("batched decode: the model's experts are paged; sessions decode alone")
	}
	c := m.Config
	b := &Batch{m: m, max: max, waiting: map[*Session]*waiter{}, plans: map[int]*batchPlan{}, seqs: map[seqKey]*seqOps{}}
	align := m.dev.Limits().MinStorageOffsetAlignment / 4
	pad := func(n int) int { return (n + align - 1) / align * align }
	qDim := c.Heads * c.HeadDim
	b.qkvL, b.attS = newQKVLayout(c, max, align, true), pad(qDim)
	qS, kS := b.qkvL.qS, b.qkvL.kS
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
		{&b.qRaw, "batch_q_raw", nb(c.QKNorm, n*uint64(qS)*4)},
		{&b.kRaw, "batch_k_raw", nb(c.QKNorm, n*uint64(kS)*4)},
		{&b.att, "batch_att", n * uint64(b.attS) * 4},
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
	} {
		if a.bytes == 0 {
			continue
		}
		buf, err := m.dev.NewBuffer(a.name, a.bytes)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("batch of %d: %w", max, err)
		}
		*a.dst = buf
		b.bufs = append(b.bufs, buf)
	}
	return b, nil
}

// Max is the most sessions the batch steps together.
func (b *Batch) Max() int { return b.max }

// Stats returns the batch's step counters.
func (b *Batch) Stats() BatchStats {
	b.run.Lock()
	defer b.run.Unlock()
	return BatchStats{Steps: b.steps, Rows: b.rows}
}

// Close frees the batch's GPU memory. No session may be joined.
func (b *Batch) Close() {
	b.run.Lock()
	defer b.run.Unlock()
	b.m.dev.Sync()
	for _, pl := range b.plans {
		for _, st := range pl.stages {
			for _, op := range st {
				op.Release()
			}
		}
	}
	b.plans = nil
	for k, so := range b.seqs {
		so.release()
		delete(b.seqs, k)
	}
	for _, buf := range b.bufs {
		buf.Release()
	}
	b.bufs = nil
}

func (so *seqOps) release() {
	for _, l := range so.layers {
		for _, op := range l {
			op.Release()
		}
	}
}

// Join adds s to the batch: its decode steps run with the other joined
// sessions' until it leaves.
func (b *Batch) Join(s *Session) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case s.m != b.m:
		return errors.New("batch: the session is of another model")
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
	b.run.Lock()
	for k, so := range b.seqs {
		if k.s == s {
			so.release()
			delete(b.seqs, k)
		}
	}
	b.run.Unlock()
	b.mu.Lock()
	if i := slices.Index(b.members, s); i >= 0 {
		b.members = slices.Delete(b.members, i, i+1)
		s.joined = nil
	}
	ws := b.readyLocked()
	b.mu.Unlock()
	if ws != nil {
		b.step(context.Background(), ws)
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

// decode is Session.step's decode for a joined session: it waits for the
// step that advances all members and returns s's token.
func (b *Batch) decode(ctx context.Context, s *Session, smp *gpuSampler) (int, error) {
	w := &waiter{s: s, smp: smp, ok: make(chan struct{})}
	b.mu.Lock()
	b.waiting[s] = w
	ws := b.readyLocked()
	b.mu.Unlock()
	if ws != nil {
		b.step(ctx, ws)
	}
	<-w.ok
	return w.tok, w.err
}

// step advances the waiters by one token each and wakes them.
func (b *Batch) step(ctx context.Context, ws []*waiter) {
	b.run.Lock()
	toks, err := b.stepLocked(ctx, ws)
	b.run.Unlock()
	for i, w := range ws {
		switch {
		case err != nil:
			w.err = err
		case toks[i] >= b.m.Config.VocabSize:
			w.err = fmt.Errorf("%w: no token to pick at position %d (the logits are NaN)", ErrBadLogits, w.s.pos-1)
		default:
			w.tok = toks[i]
		}
		close(w.ok)
	}
}

func (b *Batch) stepLocked(_ context.Context, ws []*waiter) ([]int, error) {
	n := len(ws)
	if len(b.bufs) == 0 {
		return nil, errors.New("batch: closed")
	}
	d := b.m.dev
	for _, w := range ws {
		if w.s.pos+1 > w.s.ctxLen {
			return nil, fmt.Errorf("%w: %d tokens in the cache + 1 new > %d", ErrContextFull, w.s.pos, w.s.ctxLen)
		}
	}
	pl, err := b.plan(n)
	if err != nil {
		return nil, err
	}
	seq := make([]*seqOps, n)
	for i, w := range ws {
		if seq[i], err = b.seqPlan(w.s, i); err != nil {
			return nil, err
		}
		if err := w.smp.prepare(); err != nil {
			return nil, err
		}
		var p [4]byte
		binary.LittleEndian.PutUint32(p[:], uint32(w.s.pos))
		if err := d.Write(w.s.posBuf, 0, p[:]); err != nil {
			return nil, err
		}
	}
	e := d.NewEncoder()
	for i, w := range ws {
		e.Copy(w.s.tok, 0, b.ids, uint64(4*i), 4)
	}
	for l := range b.m.layers {
		e.Run(pl.stages[l]...)
		for i, w := range ws {
			e.SetPositions(w.s.pos, 1)
			e.Run(seq[i].layers[l]...)
		}
	}
	e.Run(pl.stages[len(b.m.layers)]...)
	vb := uint64(b.m.Config.VocabSize) * 4
	for i, w := range ws {
		e.Copy(b.logits, uint64(i)*vb, w.s.logits, 0, vb)
		e.Run(w.smp.ops...)
		e.Copy(w.s.tok, 0, b.out, uint64(4*i), 4)
	}
	raw, err := e.SubmitRead(b.out, 0, uint64(4*n))
	if err != nil {
		return nil, err
	}
	toks := make([]int, n)
	for i, w := range ws {
		toks[i] = int(binary.LittleEndian.Uint32(raw[4*i:]))
		w.s.pos++
	}
	b.steps++
	b.rows += uint64(n)
	return toks, nil
}

// slot returns the range of a token slot of a padded activation buffer.
func slot(buf *kernels.Buffer, i, stride int, off int) kernels.BufferRange {
	return kernels.BufferRange{Buf: buf, Offset: uint64(i*stride+off) * 4}
}

// plan returns (building once) the shared ops of a step over n sessions.
func (b *Batch) plan(n int) (*batchPlan, error) {
	if pl, ok := b.plans[n]; ok {
		return pl, nil
	}
	c := b.m.Config
	d := b.m.dev
	var cur []*kernels.Op
	var stages [][]*kernels.Op
	var err error
	add := func(op *kernels.Op, e error) {
		if err == nil && e != nil {
			err = e
		}
		if op != nil {
			cur = append(cur, op)
		}
	}
	addN := func(o []*kernels.Op, e error) {
		if err == nil && e != nil {
			err = e
		}
		cur = append(cur, o...)
	}
	scale := float32(1)
	if c.EmbedScale != 0 {
		scale = float32(c.EmbedScale)
	}
	eps := float32(c.NormEps)
	bo := func(bias *kernels.Buffer, xs, os int) kernels.BatchOpts {
		o := kernels.BatchOpts{XStride: xs, OutStride: os}
		if bias != nil {
			o.Bias = whole(bias)
		}
		return o
	}
	addN(d.Embed(b.m.embed, whole(b.ids), whole(b.x), n, scale))
	for _, ly := range b.m.layers {
		add(d.RMSNorm(whole(b.x), whole(ly.attnNorm), whole(b.xn), n, c.HiddenSize, eps, c.NormAddOne))
		if ly.qkv != nil {
			addN(d.MatMulBatch(ly.qkv, whole(b.xn), whole(b.qkv), n, bo(ly.qkvBias, 0, b.qkvL.rowS)))
		} else {
			l := b.qkvL
			q, k := at(b.qkv, 0), at(b.qkv, l.kBlock)
			if c.QKNorm {
				q, k = whole(b.qRaw), whole(b.kRaw)
			}
			addN(d.MatMulBatch(ly.q, whole(b.xn), q, n, bo(ly.qBias, 0, l.qS)))
			addN(d.MatMulBatch(ly.k, whole(b.xn), k, n, bo(ly.kBias, 0, l.kS)))
			addN(d.MatMulBatch(ly.v, whole(b.xn), at(b.qkv, l.vBlock), n, bo(ly.vBias, 0, l.kS)))
		}
		stages = append(stages, cur)
		cur = nil
		// (Each session's RoPE, KV write and attention run here.)
		if ly.postAttnNorm == nil {
			o := bo(ly.oBias, b.attS, 0)
			o.Accumulate = true
			addN(d.MatMulBatch(ly.o, whole(b.att), whole(b.x), n, o))
		} else {
			addN(d.MatMulBatch(ly.o, whole(b.att), whole(b.tmp), n, bo(ly.oBias, b.attS, 0)))
			add(d.RMSNorm(whole(b.tmp), whole(ly.postAttnNorm), whole(b.tmp2), n, c.HiddenSize, eps, c.NormAddOne))
			add(d.AddInPlace(whole(b.x), whole(b.tmp2), n*c.HiddenSize))
		}
		add(d.RMSNorm(whole(b.x), whole(ly.ffnNorm), whole(b.xn), n, c.HiddenSize, eps, c.NormAddOne))
		if e := ly.moe; e != nil {
			k, ffn := c.ExpertsUsed, c.ExpertFFN
			addN(d.MatMulBatch(e.router, whole(b.xn), whole(b.rlog), n, bo(e.routerBias, 0, 0)))
			add(d.MoERoute(whole(b.rlog), whole(b.sel), whole(b.wts), n, c.Experts, k, e.gating))
			addN(d.MatMulExperts(e.gateUp, whole(b.xn), whole(b.sel), whole(b.egu), n, k, false, optional(e.gateUpBias)))
			add(d.GatedAct(whole(b.egu), whole(b.eh), n*k, ffn, 2*ffn, ffn, activation(c.Activation)))
			addN(d.MatMulExperts(e.down, whole(b.eh), whole(b.sel), whole(b.ey), n, k, true, optional(e.downBias)))
			add(d.MoECombine(whole(b.ey), whole(b.wts), whole(b.x), n, k, c.HiddenSize, true))
		} else {
			if act := activation(c.Activation); ly.gateUp.CanGate() {
				gated := kernels.MatMulOpts{Gated: true, Act: act}
				addN(d.MatMulBatch(ly.gateUp, whole(b.xn), whole(b.h), n, kernels.BatchOpts{MatMulOpts: gated}))
			} else {
				addN(d.MatMulBatch(ly.gateUp, whole(b.xn), whole(b.gu), n, kernels.BatchOpts{}))
				add(d.GatedAct(whole(b.gu), whole(b.h), n, c.FFN, 2*c.FFN, c.FFN, act))
			}
			if ly.postFFNNorm == nil {
				addN(d.MatMulBatch(ly.down, whole(b.h), whole(b.x), n, kernels.BatchOpts{MatMulOpts: kernels.MatMulOpts{Accumulate: true}}))
			} else {
				addN(d.MatMulBatch(ly.down, whole(b.h), whole(b.tmp), n, kernels.BatchOpts{}))
				add(d.RMSNorm(whole(b.tmp), whole(ly.postFFNNorm), whole(b.tmp2), n, c.HiddenSize, eps, c.NormAddOne))
				add(d.AddInPlace(whole(b.x), whole(b.tmp2), n*c.HiddenSize))
			}
		}
	}
	add(d.RMSNorm(whole(b.x), whole(b.m.outNorm), whole(b.xn), n, c.HiddenSize, eps, c.NormAddOne))
	addN(d.MatMulBatch(b.m.output, whole(b.xn), whole(b.logits), n, kernels.BatchOpts{}))
	stages = append(stages, cur)
	pl := &batchPlan{stages: stages}
	if err != nil {
		pl.release()
		return nil, fmt.Errorf("batch of %d: %w", n, err)
	}
	b.plans[n] = pl
	return pl, nil
}

func (pl *batchPlan) release() {
	for _, st := range pl.stages {
		for _, op := range st {
			op.Release()
		}
	}
}

// seqPlan returns (building once) s's ops at slot i: per layer, what the
// session's own decode pass runs on its position and KV cache (session.go
// build, m == 1), reading and writing slot i of the batch's activations.
func (b *Batch) seqPlan(s *Session, i int) (*seqOps, error) {
	key := seqKey{s, i}
	if so, ok := b.seqs[key]; ok {
		return so, nil
	}
	c := b.m.Config
	d := b.m.dev
	so := &seqOps{}
	var cur []*kernels.Op
	var err error
	add := func(op *kernels.Op, e error) {
		if err == nil && e != nil {
			err = e
		}
		if op != nil {
			cur = append(cur, op)
		}
	}
	eps := float32(c.NormEps)
	attnScale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	if c.AttnScale != 0 {
		attnScale = float32(c.AttnScale)
	}
	pos := whole(s.posBuf)
	f16 := !b.m.opts.KVF32
	for l, ly := range b.m.layers {
		rope := b.m.rope
		sliding := c.LayerSliding(l)
		if sliding {
			rope = b.m.ropeLocal
		}
		rows := b.qkvL.rows(c, ly.qkv != nil, 1, i)
		if ly.qkv == nil && c.QKNorm {
			l := b.qkvL
			add(d.RMSNorm(slot(b.qRaw, i, l.qS, 0), whole(ly.qNorm), at(b.qkv, rows.QOff), c.Heads, c.HeadDim, eps, c.NormAddOne))
			add(d.RMSNorm(slot(b.kRaw, i, l.kS, 0), whole(ly.kNorm), at(b.qkv, rows.KOff), c.KVHeads, c.HeadDim, eps, c.NormAddOne))
		}
		add(d.RoPEKV(whole(b.qkv), whole(s.kc[l]), whole(s.vc[l]), pos, rows, s.ctxLen, f16, rope))
		ao := kernels.AttnOpts{Scale: attnScale, F16: f16, Softcap: float32(c.AttnSoftcap), QStride: rows.QStride}
		if sliding && c.SlidingWindow < s.ctxLen {
			ao.Window = c.SlidingWindow
		}
		if ly.sinks != nil {
			ao.Sinks = whole(ly.sinks)
		}
		ops, e := d.Attention(at(b.qkv, rows.QOff), whole(s.kc[l]), whole(s.vc[l]), slot(b.att, i, b.attS, 0), pos, 1, c.Heads, c.KVHeads, c.HeadDim, s.ctxLen, ao)
		if err == nil && e != nil {
			err = e
		}
		cur = append(cur, ops...)
		so.layers = append(so.layers, cur)
		cur = nil
		if err != nil {
			so.release()
			return nil, fmt.Errorf("batch slot %d, layer %d: %w", i, l, err)
		}
	}
	b.seqs[key] = so
	return so, nil
}
