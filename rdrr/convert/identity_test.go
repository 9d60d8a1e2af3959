package convert

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

// TestIDFromContentOnly: the model ID covers what determines the model's
// output, never the file's name: the same GGUF under two names converts to
// one ID (each keeping its own name in info.json), and one weight byte
// changed gives another.
func TestIDFromContentOnly(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conv := func(in string) (rdrr.ModelID, *rdrr.Model) {
		out := filepath.Join(tmp, filepath.Base(in)+".rdrr")
		id, err := ToRDRR(context.Background(), in, out, Options{})
		if err != nil {
			t.Fatalf("convert %s: %v", in, err)
		}
		m, err := rdrr.OpenDir(out)
		if err != nil {
			t.Fatal(err)
		}
		return id, m
	}
	idA, a := conv(write("a.gguf", b))
	idB, bm := conv(write("b.gguf", b))
	if idA != idB {
		t.Fatalf("a.gguf → %s, b.gguf → %s: the ID depends on the file name", idA.Short(), idB.Short())
	}
	if a.Info.Name != "a" || bm.Info.Name != "b" || a.Info.Source == nil || a.Info.Source.File != "a.gguf" {
		t.Errorf("info: a %+v, b %+v; want names a and b, source a.gguf", a.Info, bm.Info)
	}

	// Flip one byte of the first tensor's data.
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	off := f.DataOffset + int64(f.Tensors[0].Offset)
	f.Close()
	flipped := append([]byte(nil), b...)
	flipped[off] ^= 0x01
	idC, _ := conv(write("a-flipped.gguf", flipped))
	if idC == idA {
		t.Fatalf("a changed weight byte kept the ID %s", idA.Short())
	}
}
