//go:build cgo || js

package engine

import "strings"

// stopFilter turns the decoded pieces of a generation into the text a
// client sees when "stop" strings are given: the text up to (not
// including) the first stop string. Text that could be the start of a
// stop string is held back until the next piece decides it, so a streamed
// reply never shows a stop string or part of one.
type stopFilter struct {
	stops   []string
	pending string
}

// push adds a decoded piece and returns the text that is safe to emit, and
// whether a stop string has been met (generation should end).
func (f *stopFilter) push(piece string) (emit string, stop bool) {
	f.pending += piece
	if len(f.stops) == 0 {
		emit, f.pending = f.pending, ""
		return emit, false
	}
	first := -1
	for _, s := range f.stops {
		if i := strings.Index(f.pending, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		emit, f.pending = f.pending[:first], ""
		return emit, true
	}
	keep := 0
	for _, s := range f.stops {
		keep = max(keep, overlap(f.pending, s))
	}
	cut := len(f.pending) - keep
	emit, f.pending = f.pending[:cut], f.pending[cut:]
	return emit, false
}

// flush returns the text held back when generation ended without a stop
// string.
func (f *stopFilter) flush() string {
	s := f.pending
	f.pending = ""
	return s
}

// overlap is the length of the longest suffix of s that is a proper
// prefix of stop.
func overlap(s, stop string) int {
	for n := min(len(s), len(stop)-1); n > 0; n-- {
		if strings.HasSuffix(s, stop[:n]) {
			return n
		}
	}
	return 0
}
