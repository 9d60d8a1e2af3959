//go:build !unix

package swarmbench

import "time"

// cpuTime would be the process's CPU time; this platform does not say (0).
func cpuTime() time.Duration { return 0 }
