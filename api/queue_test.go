//go:build cgo || js

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
