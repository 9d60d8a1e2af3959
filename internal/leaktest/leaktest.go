// Package leaktest checks that tests leave no goroutine behind: a test
// (Check) or a whole package (Baseline and Settle in TestMain) compares
// the goroutine count after with the count before, waiting a bounded
// time for goroutines on their way out, and reports every goroutine's
// stack when some stay.
package leaktest

import (
	"runtime"
	"testing"
	"time"
)

// poll is how often the goroutine count is looked at.
const poll = 10 * time.Millisecond

// Check fails t when goroutines started after the call still run once
// the test and the cleanups registered after Check are done: it waits up
// to limit for the count to fall back, then reports the stacks. Call it
// before whatever registers the cleanups that stop those goroutines
// (cleanups run last-in first-out).
func Check(t testing.TB, limit time.Duration) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		if n := Settle(base, limit); n > base {
			t.Errorf("goroutine leak: %d goroutines, %d before\n%s", n, base, Stacks())
		}
	})
}

// Baseline waits, at most limit, until the goroutine count stops falling
// (two looks 50 ms apart agree) and returns it: the count for a package's
// TestMain to compare against with Settle after m.Run.
func Baseline(limit time.Duration) int {
	deadline := time.Now().Add(limit)
	n := runtime.NumGoroutine()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return m
		}
		n = m
	}
	return n
}

// Settle waits, at most limit, until at most base goroutines run, and
// returns the count: more than base means goroutines leaked.
func Settle(base int, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	n := runtime.NumGoroutine()
	for n > base && time.Now().Before(deadline) {
		time.Sleep(poll)
		n = runtime.NumGoroutine()
	}
	return n
}

// Stacks returns the stacks of every goroutine (the first MiB), for a
// leak report.
func Stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
