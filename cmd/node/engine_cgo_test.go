//go:build cgo

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/internal/gputest"
	"github.com/doppler-llm/doppler/internal/planted"
	"github.com/doppler-llm/doppler/internal/prefilltest"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/dtype"
	"github.com/doppler-llm/doppler/swarm"
)

// The engine wiring under the swarm's tests: the prefill-offload suite and
// the gatekeeper's read-ahead over the GPU engine (swarm's own tests run
// them without a GPU).

// TestOffloadEngine runs the prefill-offload suite with models on the GPU:
// the engine's KV layout, its f16 numerics and its sessions behind
// swarm.PrefillSession.
func TestOffloadEngine(t *testing.T) {
	prefilltest.Offload(t, enginePrefillLoader(gputest.Open(t)))
}

// TestPrefillProtocolErrorsEngine: malformed requests to a prefill service
// on the GPU end in errors.
func TestPrefillProtocolErrorsEngine(t *testing.T) {
	prefilltest.ProtocolErrors(t, enginePrefillLoader(gputest.Open(t)))
}

// Planted-cluster MoE (package planted): vocabulary plantedVocab in
// plantedGroups groups of consecutive token ids; a token of group g
// selects experts 2g and 2g+1 in every layer.
const (
	plantedLayers = planted.Layers
	plantedHidden = 64
	plantedVocab  = planted.Vocab
	plantedGroups = planted.Groups
	plantedFFN    = 32
)

// plantedMoE writes a small F32 Mixtral whose token embeddings are group
// directions (e_g plus a little noise) and whose routers are aligned with
// them: row 2g of every router is 1·e_g, row 2g+1 is 0.8·e_g, so group g
// always picks {2g, 2g+1}. Attention and expert weights are small, so the
// residual stream keeps its group direction through every layer.
func plantedMoE(t *testing.T) (string, rdrr.ModelID) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "planted")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := rdrr.NewWriter(dir, rdrr.WriterOptions{ShardSize: 1 << 20, BlockSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	rng := rand.New(rand.NewPCG(7, 7))
	const E, H, F, V = 8, plantedHidden, plantedFFN, plantedVocab
	f32 := func(v []float32) *bytes.Reader {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return bytes.NewReader(b)
	}
	random := func(n int, scale float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = (rng.Float32()*2 - 1) * scale
		}
		return v
	}
	ones := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	add := func(name string, v []float32, shape ...int64) {
		if err := w.AddTensor(name, dtype.F32, shape, f32(v)); err != nil {
			t.Fatal(err)
		}
	}
	embd := random(V*H, 0.01)
	for tok := range V {
		embd[tok*H+tok*plantedGroups/V] += 1
	}
	add("token_embd.weight", embd, V, H)
	for l := range plantedLayers {
		p := func(s string) string { return "blk." + strconv.Itoa(l) + "." + s }
		add(p("attn_norm.weight"), ones(H), H)
		for _, n := range []string{"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"} {
			add(p(n), random(H*H, 0.01), H, H)
		}
		add(p("ffn_norm.weight"), ones(H), H)
		router := random(E*H, 0.001)
		for g := range plantedGroups {
			router[(2*g)*H+g] += 1
			router[(2*g+1)*H+g] += 0.8
		}
		add(p("ffn_gate_inp.weight"), router, E, H)
	}
	for l := range plantedLayers {
		p := func(s string) string { return "blk." + strconv.Itoa(l) + "." + s }
		for _, d := range []struct {
			name       string
			rows, cols int64
		}{{"ffn_gate_exps.weight", F, H}, {"ffn_up_exps.weight", F, H}, {"ffn_down_exps.weight", H, F}} {
			if err := w.DeclareExpertTensor(p(d.name), dtype.F32, []int64{E, d.rows, d.cols}); err != nil {
				t.Fatal(err)
			}
		}
		for e := range E {
			if err := w.BeginExpert(l, e); err != nil {
				t.Fatal(err)
			}
			for _, d := range []struct {
				name string
				n    int
			}{{"ffn_gate_exps.weight", F * H}, {"ffn_up_exps.weight", F * H}, {"ffn_down_exps.weight", H * F}} {
				if err := w.AddExpertSlice(p(d.name), f32(random(d.n, 0.01))); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.EndExpert(); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("output_norm.weight", ones(H), H)
	add("output.weight", random(V*H, 0.1), V, H)
	cfg := rdrr.Config{Architecture: "mixtral", ContextLength: 512, HiddenSize: H, Layers: plantedLayers, Heads: 4, KVHeads: 4,
		HeadDim: 16, FFN: F, VocabSize: V, NormEps: 1e-5, Activation: "silu", Experts: E, ExpertsUsed: 2, ExpertFFN: F,
		ExpertGating: "softmax", Rope: rdrr.RoPE{Theta: 10000, Dim: 16, Style: "normal"}}
	id, err := w.Finish(&rdrr.Manifest{Name: "planted-moe", Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// TestGatekeeperPrefetch: node A runs a planted-cluster MoE with 2 of 8
// experts per layer resident, its routing hooked to the swarm by the
// engine wiring (hookExperts). Its usage is gossiped to a gatekeeper,
// which publishes the clusters; with them as read-ahead hints at least
// 90 % of A's misses find their expert already read ahead, against the
// engine's own predictor alone without them.
func TestGatekeeperPrefetch(t *testing.T) {
	testenv.SkipShort(t, "a planted MoE on the GPU and a gatekeeper over libp2p")
	dev := gputest.Open(t)
	src, id := plantedMoE(t)
	fast := func(o *swarm.NodeOptions) {
		o.Experts.UsageInterval = 100 * time.Millisecond
		o.Experts.ClustersInterval = 500 * time.Millisecond
	}
	gate := seedNode(t, src, func(o *swarm.NodeOptions) { fast(o); o.Experts.Gatekeeper = true })
	a := seedNode(t, src, fast)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, errs := a.Connect(ctx, gate.Addrs()); len(errs) > 0 {
		t.Fatal(errs)
	}
	tr, err := a.Experts(id)
	if err != nil {
		t.Fatal(err)
	}
	run := func(ids []int, hints bool) (engine.PagingStats, []float32) {
		rm, err := a.OpenModel(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		o := engine.Options{Context: 256, ExpertCache: 2}
		hookExperts(&o, tr)
		if !hints {
			o.ExpertHints = nil
		}
		m, err := engine.Load(ctx, dev, rm, o)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		logits, err := s.Forward(ids)
		if err != nil {
			t.Fatal(err)
		}
		return m.Paging(), logits
	}
	rate := func(ps engine.PagingStats) float64 { return float64(ps.Prefetched) / float64(max(ps.Misses, 1)) }

	// Warm-up traffic: usage recorded and gossiped (clusters may arrive
	// meanwhile; this run does not use them).
	start := time.Now()
	warm, _ := run(planted.Sequence(8, 3, 1), false)
	t.Logf("warm-up: %d misses, %d read ahead (%.0f %%) in %v", warm.Misses, warm.Prefetched, 100*rate(warm), time.Since(start))

	// The gatekeeper's clusters reach A.
	deadline := time.After(20 * time.Second)
	for {
		c, from, v := tr.Clusters()
		if len(c) == plantedGroups {
			t.Logf("clusters v%d from %s: %v", v, from, c)
			if from != gate.ID() {
				t.Fatalf("clusters from %s, gatekeeper is %s", from, gate.ID())
			}
			break
		}
		select {
		case <-tr.Changed():
		case <-deadline:
			t.Fatalf("no clusters after 20s (have %v)", c)
		}
	}
	for _, c := range func() [][]wire.Expert { c, _, _ := tr.Clusters(); return c }() {
		if len(c) != 2*plantedLayers || int(c[0].Expert)/2 != int(c[1].Expert)/2 {
			t.Fatalf("cluster %v is not a planted group", c)
		}
	}

	seq := planted.Sequence(12, 3, 2)
	base, lb := run(seq, false)
	with, lw := run(seq, true)
	for i := range lb {
		if lb[i] != lw[i] {
			t.Fatalf("logit %d: %v without hints, %v with", i, lb[i], lw[i])
		}
	}
	t.Logf("without clusters: %d misses, %d read ahead: hit rate %.1f %% (stall %v)", base.Misses, base.Prefetched, 100*rate(base), base.Stall)
	t.Logf("with gatekeeper clusters: %d misses, %d read ahead: hit rate %.1f %% (stall %v)", with.Misses, with.Prefetched, 100*rate(with), with.Stall)
	if with.Misses == 0 || rate(with) < 0.9 {
		t.Fatalf("prefetch hit rate %.1f %% with clusters, want ≥ 90 %%", 100*rate(with))
	}
}
