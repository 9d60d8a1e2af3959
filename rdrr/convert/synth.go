package convert

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// SynthShapes are real model shapes for benchmarking without weights.
var SynthShapes = map[string]rdrr.Config{
	// Llama-3.2-1B.
	"1b": {Architecture: "llama", ContextLength: 131072, HiddenSize: 2048, Layers: 16, Heads: 32, KVHeads: 8, HeadDim: 64,
		FFN: 8192, VocabSize: 128256, NormEps: 1e-5, Activation: "silu", TiedEmbeddings: true,
		Rope: rdrr.RoPE{Theta: 500000, Dim: 64, Style: "normal", Scaling: &rdrr.RoPEScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFact: 4, OriginalCtx: 8192}}},
	// Mixtral-8x7B (32 layers; pass a smaller layer count to fit a card).
	"mixtral-8x7b": {Architecture: "mixtral", ContextLength: 32768, HiddenSize: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
		FFN: 14336, VocabSize: 32000, NormEps: 1e-5, Activation: "silu", Experts: 8, ExpertsUsed: 2, ExpertFFN: 14336,
		ExpertGating: "softmax", Rope: rdrr.RoPE{Theta: 1e6, Dim: 128, Style: "normal"}},
	// GPT-OSS-20B: MXFP4 experts, Q8_0 elsewhere (--quant applies to the experts).
	"gpt-oss-20b": {Architecture: "gpt-oss", ContextLength: 131072, HiddenSize: 2880, Layers: 24, Heads: 64, KVHeads: 8, HeadDim: 64,
		FFN: 2880, VocabSize: 201088, NormEps: 1e-5, Activation: "swiglu_oai", Experts: 32, ExpertsUsed: 4, ExpertFFN: 2880,
		ExpertGating: "topk_softmax", AttnSinks: true, SlidingWindow: 128, LayerTypes: alternate(24),
		Rope: rdrr.RoPE{Theta: 150000, Dim: 64, Style: "neox", Scaling: &rdrr.RoPEScaling{Type: "yarn", Factor: 32, OriginalCtx: 4096, BetaFast: 32, BetaSlow: 1}}},
	// Llama-3-8B.
	"8b": {Architecture: "llama", ContextLength: 8192, HiddenSize: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
		FFN: 14336, VocabSize: 128256, NormEps: 1e-5, Activation: "silu",
		Rope: rdrr.RoPE{Theta: 500000, Dim: 128, Style: "normal"}},
}

// Synthesize writes an RDRR model of the given config with random weights
// of dtype dt (the LM head takes Q6_K when dt is Q4_K, as llama.cpp's
// Q4_K_M does; norms are F32). Random blocks are made directly in the
// quantized layout with small finite scales, so gigabytes are written in
// seconds. The output is a normal RDRR directory, atomically renamed.
func Synthesize(ctx context.Context, cfg rdrr.Config, dt quant.DType, seed uint64, out string, opts rdrr.WriterOptions) (rdrr.ModelID, error) {
	if err := cfg.Validate(); err != nil {
		return rdrr.ModelID{}, err
	}
	if err := checkOut(out); err != nil {
		return rdrr.ModelID{}, err
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(out)), 0o755); err != nil {
		return rdrr.ModelID{}, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return rdrr.ModelID{}, err
	}
	defer os.RemoveAll(tmp)
	w, err := rdrr.NewWriter(tmp, opts)
	if err != nil {
		return rdrr.ModelID{}, err
	}
	defer w.Abort()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	mat := func(name string, rows, cols int, d quant.DType) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return w.AddTensor(name, d, []int64{int64(rows), int64(cols)}, &randomBlocks{rng: rng, dt: d, left: int64(rows) * int64(mustRow(d, cols)), std: 1 / float32(math.Sqrt(float64(cols)))})
	}
	vec := func(name string, n int) error {
		return w.AddTensor(name, quant.F32, []int64{int64(n)}, &randomBlocks{rng: rng, dt: quant.F32, left: int64(n) * 4, norm: true})
	}
	// dense is the dtype of non-expert matrices: the requested one, or
	// Q8_0 for MXFP4 models (as llama.cpp's MXFP4_MOE files do).
	dense, head := dt, dt
	if dt == quant.MXFP4 {
		dense, head = quant.Q8_0, quant.Q8_0
	}
	if dt == quant.Q4_K {
		head = quant.Q6_K
	}
	c := cfg
	if err := mat("token_embd.weight", c.VocabSize, c.HiddenSize, dense); err != nil {
		return rdrr.ModelID{}, err
	}
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	gptOSS := c.Architecture == "gpt-oss"
	for l := 0; l < c.Layers; l++ {
		p := func(s string) string { return fmt.Sprintf("blk.%d.%s", l, s) }
		errs := []error{
			vec(p("attn_norm.weight"), c.HiddenSize),
			mat(p("attn_q.weight"), qDim, c.HiddenSize, dense),
			mat(p("attn_k.weight"), kvDim, c.HiddenSize, dense),
			mat(p("attn_v.weight"), kvDim, c.HiddenSize, dense),
			mat(p("attn_output.weight"), c.HiddenSize, qDim, dense),
			vec(p("ffn_norm.weight"), c.HiddenSize),
		}
		if gptOSS {
			errs = append(errs, vec(p("attn_q.bias"), qDim), vec(p("attn_k.bias"), kvDim), vec(p("attn_v.bias"), kvDim),
				vec(p("attn_output.bias"), c.HiddenSize), vec(p("attn_sinks.weight"), c.Heads))
		}
		if c.Experts > 0 {
			errs = append(errs, mat(p("ffn_gate_inp.weight"), c.Experts, c.HiddenSize, quant.F32))
			if gptOSS {
				errs = append(errs, vec(p("ffn_gate_inp.bias"), c.Experts))
			}
		} else {
			errs = append(errs,
				mat(p("ffn_gate.weight"), c.FFN, c.HiddenSize, dt),
				mat(p("ffn_up.weight"), c.FFN, c.HiddenSize, dt),
				mat(p("ffn_down.weight"), c.HiddenSize, c.FFN, dt))
		}
		for _, e := range errs {
			if e != nil {
				return rdrr.ModelID{}, e
			}
		}
	}
	if c.Experts > 0 {
		if err := synthExperts(ctx, w, rng, c, dt, gptOSS); err != nil {
			return rdrr.ModelID{}, err
		}
	}
	if err := vec("output_norm.weight", c.HiddenSize); err != nil {
		return rdrr.ModelID{}, err
	}
	if !c.TiedEmbeddings {
		if err := mat("output.weight", c.VocabSize, c.HiddenSize, head); err != nil {
			return rdrr.ModelID{}, err
		}
	}
	id, err := w.Finish(&rdrr.Manifest{Config: cfg})
	if err != nil {
		return rdrr.ModelID{}, err
	}
	if err := rdrr.WriteInfo(tmp, rdrr.Info{Name: "synthetic", Source: &rdrr.Source{Format: "synthetic", File: fmt.Sprintf("random-%s", dt)}}); err != nil {
		return rdrr.ModelID{}, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return rdrr.ModelID{}, err
	}
	return id, nil
}

// synthExperts writes every layer's expert tensors, one expert at a time.
func synthExperts(ctx context.Context, w *rdrr.Writer, rng *rand.Rand, c rdrr.Config, dt quant.DType, biases bool) error {
	E, ffn, h := int64(c.Experts), int64(c.ExpertFFN), int64(c.HiddenSize)
	type et struct {
		name string
		dt   quant.DType
		rows int64
		cols int64
	}
	roles := []et{{"ffn_gate_exps.weight", dt, ffn, h}, {"ffn_up_exps.weight", dt, ffn, h}, {"ffn_down_exps.weight", dt, h, ffn}}
	if biases {
		roles = append(roles, et{"ffn_gate_exps.bias", quant.F32, 1, ffn}, et{"ffn_up_exps.bias", quant.F32, 1, ffn}, et{"ffn_down_exps.bias", quant.F32, 1, h})
	}
	for l := 0; l < c.Layers; l++ {
		for _, r := range roles {
			shape := []int64{E, r.rows, r.cols}
			if r.rows == 1 {
				shape = []int64{E, r.cols}
			}
			if err := w.DeclareExpertTensor(fmt.Sprintf("blk.%d.%s", l, r.name), r.dt, shape); err != nil {
				return err
			}
		}
		for e := 0; e < c.Experts; e++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := w.BeginExpert(l, e); err != nil {
				return err
			}
			for _, r := range roles {
				n := r.rows * int64(mustRow(r.dt, int(r.cols)))
				if err := w.AddExpertSlice(fmt.Sprintf("blk.%d.%s", l, r.name), &randomBlocks{rng: rng, dt: r.dt, left: n}); err != nil {
					return err
				}
			}
			if err := w.EndExpert(); err != nil {
				return err
			}
		}
	}
	return nil
}

// alternate returns n layer types, sliding first (GPT-OSS).
func alternate(n int) []string {
	t := make([]string, n)
	for i := range t {
		t[i] = "full"
		if i%2 == 0 {
			t[i] = "sliding"
		}
	}
	return t
}

func mustRow(d quant.DType, cols int) int {
	n, err := d.RowBytes(cols)
	if err != nil {
		panic(err)
	}
	return n
}

// randomBlocks is a reader of random data in dt's block layout with valid,
// small scales: the f16 scale fields are overwritten so values stay finite
// and of unit-ish magnitude.
type randomBlocks struct {
	rng  *rand.Rand
	dt   quant.DType
	left int64
	norm bool // f32 values near 1 (norm weights)
	// std, when set, is the standard deviation of the values (1/√cols for a
	// matrix, so activations keep their scale through any depth and
	// context); the block scales are chosen for it and the quantized values
	// are centred on zero.
	std float32
	buf []byte // a block split across reads
	off int    // bytes of buf already returned
}

func (r *randomBlocks) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	bb := r.dt.BlockBytes()
	if r.buf == nil {
		r.buf = make([]byte, bb)
		r.off = bb
	}
	n := 0
	for n < len(p) && r.left > 0 {
		if r.off == bb {
			// Whole blocks go straight into p.
			if k := min(len(p)-n, int(min(r.left, 1<<30))) / bb * bb; k > 0 {
				for off := 0; off < k; off += bb {
					r.fill(p[n+off : n+off+bb])
				}
				n += k
				r.left -= int64(k)
				continue
			}
			r.fill(r.buf) // a block split across reads
			r.off = 0
		}
		k := copy(p[n:n+int(min(int64(len(p)-n), r.left))], r.buf[r.off:])
		r.off += k
		n += k
		r.left -= int64(k)
	}
	return n, nil
}

func (r *randomBlocks) fill(b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.rng.Uint64())
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.rng.Uint32())
	}
	scale := func(off int, v float32) { binary.LittleEndian.PutUint16(b[off:], quant.F32ToF16(v)) }
	if r.std > 0 && r.fillStd(b, scale) {
		return
	}
	switch r.dt {
	case quant.F32:
		v := (r.rng.Float32() - 0.5) * 0.04
		if r.norm {
			v += 1
		}
		binary.LittleEndian.PutUint32(b, math.Float32bits(v))
	case quant.F16:
		scale(0, (r.rng.Float32()-0.5)*0.04)
	case quant.BF16:
		b[1] &= 0x3c // keep the exponent small
	case quant.Q8_0, quant.Q4_0, quant.Q5_0:
		scale(0, 0.001)
	case quant.Q4_K:
		scale(0, 0.001)
		scale(2, 0.001)
	case quant.Q6_K:
		scale(208, 0.001)
	case quant.MXFP4:
		b[0] = 120
	}
}

// fillStd sets the block scales of b (already random) for values of
// standard deviation r.std centred on zero; false for dtypes it leaves to
// the defaults. The divisors are the standard deviations of the quantized
// integers: int8 73.9; 4-bit q−8 4.61; 5-bit q−16 9.23; Q4_K with every
// sub-block scale 2 and min 15, d·(2q−15) 9.22; Q6_K with scales 16,
// 16·(q−32) 295.
func (r *randomBlocks) fillStd(b []byte, scale func(off int, v float32)) bool {
	uniform := func() float32 { return (r.rng.Float32() - 0.5) * 3.4641016 * r.std } // √12·σ wide
	switch r.dt {
	case quant.F32:
		binary.LittleEndian.PutUint32(b, math.Float32bits(uniform()))
	case quant.F16:
		scale(0, uniform())
	case quant.Q8_0:
		scale(0, r.std/73.9)
	case quant.Q4_0:
		scale(0, r.std/4.61)
	case quant.Q5_0:
		scale(0, r.std/9.23)
	case quant.Q4_K:
		d := r.std / 9.22
		scale(0, d)
		scale(2, d)
		for j := range 4 {
			b[4+j] = 2          // scales of sub-blocks 0–3 (6 bits, high bits 0)
			b[8+j] = 15         // mins of sub-blocks 0–3
			b[12+j] = 2 | 15<<4 // sub-blocks 4–7: low nibbles of scale | min
		}
	case quant.Q6_K:
		for j := range 16 {
			b[192+j] = 16
		}
		scale(208, r.std/295)
	default:
		return false
	}
	return true
}
