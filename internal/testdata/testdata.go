// Package testdata locates the project's shared test data: the read-only
// ../shared directory beside the repository (or $DOPPLER_SHARED).
package testdata

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the shared data directory, or "" when there is none.
func Dir() string {
	if d := os.Getenv("DOPPLER_SHARED"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			s := filepath.Join(d, "..", "shared")
			if _, err := os.Stat(filepath.Join(s, "README.md")); err == nil {
				return s
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Path returns the path of rel inside the shared data directory. Without
// shared data the test is skipped, except under CI, where it fails: CI
// always has ../shared, and a skipped golden test must not pass silently.
func Path(t testing.TB, rel string) string {
	t.Helper()
	d := Dir()
	if d == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("shared test data not found (../shared beside the repository, or $DOPPLER_SHARED)")
		}
		t.Skip("shared test data not found (../shared beside the repository, or $DOPPLER_SHARED)")
	}
	p := filepath.Join(d, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data: %v", err)
	}
	return p
}

// Glob returns the shared files matching pattern (relative), failing when
// there are none.
func Glob(t testing.TB, pattern string) []string {
	t.Helper()
	dir := Path(t, ".")
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("shared test data: nothing matches %s", pattern)
	}
	return m
}
