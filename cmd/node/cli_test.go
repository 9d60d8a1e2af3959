package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// doppler runs the CLI in-process and returns stdout.
func doppler(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if stdin != "" {
		r, w, _ := os.Pipe()
		w.WriteString(stdin)
		w.Close()
		old := os.Stdin
		os.Stdin = r
		defer func() { os.Stdin = old }()
	}
	err := root.Execute()
	return out.String(), err
}

func TestConvertInspectVerify(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	dir := filepath.Join(t.TempDir(), "stories")
	out, err := doppler(t, "", "convert", src, "-o", dir)
	if err != nil || !strings.Contains(out, "model id ") {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	out, err = doppler(t, "", "inspect", dir)
	for _, want := range []string{"model id", "architecture  llama", "layers        5", "tokenizer     llama, 512 tokens", "shards:"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("inspect lacks %q: %v\n%s", want, err, out)
		}
	}
	if out, err = doppler(t, "", "inspect", src); err != nil || !strings.Contains(out, "GGUF v3") {
		t.Fatalf("inspect GGUF: %v\n%s", err, out)
	}
	if out, err = doppler(t, "", "verify", dir); err != nil || !strings.HasPrefix(out, "ok ") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	// One flipped byte: verify names the shard and block and fails.
	m, _ := filepath.Glob(filepath.Join(dir, "[0-9a-f]*"))
	b, _ := os.ReadFile(m[0])
	b[len(b)-10] ^= 1
	os.WriteFile(m[0], b, 0o644)
	out, err = doppler(t, "", "verify", dir)
	if err == nil || !strings.Contains(out, "BAD shard 0 ") || !strings.Contains(out, "block 1") {
		t.Fatalf("verify of a modified shard: %v\n%s", err, out)
	}
}

func TestRunJSON(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	t.Setenv("DOPPLER_CACHE", t.TempDir())
	var got struct {
		PromptTokens []int  `json:"prompt_tokens"`
		Tokens       []int  `json:"tokens"`
		Text         string `json:"text"`
	}
	// Flags after the positional-free command, model from the environment.
	t.Setenv("DOPPLER_MODEL", src)
	out, err := doppler(t, "", "run", "--prompt-tokens", "1,403,407,261,378", "--temp", "0", "-n", "8", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []int{432, 383, 286, 261, 376, 298, 315, 421}
	if len(got.Tokens) != 8 || got.Tokens[0] != want[0] || got.Tokens[7] != want[7] || len(got.PromptTokens) != 5 {
		t.Fatalf("tokens %v (prompt %v), want %v", got.Tokens, got.PromptTokens, want)
	}
	if !strings.HasPrefix(got.Text, ", there was a little girl") {
		t.Fatalf("text %q", got.Text)
	}
	// -p - reads stdin and adds BOS.
	out, err = doppler(t, "Once upon a time", "run", "-m", src, "-p", "-", "--temp", "0", "-n", "4", "--json")
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.PromptTokens[0] != 1 || len(got.PromptTokens) != 5 {
		t.Fatalf("stdin prompt: %v\n%s", err, out)
	}
	// Streaming text.
	out, err = doppler(t, "", "run", "-m", src, "-p", "Once upon a time", "--temp", "0", "-n", "8")
	if err != nil || !strings.HasPrefix(out, ", there was a little girl") {
		t.Fatalf("streamed: %v\n%q", err, out)
	}
}

func TestRunErrors(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	t.Setenv("DOPPLER_MODEL", "")
	t.Setenv("DOPPLER_CACHE", t.TempDir())
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "-p", "hi"}, "DOPPLER_MODEL"},
		{[]string{"run", "-m", "/nonexistent.gguf", "-p", "hi"}, "nonexistent"},
		{[]string{"run", "-m", src, "-p", "hi", "--temp", "-1"}, "temperature"},
		{[]string{"run", "-m", src, "-p", "hi", "--top-p", "2"}, "top-p"},
		{[]string{"run", "-m", src, "--prompt-tokens", "1,x"}, "bad token id"},
		{[]string{"run", "-m", src, "-p", strings.Repeat("word ", 40), "--ctx", "16"}, "context"},
		// A positional argument: the model without -m, or the prompt without -p.
		{[]string{"run", src}, "name the model with -m " + src},
		{[]string{"run", "-m", src, "Once", "upon"}, `give the prompt with -p "Once upon"`},
	}
	for _, c := range cases {
		out, err := doppler(t, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v (%s), want an error mentioning %q", c.args, err, out, c.want)
		}
	}
}

// TestBenchInference runs the benchmark command end to end (on lavapipe it
// must be asked for explicitly: software figures are refused by default).
func TestBenchInference(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	t.Setenv("DOPPLER_CACHE", t.TempDir())
	args := []string{"bench", "inference", "-m", src, "--prompt", "4,9", "-n", "4", "--runs", "1", "--warmup", "0", "--json"}
	out, err := doppler(t, "", args...)
	if err != nil && !strings.Contains(err.Error(), "software") {
		t.Fatalf("%v\n%s", err, out)
	}
	if err == nil {
		testenv.Skip(t, "a hardware adapter is present; the software refusal is not exercised")
	}
	out, err = doppler(t, "", append(args, "--allow-software")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got struct {
		Model      string `json:"model"`
		Software   bool   `json:"software"`
		ModelBytes int64  `json:"model_bytes"`
		Weights    uint64 `json:"weight_bytes"`
		KV         uint64 `json:"kv_bytes"`
		Peak       uint64 `json:"gpu_bytes_peak"`
		Allocated  uint64 `json:"gpu_bytes_allocated"`
		Context    int    `json:"context"`
		Results    []struct {
			PromptTokens    int     `json:"prompt_tokens"`
			DecodeTokS      float64 `json:"decode_tok_s"`
			SubmitsPerToken float64 `json:"submits_per_token"`
			Dispatches      float64 `json:"dispatches_per_token"`
			ReadbackPerTok  float64 `json:"readback_bytes_per_token"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Model != src { // the user's file, not the conversion cache
		t.Errorf("model %q, want %q", got.Model, src)
	}
	if !got.Software || len(got.Results) != 2 || got.Results[1].PromptTokens != 9 {
		t.Fatalf("unexpected report: %s", out)
	}
	// stories260K: 5 layers × K and V × 4 KV heads × 8 dims, f16.
	if want := uint64(got.Context * 5 * 2 * 4 * 8 * 2); got.KV != want {
		t.Errorf("kv_bytes %d, want %d for %d positions", got.KV, want, got.Context)
	}
	if got.Weights == 0 || got.Weights > uint64(got.ModelBytes)*105/100 {
		t.Errorf("weight_bytes %d for a %d-byte model, want ≤ 1.05×", got.Weights, got.ModelBytes)
	}
	if got.Peak < got.Weights+got.KV || got.Peak < got.Allocated {
		t.Errorf("gpu_bytes_peak %d below weights %d + KV %d or allocated %d", got.Peak, got.Weights, got.KV, got.Allocated)
	}
	for _, r := range got.Results {
		if r.DecodeTokS <= 0 || r.SubmitsPerToken != 1 || r.ReadbackPerTok != 4 {
			t.Fatalf("row %+v: want positive speed, 1 submit and 4 bytes per token", r)
		}
		// Per layer: norm, QKV, RoPEKV, attention (two: split over the
		// cache), o-proj + residual, norm, gate+up, activation, down +
		// residual; then embed, norm, LM head, sampling.
		if max := float64(5*10 + 4); r.Dispatches <= 0 || r.Dispatches > max {
			t.Errorf("%.1f dispatches per token, want 1 to %.0f", r.Dispatches, max)
		}
	}
}
