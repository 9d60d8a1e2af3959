//go:build cgo || js

package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

// TestGarbageWeightsFail: a model whose weights give NaN logits stops with
// ErrBadLogits instead of generating token 0 over and over.
func TestGarbageWeightsFail(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := f.Tensor("output_norm.weight")
	off := f.DataOffset
	f.Close()
	if !ok {
		t.Fatal("stories260K has no output_norm.weight")
	}
	// 0xff bytes are NaN in f32: the final norm's weights, all garbage.
	for i := off + int64(ti.Offset); i < off+int64(ti.Offset+ti.Size); i++ {
		b[i] = 0xff
	}
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "garbage.gguf")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, rm := testmodel.Open(t, bad, rdrr.WriterOptions{})
	m, err := Load(context.Background(), testDevice(t), rm, Options{Context: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := newSession(t, m)
	res, err := s.Generate(context.Background(), []int{1, 403, 407}, GenerateOptions{MaxTokens: 8})
	if !errors.Is(err, ErrBadLogits) {
		t.Fatalf("Generate: %v (tokens %v), want ErrBadLogits", err, res)
	}
}
