//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"strconv"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// Mixture of experts, all on the GPU inside a token's one submit:
//
//	MoERoute      router logits [m][E] → sel u32 [m][k], wts f32 [m][k]
//	MatMulExperts per slot s = t*k + j: y[s] = W[sel[s]]·x (+ bias[sel[s]])
//	GatedAct      on the m*k rows of the gate/up output
//	MatMulExperts down projection, x per slot
//	MoECombine    out[t] (+)= sum_j wts[t][j]·y[t*k+j]
//
// The expert matmul reads only the selected experts' rows: the others are
// never touched, so a decode token reads ≈ k/E of the expert weights.

var (
	//go:embed moe_route.wgsl
	moeRouteWGSL string
	//go:embed moe_matmul.wgsl
	moeMatMulWGSL string
	//go:embed moe_combine.wgsl
	moeCombineWGSL string
)

// Gating is how [Device.MoERoute] turns the chosen logits into weights.
type Gating uint8

const (
	// GatingSoftmax (Mixtral): softmax over all E logits, take the top k,
	// renormalise the k probabilities to sum 1.
	GatingSoftmax Gating = iota
	// GatingTopKSoftmax (GPT-OSS): take the top k logits, softmax over those k.
	GatingTopKSoftmax
)

func (g Gating) String() string {
	switch g {
	case GatingSoftmax:
		return "Softmax"
	case GatingTopKSoftmax:
		return "TopKSoftmax"
	}
	return "Gating(" + strconv.Itoa(int(g)) + ")"
}

// moeRouteParams mirrors Params in moe_route.wgsl (16 bytes).
type moeRouteParams struct {
	M, Experts, K, _ uint32 // _: padding
}

// moeMatMulParams mirrors Params in moe_matmul.wgsl (48 bytes).
type moeMatMulParams struct {
	Rows, Cols, RowBytes, Units uint32
	Row0, PartRows, Experts     uint32
	Slots, K, Flags             uint32
	_, _                        uint32
}

// moeCombineParams mirrors Params in moe_combine.wgsl (16 bytes).
type moeCombineParams struct {
	M, K, N, Flags uint32
}

const (
	moeBias    = 1
	moePerSlot = 2
)

// MoERoute builds the router: logits f32 [m][experts] (the router MatMul's
// output, bias included) → sel u32 [m][k] (expert ids, descending by logit,
// ties → lower id, NaN ranks lowest) and wts f32 [m][k] (the gate weights,
// see [Gating]; they sum to 1 per token). sel and wts must be two
// buffers other than logits'.
func (d *Device) MoERoute(logits, sel, wts BufferRange, m, experts, k int, g Gating) (*Op, error) {
	if m <= 0 || experts <= 0 || k <= 0 || k > experts || g > GatingTopKSoftmax || uint64(m)*uint64(experts) >= math.MaxUint32 {
		return nil, fmt.Errorf("kernels: moe route: bad shape m=%d experts=%d k=%d gating=%v", m, experts, k, g)
	}
	if logits.size() < uint64(m*experts)*4 || sel.size() < uint64(m*k)*4 || wts.size() < uint64(m*k)*4 {
		return nil, fmt.Errorf("kernels: moe route m=%d experts=%d k=%d: logits %d, sel %d, wts %d bytes too small",
			m, experts, k, logits.size(), sel.size(), wts.size())
	}
	src, err := setConst(moeRouteWGSL, "GATING", uint32(g))
	if err != nil {
		return nil, err
	}
	p, err := d.Pipeline("moe_route/"+g.String(), src, "main", []Binding{Uniform, ReadOnly, Storage, Storage})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, moeRouteParams{M: uint32(m), Experts: uint32(experts), K: uint32(k)})
	return d.NewOp(p, params, d.grid((m+63)/64), logits, sel, wts)
}

// ExpertWeight is the E matrices of one expert role (gate, up, down, ...)
// stored back to back in one [Weight]: W.Rows = Experts·Rows, W.Cols =
// Cols, expert e's Rows × Cols matrix is W's rows [e·Rows, (e+1)·Rows)
// (byte e·Rows·RowBytes of the stack, exactly the shard layout of a
// [E, rows, cols] tensor). W's parts may split the stack anywhere on a row
// (UploadExpertWeight splits it on whole experts when one fits a binding).
type ExpertWeight struct {
	W       *Weight
	Experts int
	Rows    int // rows per expert (output features)
	Cols    int // input features
}

// NewExpertWeight views w (rows = experts × rows per expert) as a stack of
// experts matrices.
func NewExpertWeight(w *Weight, experts int) (*ExpertWeight, error) {
	if w == nil || experts <= 0 || w.Rows%experts != 0 {
		return nil, fmt.Errorf("kernels: expert weight: %d experts do not divide the weight's rows", experts)
	}
	return &ExpertWeight{W: w, Experts: experts, Rows: w.Rows / experts, Cols: w.Cols}, nil
}

// UploadExpertWeight copies E = experts matrices of rows × cols (dtype dt,
// back to back in data) to the GPU, packing whole experts into buffers no
// larger than the binding limit (rows of an expert that alone exceeds it
// are split, which MatMulExperts also handles).
func (d *Device) UploadExpertWeight(name string, dt quant.DType, experts, rows, cols int, data []byte) (*ExpertWeight, error) {
	rb, err := dt.RowBytes(cols)
	if err != nil {
		return nil, fmt.Errorf("expert weight %s: %w", name, err)
	}
	if experts <= 0 || rows <= 0 {
		return nil, fmt.Errorf("expert weight %s: bad shape %d × [%d, %d]", name, experts, rows, cols)
	}
	total := experts * rows
	if len(data) != rb*total {
		return nil, fmt.Errorf("expert weight %s: %d bytes for %d × %s[%d, %d], want %d", name, len(data), experts, dt, rows, cols, rb*total)
	}
	limit := min(d.Limits().MaxStorageBufferBindingSize, d.Limits().MaxBufferSize)
	per := int(limit / uint64(rb))
	if per < 1 {
		return nil, fmt.Errorf("expert weight %s: one row of %d bytes exceeds the %d-byte binding limit", name, rb, limit)
	}
	if per >= rows {
		per = per / rows * rows // whole experts per part
	}
	w := &Weight{Name: name, DType: dt, Rows: total, Cols: cols}
	for r0 := 0; r0 < total; r0 += per {
		n := min(per, total-r0)
		buf, err := d.NewBufferInit(fmt.Sprintf("%s[%d:%d]", name, r0, r0+n), data[r0*rb:(r0+n)*rb])
		if err != nil {
			w.Release()
			return nil, fmt.Errorf("expert weight %s: %w", name, err)
		}
		w.Parts = append(w.Parts, WeightPart{Buf: buf, Row0: r0, Rows: n})
	}
	return &ExpertWeight{W: w, Experts: experts, Rows: rows, Cols: cols}, nil
}

// Release frees the weight's buffers.
func (w *ExpertWeight) Release() {
	if w.W != nil {
		w.W.Release()
	}
}

// MatMulExperts builds, for each token t < m and slot j < k (s = t·k + j):
//
//	out[s][r] = sum_c W[sel[s]][r][c] · x[xs][c] (+ bias[sel[s]][r])
//
// for r < w.Rows, reading only the selected experts' rows. sel is u32
// [m][k] (from MoERoute); x is f32 [m][Cols] shared by a token's slots
// (xPerSlot false: gate/up) or [m][k][Cols] (xPerSlot true: down); out is
// f32 [m][k][w.Rows]; bias (optional, Buf nil = none) is f32
// [Experts][Rows]. out must be its own buffer. It returns one Op per part
// of w.W, each writing the rows it holds; run them all (any order, one
// pass). Expert ids ≥ Experts are clamped to the last expert.
func (d *Device) MatMulExperts(w *ExpertWeight, x, sel, out BufferRange, m, k int, xPerSlot bool, bias BufferRange) ([]*Op, error) {
	if w == nil || w.W == nil || len(w.W.Parts) == 0 {
		return nil, fmt.Errorf("kernels: matmul experts: weight has no parts (released?)")
	}
	ww := w.W
	if w.Experts <= 0 || w.Rows <= 0 || w.Cols <= 0 || ww.Rows != w.Experts*w.Rows || ww.Cols != w.Cols {
		return nil, fmt.Errorf("kernels: matmul experts %s: %d experts × [%d, %d] do not match the weight [%d, %d]", ww.Name, w.Experts, w.Rows, w.Cols, ww.Rows, ww.Cols)
	}
	if m <= 0 || k <= 0 || k > w.Experts {
		return nil, fmt.Errorf("kernels: matmul experts %s: bad m=%d k=%d (experts %d)", ww.Name, m, k, w.Experts)
	}
	// The decoders and the loop are matmul_vec.wgsl's (matmulSection,
	// matvecShared).
	uv, _ := matmulUV(ww.DType)
	sec, err := matmulSection(ww.DType)
	if err != nil {
		return nil, fmt.Errorf("kernels: matmul experts %s: %w", ww.Name, err)
	}
	rb := ww.RowBytes()
	if rb == 0 {
		return nil, fmt.Errorf("kernels: matmul experts %s: %s cannot hold %d columns", ww.Name, ww.DType, w.Cols)
	}
	slots := m * k
	xRows := m
	if xPerSlot {
		xRows = slots
	}
	needX, needOut := uint64(xRows)*uint64(w.Cols)*4, uint64(slots)*uint64(w.Rows)*4
	if x.size() < needX || out.size() < needOut || sel.size() < uint64(slots)*4 {
		return nil, fmt.Errorf("kernels: matmul experts %s %d×[%d, %d], m=%d k=%d: x %d bytes (need %d), sel %d (need %d), out %d (need %d)",
			ww.Name, w.Experts, w.Rows, w.Cols, m, k, x.size(), needX, sel.size(), slots*4, out.size(), needOut)
	}
	if uint64(slots)*uint64(max(w.Rows, w.Cols)) >= 1<<32 || uint64(ww.Rows) >= 1<<32 {
		return nil, fmt.Errorf("kernels: matmul experts %s: m=%d k=%d is too large for 32-bit indexing", ww.Name, m, k)
	}
	var flags uint32
	if xPerSlot {
		flags |= moePerSlot
	}
	b := x
	if bias.Buf != nil {
		if bias.size() < uint64(ww.Rows)*4 {
			return nil, fmt.Errorf("kernels: matmul experts %s: bias %d bytes, need %d", ww.Name, bias.size(), ww.Rows*4)
		}
		flags |= moeBias
		b = bias
	}
	units := (w.Cols + uv - 1) / uv
	wg := 1 << bits.Len(uint(max(units, 32)-1))
	wg = min(wg, 256, d.limits.MaxInvocations)
	const r = 4
	src, err := setConst(moeMatMulWGSL, "WG", uint32(wg))
	if err == nil {
		src, err = setConst(src, "R", r)
	}
	if err == nil {
		src, err = matvecShared(src)
	}
	if err != nil {
		return nil, err
	}
	vec4 := w.Cols%4 == 0
	src = matvecX(src, vec4)
	key := fmt.Sprintf("moe_matmul/%s/wg%d/r%d/x4=%v", ww.DType, wg, r, vec4)
	p, err := d.Pipeline(key, helpersWGSL("W")+sec+src, "main", []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	rowGroups := (w.Rows + r - 1) / r
	maxDim := d.limits.MaxWorkgroupsPerDim
	if rowGroups > maxDim {
		return nil, fmt.Errorf("kernels: matmul experts %s: %d rows per expert is too many", ww.Name, w.Rows)
	}
	groups := [3]uint32{uint32(rowGroups), uint32(min(slots, maxDim)), uint32((slots + maxDim - 1) / maxDim)}
	ops := make([]*Op, 0, len(ww.Parts))
	for i, part := range ww.Parts {
		if uint64(part.Rows)*uint64(rb) >= 1<<32 {
			releaseOps(ops)
			return nil, fmt.Errorf("kernels: matmul experts %s: part %d is %d bytes, over 32-bit offsets", ww.Name, i, uint64(part.Rows)*uint64(rb))
		}
		params, _ := binary.Append(nil, binary.LittleEndian, moeMatMulParams{
			Rows: uint32(w.Rows), Cols: uint32(w.Cols), RowBytes: uint32(rb), Units: uint32(units),
			Row0: uint32(part.Row0), PartRows: uint32(part.Rows), Experts: uint32(w.Experts),
			Slots: uint32(slots), K: uint32(k), Flags: flags,
		})
		op, err := d.NewOp(p, params, groups, ww.Range(i), x, sel, b, out)
		if err != nil {
			releaseOps(ops)
			return nil, fmt.Errorf("kernels: matmul experts %s part %d: %w", ww.Name, i, err)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// MoECombine builds out[t][i] = sum_j wts[t][j]·y[t][j][i] for t < m,
// i < n, j < k (accumulate: out[t][i] += …, fusing the residual add). y is
// f32 [m][k][n] (the down projection's output), wts f32 [m][k]; out must
// be a different buffer from both.
func (d *Device) MoECombine(y, wts, out BufferRange, m, k, n int, accumulate bool) (*Op, error) {
	if m <= 0 || k <= 0 || n <= 0 || uint64(m)*uint64(k)*uint64(n) >= math.MaxUint32 {
		return nil, fmt.Errorf("kernels: moe combine: bad shape m=%d k=%d n=%d", m, k, n)
	}
	if y.size() < uint64(m*k*n)*4 || wts.size() < uint64(m*k)*4 || out.size() < uint64(m*n)*4 {
		return nil, fmt.Errorf("kernels: moe combine m=%d k=%d n=%d: y %d, wts %d, out %d bytes too small", m, k, n, y.size(), wts.size(), out.size())
	}
	p, err := d.Pipeline("moe_combine", moeCombineWGSL, "main", []Binding{Uniform, ReadOnly, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	var flags uint32
	if accumulate {
		flags = 1
	}
	params, _ := binary.Append(nil, binary.LittleEndian, moeCombineParams{M: uint32(m), K: uint32(k), N: uint32(n), Flags: flags})
	return d.NewOp(p, params, d.grid((m*n+255)/256), y, wts, out)
}
