package rdrr

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Kind is the format of a model on disk, as Sniff tells it.
type Kind int

// The kinds of model path.
const (
	// KindRDRR is an RDRR directory: one holding manifest.json.
	KindRDRR Kind = iota + 1
	// KindHF is any other directory, read as an HF safetensors checkpoint
	// (config.json, *.safetensors, tokenizer.json); its reader says what
	// is missing.
	KindHF
	// KindGGUF is a file that starts with the GGUF magic.
	KindGGUF
)

func (k Kind) String() string {
	switch k {
	case KindRDRR:
		return "RDRR directory"
	case KindHF:
		return "HF directory"
	case KindGGUF:
		return "GGUF file"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ErrUnknownFormat is wrapped by Sniff's error for a file that is not a
// GGUF file.
var ErrUnknownFormat = errors.New("not a GGUF file, an HF directory or an RDRR directory")

// ggufMagic opens every GGUF file (the gguf package parses the rest; this
// package does not import it).
const ggufMagic = "GGUF"

// Sniff tells what kind of model path is, from the directory's entries or
// the file's first bytes, without parsing it. The error is os.Stat's or
// os.Open's, or, for a file of another format, one naming path that
// wraps ErrUnknownFormat.
func Sniff(path string) (Kind, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(path, ManifestFile)); err == nil {
			return KindRDRR, nil
		}
		return KindHF, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var magic [len(ggufMagic)]byte
	n, err := io.ReadFull(f, magic[:])
	switch {
	case err != nil && n == 0 && !errors.Is(err, io.EOF):
		return 0, fmt.Errorf("%s: %w", path, err)
	case string(magic[:n]) != ggufMagic:
		return 0, fmt.Errorf("%s: bad magic %q: %w", path, magic[:n], ErrUnknownFormat)
	}
	return KindGGUF, nil
}
