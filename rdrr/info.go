package rdrr

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// InfoFile holds a model's name and provenance beside its manifest. It is
// outside the model ID: the ID covers only what determines the model's
// output (docs/rdrr.md, "Model ID"), so the same weights converted from
// files of different names are one model.
const InfoFile = "info.json"

// MaxInfoSize bounds info.json.
const MaxInfoSize = 64 << 10

// Info is a model's metadata outside its ID.
type Info struct {
	Name   string  `json:"name,omitempty"`
	Source *Source `json:"source,omitempty"`
}

// ParseInfo parses info.json bytes.
func ParseInfo(b []byte) (Info, error) {
	var in Info
	if len(b) > MaxInfoSize {
		return in, fmt.Errorf("%s: %d bytes, over %d", InfoFile, len(b), MaxInfoSize)
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return in, fmt.Errorf("%s: %w", InfoFile, err)
	}
	return in, nil
}

// Encode returns info.json's bytes.
func (in Info) Encode() []byte {
	b, _ := json.Marshal(in) // strings and a struct of strings: cannot fail
	return b
}

// ReadInfo reads dir's info.json; a directory without one (written before
// the file existed) gives the name and source its manifest carries.
func ReadInfo(dir string, m *Manifest) (Info, error) {
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return Info{Name: m.Name, Source: m.Source}, nil
	}
	if err != nil {
		return Info{}, err
	}
	in, err := ParseInfo(b)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", dir, err)
	}
	return in, nil
}

// WriteInfo writes dir's info.json atomically.
func WriteInfo(dir string, in Info) error {
	return WriteFileAtomic(filepath.Join(dir, InfoFile), in.Encode())
}
