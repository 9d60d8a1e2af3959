//go:build !unix && !windows

package main

import "time"

// cpuTime would be the process's CPU time; this platform does not say (0).
func cpuTime() time.Duration { return 0 }
