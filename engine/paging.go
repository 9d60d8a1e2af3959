//go:build cgo || js

package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
)

// Expert paging: when a model's experts do not all fit the budget, each
// MoE layer keeps a few expert slots on the GPU. Per token and MoE layer
// the router's choices are read back (a few bytes), missing experts are read
// through the model's ShardSource (local store or peers, verified block by
// block), uploaded into least-recently-used slots — never one the current
// token uses — and the expert matmuls run on slot ids. The output is the
// same as with every expert resident; a token then spans one submit per MoE
// layer plus one.

// PagingStats counts what paging did.
type PagingStats struct {
	Hits, Misses uint64
	// Prefetched counts misses whose expert was already read ahead.
	Prefetched uint64
	BytesPaged uint64
	Stall      time.Duration // waiting for routing readbacks and expert uploads
}

// sub returns the counts since an earlier snapshot.
func (a PagingStats) sub(b PagingStats) PagingStats {
	return PagingStats{Hits: a.Hits - b.Hits, Misses: a.Misses - b.Misses, Prefetched: a.Prefetched - b.Prefetched,
		BytesPaged: a.BytesPaged - b.BytesPaged, Stall: a.Stall - b.Stall}
}

type pager struct {
	m      *Model
	src    *rdrr.Model
	slots  int
	layers []*layerPager // by layer; nil for dense layers
	tick   uint64
	stats  PagingStats
	pre    *prefetcher
}

type layerPager struct {
	layer      int
	slotOf     []int // expert → slot, -1 when not resident
	expertIn   []int // slot → expert, -1 when empty
	lastUse    []uint64
	lastChoice []int                 // the previous token's experts
	uses       []uint64              // how often each expert was chosen
	gateUp     *kernels.ExpertWeight // [slots][2·ffn][hidden]
	down       *kernels.ExpertWeight // [slots][hidden][ffn]
	gateUpBias *kernels.Buffer       // [slots][2·ffn], nil without biases
	downBias   *kernels.Buffer
}

// expertSlots decides how many experts of each layer stay on the GPU: 0
// means all of them (no paging).
func expertSlots(o Options, c rdrr.Config, expertBytes int64, warn func(string, ...any)) int {
	if c.Experts == 0 || (o.ExpertCache <= 0 && o.ExpertVRAM <= 0) {
		return 0
	}
	n := c.Experts
	if o.ExpertCache > 0 {
		n = min(n, o.ExpertCache)
	}
	if o.ExpertVRAM > 0 && expertBytes > 0 {
		n = min(n, int(o.ExpertVRAM/(int64(c.Layers)*expertBytes)))
	}
	if n < c.ExpertsUsed {
		warn("expert cache raised to the experts used per token", "asked", n, "used", c.ExpertsUsed)
		n = c.ExpertsUsed
	}
	if n >= c.Experts {
		return 0
	}
	return n
}

// newPager allocates the expert slots of every MoE layer.
func newPager(ctx context.Context, md *Model, src *rdrr.Model, slots int) (*pager, error) {
	c := md.Config
	p := &pager{m: md, src: src, slots: slots, layers: make([]*layerPager, c.Layers)}
	for l := 0; l < c.Layers; l++ {
		gt, ok := src.Tensor(fmt.Sprintf("blk.%d.ffn_gate_exps.weight", l))
		if !ok {
			continue
		}
		dt, ok := src.Tensor(fmt.Sprintf("blk.%d.ffn_down_exps.weight", l))
		if !ok {
			return nil, fmt.Errorf("tensor blk.%d.ffn_down_exps.weight is missing", l)
		}
		lp := &layerPager{layer: l, slotOf: make([]int, c.Experts), expertIn: make([]int, slots), lastUse: make([]uint64, slots), uses: make([]uint64, c.Experts)}
		for i := range lp.slotOf {
			lp.slotOf[i] = -1
		}
		for i := range lp.expertIn {
			lp.expertIn[i] = -1
		}
		var err error
		if lp.gateUp, err = md.allocExperts(fmt.Sprintf("blk.%d.ffn_gate_up_slots", l), gt, slots, 2*c.ExpertFFN, c.HiddenSize); err != nil {
			return nil, err
		}
		if lp.down, err = md.allocExperts(fmt.Sprintf("blk.%d.ffn_down_slots", l), dt, slots, c.HiddenSize, c.ExpertFFN); err != nil {
			return nil, err
		}
		if _, ok := src.Tensor(fmt.Sprintf("blk.%d.ffn_gate_exps.bias", l)); ok {
			if lp.gateUpBias, err = md.dev.NewBuffer(fmt.Sprintf("blk.%d.ffn_gate_up_bias_slots", l), uint64(slots*2*c.ExpertFFN*4)); err != nil {
				return nil, err
			}
			if lp.downBias, err = md.dev.NewBuffer(fmt.Sprintf("blk.%d.ffn_down_bias_slots", l), uint64(slots*c.HiddenSize*4)); err != nil {
				return nil, err
			}
		}
		p.layers[l] = lp
	}
	p.pre = newPrefetcher(p)
	return p, nil
}

// allocExperts makes an empty stack of slots × rows × cols in t's dtype,
// split into bindings on whole slots.
func (m *Model) allocExperts(name string, t *rdrr.Tensor, slots, rows, cols int) (*kernels.ExpertWeight, error) {
	rb, err := t.DType.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	lim := m.dev.Limits()
	limit := min(lim.MaxStorageBufferBindingSize, lim.MaxBufferSize)
	per := int(limit / uint64(rb*rows)) // whole slots per buffer
	if per < 1 {
		return nil, fmt.Errorf("%s: one expert (%d bytes) exceeds the %d-byte binding limit", name, rb*rows, limit)
	}
	w := &kernels.Weight{Name: name, DType: t.DType, Rows: slots * rows, Cols: cols}
	for s0 := 0; s0 < slots; s0 += per {
		n := min(per, slots-s0)
		buf, err := m.dev.NewBuffer(fmt.Sprintf("%s[%d:%d]", name, s0, s0+n), uint64(n*rows*rb))
		if err != nil {
			w.Release()
			return nil, err
		}
		w.Parts = append(w.Parts, kernels.WeightPart{Buf: buf, Row0: s0 * rows, Rows: n * rows})
	}
	m.bytes += w.Bytes()
	return kernels.NewExpertWeight(w, slots)
}

// place makes experts resident in layer l and returns their slots (in the
// order given). Experts of the current token are never evicted.
func (p *pager) place(ctx context.Context, l int, experts []int) ([]int, error) {
	lp := p.layers[l]
	p.tick++
	out := make([]int, len(experts))
	busy := make(map[int]bool, len(experts))
	for _, e := range experts {
		if s := lp.slotOf[e]; s >= 0 {
			busy[s] = true
		}
	}
	for i, e := range experts {
		if e < 0 || e >= len(lp.slotOf) {
			return nil, fmt.Errorf("router chose expert %d of %d", e, len(lp.slotOf))
		}
		if s := lp.slotOf[e]; s >= 0 {
			p.stats.Hits++
			lp.lastUse[s] = p.tick
			out[i] = s
			continue
		}
		s := lp.victim(busy)
		if s < 0 {
			return nil, fmt.Errorf("layer %d: %d expert slots cannot hold the %d experts this token needs", l, p.slots, len(busy)+1)
		}
		if err := p.load(ctx, lp, e, s); err != nil {
			return nil, err
		}
		p.stats.Misses++
		if old := lp.expertIn[s]; old >= 0 {
			lp.slotOf[old] = -1
		}
		lp.expertIn[s], lp.slotOf[e], lp.lastUse[s] = e, s, p.tick
		busy[s] = true
		out[i] = s
	}
	for _, e := range experts {
		lp.uses[e]++
	}
	lp.lastChoice = append(lp.lastChoice[:0], experts...)
	o := p.m.opts
	if o.OnRoute != nil {
		o.OnRoute(l, append([]int(nil), experts...))
	}
	if o.ExpertHints != nil {
		for _, r := range o.ExpertHints(l, append([]int(nil), experts...)) {
			if r.Layer >= 0 && r.Layer < len(p.layers) && p.layers[r.Layer] != nil && r.Expert >= 0 && r.Expert < len(p.layers[r.Layer].slotOf) {
				p.pre.hint(r.Layer, r.Expert)
			}
		}
	}
	// Read ahead for the next MoE layer while this one runs.
	for n := l + 1; n < l+len(p.layers); n++ {
		if next := p.layers[n%len(p.layers)]; next != nil {
			p.pre.want(next.layer, p.predict(next.layer), p.m.Config.ExpertsUsed)
			break
		}
	}
	return out, nil
}

// victim is the least recently used slot not in busy (an empty one first).
func (lp *layerPager) victim(busy map[int]bool) int {
	best := -1
	for s := range lp.expertIn {
		if busy[s] {
			continue
		}
		if lp.expertIn[s] < 0 {
			return s
		}
		if best < 0 || lp.lastUse[s] < lp.lastUse[best] {
			best = s
		}
	}
	return best
}

// read reads expert e of layer l through the model's ShardSource (every
// block verified).
func (p *pager) read(ctx context.Context, l, e int) (*expertData, error) {
	name := func(x string) string { return fmt.Sprintf("blk.%d.%s", l, x) }
	read := func(x string) ([]byte, error) { return p.src.ReadExpert(ctx, name(x), e) }
	d := &expertData{}
	var err error
	if d.gate, err = read("ffn_gate_exps.weight"); err != nil {
		return nil, err
	}
	if d.up, err = read("ffn_up_exps.weight"); err != nil {
		return nil, err
	}
	if d.down, err = read("ffn_down_exps.weight"); err != nil {
		return nil, err
	}
	if p.layers[l].gateUpBias != nil {
		for i, x := range []string{"ffn_gate_exps.bias", "ffn_up_exps.bias", "ffn_down_exps.bias"} {
			t, _ := p.src.Tensor(name(x))
			raw, err := read(x)
			if err != nil {
				return nil, err
			}
			if d.bias[i], err = toF32(t, raw); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// load makes expert e of layer lp resident in slot s: from the prefetched
// copy when there is one, else read now.
func (p *pager) load(ctx context.Context, lp *layerPager, e, s int) error {
	d := p.pre.take(ctx, lp.layer, e)
	if d != nil {
		p.stats.Prefetched++
	} else {
		var err error
		if d, err = p.read(ctx, lp.layer, e); err != nil {
			return err
		}
	}
	if err := p.writeSlot(lp.gateUp, s, append(append([]byte(nil), d.gate...), d.up...)); err != nil {
		return err
	}
	if err := p.writeSlot(lp.down, s, d.down); err != nil {
		return err
	}
	p.stats.BytesPaged += uint64(len(d.gate) + len(d.up) + len(d.down))
	if lp.gateUpBias != nil {
		gu := append(append([]byte(nil), d.bias[0]...), d.bias[1]...)
		if err := p.m.dev.Write(lp.gateUpBias, uint64(s*len(gu)), gu); err != nil {
			return err
		}
		if err := p.m.dev.Write(lp.downBias, uint64(s*len(d.bias[2])), d.bias[2]); err != nil {
			return err
		}
	}
	return nil
}

// writeSlot uploads one expert's rows into slot s of a stack.
func (p *pager) writeSlot(w *kernels.ExpertWeight, s int, data []byte) error {
	rb := w.W.RowBytes()
	if len(data) != rb*w.Rows {
		return fmt.Errorf("expert slice of %d bytes, want %d", len(data), rb*w.Rows)
	}
	row := s * w.Rows
	for _, part := range w.W.Parts {
		if row >= part.Row0 && row < part.Row0+part.Rows {
			return p.m.dev.Write(part.Buf, part.Offset+uint64((row-part.Row0)*rb), data)
		}
	}
	return fmt.Errorf("slot %d outside the stack", s)
}

func (p *pager) release() {
	p.pre.stop()
	for _, lp := range p.layers {
		if lp == nil {
			continue
		}
		lp.gateUp.Release()
		lp.down.Release()
		if lp.gateUpBias != nil {
			lp.gateUpBias.Release()
			lp.downBias.Release()
		}
	}
}
