package api

import (
	"context"
	"errors"
	"testing"
)

func TestFairQueue(t *testing.T) {
	q := newFairQueue(5)
	push := func(client string) *job {
		t.Helper()
		j := &job{client: client}
		if err := q.push(j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	a1, a2, a3 := push("a"), push("a"), push("a")
	b1 := push("b")
	c1 := push("c")
	if err := q.push(&job{client: "d"}); !errors.Is(err, errQueueFull) {
		t.Fatalf("sixth push: %v, want errQueueFull", err)
	}
	// b leaves before its turn.
	if !q.remove(b1) {
		t.Fatal("remove of a waiting job failed")
	}
	ctx := context.Background()
	// Round robin over clients, oldest first within one: a's burst does
	// not hold c back.
	for i, want := range []*job{a1, c1, a2, a3} {
		if got := q.pop(ctx); got != want {
			t.Fatalf("pop %d: got client %q job %p, want %q %p", i, got.client, got, want.client, want)
		}
	}
	if q.len() != 0 || q.remove(a1) {
		t.Fatalf("after draining: len %d, remove of a taken job succeeded", q.len())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if j := q.pop(cctx); j != nil {
		t.Fatal("pop on an empty queue with ctx done returned a job")
	}
}

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
