//go:build cgo || js

package kernels

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// Binding is the kind of one slot of a pipeline's bind group (group 0,
// bindings numbered from 0 in order).
type Binding uint8

const (
	Uniform  Binding = iota // var<uniform>: only the Op's params, at binding 0
	Storage                 // var<storage, read_write>
	ReadOnly                // var<storage, read>
)

func (b Binding) wgpu() wgpu.BufferBindingType {
	switch b {
	case Uniform:
		return wgpu.BufferBindingTypeUniform
	case Storage:
		return wgpu.BufferBindingTypeStorage
	default:
		return wgpu.BufferBindingTypeReadOnlyStorage
	}
}

// Pipeline is a compiled compute entry point with an explicit bind-group
// layout. Pipelines live as long as their Device.
type Pipeline struct {
	key    string
	src    string
	layout []Binding
	module *wgpu.ShaderModule
	bgl    *wgpu.BindGroupLayout
	pl     *wgpu.PipelineLayout
	pipe   *wgpu.ComputePipeline
}

// Pipeline compiles entry of wgsl with the given layout, or returns the
// one cached under key. The key must name everything that varies in the
// source (templated constants such as the workgroup size); reusing a key
// for different source is an error.
func (d *Device) Pipeline(key, wgsl, entry string, layout []Binding) (*Pipeline, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("kernels: pipeline %s: %w", key, ErrReleased)
	}
	if p, ok := d.pipelines[key]; ok {
		if p.src != wgsl || len(p.layout) != len(layout) {
			return nil, fmt.Errorf("kernels: pipeline key %q reused for a different shader or layout", key)
		}
		return p, nil
	}
	p := &Pipeline{key: key, src: wgsl, layout: append([]Binding(nil), layout...)}
	if err := d.checked("pipeline "+key, func() error { return d.compile(p, entry) }); err != nil {
		p.release()
		return nil, err
	}
	d.pipelines[key] = p
	return p, nil
}

// compile creates p's shader module, bind-group layout, pipeline layout
// and pipeline.
func (d *Device) compile(p *Pipeline, entry string) error {
	var err error
	if p.module, err = d.shaderModule(p.key, p.src); err != nil {
		return fmt.Errorf("kernels: compile %s: %w", p.key, err)
	}
	entries := make([]wgpu.BindGroupLayoutEntry, len(p.layout))
	for i, b := range p.layout {
		entries[i] = wgpu.BindGroupLayoutEntry{
			Binding:    uint32(i),
			Visibility: wgpu.ShaderStageCompute,
			Buffer:     wgpu.BufferBindingLayout{Type: b.wgpu()},
		}
	}
	if p.bgl, err = d.dev.TryCreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: p.key, Entries: entries}); err != nil {
		return fmt.Errorf("kernels: bind group layout %s: %w", p.key, err)
	}
	if p.pl, err = d.dev.TryCreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: p.key, BindGroupLayouts: []*wgpu.BindGroupLayout{p.bgl}}); err != nil {
		return fmt.Errorf("kernels: pipeline layout %s: %w", p.key, err)
	}
	if p.pipe, err = d.dev.TryCreateComputePipeline(computePipelineDesc(p.key, p.pl, p.module, entry)); err != nil {
		return fmt.Errorf("kernels: pipeline %s: %w", p.key, err)
	}
	return nil
}

func (p *Pipeline) release() {
	if p.pipe != nil {
		p.pipe.Release()
	}
	if p.pl != nil {
		p.pl.Release()
	}
	if p.bgl != nil {
		p.bgl.Release()
	}
	if p.module != nil {
		p.module.Release()
	}
}

// Key is the cache key the pipeline was built under.
func (p *Pipeline) Key() string { return p.key }

// setConst rewrites the WGSL module constant `const name: u32 = …;` to v,
// so a .wgsl file stays valid on its own while Go picks e.g. the workgroup
// size. Include v in the pipeline key.
func setConst(src, name string, v uint32) (string, error) {
	re := regexp.MustCompile(`(?m)^const ` + regexp.QuoteMeta(name) + `\s*:\s*u32\s*=\s*[0-9]+u?\s*;`)
	if !re.MatchString(src) {
		return "", fmt.Errorf("kernels: no `const %s: u32 = …;` line to template", name)
	}
	return re.ReplaceAllLiteralString(src, "const "+name+": u32 = "+strconv.FormatUint(uint64(v), 10)+"u;"), nil
}

// setBlock replaces the lines between `// BEGIN name` and `// END name`
// in src with body (which must end in a newline; the markers stay), so a
// .wgsl file holds one variant of a block, valid on its own, while Go
// swaps in another. Name the variant in the pipeline key.
func setBlock(src, name, body string) (string, error) {
	begin, end := "// BEGIN "+name+"\n", "// END "+name+"\n"
	head, rest, ok := strings.Cut(src, begin)
	if ok {
		_, rest, ok = strings.Cut(rest, end)
	}
	if !ok {
		return "", fmt.Errorf("kernels: no `// BEGIN %s` … `// END %s` block to template", name, name)
	}
	return head + begin + body + end + rest, nil
}

// takeBlock returns the body of the `// BEGIN name` … `// END name` block
// of src and src without the block (markers included).
func takeBlock(src, name string) (body, rest string, ok bool) {
	begin, end := "// BEGIN "+name+"\n", "// END "+name+"\n"
	head, after, ok := strings.Cut(src, begin)
	if ok {
		body, after, ok = strings.Cut(after, end)
	}
	if !ok {
		return "", src, false
	}
	return body, head + after, true
}

// wgslSection returns the section of src that starts at the line
// `// ==== name` and runs to the next `// ==== ` line (the sections of
// matmul_dtypes.wgsl and matmul_vecfast.wgsl), its heading line included.
func wgslSection(src, name string) (string, bool) {
	head := "\n// ==== " + name + "\n"
	_, rest, ok := strings.Cut(src, head)
	if !ok {
		return "", false
	}
	sec, _, _ := strings.Cut(rest, "\n// ==== ")
	return head + sec, true
}

// Op is one dispatch, bound once and replayed: a pipeline, its bind group,
// its own params uniform and its workgroup counts.
type Op struct {
	d       *Device
	p       *Pipeline
	bg      *wgpu.BindGroup
	params  *wgpu.Buffer
	nparams uint64
	bufs    []*Buffer
	groups  [3]uint32
	// grid, when set, sizes the dispatch for a pass that computes the
	// tokens at positions pos … pos+m-1 (Encoder.SetPositions); groups is
	// the grid for any position.
	grid func(pos, m int) [3]uint32
}

// NewOp binds buffers to p. When params is non-nil the op gets its own
// uniform buffer holding it at binding 0 and buffers bind from 1; params
// should be a struct padded to 16 bytes. groups are the workgroup counts.
func (d *Device) NewOp(p *Pipeline, params []byte, groups [3]uint32, buffers ...BufferRange) (*Op, error) {
	first := 0
	if params != nil {
		first = 1
	}
	if len(p.layout) != first+len(buffers) {
		return nil, fmt.Errorf("kernels: op %s: layout has %d bindings, got params=%v and %d buffers", p.key, len(p.layout), params != nil, len(buffers))
	}
	if params != nil && p.layout[0] != Uniform {
		return nil, fmt.Errorf("kernels: op %s: params given but binding 0 is not Uniform", p.key)
	}
	for i, g := range groups {
		if int(g) > d.limits.MaxWorkgroupsPerDim {
			return nil, fmt.Errorf("kernels: op %s: %d workgroups in dimension %d exceeds %d", p.key, g, i, d.limits.MaxWorkgroupsPerDim)
		}
	}
	op := &Op{d: d, p: p, groups: groups}
	entries := make([]wgpu.BindGroupEntry, 0, len(p.layout))
	if params != nil {
		op.nparams = max((uint64(len(params))+15)&^15, 16)
		var err error
		d.serial(func() {
			op.params, err = d.dev.TryCreateBuffer(&wgpu.BufferDescriptor{
				Label: p.key + " params",
				Size:  op.nparams,
				Usage: wgpu.BufferUsageUniform | wgpu.BufferUsageCopyDst,
			})
		})
		if err != nil {
			return nil, fmt.Errorf("kernels: op %s params: %w", p.key, err)
		}
		d.allocated.Add(op.nparams)
		if err := op.SetParams(params); err != nil {
			op.Release()
			return nil, err
		}
		entries = append(entries, wgpu.BindGroupEntry{Binding: 0, Buffer: op.params, Size: op.nparams})
	}
	align := uint64(d.limits.MinStorageOffsetAlignment)
	for i, r := range buffers {
		slot := first + i
		kind := p.layout[slot]
		size := r.size()
		switch {
		case r.Buf == nil:
			op.Release()
			return nil, fmt.Errorf("kernels: op %s binding %d: nil buffer", p.key, slot)
		case r.Buf.released.Load():
			op.Release()
			return nil, fmt.Errorf("kernels: op %s binding %d (%q): %w", p.key, slot, r.Buf.label, ErrReleased)
		case kind == Uniform:
			op.Release()
			return nil, fmt.Errorf("kernels: op %s binding %d: Uniform is only for the op's params at binding 0", p.key, slot)
		case r.Offset%align != 0:
			op.Release()
			return nil, fmt.Errorf("kernels: op %s binding %d (%q): offset %d is not a multiple of %d", p.key, slot, r.Buf.label, r.Offset, align)
		case size == 0 || size%4 != 0 || r.Offset+size > r.Buf.size:
			op.Release()
			return nil, fmt.Errorf("kernels: op %s binding %d (%q): range [%d, +%d) invalid for a %d-byte buffer", p.key, slot, r.Buf.label, r.Offset, size, r.Buf.size)
		case size > d.limits.MaxStorageBufferBindingSize:
			op.Release()
			return nil, fmt.Errorf("kernels: op %s binding %d (%q): %d bytes exceeds the binding limit %d; split the tensor", p.key, slot, r.Buf.label, size, d.limits.MaxStorageBufferBindingSize)
		}
		// WebGPU tracks usage per whole buffer: a buffer bound writable may
		// not also be bound read-only in the same op, even at disjoint
		// ranges. wgpu would reject it at End; say so here, clearly.
		for j, o := range buffers[:i] {
			if o.Buf == r.Buf && kind != p.layout[first+j] {
				op.Release()
				return nil, fmt.Errorf("kernels: op %s: %q is bound both writable and read-only (bindings %d and %d); use separate buffers", p.key, r.Buf.label, first+j, slot)
			}
		}
		op.bufs = append(op.bufs, r.Buf)
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(slot), Buffer: r.Buf.buf, Offset: r.Offset, Size: size})
	}
	var bg *wgpu.BindGroup
	var err error
	d.serial(func() {
		bg, err = d.dev.TryCreateBindGroup(&wgpu.BindGroupDescriptor{Label: p.key, Layout: p.bgl, Entries: entries})
	})
	if err != nil {
		op.Release()
		return nil, fmt.Errorf("kernels: op %s bind group: %w", p.key, err)
	}
	op.bg = bg
	return op, nil
}

// SetParams rewrites the op's params uniform (same size or smaller); the
// new values apply from the next submit.
func (o *Op) SetParams(params []byte) error {
	if o.params == nil {
		return fmt.Errorf("kernels: op %s has no params", o.p.key)
	}
	if uint64(len(params)) > o.nparams {
		return fmt.Errorf("kernels: op %s: %d bytes of params, uniform holds %d", o.p.key, len(params), o.nparams)
	}
	buf := make([]byte, o.nparams)
	copy(buf, params)
	if err := o.d.writeBuffer(o.params, 0, buf); err != nil {
		return fmt.Errorf("kernels: op %s params: %w", o.p.key, err)
	}
	return nil
}

// Groups returns the op's workgroup counts.
func (o *Op) Groups() [3]uint32 { return o.groups }

// Release frees the op's bind group and params buffer (not the buffers it
// binds, nor its pipeline).
func (o *Op) Release() {
	if o.bg == nil && o.params == nil {
		return
	}
	if o.params != nil {
		o.d.allocated.Add(-o.nparams)
	}
	o.d.serial(func() {
		if o.bg != nil {
			o.bg.Release()
		}
		if o.params != nil {
			o.params.Destroy()
			o.params.Release()
		}
	})
	o.bg, o.params = nil, nil
}

// check reports why the op cannot be recorded: released, or it binds a
// released buffer (which this wgpu would treat as a fatal error at submit).
func (o *Op) check() error {
	if o.bg == nil {
		return fmt.Errorf("kernels: op %s: %w", o.p.key, ErrReleased)
	}
	for _, b := range o.bufs {
		if b.released.Load() {
			return fmt.Errorf("kernels: op %s binds %q: %w", o.p.key, b.label, ErrReleased)
		}
	}
	return nil
}

// grid spreads n workgroups over x (and y when n exceeds the per-dimension
// limit). Kernels recover the linear index as wid.x + wid.y * nwg.x and
// return when it is ≥ n.
func (d *Device) grid(n int) [3]uint32 {
	maxX := d.limits.MaxWorkgroupsPerDim
	if n <= maxX {
		return [3]uint32{uint32(n), 1, 1}
	}
	return [3]uint32{uint32(maxX), uint32((n + maxX - 1) / maxX), 1}
}
