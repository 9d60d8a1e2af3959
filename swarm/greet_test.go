package swarm

import (
	"context"
	"testing"
	"time"
)

// TestNodeGreetsNewcomer: a node that joins a model's topic learns the
// holders' inventories (with their prefill speed) at once from their
// greeting, not at the next periodic announcement (30 s by default).
func TestNodeGreetsNewcomer(t *testing.T) {
	dir, id := synthModel(t, 1<<20, 1<<20, 64<<10, 1)
	a := newNode(t, seedStore(t, dir), nil)
	a.SetSpeeds(id, 1000, 0)
	time.Sleep(300 * time.Millisecond) // a announces to nobody
	b := newNode(t, emptyStore(t, dir), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.host.Connect(ctx, a.host.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		for _, e := range b.host.Inventories(id) {
			if e.Peer == a.ID() && e.Inv.PrefillTokS > 0 {
				t.Logf("greeted after %v", time.Since(start).Round(time.Millisecond))
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the newcomer saw no inventory with a prefill speed within 5 s")
}
