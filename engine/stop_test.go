//go:build cgo || js

package engine

import "testing"

func TestStopFilter(t *testing.T) {
	cases := []struct {
		name   string
		stops  []string
		pieces []string
		emits  []string // what each push emits
		stopAt int      // index of the push that meets a stop; -1 none
		rest   string   // flush at the end when no stop was met
	}{
		{"no stops", nil, []string{"a", "b"}, []string{"a", "b"}, -1, ""},
		{"stop inside a piece", []string{"END"}, []string{"ab", "cENDx"}, []string{"ab", "c"}, 1, ""},
		{"stop across pieces", []string{"END"}, []string{"abE", "N", "Dz"}, []string{"ab", "", ""}, 2, ""},
		{"false start released", []string{"END"}, []string{"abE", "Nx", "y"}, []string{"ab", "ENx", "y"}, -1, ""},
		{"held at the end", []string{"END"}, []string{"abEN"}, []string{"ab"}, -1, "EN"},
		{"earliest of two stops", []string{"xyz", "b"}, []string{"axyzb"}, []string{"a"}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := stopFilter{stops: c.stops}
			stopAt := -1
			for i, p := range c.pieces {
				emit, stop := f.push(p)
				if emit != c.emits[i] {
					t.Errorf("push %d (%q): emitted %q, want %q", i, p, emit, c.emits[i])
				}
				if stop {
					stopAt = i
					break
				}
			}
			if stopAt != c.stopAt {
				t.Errorf("stop at push %d, want %d", stopAt, c.stopAt)
			}
			if stopAt < 0 {
				if r := f.flush(); r != c.rest {
					t.Errorf("flush %q, want %q", r, c.rest)
				}
			}
		})
	}
}
