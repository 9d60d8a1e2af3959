package rdrr

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSniff(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("rdrr/"+ManifestFile, "{}")
	write("hf/config.json", "{}")
	for _, c := range []struct {
		path string
		want Kind
	}{
		{filepath.Join(dir, "rdrr"), KindRDRR},
		{filepath.Join(dir, "hf"), KindHF},
		{write("m.gguf", "GGUF\x03\x00\x00\x00"), KindGGUF},
		{write("short.gguf", "GGUF"), KindGGUF},
	} {
		if got, err := Sniff(c.path); got != c.want || err != nil {
			t.Errorf("Sniff(%s) = %v, %v; want %v", c.path, got, err, c.want)
		}
	}
	for _, p := range []string{write("ggml.bin", "GGML\x01"), write("empty", ""), write("tiny", "GG")} {
		if _, err := Sniff(p); !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("Sniff(%s): %v, want ErrUnknownFormat", p, err)
		}
	}
	if _, err := Sniff(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Sniff(missing): %v, want os.ErrNotExist", err)
	}
}
