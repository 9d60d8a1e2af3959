//go:build cgo || js

package engine

import (
	"context"
	"math"
	"testing"
)

type hfGolden struct {
	InputIDs     []int       `json:"input_ids"`
	Logits       [][]float64 `json:"logits"`
	GeneratedIDs []int       `json:"generated_ids"`
}

// TestHFGoldens runs the tiny HF-transformers models (converted from
// safetensors) against their golden logits at every input position and
// their 16 greedy tokens.
func TestHFGoldens(t *testing.T) {
	for _, arch := range hfArchs {
		t.Run(arch, func(t *testing.T) {
			var g hfGolden
			readGolden(t, "hf/"+arch+"/golden.json", &g)
			m := loadShared(t, "hf/"+arch, Options{Context: 64, KVF32: true})
			all, err := newSession(t, m).ForwardAll(g.InputIDs)
			if err != nil {
				t.Fatal(err)
			}
			var worst float64
			for p := range all {
				for i, v := range all[p] {
					worst = math.Max(worst, math.Abs(float64(v)-g.Logits[p][i]))
				}
			}
			if worst > 1e-4 {
				t.Errorf("logits differ from transformers by up to %.2e (tolerance 1e-4)", worst)
			}
			for _, kvf32 := range []bool{true, false} {
				m := loadShared(t, "hf/"+arch, Options{Context: 64, KVF32: kvf32})
				res, err := newSession(t, m).Generate(context.Background(), g.InputIDs, GenerateOptions{MaxTokens: len(g.GeneratedIDs)})
				if err != nil {
					t.Fatal(err)
				}
				for i := range g.GeneratedIDs {
					if i >= len(res.Tokens) || res.Tokens[i] != g.GeneratedIDs[i] {
						t.Fatalf("kv f32=%v: greedy %v, transformers %v", kvf32, res.Tokens, g.GeneratedIDs)
					}
				}
			}
			t.Logf("max logit difference %.2e", worst)
		})
	}
}

// hfArchs are the shared HF fixtures this engine runs.
var hfArchs = []string{"llama", "mistral", "qwen3", "gemma3", "mixtral", "gpt_oss"}
