// Package testdata forwards to [testenv], which now locates the shared
// test data (a directory named testdata is invisible to ./..., so this
// package was never vetted or tested). It stays only while code that is
// being moved still imports it; new code uses testenv.
package testdata

import (
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// Dir is [testenv.SharedDir].
func Dir() string { return testenv.SharedDir() }

// Path is [testenv.Path].
func Path(t testing.TB, rel string) string {
	t.Helper()
	return testenv.Path(t, rel)
}

// Glob is [testenv.Glob].
func Glob(t testing.TB, pattern string) []string {
	t.Helper()
	return testenv.Glob(t, pattern)
}
