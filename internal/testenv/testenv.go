// Package testenv is the one place where a test says what it needs from
// its environment — a GPU adapter, Chromium, a file of shared test data —
// and what happens when that is missing: on a developer's machine the test
// is skipped, under CI (CI=true) it fails, with a message naming what is
// missing. A CI run therefore cannot go green by skipping: a missing
// adapter or browser is a broken runner, a missing file a broken checkout.
//
// Tests never call t.Skip, t.Skipf or t.SkipNow themselves
// (TestNoDirectSkips enforces it): a missing resource goes through [Need],
// a skip for any other reason (-short, a platform the test cannot run on,
// an opt-in variable that is unset) through [Skip], which skips under CI
// too.
//
// Shared test data — the read-only shared/ directory beside the
// repository — is found through [SharedDir], [Path] and [Glob]: the
// DOPPLER_SHARED environment variable, else the first directory named
// shared (holding a README.md) found walking up from the test's package.
// A file that is there but does not parse is the test's own failure,
// never a skip.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// CI reports whether the tests run under CI: the CI environment variable
// is set to anything but a false value ("", "0", "false", …).
func CI() bool {
	v := os.Getenv("CI")
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

// Need reports that the test cannot run because something it needs is
// missing, described by format and args (say what is missing and how to
// get it): it fails the test under [CI] and skips it otherwise. Like
// t.Fatalf and t.Skipf it does not return.
func Need(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "missing: " + fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s\n(CI=true: a missing test resource is a failure, not a skip)", msg)
	}
	t.Skipf("%s\n(skipped; with CI=true this fails)", msg)
}

// Skip skips the test for a reason that is not a missing resource and
// holds under CI too: -short, a platform the test cannot run on, an opt-in
// environment variable left unset, a case this machine cannot exercise.
// Say why in format.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Skipf(format, args...)
}

// SkipShort skips the test under go test -short; why says what makes it
// long.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: %s", why)
	}
}

// sharedHint says where shared test data is looked for.
const sharedHint = "set DOPPLER_SHARED, or put the shared directory beside the repository"

// SharedDir returns the shared test data directory: $DOPPLER_SHARED when
// set (whether or not it exists), else the first directory named shared
// that holds a README.md, found walking up from the working directory (a
// test runs in its package's directory). It returns "" when there is none.
func SharedDir() string {
	if d := os.Getenv("DOPPLER_SHARED"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		s := filepath.Join(d, "shared")
		if fi, err := os.Stat(filepath.Join(s, "README.md")); err == nil && !fi.IsDir() {
			return s
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Path returns the path of rel (slash-separated) inside the shared test
// data directory. When the directory or the file is missing it calls
// [Need]: the test fails under CI and is skipped otherwise. Opening and
// parsing the file is the caller's job, and a file that does not parse
// must fail the test.
func Path(t testing.TB, rel string) string {
	t.Helper()
	d := SharedDir()
	if d == "" {
		Need(t, "shared test data %s: no shared directory found (%s)", rel, sharedHint)
	}
	p := filepath.Join(d, filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			Need(t, "shared test data %s (%s)", p, sharedHint)
		}
		t.Fatalf("shared test data: %v", err)
	}
	return p
}

// Glob returns the shared test data files matching pattern (relative,
// slash-separated, as for filepath.Match), sorted. When there is none it
// calls [Need].
func Glob(t testing.TB, pattern string) []string {
	t.Helper()
	d := Path(t, ".")
	m, err := filepath.Glob(filepath.Join(d, filepath.FromSlash(pattern)))
	if err != nil {
		t.Fatalf("shared test data: bad pattern %q: %v", pattern, err)
	}
	if len(m) == 0 {
		Need(t, "shared test data: nothing matches %s in %s (%s)", pattern, d, sharedHint)
	}
	return m
}

// Eventually polls cond every 20 ms until it holds, failing the test with
// what when limit passes first: the bounded wait of tests that watch
// another goroutine or process reach a state.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
