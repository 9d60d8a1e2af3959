//go:build unix

package swarmbench

import (
	"fmt"
	"syscall"
)

// raiseOpenFiles tries to let this process hold want open files: it
// raises the soft limit (RLIMIT_NOFILE) up to the hard one and, when that
// is short, the hard one too (where the process may). It returns the
// limit in force after, and an error when that is short of want.
func raiseOpenFiles(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("open files limit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	raised := lim
	raised.Cur = max(lim.Cur, min(want, lim.Max))
	if lim.Max < want {
		raised.Cur, raised.Max = want, want
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim.Max, Max: lim.Max}) // as far as it goes
		return lim.Max, fmt.Errorf("%d open files wanted, the hard limit is %d: %w", want, lim.Max, err)
	}
	return raised.Cur, nil
}
