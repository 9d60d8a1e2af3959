//go:build cgo || js

package kernels

import (
	"cmp"
	_ "embed"
	"encoding/binary"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
)

//go:embed attention_decode.wgsl
var attentionDecodeWGSL string

//go:embed attention_prefill.wgsl
var attentionPrefillWGSL string

// AttnMaxHeadDim is the largest head dimension Attention supports.
const AttnMaxHeadDim = 256

// attentionParams mirrors Params in attention_decode.wgsl (64 bytes); the
// prefill kernels' Params are its first 48.
type attentionParams struct {
	Heads, KVHeads, Capacity, QStride uint32
	Window, HasSinks, M               uint32
	NC                                uint32 // decode: chunks per (head, token)
	Scale, Softcap                    float32
	MinL                              uint32 // decode: fewest keys per chunk
	Slots, SlotRows                   uint32 // decode: KVSlots
	QOff                              uint32 // decode: q's first value in its binding
	_                                 [2]uint32
}

// attnRoPEParams is attentionParams with the fused RoPE's fields
// (AttnOpts.RoPE): ROPEPARAMS in attention_decode.wgsl, ropeKVParams'
// meaning.
type attnRoPEParams struct {
	attentionParams
	KOff, VOff, KStride, VStride uint32
	Dim, Neox                    uint32
	RScale                       float32
	_                            uint32
	InvFreq                      [ropeMaxFreqs]float32
}

// attnRoPEFields is the ROPEPARAMS block: attnRoPEParams' fields past
// attentionParams.
const attnRoPEFields = `    k_off: u32,
    v_off: u32,
    k_stride: u32,
    v_stride: u32,
    dim: u32,
    neox: u32,
    rscale: f32,
    _pad3: u32,
    inv_freq: array<vec4<f32>, 64>,
`

// AttnRoPE is the RoPEKV an Attention does itself (AttnOpts.RoPE).
type AttnRoPE struct {
	Rows   QKVRows // where q, k and v lie in Attention's q buffer
	Params RoPEParams
}

// AttnOpts configures Attention.
type AttnOpts struct {
	Scale   float32     // score scale (1/sqrt(headDim) typically; caller passes it)
	Window  int         // 0 = full causal; else query at position i sees keys j with i-Window < j <= i
	Sinks   BufferRange // optional f32 [heads]: per-head sink logit appended to the softmax denominator (GPT-OSS); Buf nil = none
	Softcap float32     // 0 = off; else scores = softcap*tanh(scores/softcap) (Gemma 2)
	F16     bool        // cache dtype
	QStride int         // elements between tokens in q (0 = heads*headDim)
	// Slots: each query token is one sequence's, with its own position
	// and cache (the split kernel then serves any m).
	Slots KVSlots
	// RoPE, where set, does RoPEKV's work inside the attention, one
	// dispatch fewer in the pass: q is then the buffer of q, k and v rows
	// RoPE.Rows describes (its QStride replaces this one), q is rotated as
	// it is read, the first dispatch takes the token's own key from those
	// rows, and the second writes its k (rotated) and v to the caches.
	// q's rows are left unrotated. Only for one token a sequence (m == 1,
	// or Slots) and head dims a multiple of 4 (CanRoPE).
	RoPE *AttnRoPE
}

// CanRoPE reports whether AttnOpts.RoPE serves attention over m query
// rows of headDim values (slots: each row its own sequence).
func CanRoPE(m, headDim int, slots bool) bool {
	return (m == 1 || slots) && headDim%4 == 0 && headDim <= AttnMaxHeadDim
}

// attnPrefillTile is the query/key tile of the prefill kernel for a head
// dimension: 16×16 (256 threads) up to 128, else 8×8.
func attnPrefillTile(headDim int) int {
	if headDim <= 128 {
		return 16
	}
	return 8
}

// attnPrefillShared is the prefill kernel's workgroup memory in bytes.
func attnPrefillShared(headDim, tile int) int {
	return 4 * (tile*headDim + tile*(headDim+1) + tile*headDim + tile*tile + 3*tile)
}

// Attention builds the Ops computing, for query tokens t < m (position
// pos0+t, pos0 the u32 in pos, read at run time), softmax attention over
// cache positions max(0, pos0+t-Window+1) .. pos0+t:
//
//	out[t][h*headDim + i] = Σ_j softmax_j(s_j) · V[j][i],  s_j = Scale·q[t][h]·K[j]
//
// with query head h reading kv head h/(heads/kvHeads), K/V from the
// [kvHeads][capacity][headDim] caches (position j at slot j % capacity;
// the RoPEKV of this batch must run earlier in the same pass). q holds m
// rows at QStride; out gets m rows of heads×headDim.
//
// m > 1 returns one Op, a tiled prefill kernel (attention_prefill_tiled.wgsl
// where its tile fits the head dimension and workgroup memory, else
// attention_prefill.wgsl). m == 1 (and m > 1 where neither prefill tile
// fits workgroup memory) returns two Ops to run in
// order, split-K ("flash-decoding"): the first splits each token's keys
// into up to NC chunks per kv head (the chunk count follows pos at run
// time; the grid is sized for the capacity) and writes per (head, chunk)
// partials (max, Σp, Σp·V) to a buffer of the Device shared by these Ops;
// the second merges them per head (sinks join there, once). The partials
// buffer is shared by every split Attention of the Device (Ops run in
// order, so reuse is safe) and goes back to the Device's pool once all Ops
// that bind it are garbage.
//
// A ring cache must hold every key the batch needs: capacity ≥ pos0+m
// for full attention, capacity ≥ Window+m-1 with a window (checked).
// out must be its own buffer; the others may share read-only buffers.
func (d *Device) Attention(q, kCache, vCache, out, pos BufferRange, m, heads, kvHeads, headDim, capacity int, o AttnOpts) ([]*Op, error) {
	qStride := o.QStride
	if qStride == 0 {
		qStride = heads * headDim
	}
	if r := o.RoPE; r != nil {
		switch {
		case !CanRoPE(m, headDim, o.Slots.N > 0):
			return nil, fmt.Errorf("kernels: attention: no fused RoPE for m=%d headDim=%d", m, headDim)
		case r.Rows.M != m || r.Rows.Heads != heads || r.Rows.KVHeads != kvHeads || r.Rows.HeadDim != headDim:
			return nil, fmt.Errorf("kernels: attention: RoPE rows %+v do not match m=%d heads=%d kvHeads=%d headDim=%d", r.Rows, m, heads, kvHeads, headDim)
		}
		if err := r.Rows.check(); err != nil {
			return nil, err
		}
		if err := r.Params.check(headDim); err != nil {
			return nil, err
		}
		qs, ks, vs := r.Rows.spans()
		if need := uint64(max(qs.end(), ks.end(), vs.end())) * 4; q.size() < need {
			return nil, fmt.Errorf("kernels: attention: q/k/v buffer %d bytes, want %d", q.size(), need)
		}
		qStride = r.Rows.QStride
	}
	run := m // tokens of one sequence in the batch
	if o.Slots.N > 0 {
		run = 1
	}
	switch {
	case m <= 0 || heads <= 0 || kvHeads <= 0 || heads%kvHeads != 0 || headDim <= 0 || capacity <= 0 || o.Window < 0:
		return nil, fmt.Errorf("kernels: attention: bad shape m=%d heads=%d kvHeads=%d headDim=%d capacity=%d window=%d", m, heads, kvHeads, headDim, capacity, o.Window)
	case headDim > AttnMaxHeadDim || (o.F16 && headDim%2 != 0):
		return nil, fmt.Errorf("kernels: attention: headDim %d unsupported (≤ %d, even for f16)", headDim, AttnMaxHeadDim)
	case qStride < heads*headDim:
		return nil, fmt.Errorf("kernels: attention: QStride %d < heads*headDim %d", qStride, heads*headDim)
	case o.Window > 0 && capacity < o.Window+run-1:
		return nil, fmt.Errorf("kernels: attention: a %d-slot cache cannot hold the %d keys a batch of %d with window %d needs", capacity, o.Window+run-1, run, o.Window)
	case o.Softcap < 0:
		return nil, fmt.Errorf("kernels: attention: softcap %g < 0", o.Softcap)
	}
	slotRows, posNeed, err := o.Slots.check(kvHeads, capacity, headDim, o.F16, m, kCache, vCache)
	if err != nil {
		return nil, fmt.Errorf("kernels: attention: %w", err)
	}
	qNeed := (uint64(m-1)*uint64(qStride) + uint64(heads*headDim)) * 4
	if o.RoPE != nil {
		qNeed = 0 // checked above
	}
	outNeed := uint64(m*heads*headDim) * 4
	if q.size() < qNeed || out.size() < outNeed || pos.size() < posNeed {
		return nil, fmt.Errorf("kernels: attention: q %d bytes (want %d), out %d (want %d), pos %d (want %d)",
			q.size(), qNeed, out.size(), outNeed, pos.size(), posNeed)
	}
	sinks := o.Sinks
	var hasSinks uint32
	if sinks.Buf != nil {
		if sinks.size() < uint64(heads)*4 {
			return nil, fmt.Errorf("kernels: attention: sinks %d bytes, want %d", sinks.size(), heads*4)
		}
		hasSinks = 1
	} else {
		sinks = pos // an unread placeholder binding
	}
	var f16 uint32
	dt := "f32"
	if o.F16 {
		f16, dt = 1, "f16"
	}
	prm := attentionParams{
		Heads: uint32(heads), KVHeads: uint32(kvHeads), Capacity: uint32(capacity), QStride: uint32(qStride),
		Window: uint32(o.Window), HasSinks: hasSinks, M: uint32(m), Scale: o.Scale, Softcap: o.Softcap,
		Slots: uint32(o.Slots.N), SlotRows: uint32(slotRows),
	}
	if o.Slots.N > 0 || o.RoPE != nil {
		return d.attentionSplit(q, kCache, vCache, out, pos, sinks, m, heads, kvHeads, headDim, capacity, o.Window, f16, prm, o.RoPE)
	}
	if m > 1 && !d.attn.tune.forceSplit && !d.attn.tune.prefillOld {
		if sh, ok := d.attnPrefillTiledShape(headDim, m); ok {
			return d.attentionPrefillTiled(q, kCache, vCache, out, pos, sinks, m, heads, headDim, o.F16, sh, prm)
		}
	}
	tile := attnPrefillTile(headDim)
	if m == 1 || d.attn.tune.forceSplit || attnPrefillShared(headDim, tile) > d.limits.MaxWorkgroupStorage {
		return d.attentionSplit(q, kCache, vCache, out, pos, sinks, m, heads, kvHeads, headDim, capacity, o.Window, f16, prm, nil)
	}
	src, err := setConst(attentionPrefillWGSL, "BQ", uint32(tile))
	if err == nil {
		src, err = setConst(src, "BK", uint32(tile))
	}
	if err == nil {
		src, err = setConst(src, "HD", uint32(headDim))
	}
	if err == nil {
		src, err = setConst(src, "F16", f16)
	}
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("attention/prefill/t%d/hd%d/%s", tile, headDim, dt)
	pipe, err := d.Pipeline(key, src, "main", []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage, ReadOnly, ReadOnly})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, prm)
	op, err := d.NewOp(pipe, params, [3]uint32{uint32((m + tile - 1) / tile), uint32(heads), 1}, q, kCache, vCache, out, pos, sinks)
	if err != nil {
		return nil, err
	}
	return []*Op{op}, nil
}

// attnTune holds the attention shape knobs of a Device (tests and
// BenchmarkAttentionDecode vary them; zero fields take the defaults): the
// workgroup size, the workgroups per token the chunk count aims at, and the
// fewest keys per chunk of the split kernel. forceSplit sends m > 1 to the
// split kernel too; prefillOld and prefill pick the prefill kernel.
type attnTune struct {
	wg, target, minL int
	forceSplit       bool
	prefillOld       bool     // m > 1 through attention_prefill.wgsl, not the tiled kernel
	prefill          attnTile // the tiled prefill kernel's tile; zero = attnPrefillTiledShape's pick
}

func (t attnTune) shape() (wg, target, minL int) {
	return cmp.Or(t.wg, 128), cmp.Or(t.target, 256), cmp.Or(t.minL, 32)
}

// attnState is a Device's attention state: the knobs and the partials
// buffer its split Attention Ops share.
type attnState struct {
	mu   sync.Mutex
	tune attnTune
	scr  *attnScratch
}

// attnActiveChunks is how many of nc chunks hold keys for the query at
// position i: span() of attention_decode.wgsl, on the host.
func attnActiveChunks(i, capacity, window, nc, minL int) int {
	lo := i + 1 - min(i+1, capacity)
	if window > 0 {
		lo = max(lo, i+1-min(i+1, window))
	}
	nk := i + 1 - lo
	l := max(minL, (nk+nc-1)/nc)
	return max(1, min(nc, (nk+l-1)/l))
}

// attnGroupWidth is how many of the grp query heads sharing a kv head one
// split workgroup serves: the largest divisor of grp that is ≤ 8 with
// width·headDim ≤ 2048 (q of all of them sits in workgroup memory).
func attnGroupWidth(grp, headDim int) int {
	for w := min(grp, 8); w > 1; w-- {
		if grp%w == 0 && w*headDim <= 2048 {
			return w
		}
	}
	return 1
}

var attnKVBlock = regexp.MustCompile(`(?s)// BEGIN KV\n.*// END KV\n`)

// attnKVLoads is the K/V binding and load block of attention_decode.wgsl
// for the cache dtype; vec: rows start at multiples of 4 elements (headDim
// % 4 == 0), so loads are 16 (f32) or 8 (f16) bytes wide.
func attnKVLoads(f16, vec bool) string {
	var arr, k, v string
	switch {
	case !f16 && vec:
		arr = "vec4<u32>"
		k = "return bitcast<vec4<f32>>(kc[e >> 2u]);"
	case f16 && vec:
		arr = "vec2<u32>"
		k = "let w = kc[e >> 2u]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));"
	case !f16:
		arr = "u32"
		k = "return bitcast<vec4<f32>>(vec4<u32>(kc[e], kc[e + 1u], kc[e + 2u], kc[e + 3u]));"
	default:
		arr = "u32"
		k = "let w = e >> 1u; return vec4<f32>(unpack2x16float(kc[w]), unpack2x16float(kc[w + 1u]));"
	}
	v = strings.ReplaceAll(k, "kc[", "vc[")
	return "// BEGIN KV\n" +
		"@group(0) @binding(2) var<storage, read> kc: array<" + arr + ">;\n" +
		"@group(0) @binding(3) var<storage, read> vc: array<" + arr + ">;\n" +
		"fn kld(e: u32) -> vec4<f32> { " + k + " }\n" +
		"fn vld(e: u32) -> vec4<f32> { " + v + " }\n" +
		"// END KV\n"
}

// attnScratch is the partials buffer the split Attention Ops of a Device
// share; refs counts the Ops bound to it plus builds in progress (under
// the Device's attn.mu).
type attnScratch struct {
	d    *Device
	buf  *Buffer
	refs int
}

// attnPartials returns the Device's partials buffer, at least size bytes,
// with a reference the caller drops once its Ops are tied to it.
func (d *Device) attnPartials(size uint64) (*attnScratch, error) {
	d.attn.mu.Lock()
	defer d.attn.mu.Unlock()
	s := d.attn.scr
	if s == nil || s.buf.Size() < size {
		// A larger one for the new Ops; Ops bound to the old one keep it.
		b, err := d.Scratch(size)
		if err != nil {
			return nil, err
		}
		s = &attnScratch{d: d, buf: b}
		d.attn.scr = s
	}
	s.refs++
	return s, nil
}

// drop releases one reference; the last one gives the buffer back to the
// Device's scratch pool (released if the Device is closed). Queue order
// makes the pool's reuse safe after the last submit that used it.
func (s *attnScratch) drop() {
	a := &s.d.attn
	a.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last && a.scr == s {
		a.scr = nil
	}
	a.mu.Unlock()
	if last {
		s.d.Put(s.buf)
	}
}

// tie holds a reference for as long as op is reachable.
func (s *attnScratch) tie(op *Op) {
	s.d.attn.mu.Lock()
	s.refs++
	s.d.attn.mu.Unlock()
	runtime.AddCleanup(op, (*attnScratch).drop, s)
}

// attnRoPEBlock returns the ROPE and ROPESTORE blocks of
// attention_decode.wgsl for AttnOpts.RoPE. ROPE (both dispatches): q is
// rotated as it is read (ropekv.wgsl's k_rotated, on q[]), and load_cur
// takes key i's k (rotated) and v from the q/k/v rows, rounded as the
// cache holds them, into kcur and vcur. ROPESTORE (the second dispatch):
// store_cur writes them to the caches, bound read-write there, in whole
// vec4 (f32) or vec2 (f16 pairs) words: head dims a multiple of 4.
func attnRoPEBlock(f16 bool) (rope, store string, err error) {
	rot, _, ok := takeBlock(ropeKVWGSL, "ROT")
	if !ok {
		return "", "", fmt.Errorf("kernels: attention: no ROT block in ropekv.wgsl")
	}
	rot = strings.ReplaceAll(xIndex.ReplaceAllLiteralString(rot, "q["), "params.scale", "params.rscale")
	round, word, wtype := "v", "bitcast<vec4<u32>>(v)", "vec4<u32>"
	if f16 {
		round = "vec4<f32>(unpack2x16float(pack2x16float(v.xy)), unpack2x16float(pack2x16float(v.zw)))"
		word, wtype = "vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw))", "vec2<u32>"
	}
	rope = rot + `
fn qval(base: u32, e: u32, p: u32) -> f32 {
    return k_rotated(base, e, p);
}

fn cache_round(v: vec4<f32>) -> vec4<f32> {
    return ` + round + `;
}

// Values e..e+3 of key p's k (rotated) and v, kv head kvh of token t.
fn cur_kv(t: u32, kvh: u32, p: u32, e: u32) -> array<vec4<f32>, 2> {
    let kb = params.k_off + t * params.k_stride + kvh * HD;
    let vb = params.v_off + t * params.v_stride + kvh * HD;
    return array<vec4<f32>, 2>(
        vec4<f32>(k_rotated(kb, e, p), k_rotated(kb, e + 1u, p), k_rotated(kb, e + 2u, p), k_rotated(kb, e + 3u, p)),
        vec4<f32>(q[vb + e], q[vb + e + 1u], q[vb + e + 2u], q[vb + e + 3u]));
}

fn load_cur(t: u32, kvh: u32, p: u32, lid: u32) {
    for (var d4 = lid; d4 < HD4; d4 += WG) {
        let kv = cur_kv(t, kvh, p, 4u * d4);
        kcur[d4] = cache_round(kv[0]);
        vcur[d4] = cache_round(kv[1]);
    }
}
`
	store = `fn cache_word(v: vec4<f32>) -> ` + wtype + ` {
    return ` + word + `;
}

fn store_cur(t: u32, kvh: u32, p: u32, lid: u32, dst: u32) {
    for (var d4 = lid; d4 < HD4; d4 += WG) {
        let kv = cur_kv(t, kvh, p, 4u * d4);
        kc[(dst >> 2u) + d4] = cache_word(kv[0]);
        vc[(dst >> 2u) + d4] = cache_word(kv[1]);
    }
}
`
	return rope, store, nil
}

func (d *Device) attentionSplit(q, kCache, vCache, out, pos, sinks BufferRange, m, heads, kvHeads, headDim, capacity, window int, f16 uint32, prm attentionParams, rope *AttnRoPE) ([]*Op, error) {
	wg, target, minL := d.attn.tune.shape()
	gw := attnGroupWidth(heads/kvHeads, headDim)
	groups := heads / gw // workgroups per chunk index
	keys := capacity     // most keys a query sees
	if window > 0 {
		keys = min(keys, window)
	}
	nc := min(max((target+groups-1)/groups, 1), wg, (keys+minL-1)/minL)
	hd4 := (headDim + 3) / 4
	size := uint64(m) * uint64(heads) * uint64(nc) * uint64(hd4+1) * 16
	scr, err := d.attnPartials(size)
	if err != nil {
		return nil, err
	}
	defer scr.drop()
	part := BufferRange{Buf: scr.buf, Size: size}
	prm.NC, prm.MinL = uint32(nc), uint32(minL)
	params, _ := binary.Append(nil, binary.LittleEndian, prm)
	vec := headDim%4 == 0
	dt := "f32"
	if f16 != 0 {
		dt = "f16"
	}
	src := attnKVBlock.ReplaceAllLiteralString(attentionDecodeWGSL, attnKVLoads(f16 != 0, vec))
	for _, c := range []struct {
		name string
		v    uint32
	}{{"WG", uint32(wg)}, {"HD", uint32(headDim)}, {"F16", f16}, {"GW", uint32(gw)}} {
		if src, err = setConst(src, c.name, c.v); err != nil {
			return nil, err
		}
	}
	layout := []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage, Storage, ReadOnly, ReadOnly}
	// With RoPE both dispatches take its source and params, and the
	// second (which stores key i) binds the caches read-write.
	src0, params0, keyRoPE := src, params, ""
	src1, params1, layout1 := src, params, layout
	if rope != nil {
		r, p := rope.Rows, rope.Params
		rp := attnRoPEParams{attentionParams: prm,
			KOff: uint32(r.KOff), VOff: uint32(r.VOff), KStride: uint32(r.KStride), VStride: uint32(r.VStride),
			Dim: uint32(p.Dim), RScale: p.scale()}
		rp.QOff, rp.QStride = uint32(r.QOff), uint32(r.QStride)
		if p.Neox {
			rp.Neox = 1
		}
		copy(rp.InvFreq[:], p.InvFreq)
		params0, _ = binary.Append(nil, binary.LittleEndian, rp)
		block, store, err := attnRoPEBlock(f16 != 0)
		if err == nil {
			src0, err = setBlock(src0, "ROPE", block)
		}
		if err == nil {
			src0, err = setBlock(src0, "ROPEPARAMS", attnRoPEFields)
		}
		if err == nil {
			src0, err = setConst(src0, "ROPE", 1)
		}
		// Phase 1 writes key i to the caches: they are bound read-write
		// there only.
		if err == nil {
			src1, err = setBlock(src0, "ROPESTORE", store)
		}
		if err == nil {
			src1, err = replaceAll(src1, "var<storage, read> kc:", "var<storage, read_write> kc:", "var<storage, read> vc:", "var<storage, read_write> vc:")
		}
		if err != nil {
			return nil, fmt.Errorf("kernels: attention with RoPE: %w", err)
		}
		params1, layout1 = params0, []Binding{Uniform, ReadOnly, Storage, Storage, Storage, Storage, ReadOnly, ReadOnly}
		keyRoPE = "/rope"
	}
	var ops []*Op
	for phase, grid := range [][3]uint32{{uint32(groups), uint32(nc), uint32(m)}, {uint32(heads), uint32(m), 1}} {
		src, params, layout := src0, params0, layout
		if phase == 1 {
			src, params, layout = src1, params1, layout1
		}
		s, err := setConst(src, "PHASE", uint32(phase))
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("attention/decode/wg%d/hd%d/%s/g%d/vec%v/phase%d%s", wg, headDim, dt, gw, vec, phase, keyRoPE)
		pipe, err := d.Pipeline(key, s, "main", layout)
		if err == nil {
			var op *Op
			if op, err = d.NewOp(pipe, params, grid, q, kCache, vCache, part, out, pos, sinks); err == nil {
				if phase == 0 {
					// Only the chunks holding keys of the pass's last token
					// (the most any of its tokens has) get workgroups. With
					// slots the tokens are of several sequences: the pass's
					// positions (Encoder.SetPositions) must cover the last.
					x, z, slots := grid[0], grid[2], prm.Slots > 0
					op.grid = func(pos, n int) [3]uint32 {
						if !slots {
							n = m
						}
						return [3]uint32{x, uint32(attnActiveChunks(pos+n-1, capacity, window, nc, minL)), z}
					}
				}
				scr.tie(op)
				ops = append(ops, op)
				continue
			}
		}
		for _, op := range ops {
			op.Release()
		}
		return nil, err
	}
	return ops, nil
}
