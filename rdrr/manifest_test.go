package rdrr

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/dtype"
)

func testManifest() *Manifest {
	blocks := leaves(2)
	return &Manifest{
		Format: Format,
		Config: Config{Architecture: "llama", Layers: 1, HiddenSize: 32, Heads: 2, KVHeads: 1, HeadDim: 16,
			FFN: 64, VocabSize: 10, NormEps: 1e-5, Activation: "silu", Rope: RoPE{Theta: 10000, Dim: 16, Style: "normal"}},
		Tensors: []Tensor{
			{Name: "a", DType: dtype.F32, Shape: []int64{4, 8}, Size: 128, Shard: 0, Offset: 0},
			{Name: "b", DType: dtype.Q8_0, Shape: []int64{2, 32}, Size: 68, Spans: []Span{{Shard: 0, Offset: 2000, Size: 48}, {Shard: 0, Offset: 256, Size: 20}}},
		},
		Shards: []Shard{{Hash: leaves(1)[0], Size: 2048, BlockSize: 1024, Blocks: blocks, Root: MerkleRoot(blocks)}},
	}
}

func TestManifestCanonical(t *testing.T) {
	m := testManifest()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("\n")) || bytes.Contains(b, []byte(": ")) {
		t.Fatalf("canonical form has whitespace: %s", b)
	}
	if !bytes.HasPrefix(b, []byte(`{"config":{"activation":"silu","architecture":"llama"`)) {
		t.Fatalf("keys not sorted: %.80s", b)
	}
	m2, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := m2.Encode()
	if !bytes.Equal(b, b2) {
		t.Fatal("encode(parse(b)) != b")
	}
	// Pretty-printed or reordered JSON is refused: one model, one ID.
	var pretty bytes.Buffer
	pretty.Write(bytes.Replace(b, []byte(`,"format"`), []byte(",\n \"format\""), 1))
	if _, err := ParseManifest(pretty.Bytes()); !errors.Is(err, ErrManifest) {
		t.Fatalf("non-canonical manifest accepted: %v", err)
	}
}

func TestManifestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(m *Manifest)
		want string
	}{
		{"format", func(m *Manifest) { m.Format = "rdrr/9" }, "format"},
		{"no layers", func(m *Manifest) { m.Config.Layers = 0 }, "layers"},
		{"gqa", func(m *Manifest) { m.Config.KVHeads = 3 }, "multiple"},
		{"dup tensor", func(m *Manifest) { m.Tensors[1].Name = "a" }, "duplicate"},
		{"size", func(m *Manifest) { m.Tensors[0].Size = 100 }, "size"},
		{"past shard", func(m *Manifest) { m.Tensors[0].Offset = 2000 }, "outside shard"},
		{"shard index", func(m *Manifest) { m.Tensors[0].Shard = 3 }, "out of range"},
		{"span sum", func(m *Manifest) { m.Tensors[1].Spans[1].Size = 10 }, "add up"},
		{"blocks", func(m *Manifest) { m.Shards[0].Blocks = m.Shards[0].Blocks[:1] }, "block hashes"},
		{"root", func(m *Manifest) { m.Shards[0].Root[0] ^= 1 }, "Merkle root"},
		{"block size", func(m *Manifest) { m.Shards[0].BlockSize = 1000 }, "power of two"},
		{"row", func(m *Manifest) { m.Tensors[1].Shape = []int64{4, 16} }, "block size"},
		{"experts", func(m *Manifest) { m.Config.Experts = 4 }, "experts_used"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := testManifest()
			c.edit(m)
			err := m.Validate()
			if err == nil || !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrManifest mentioning %q", err, c.want)
			}
		})
	}
	if err := testManifest().Validate(); err != nil {
		t.Fatalf("valid manifest rejected: %v", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	b, _ := testManifest().Encode()
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":"rdrr/1","shards":[{"blocks":[],"block_size":0}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		// Anything accepted must re-encode to the same bytes.
		out, err := m.Encode()
		if err != nil || !bytes.Equal(out, data) {
			t.Fatalf("accepted manifest does not round-trip")
		}
	})
}
