//go:build cgo || js

package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/doppler-llm/doppler/kernels"
)

// ErrContextFull is returned when tokens would not fit the KV cache.
var ErrContextFull = errors.New("context window is full")

// ErrBadLogits means the model computed NaN logits: broken or garbage
// weights.
var ErrBadLogits = errors.New("the model's output is not a number (broken weights?)")

// Session is one conversation's state on the GPU: activations, the KV
// cache, and the recorded ops of the forward pass, built once per batch
// size and replayed.
type Session struct {
	m      *Model
	dev    *kernels.Device
	ctxLen int
	batch  int
	pos    int // tokens already in the KV cache

	// activations, [batch][…]
	x, xn, att, gu, h *kernels.Buffer
	qRaw, kRaw        *kernels.Buffer // before the per-head q/k norm
	qkv               *kernels.Buffer // q, k and v, laid out by qkvL
	qkvL              qkvLayout
	tmp, tmp2         *kernels.Buffer // block outputs before a sandwich norm
	// MoE: router logits [batch][E], chosen experts and weights [batch][k],
	// expert activations [batch][k][…].
	rlog, sel, wts, egu, eh, ey *kernels.Buffer
	selSlots                    *kernels.Buffer       // paging: sel mapped to resident slots
	xLast, xnLast               *kernels.Buffer       // the last row, for the LM head after a prefill
	xq                          *kernels.Buffer       // a decode matmul's input in 8 bits (Options.Q8X)
	logits                      *kernels.Buffer       // [vocab]
	logitsAll                   *kernels.Buffer       // [batch][vocab], built on demand
	ids                         *kernels.Buffer       // u32 [batch], written by the CPU
	tok                         *kernels.Buffer       // u32, the sampled token (the next decode input)
	posBuf                      *kernels.Buffer       // u32 pos0 of the current batch
	kc, vc                      []kernels.BufferRange // per layer; in own buffers or a Batch's slot

	plans   map[planKey]*plan
	sampler *gpuSampler
	bufs    []*kernels.Buffer
	joined  *Batch  // while set, decode steps run in that batch (batch.go)
	queued  *waiter // the last step this session enqueued in a batch
	home    *Batch  // the batch whose KV slot holds the cache (Batch.NewSession); nil: own buffers
	slot    int     // the slot in home
}

// plan is a recorded forward pass. With expert paging, cuts mark where the
// router's choices of a MoE layer must be read back before the rest runs.
type plan struct {
	ops  []*kernels.Op
	cuts []cut
	head int // ops[head:] are the LM head's (norm, matmul)
}

type cut struct {
	at    int // ops[:at] end with the layer's routing
	layer int
}

type planKey struct {
	m       int
	fromTok bool // decode: input id is the previously sampled token
	all     bool // logits for every row
}

// NewSession allocates a session's buffers and KV cache.
func (m *Model) NewSession() (*Session, error) {
	return m.newSession(nil)
}

// newSession allocates a session; with kv, its KV cache is kv's ranges
// (per layer, K and V) instead of buffers of its own.
func (m *Model) newSession(kv func(layer int) (k, v kernels.BufferRange)) (*Session, error) {
	c := m.Config
	s := &Session{m: m, dev: m.dev, ctxLen: m.opts.Context, batch: m.opts.Batch, plans: map[planKey]*plan{}}
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	b := uint64(s.batch)
	s.qkvL = newQKVLayout(c, s.batch, m.dev.Limits().MinStorageOffsetAlignment/4)
	nb := func(need bool, n uint64) uint64 { // size of an optional buffer
		if need {
			return n
		}
		return 0
	}
	for _, a := range []struct {
		dst   **kernels.Buffer
		name  string
		bytes uint64
	}{
		{&s.x, "x", b * uint64(c.HiddenSize) * 4},
		{&s.xn, "xn", b * uint64(c.HiddenSize) * 4},
		{&s.qkv, "qkv", uint64(s.qkvL.size) * 4},
		{&s.att, "att", b * uint64(qDim) * 4},
		{&s.gu, "gate_up", b * uint64(2*c.FFN) * 4},
		{&s.h, "ffn_h", b * uint64(c.FFN) * 4},
		{&s.xLast, "x_last", uint64(c.HiddenSize) * 4},
		{&s.xnLast, "xn_last", uint64(c.HiddenSize) * 4},
		{&s.logits, "logits", uint64(c.VocabSize) * 4},
		{&s.ids, "ids", b * 4},
		{&s.tok, "tok", 4},
		{&s.posBuf, "pos", 4},
		{&s.qRaw, "q_raw", nb(c.QKNorm, b*uint64(qDim)*4)},
		{&s.kRaw, "k_raw", nb(c.QKNorm, b*uint64(kvDim)*4)},
		{&s.tmp, "tmp", nb(m.fam.sandwich, b*uint64(c.HiddenSize)*4)},
		{&s.tmp2, "tmp2", nb(m.fam.sandwich, b*uint64(c.HiddenSize)*4)},
		{&s.rlog, "router_logits", nb(m.fam.moe, b*uint64(c.Experts)*4)},
		{&s.sel, "experts_sel", nb(m.fam.moe, b*uint64(c.ExpertsUsed)*4)},
		{&s.wts, "experts_wts", nb(m.fam.moe, b*uint64(c.ExpertsUsed)*4)},
		{&s.egu, "experts_gate_up", nb(m.fam.moe, b*uint64(c.ExpertsUsed*2*c.ExpertFFN)*4)},
		{&s.eh, "experts_h", nb(m.fam.moe, b*uint64(c.ExpertsUsed*c.ExpertFFN)*4)},
		{&s.ey, "experts_y", nb(m.fam.moe, b*uint64(c.ExpertsUsed*c.HiddenSize)*4)},
		{&s.selSlots, "experts_slots", nb(m.pager != nil, b*uint64(c.ExpertsUsed)*4)},
		{&s.xq, "x_q8", nb(m.opts.Q8X, kernels.Q8RowBytes(max(c.HiddenSize, qDim, c.FFN)))},
	} {
		if a.bytes == 0 {
			continue
		}
		buf, err := s.dev.NewBuffer(a.name, a.bytes)
		if err != nil {
			s.Close()
			return nil, err
		}
		*a.dst = buf
		s.bufs = append(s.bufs, buf)
	}
	f16 := !m.opts.KVF32
	kvBytes := kernels.KVCacheBytes(c.KVHeads, s.ctxLen, c.HeadDim, f16)
	for l := 0; l < c.Layers; l++ {
		if kv != nil {
			k, v := kv(l)
			s.kc, s.vc = append(s.kc, k), append(s.vc, v)
			continue
		}
		for _, dst := range []*[]kernels.BufferRange{&s.kc, &s.vc} {
			buf, err := s.dev.NewBuffer(fmt.Sprintf("kv%d", l), kvBytes)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("KV cache for %d tokens: %w", s.ctxLen, err)
			}
			*dst = append(*dst, whole(buf))
			s.bufs = append(s.bufs, buf)
		}
	}
	return s, nil
}

// Close frees the session's GPU memory.
func (s *Session) Close() {
	s.dev.Sync() // flush queued writes before buffers go (kernels.Device.Sync)
	for _, b := range s.bufs {
		b.Release()
	}
	s.bufs = nil
	for _, pl := range s.plans {
		releaseOps(pl.ops)
	}
	s.plans = nil
	if s.sampler != nil {
		s.sampler.release()
	}
	if s.home != nil {
		s.home.free(s)
		s.home = nil
	}
}

// Pos is the number of tokens in the KV cache.
func (s *Session) Pos() int { return s.pos }

// Context is the KV cache capacity in tokens.
func (s *Session) Context() int { return s.ctxLen }

// Reset empties the KV cache (the next token is at position 0).
func (s *Session) Reset() { s.pos = 0 }

// Rewind keeps the first pos tokens of the KV cache and drops the rest:
// the next token goes at position pos. A conversation that shares its
// first pos tokens with what the cache holds continues from there instead
// of prefilling them again. pos must be between 0 and Pos().
func (s *Session) Rewind(pos int) error {
	if pos < 0 || pos > s.pos {
		return fmt.Errorf("rewind to position %d: the KV cache holds %d tokens", pos, s.pos)
	}
	s.pos = pos
	return nil
}

func whole(b *kernels.Buffer) kernels.BufferRange { return kernels.Whole(b) }

// optional binds b, or nothing when b is nil.
func optional(b *kernels.Buffer) kernels.BufferRange {
	if b == nil {
		return kernels.BufferRange{}
	}
	return whole(b)
}

// plan returns (building once) the ops of a forward pass over m tokens,
// ending with the logits of the last token (or of every token when all).
func (s *Session) plan(k planKey) (*plan, error) {
	if pl, ok := s.plans[k]; ok {
		return pl, nil
	}
	pl, err := s.build(k)
	if err != nil {
		return nil, err
	}
	s.plans[k] = pl
	return pl, nil
}

func (s *Session) build(k planKey) (*plan, error) {
	var cuts []cut
	c := s.m.Config
	d := s.dev
	m := k.m
	var ops []*kernels.Op
	var err error
	q8 := &q8Inputs{d: d, xq: s.xq}
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
	// matmulRows is d.MatMul over rows rows of in; a matrix-vector
	// product (one row: the decode step's, the LM head's) may take 8-bit
	// inputs (q8Inputs). matmul is it over the pass's m rows.
	matmulRows := func(w *kernels.Weight, in *kernels.Buffer, out kernels.BufferRange, rows int, o kernels.MatMulOpts) ([]*kernels.Op, error) {
		if rows != 1 {
			q8.forget()
			return d.MatMul(w, whole(in), out, rows, o)
		}
		return q8.matmul(w, in, 1, &o, func(x kernels.BufferRange) ([]*kernels.Op, error) { return d.MatMul(w, x, out, 1, o) })
	}
	matmul := func(w *kernels.Weight, in *kernels.Buffer, out kernels.BufferRange, o kernels.MatMulOpts) ([]*kernels.Op, error) {
		return matmulRows(w, in, out, m, o)
	}
	ids := whole(s.ids)
	if k.fromTok {
		ids = whole(s.tok)
	}
	scale := float32(1)
	if c.EmbedScale != 0 {
		scale = float32(c.EmbedScale)
	}
	addN(d.Embed(s.m.embed, ids, whole(s.x), m, scale))
	eps := float32(c.NormEps)
	attnScale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	if c.AttnScale != 0 {
		attnScale = float32(c.AttnScale)
	}
	pos := whole(s.posBuf)
	f16 := !s.m.opts.KVF32
	// norm is RMSNorm over rows rows of x into out; with one row its
	// 8-bit form too where the products that read out take it (q8).
	norm := func(x, g, out *kernels.Buffer, rows int, q8ok bool) {
		op, holds, e := q8.norm(x, g, out, rows, c.HiddenSize, eps, c.NormAddOne, q8ok && rows == 1)
		add(op, e)
		q8.held = holds
	}
	// normFor returns what the products ws, which follow a norm of x,
	// read and the norm they apply: with one row, where every one of
	// them takes MatMulOpts.Norm and none 8-bit inputs, x itself and the
	// norm (no dispatch of its own); else out, normed by a dispatch
	// (norm). Folding costs each workgroup a load of the norm's weight
	// beside x, which stays in cache: on an H100 folding the 1B shape's
	// 128,256-row head too made its decode faster, and folding fewer of
	// the 8B shape's norms changed nothing (docs/BENCHMARKS.md, tenth
	// session).
	normFor := func(x, g, out *kernels.Buffer, rows int, q8ok bool, ws ...*kernels.Weight) (*kernels.Buffer, kernels.NormIn) {
		if rows != 1 || !foldsNorm(q8ok && q8.xq != nil, ws...) {
			norm(x, g, out, rows, q8ok)
			return out, kernels.NormIn{}
		}
		return x, kernels.NormIn{G: whole(g), Eps: eps, AddOne: c.NormAddOne}
	}

	bias := func(b *kernels.Buffer) kernels.MatMulOpts {
		if b == nil {
			return kernels.MatMulOpts{}
		}
		return kernels.MatMulOpts{Bias: whole(b)}
	}
	// The attention and FFN outputs: added straight into the residual
	// stream, or (sandwich norms) normed first.
	residual := func(w *kernels.Weight, in *kernels.Buffer, b *kernels.Buffer, post *kernels.Buffer) {
		if post == nil {
			o := bias(b)
			o.Accumulate = true
			addN(matmul(w, in, whole(s.x), o))
			return
		}
		addN(matmul(w, in, whole(s.tmp), bias(b)))
		add(d.RMSNorm(whole(s.tmp), whole(post), whole(s.tmp2), m, c.HiddenSize, eps, c.NormAddOne))
		add(d.AddInPlace(whole(s.x), whole(s.tmp2), m*c.HiddenSize))
	}
	for l, ly := range s.m.layers {
		sliding := c.LayerSliding(l)
		rope := s.m.rope
		if sliding {
			rope = s.m.ropeLocal
		}
		qkvIn, qkvNorm := normFor(s.x, ly.attnNorm, s.xn, m, ly.qkvQ8X(), ly.qkvWeights()...)
		rows := s.qkvL.rows(c, ly.qkv != nil, m, 0)
		mm := func(w *kernels.Weight, out kernels.BufferRange, b *kernels.Buffer) ([]*kernels.Op, error) {
			o := bias(b)
			o.Norm = qkvNorm
			return matmul(w, qkvIn, out, o)
		}
		addN(s.m.qkvOps(&ly, mm, s.qkv, s.qRaw, s.kRaw, rows, m))
		ao := kernels.AttnOpts{Scale: attnScale, F16: f16, Softcap: float32(c.AttnSoftcap), QStride: rows.QStride}
		q := at(s.qkv, rows.QOff)
		if s.m.opts.RoPEInAttention && kernels.CanRoPE(m, c.HeadDim, false) {
			// Decode: the attention rotates q and k and writes k and v
			// to the cache itself.
			ao.RoPE, q = &kernels.AttnRoPE{Rows: rows, Params: rope}, whole(s.qkv)
		} else {
			// One dispatch rotates q and k and writes k and v to the cache.
			add(d.RoPEKV(whole(s.qkv), s.kc[l], s.vc[l], pos, rows, s.ctxLen, f16, rope))
		}
		if sliding && c.SlidingWindow < s.ctxLen {
			// (A window as long as the cache changes nothing.)
			ao.Window = c.SlidingWindow
		}
		if ly.sinks != nil {
			ao.Sinks = whole(ly.sinks)
		}
		addN(d.Attention(q, s.kc[l], s.vc[l], whole(s.att), pos, m, c.Heads, c.KVHeads, c.HeadDim, s.ctxLen, ao))
		residual(ly.o, s.att, ly.oBias, ly.postAttnNorm)
		if e := ly.moe; e != nil {
			norm(s.x, ly.ffnNorm, s.xn, m, false)
			// Routing, the chosen experts and their weighted sum, all on
			// the GPU: no readback inside the token — unless experts are
			// paged, when the choices are read back right after routing.
			k, ffn := c.ExpertsUsed, c.ExpertFFN
			addN(d.MatMul(e.router, whole(s.xn), whole(s.rlog), m, bias(e.routerBias)))
			add(d.MoERoute(whole(s.rlog), whole(s.sel), whole(s.wts), m, c.Experts, k, e.gating))
			gateUp, down, gub, db, sel := e.gateUp, e.down, e.gateUpBias, e.downBias, s.sel
			if pg := s.m.pager; pg != nil {
				lp := pg.layers[l]
				gateUp, down, gub, db, sel = lp.gateUp, lp.down, lp.gateUpBias, lp.downBias, s.selSlots
				cuts = append(cuts, cut{at: len(ops), layer: l})
			}
			addN(d.MatMulExperts(gateUp, whole(s.xn), whole(sel), whole(s.egu), m, k, false, optional(gub)))
			add(d.GatedAct(whole(s.egu), whole(s.eh), m*k, ffn, 2*ffn, ffn, activation(c.Activation)))
			addN(d.MatMulExperts(down, whole(s.eh), whole(sel), whole(s.ey), m, k, true, optional(db)))
			add(d.MoECombine(whole(s.ey), whole(s.wts), whole(s.x), m, k, c.HiddenSize, true))
		} else {
			in, nin := normFor(s.x, ly.ffnNorm, s.xn, m, ly.gateUp.CanQ8X(), ly.gateUp)
			if m == 1 && ly.gateUp.CanGate() {
				// Decode: the activation fused into the gate+up matvec.
				addN(matmul(ly.gateUp, in, whole(s.h), kernels.MatMulOpts{Gated: true, Act: activation(c.Activation), Norm: nin}))
			} else {
				addN(d.MatMul(ly.gateUp, whole(in), whole(s.gu), m, kernels.MatMulOpts{Norm: nin}))
				add(d.GatedAct(whole(s.gu), whole(s.h), m, c.FFN, 2*c.FFN, c.FFN, activation(c.Activation)))
			}
			residual(ly.down, s.h, nil, ly.postFFNNorm)
		}
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
	}

	head := len(ops)
	switch {
	case k.all:
		if s.logitsAll == nil {
			if s.logitsAll, err = d.NewBuffer("logits_all", uint64(s.batch)*uint64(c.VocabSize)*4); err != nil {
				return nil, err
			}
			s.bufs = append(s.bufs, s.logitsAll)
		}
		add(d.RMSNorm(whole(s.x), whole(s.m.outNorm), whole(s.xn), m, c.HiddenSize, eps, c.NormAddOne))
		addN(d.MatMul(s.m.output, whole(s.xn), whole(s.logitsAll), m, kernels.MatMulOpts{}))
	default:
		// One row: the token's, or (a prompt) the last one, which the
		// caller copies into xLast before these.
		x := s.x
		if m > 1 {
			x = s.xLast
		}
		in, nin := normFor(x, s.m.outNorm, s.xnLast, 1, s.m.output.CanQ8X(), s.m.output)
		addN(matmulRows(s.m.output, in, whole(s.logits), 1, kernels.MatMulOpts{Norm: nin}))
	}
	if err != nil {
		return nil, err
	}
	return &plan{ops: ops, cuts: cuts, head: head}, nil
}

func activation(name string) kernels.Act {
	switch name {
	case "gelu_tanh":
		return kernels.GELUTanh
	case "swiglu_oai":
		return kernels.SwiGLUOAI
	}
	return kernels.SiLU
}

// encode records a forward pass over ids (or, with fromTok, over the last
// sampled token) into e, writing the batch position first, and advances
// pos. It returns the encoder the caller continues with and submits: with
// expert paging, encode submits the parts of the pass before each MoE
// layer's experts itself, reading the router's choices back in between.
func (s *Session) encode(ctx context.Context, e *kernels.Encoder, ids []int, fromTok, all bool) (*kernels.Encoder, error) {
	m := len(ids)
	if fromTok {
		m = 1
	}
	if s.pos+m > s.ctxLen {
		return e, fmt.Errorf("%w: %d tokens in the cache + %d new > %d", ErrContextFull, s.pos, m, s.ctxLen)
	}
	if s.m.pager != nil && m > 1 {
		// The experts a whole batch needs may not fit the slots: page
		// token by token.
		if all {
			return e, errors.New("logits for every position are not available with expert paging")
		}
		for i := range ids {
			var err error
			if e, err = s.encode(ctx, e, ids[i:i+1], false, false); err != nil {
				return e, err
			}
			if i < len(ids)-1 {
				if err := e.Submit(); err != nil {
					return e, err
				}
				e = s.dev.NewEncoder()
			}
		}
		return e, nil
	}
	if !fromTok {
		buf := make([]byte, 4*m)
		for i, id := range ids {
			if id < 0 || id >= s.m.Config.VocabSize {
				return e, fmt.Errorf("token id %d outside the %d-token vocabulary", id, s.m.Config.VocabSize)
			}
			binary.LittleEndian.PutUint32(buf[4*i:], uint32(id))
		}
		if err := s.dev.Write(s.ids, 0, buf); err != nil {
			return e, err
		}
	}
	var p [4]byte
	binary.LittleEndian.PutUint32(p[:], uint32(s.pos))
	if err := s.dev.Write(s.posBuf, 0, p[:]); err != nil {
		return e, err
	}
	pl, err := s.plan(planKey{m: m, fromTok: fromTok, all: all})
	if err != nil {
		return e, err
	}
	e.SetPositions(s.pos, m)
	done := 0
	for _, c := range pl.cuts {
		e.Run(pl.ops[done:c.at]...)
		done = c.at
		if err := s.pageIn(ctx, e, c.layer); err != nil {
			return e, err
		}
		e = s.dev.NewEncoder()
		e.SetPositions(s.pos, m)
	}
	ops := pl.ops[done:]
	if m > 1 && !all {
		head := pl.head - done
		e.Run(ops[:head]...)
		hidden := uint64(s.m.Config.HiddenSize) * 4
		e.Copy(s.x, uint64(m-1)*hidden, s.xLast, 0, hidden)
		e.Run(ops[head:]...)
	} else {
		e.Run(ops...)
	}
	s.pos += m
	return e, nil
}

// pageIn submits e (which ends with layer l's routing of one token), reads
// the chosen experts back, makes them resident and writes their slots.
func (s *Session) pageIn(ctx context.Context, e *kernels.Encoder, l int) error {
	start := time.Now()
	k := s.m.Config.ExpertsUsed
	raw, err := e.SubmitRead(s.sel, 0, uint64(4*k))
	if err != nil {
		return err
	}
	experts := make([]int, k)
	for i := range experts {
		experts[i] = int(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	slots, err := s.m.pager.place(ctx, l, experts)
	if err != nil {
		return err
	}
	buf := make([]byte, 4*k)
	for i, sl := range slots {
		binary.LittleEndian.PutUint32(buf[4*i:], uint32(sl))
	}
	err = s.dev.Write(s.selSlots, 0, buf)
	s.m.pager.stats.Stall += time.Since(start)
	return err
}

// Forward runs ids through the model (in chunks of the batch size) and
// returns the logits of the last token.
func (s *Session) Forward(ids []int) ([]float32, error) {
	if len(ids) == 0 {
		return nil, errors.New("no tokens")
	}
	for len(ids) > 0 {
		n := min(len(ids), s.batch)
		e, err := s.encode(context.Background(), s.dev.NewEncoder(), ids[:n], false, false)
		if err != nil {
			return nil, err
		}
		if err := e.Submit(); err != nil {
			return nil, err
		}
		ids = ids[n:]
	}
	return s.dev.ReadF32(s.logits, 0, s.m.Config.VocabSize)
}

// ForwardAll runs ids (at most the batch size) and returns the logits of
// every position.
func (s *Session) ForwardAll(ids []int) ([][]float32, error) {
	if len(ids) == 0 || len(ids) > s.batch {
		return nil, fmt.Errorf("ForwardAll takes 1 to %d tokens, got %d", s.batch, len(ids))
	}
	e, err := s.encode(context.Background(), s.dev.NewEncoder(), ids, false, true)
	if err != nil {
		return nil, err
	}
	if err := e.Submit(); err != nil {
		return nil, err
	}
	v := s.m.Config.VocabSize
	flat, err := s.dev.ReadF32(s.logitsAll, 0, len(ids)*v)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(ids))
	for i := range out {
		out[i] = flat[i*v : (i+1)*v]
	}
	return out, nil
}

// foldsNorm reports whether the products ws, which read a norm's output,
// take the norm inside (MatMulOpts.Norm, no dispatch of its own): every
// one has a normed kernel and none reads 8-bit inputs (q8). A session's
// decode step and a batch step decide alike, so that a batched sequence
// gets the bits it gets alone.
func foldsNorm(q8 bool, ws ...*kernels.Weight) bool {
	if q8 || len(ws) == 0 {
		return false
	}
	for _, w := range ws {
		if !w.CanNorm() {
			return false
		}
	}
	return true
}
