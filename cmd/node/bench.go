package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

func newBench() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure speed: inference on a model, or write a synthetic model of a real shape",
	}
	cmd.AddCommand(newBenchInference(), newBenchSynth())
	return cmd
}

// benchRow is one prompt size's result.
type benchRow struct {
	PromptTokens    int     `json:"prompt_tokens"`
	GenTokens       int     `json:"gen_tokens"`
	TTFTms          float64 `json:"ttft_ms"`
	PrefillTokS     float64 `json:"prefill_tok_s"`
	DecodeTokS      float64 `json:"decode_tok_s"`
	P50ms           float64 `json:"decode_p50_ms"`
	P90ms           float64 `json:"decode_p90_ms"`
	P99ms           float64 `json:"decode_p99_ms"`
	SubmitsPerToken float64 `json:"submits_per_token"`
	// Compute dispatches per decoded token (all layers and the head);
	// with --batch, per step of all the sequences together.
	DispatchesPerToken float64 `json:"dispatches_per_token"`
	ReadbackPerToken   float64 `json:"readback_bytes_per_token"`
	// Expert paging, per measured run (0 without paging).
	ExpertHits       uint64  `json:"expert_hits"`
	ExpertMisses     uint64  `json:"expert_misses"`
	ExpertBytesPaged uint64  `json:"expert_bytes_paged"`
	ExpertStallMs    float64 `json:"expert_stall_ms"`
	// With --batch N: the sequences decoding together, and the tokens/s
	// they decode all together (decode_tok_s is per sequence then).
	Batch               int     `json:"batch,omitempty"`
	AggregateDecodeTokS float64 `json:"aggregate_decode_tok_s,omitempty"`
}

func newBenchInference() *cobra.Command {
	var (
		rf      runFlags
		prompts string
		gen     int
		warmup  int
		runs    int
		asJSON  bool
		batch   int

		allowSoftware bool
	)
	cmd := &cobra.Command{
		Use:   "inference -m MODEL",
		Short: "Time prefill and decode: TTFT, tok/s, per-token latency percentiles, submits and readback per token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := engineAvailable(); err != nil {
				return err
			}
			sizes, err := parseIDs(prompts)
			if err != nil {
				return fmt.Errorf("--prompt: %w", err)
			}
			if runs < 1 || gen < 1 {
				return fmt.Errorf("--runs and -n must be ≥ 1")
			}
			if batch < 1 || batch > maxBenchBatch {
				return fmt.Errorf("--batch %d: must be 1 to %d", batch, maxBenchBatch)
			}
			src, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer src.Close()
			rng := rand.New(rand.NewPCG(1, 2))
			vocab := src.rm.Manifest.Config.VocabSize
			bo := benchOptions{gen: gen, warmup: warmup, runs: runs, allowSoftware: allowSoftware, batch: batch}
			for _, p := range sizes {
				prompt := make([]int, p)
				for i := range prompt {
					prompt[i] = 3 + rng.IntN(vocab-3)
				}
				bo.prompts = append(bo.prompts, prompt)
			}
			br, err := benchRuns(cmd.Context(), src, &rf, bo)
			if err != nil {
				return err
			}
			var rows []benchRow
			for i, p := range sizes {
				row := benchRowOf(p, gen, br.stats[i])
				if batch > 1 {
					row.Batch, row.AggregateDecodeTokS = batch, br.aggregate[i]
				}
				rows = append(rows, row)
			}
			out := map[string]any{
				"expert_bytes_per_token": expertBytes(src.rm.Manifest, false), "expert_bytes_total": expertBytes(src.rm.Manifest, true),
				"adapter": br.adapter, "backend": br.backend, "adapter_type": br.adapterType, "software": br.software,
				"features": br.features, "adapter_features": br.adapterFeatures,
				"model": rf.modelName(), "model_id": src.rm.ID.String(), "model_bytes": src.rm.Manifest.TotalSize(),
				"gpu_bytes_allocated": br.gpuBytes, "weight_bytes": br.weightBytes,
				"gpu_bytes_peak": br.peakBytes, "kv_bytes": br.kvBytes,
				"kv": map[bool]string{true: "f32", false: "f16"}[rf.kvF32], "q8x": rf.q8x, "rope_in_attention": rf.ropeAttn, "context": br.context,
				"warmup": warmup, "runs": runs, "batch": batch, "results": rows,
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, out)
			}
			printBench(w, out, rows)
			return nil
		},
	}
	rf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&prompts, "prompt", "128,512", "prompt sizes in tokens, comma-separated")
	f.IntVarP(&gen, "n", "n", 128, "tokens to generate per run")
	f.IntVar(&warmup, "warmup", 1, "warm-up runs per prompt size (not counted)")
	f.IntVar(&runs, "runs", 3, "measured runs per prompt size")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.IntVar(&batch, "batch", 1, "sequences decoding together (batched decode); reports aggregate_decode_tok_s")
	f.BoolVar(&allowSoftware, "allow-software", false, "run on a software (CPU) adapter too (figures marked \"software\": true)")
	return cmd
}

// benchRowOf sums up the measured runs of a prompt of p tokens, each
// generating gen.
func benchRowOf(p, gen int, runs []genStats) benchRow {
	var ttft, lat []time.Duration
	var submits, dispatches, readback uint64
	var decoded int
	var paging pagingStats
	for _, st := range runs {
		ttft = append(ttft, st.prefill)
		lat = append(lat, st.tokenLatency...)
		submits += st.submits
		dispatches += st.dispatches
		readback += st.readbackBytes
		decoded += len(st.tokenLatency)
		paging.hits += st.paging.hits
		paging.misses += st.paging.misses
		paging.bytesPaged += st.paging.bytesPaged
		paging.stall += st.paging.stall
	}
	slices.Sort(ttft)
	slices.Sort(lat)
	n := uint64(len(runs))
	row := benchRow{PromptTokens: p, GenTokens: gen, ExpertHits: paging.hits / n, ExpertMisses: paging.misses / n,
		ExpertBytesPaged: paging.bytesPaged / n, ExpertStallMs: paging.stall.Seconds() * 1000 / float64(n)}
	t := ttft[len(ttft)/2]
	row.TTFTms = ms(t)
	row.PrefillTokS = float64(p) / t.Seconds()
	if len(lat) > 0 {
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		row.DecodeTokS = float64(len(lat)) / sum.Seconds()
		row.P50ms, row.P90ms, row.P99ms = ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99))
		row.SubmitsPerToken = float64(submits) / float64(decoded)
		row.DispatchesPerToken = float64(dispatches) / float64(decoded)
		row.ReadbackPerToken = float64(readback) / float64(decoded)
	}
	return row
}

// expertBytes sums the bytes of expert tensors: all of them, or the
// slices one token reads (experts_used of each layer's experts).
func expertBytes(m *rdrr.Manifest, all bool) int64 {
	var n int64
	for _, t := range m.Tensors {
		if t.Experts == 0 {
			continue
		}
		if all {
			n += t.Size
		} else {
			n += t.Size / int64(t.Experts) * int64(m.Config.ExpertsUsed)
		}
	}
	return n
}

// maxBenchBatch is the most sequences --batch takes (engine.MaxBatch; the
// engine is not linked into every build).
const maxBenchBatch = 16

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func printBench(w io.Writer, out map[string]any, rows []benchRow) {
	fmt.Fprintf(w, "adapter   %s (%s, %s)\n", out["adapter"], out["backend"], out["adapter_type"])
	if f, _ := out["features"].([]string); len(f) > 0 {
		fmt.Fprintf(w, "features  %s\n", strings.Join(f, " "))
	}
	fmt.Fprintf(w, "model     %s\n", out["model"])
	file := float64(out["model_bytes"].(int64))
	gb := func(k string) int64 { return int64(out[k].(uint64)) }
	fmt.Fprintf(w, "memory    weights %s on the GPU for a %s model (%.2f×); KV cache %s (%d tokens, %s); peak %s allocated (%.2f×)\n",
		humanBytes(gb("weight_bytes")), humanBytes(int64(file)), float64(gb("weight_bytes"))/file,
		humanBytes(gb("kv_bytes")), out["context"], out["kv"], humanBytes(gb("gpu_bytes_peak")), float64(gb("gpu_bytes_peak"))/file)
	if e := out["expert_bytes_total"].(int64); e > 0 {
		fmt.Fprintf(w, "experts   %s read per token (the chosen experts) of %s\n", humanBytes(out["expert_bytes_per_token"].(int64)), humanBytes(e))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "prompt\tgen\tTTFT ms\tprefill tok/s\tdecode tok/s\tp50 ms\tp90 ms\tp99 ms\tsubmits/tok\tdispatches/tok\treadback B/tok\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.0f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.0f\t\n", r.PromptTokens, r.GenTokens, r.TTFTms,
			r.PrefillTokS, r.DecodeTokS, r.P50ms, r.P90ms, r.P99ms, r.SubmitsPerToken, r.DispatchesPerToken, r.ReadbackPerToken)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Batch > 1 {
			fmt.Fprintf(w, "prompt %d: %d sequences decoding together: %.1f tok/s aggregate (%.1f per sequence)\n",
				r.PromptTokens, r.Batch, r.AggregateDecodeTokS, r.DecodeTokS)
		}
	}
	for _, r := range rows {
		if r.ExpertMisses > 0 {
			fmt.Fprintf(w, "prompt %d: experts %d hits, %d misses, %s paged, %.1f ms stalled per run\n",
				r.PromptTokens, r.ExpertHits, r.ExpertMisses, humanBytes(int64(r.ExpertBytesPaged)), r.ExpertStallMs)
		}
	}
}

func synthShapeNames() []string {
	var names []string
	for n := range convert.SynthShapes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func newBenchSynth() *cobra.Command {
	var (
		arch, shape, q, out string
		seed                uint64
		layers              int
	)
	cmd := &cobra.Command{
		Use:   "synth --shape 1b|8b --quant q4_k -o DIR",
		Short: "Write a random-weight RDRR model of a real Llama shape (Llama-3.2-1B, Llama-3-8B)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, ok := convert.SynthShapes[strings.ToLower(shape)]
			if !ok {
				return fmt.Errorf("--shape %q: want one of %s", shape, strings.Join(synthShapeNames(), ", "))
			}
			if arch != "" && arch != cfg.Architecture {
				return fmt.Errorf("--arch %q: shape %s is a %s model", arch, shape, cfg.Architecture)
			}
			if layers > 0 {
				if len(cfg.LayerTypes) > 0 {
					types := make([]string, layers)
					for i := range types {
						types[i] = cfg.LayerTypes[i%len(cfg.LayerTypes)]
					}
					cfg.LayerTypes = types
				}
				cfg.Layers = layers
			}
			dt, err := quant.Parse(q)
			if err != nil {
				return fmt.Errorf("--quant: %w", err)
			}
			if out == "" {
				return fmt.Errorf("-o DIR is required")
			}
			start := time.Now()
			id, err := convert.Synthesize(cmd.Context(), cfg, dt, seed, out, rdrr.WriterOptions{})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s-shaped %s, %d layers) in %.1fs\nmodel id %s\n", out, shape, dt, cfg.Layers, time.Since(start).Seconds(), id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&arch, "arch", "", "architecture (checked against the shape)")
	f.StringVar(&shape, "shape", "1b", "1b (Llama-3.2-1B), 8b (Llama-3-8B), mixtral-8x7b, gpt-oss-20b")
	f.StringVar(&q, "quant", "q4_k", "weight dtype (of the experts, for MoE shapes): q4_k, q8_0, mxfp4, f16, …")
	f.StringVarP(&out, "out", "o", "", "output RDRR directory")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	f.IntVar(&layers, "layers", 0, "override the layer count (0 = the real shape's)")

	return cmd
}
