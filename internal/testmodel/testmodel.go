// Package testmodel turns test models (GGUF files, HF directories) into
// RDRR directories for tests, the one way every package's tests do it.
package testmodel

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
)

// Convert converts src (a GGUF file or an HF directory, typically found
// with testenv.Path) into a new RDRR directory under t.TempDir(), named
// after src, with writer options wo (zero values: the defaults), and
// returns the directory. A failed conversion fails the test.
func Convert(t testing.TB, src string, wo rdrr.WriterOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), filepath.Ext(src)))
	if _, err := convert.ToRDRR(context.Background(), src, dir, convert.Options{Writer: wo}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Open is Convert followed by rdrr.OpenDir: the directory and the model.
func Open(t testing.TB, src string, wo rdrr.WriterOptions) (string, *rdrr.Model) {
	t.Helper()
	dir := Convert(t, src, wo)
	m, err := rdrr.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, m
}
