package convert

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/gguf"
	"github.com/doppler-llm/doppler/rdrr/quant"
	"github.com/doppler-llm/doppler/rdrr/safetensors"
)

func toRDRR(t *testing.T, in string, opts Options) (string, rdrr.ModelID) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "model")
	id, err := ToRDRR(context.Background(), in, out, opts)
	if err != nil {
		t.Fatalf("convert %s: %v", in, err)
	}
	return out, id
}

func verifyOK(t *testing.T, dir string) *rdrr.Model {
	t.Helper()
	r, err := rdrr.VerifyDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Fatalf("verify %s: %v", dir, r.Problems)
	}
	m, err := rdrr.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != r.ID {
		t.Fatal("model id differs between OpenDir and VerifyDir")
	}
	return m
}

// TestConvertGGUF converts every shared GGUF, with small shards so tensors
// span shards, and checks every tensor byte for byte against the source.
func TestConvertGGUF(t *testing.T) {
	for _, path := range testenv.Glob(t, "models/*.gguf") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			opts := Options{Writer: rdrr.WriterOptions{ShardSize: 256 << 10, BlockSize: 16 << 10}}
			dir, id := toRDRR(t, path, opts)
			m := verifyOK(t, dir)
			if m.ID != id {
				t.Fatal("ToRDRR's id differs from the directory's")
			}
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if len(m.Manifest.Tensors) != len(f.Tensors) {
				t.Fatalf("%d tensors, source has %d", len(m.Manifest.Tensors), len(f.Tensors))
			}
			spans := 0
			for i := range f.Tensors {
				st := &f.Tensors[i]
				want, err := f.ReadTensor(st)
				if err != nil {
					t.Fatal(err)
				}
				name := strings.Replace(st.Name, ".post_attention_norm.", ".ffn_norm.", 1)
				got, err := m.ReadTensor(context.Background(), name)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("tensor %s differs from the GGUF", st.Name)
				}
				mt, _ := m.Tensor(name)
				if len(mt.Spans) > 1 {
					spans++
				}
				if mt.Experts > 0 {
					n := len(want) / mt.Experts
					for e := 0; e < mt.Experts; e++ {
						b, err := m.ReadExpert(context.Background(), name, e)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(b, want[e*n:(e+1)*n]) {
							t.Fatalf("tensor %s expert %d differs", name, e)
						}
					}
				}
			}
			if m.Manifest.Config.Experts > 0 && len(m.Manifest.Experts) != m.Manifest.Config.Layers*m.Manifest.Config.Experts {
				t.Fatalf("%d expert groups", len(m.Manifest.Experts))
			}
			if m.Manifest.Tokenizer == nil || len(m.Manifest.Tokenizer.Tokens) != 512 {
				t.Fatal("tokenizer not carried")
			}
			t.Logf("%d tensors, %d shards, %d tensors span shards", len(m.Manifest.Tensors), len(m.Manifest.Shards), spans)
		})
	}
}

// TestConvertHF converts every shared HF directory and checks tensors against
// the safetensors source (element-wise where the converter rearranges).
func TestConvertHF(t *testing.T) {
	for _, dir := range testenv.Glob(t, "hf/*/config.json") {
		dir := filepath.Dir(dir)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			out, _ := toRDRR(t, dir, Options{})
			m := verifyOK(t, out)
			st, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			cfg := m.Manifest.Config
			for i := range st.Tensors {
				src := &st.Tensors[i]
				want, err := st.Read(src)
				if err != nil {
					t.Fatal(err)
				}
				checkHFTensor(t, m, cfg, src.Name, src.Shape, want)
			}
		})
	}
}

func checkHFTensor(t *testing.T, m *rdrr.Model, cfg rdrr.Config, name string, shape []int64, want []byte) {
	t.Helper()
	ctx := context.Background()
	read := func(n string) []byte {
		b, err := m.ReadTensor(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f32 := func(b []byte, i int64) float32 {
		var v float32
		binary.Read(bytes.NewReader(b[4*i:4*i+4]), binary.LittleEndian, &v)
		return v
	}
	var l, e int
	var role string
	switch {
	case name == "model.embed_tokens.weight":
		if !bytes.Equal(read("token_embd.weight"), want) {
			t.Fatalf("%s differs", name)
		}
	case strings.HasSuffix(name, "mlp.experts.gate_up_proj"):
		fmt.Sscanf(name, "model.layers.%d.", &l)
		E, in, I := shape[0], shape[1], shape[2]/2
		gate, up := read(fmt.Sprintf("blk.%d.ffn_gate_exps.weight", l)), read(fmt.Sprintf("blk.%d.ffn_up_exps.weight", l))
		for e := int64(0); e < E; e++ {
			for o := int64(0); o < I; o++ {
				for i := int64(0); i < in; i++ {
					src := (e*in+i)*2*I + 2*o
					dst := (e*I+o)*in + i
					if f32(gate, dst) != f32(want, src) || f32(up, dst) != f32(want, src+1) {
						t.Fatalf("%s: expert %d [%d,%d] misplaced", name, e, o, i)
					}
				}
			}
		}
	case strings.HasSuffix(name, "mlp.experts.down_proj"):
		fmt.Sscanf(name, "model.layers.%d.", &l)
		E, I, O := shape[0], shape[1], shape[2]
		down := read(fmt.Sprintf("blk.%d.ffn_down_exps.weight", l))
		for e := int64(0); e < E; e++ {
			for i := int64(0); i < I; i++ {
				for o := int64(0); o < O; o++ {
					if f32(down, (e*O+o)*I+i) != f32(want, (e*I+i)*O+o) {
						t.Fatalf("%s misplaced", name)
					}
				}
			}
		}
	case strings.Contains(name, "gate_up_proj_bias"):
		fmt.Sscanf(name, "model.layers.%d.", &l)
		gate := read(fmt.Sprintf("blk.%d.ffn_gate_exps.bias", l))
		for k := int64(0); k < shape[0]*shape[1]/2; k++ {
			if f32(gate, k) != f32(want, 2*k) {
				t.Fatalf("%s misplaced", name)
			}
		}
	case func() bool {
		n, _ := fmt.Sscanf(name, "model.layers.%d.block_sparse_moe.experts.%d.%s", &l, &e, &role)
		return n == 3
	}():
		gguf := map[string]string{"w1.weight": "ffn_gate_exps", "w3.weight": "ffn_up_exps", "w2.weight": "ffn_down_exps"}[role]
		b, err := m.ReadExpert(ctx, fmt.Sprintf("blk.%d.%s.weight", l, gguf), e)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: expert slice differs (%v)", name, err)
		}
	default:
		// Every other tensor is renamed, not rearranged: find it by bytes.
		for _, mt := range m.Manifest.Tensors {
			if mt.Size == int64(len(want)) && bytes.Equal(read(mt.Name), want) {
				return
			}
		}
		t.Fatalf("%s: no tensor with the same bytes", name)
	}
}

func TestVerifyFindsFlippedByte(t *testing.T) {
	src := testenv.Path(t, "models/tiny-mixtral-Q8_0.gguf")
	dir, _ := toRDRR(t, src, Options{Writer: rdrr.WriterOptions{BlockSize: 4 << 10}})
	m := verifyOK(t, dir)
	for _, si := range []int{0, len(m.Manifest.Shards) - 1} {
		sh := m.Manifest.Shards[si]
		path := filepath.Join(dir, sh.Hash.String())
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		at := int64(len(orig)) * 2 / 3
		bad := bytes.Clone(orig)
		bad[at] ^= 0x40
		os.WriteFile(path, bad, 0o644)
		r, err := rdrr.VerifyDir(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantBlock := int(at / sh.BlockSize)
		if len(r.Problems) != 1 || r.Problems[0].Shard != si || r.Problems[0].Block != wantBlock {
			t.Fatalf("flipped byte %d of shard %d: problems %v, want shard %d block %d", at, si, r.Problems, si, wantBlock)
		}
		// The reader refuses the bad block too.
		var name string
		for _, tn := range m.Manifest.Tensors {
			for _, p := range tn.Pieces() {
				if p.Shard == si && p.Offset <= at && at < p.Offset+p.Size {
					name = tn.Name
				}
			}
		}
		if _, err := m.ReadTensor(context.Background(), name); !errors.Is(err, rdrr.ErrBadBlock) {
			t.Fatalf("reading %s over a bad block: %v", name, err)
		}
		os.WriteFile(path, orig, 0o644)
	}
	// A missing shard is reported as such.
	os.Remove(filepath.Join(dir, m.Manifest.Shards[1].Hash.String()))
	r, _ := rdrr.VerifyDir(dir, nil)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].String(), "missing") {
		t.Fatalf("missing shard: %v", r.Problems)
	}
}

func TestSignature(t *testing.T) {
	src := testenv.Path(t, "models/stories260K-Q8_0.gguf")
	keyPath := filepath.Join(t.TempDir(), "key.pem")
	key, err := rdrr.LoadSigningKey(keyPath, true)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	again, err := rdrr.LoadSigningKey(keyPath, false)
	if err != nil || !again.Equal(key) {
		t.Fatalf("reloading the key: %v", err)
	}
	dir, _ := toRDRR(t, src, Options{SignKey: key})
	m := verifyOK(t, dir)
	if !bytes.Equal(m.Signer, key.Public().(ed25519.PublicKey)) {
		t.Fatal("signer not reported")
	}
	// A manifest edited by hand (still canonical) breaks the signature.
	mp := filepath.Join(dir, rdrr.ManifestFile)
	b, _ := os.ReadFile(mp)
	os.WriteFile(mp, bytes.Replace(b, []byte(`"context_length":2048`), []byte(`"context_length":4096`), 1), 0o644)
	if _, err := rdrr.OpenDir(dir); !errors.Is(err, rdrr.ErrBadSignature) {
		t.Fatalf("edited signed manifest: %v", err)
	}
	// Pretty-printing it is caught even without a signature.
	os.Remove(filepath.Join(dir, rdrr.SignatureFile))
	os.WriteFile(mp, bytes.Replace(b, []byte(`,"format"`), []byte(`, "format"`), 1), 0o644)
	if _, err := rdrr.OpenDir(dir); !errors.Is(err, rdrr.ErrManifest) || !strings.Contains(err.Error(), "manifest.json") {
		t.Fatalf("non-canonical manifest: %v", err)
	}
}

func TestRequantize(t *testing.T) {
	src := testenv.Path(t, "models/tiny-mixtral-F32.gguf")
	for _, q := range []quant.DType{quant.Q8_0, quant.Q4_K, quant.F16} {
		t.Run(q.String(), func(t *testing.T) {
			dir, _ := toRDRR(t, src, Options{Quant: q})
			m := verifyOK(t, dir)
			orig := verifyOK(t, func() string { d, _ := toRDRR(t, src, Options{}); return d }())
			for _, tn := range m.Manifest.Tensors {
				if len(tn.Shape) < 2 || strings.Contains(tn.Name, "gate_inp") {
					if tn.DType != quant.F32 {
						t.Fatalf("%s requantized to %s", tn.Name, tn.DType)
					}
					continue
				}
				if tn.DType != q {
					t.Fatalf("%s is %s, want %s", tn.Name, tn.DType, q)
				}
				a, _ := orig.ReadTensor(context.Background(), tn.Name)
				b, _ := m.ReadTensor(context.Background(), tn.Name)
				fa := make([]float32, tn.Elements())
				fb := make([]float32, tn.Elements())
				quant.Dequantize(quant.F32, a, fa)
				if err := quant.Dequantize(q, b, fb); err != nil {
					t.Fatal(err)
				}
				var num, den float64
				for i := range fa {
					d := float64(fa[i] - fb[i])
					num += d * d
					den += float64(fa[i]) * float64(fa[i])
				}
				if rel := num / den; rel > 0.01 {
					t.Fatalf("%s: relative squared error %.4f after %s", tn.Name, rel, q)
				}
			}
		})
	}
}

// TestConvertBadInput: each broken input gives one error naming the file
// and the problem, leaves no output behind and never touches an existing one.
func TestConvertBadInput(t *testing.T) {
	good, err := os.ReadFile(testenv.Path(t, "models/stories260K-Q8_0.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	withVersion := bytes.Clone(good)
	binary.LittleEndian.PutUint32(withVersion[4:], 7)
	hfNoConfig := filepath.Join(tmp, "hf-noconfig")
	os.MkdirAll(hfNoConfig, 0o755)
	hfBadST := filepath.Join(tmp, "hf-badst")
	os.MkdirAll(hfBadST, 0o755)
	cfg, _ := os.ReadFile(testenv.Path(t, "hf/llama/config.json"))
	os.WriteFile(filepath.Join(hfBadST, "config.json"), cfg, 0o644)
	os.WriteFile(filepath.Join(hfBadST, "model.safetensors"), []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"), 0o644)
	unknownType := bytes.Clone(good)
	// Patch the first tensor's type (after its name) to an unknown ggml type.
	f, _ := gguf.Parse(bytes.NewReader(good), int64(len(good)))
	first := f.Tensors[0].Name
	at := bytes.Index(good, []byte(first)) + len(first) + 4 + 8*len(f.Tensors[0].Dims)
	binary.LittleEndian.PutUint32(unknownType[at:], 99)
	cases := []struct {
		name, in, want string
	}{
		{"truncated", write("trunc.gguf", good[:len(good)/2]), "past the end"},
		{"short", write("short.gguf", good[:10]), "truncated"},
		{"magic", write("magic.gguf", append([]byte("GGML"), good[4:]...)), "bad magic"},
		{"version", write("version.gguf", withVersion), "version 7"},
		{"unknown dtype", write("dtype.gguf", unknownType), "unsupported tensor type"},
		{"no config", hfNoConfig, "config.json"},
		{"bad safetensors", hfBadST, "safetensors"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(tmp, "out-"+strings.ReplaceAll(c.name, " ", "-"))
			_, err := ToRDRR(context.Background(), c.in, out, Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Base(c.in)) {
				t.Fatalf("got %v, want an error naming %s and %q", err, filepath.Base(c.in), c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("failed convert left output behind")
			}
		})
	}
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temporary %s left behind", e.Name())
		}
	}
	// An existing output is never touched.
	existing := filepath.Join(tmp, "existing")
	os.MkdirAll(existing, 0o755)
	os.WriteFile(filepath.Join(existing, "keep"), []byte("mine"), 0o644)
	if _, err := ToRDRR(context.Background(), testenv.Path(t, "models/stories260K-Q8_0.gguf"), existing, Options{}); err == nil {
		t.Fatal("convert over an existing directory succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(existing, "keep")); string(b) != "mine" {
		t.Fatal("existing output touched")
	}
}
