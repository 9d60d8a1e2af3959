package leaktest

import (
	"testing"
	"time"
)

func TestSettle(t *testing.T) {
	base := Baseline(2 * time.Second)
	stop := make(chan struct{})
	go func() { <-stop }()
	if n := Settle(base, 100*time.Millisecond); n <= base {
		t.Fatalf("a goroutine more running: Settle says %d, base %d", n, base)
	}
	close(stop)
	if n := Settle(base, 5*time.Second); n > base {
		t.Fatalf("the goroutine ended: Settle says %d, base %d\n%s", n, base, Stacks())
	}
}

func TestCheck(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		Check(t, 5*time.Second)
		stop := make(chan struct{})
		go func() { <-stop }()
		t.Cleanup(func() { close(stop) })
	})
}
