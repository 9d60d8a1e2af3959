package p2p

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// gossipSwarm is n hosts on loopback following one model's topic, each
// connected to the three hosts before it (so no host has more than six
// neighbours whatever n is, as under a connection manager), each
// announcing an inventory of 256 shards.
type gossipSwarm struct {
	model rdrr.ModelID
	hosts []*Host
	mu    sync.Mutex
	have  []wire.Bitmap // the latest inventory each host announced
}

func newGossipSwarm(t *testing.T, n int, edit func(*Options)) *gossipSwarm {
	t.Helper()
	g := &gossipSwarm{model: rdrr.Sum([]byte(fmt.Sprint("gossip swarm ", n)))}
	for i := range n {
		h := newHost(t, nil, edit)
		for j := max(i-3, 0); j < i; j++ {
			connect(t, h, g.hosts[j])
		}
		g.hosts = append(g.hosts, h)
		g.have = append(g.have, wire.NewBitmap(256))
	}
	for i := range g.hosts {
		g.join(t, i)
	}
	return g
}

// join subscribes host i and announces its inventory.
func (g *gossipSwarm) join(t *testing.T, i int) {
	t.Helper()
	if err := g.hosts[i].Subscribe(t.Context(), g.model, nil); err != nil {
		t.Fatal(err)
	}
	g.set(t, i, -1)
}

// set sets bit b (none if < 0) of host i's inventory and announces it.
func (g *gossipSwarm) set(t *testing.T, i, b int) {
	g.mu.Lock()
	have := wire.Bitmap{N: g.have[i].N, Bits: bytes.Clone(g.have[i].Bits)}
	have.Set(b)
	g.have[i] = have
	g.mu.Unlock()
	if err := g.hosts[i].Announce(t.Context(), wire.Inventory{Model: g.model, Have: have}); err != nil {
		t.Error(err)
	}
}

// received returns each host's gossip messages and bytes received, and
// inventories announced, so far.
func (g *gossipSwarm) received() (msgs, bytes, announced []uint64) {
	for _, h := range g.hosts {
		st := h.Stats().Gossip
		msgs = append(msgs, st.MessagesReceived)
		bytes = append(bytes, st.BytesReceived)
		announced = append(announced, st.Announced)
	}
	return msgs, bytes, announced
}

// churn has every host complete one more shard every 100 ms for d: each
// announces ten changes a second.
func (g *gossipSwarm) churn(t *testing.T, d time.Duration) {
	var wg sync.WaitGroup
	for i := range g.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range int(d / (100 * time.Millisecond)) {
				time.Sleep(100 * time.Millisecond)
				g.set(t, i, (k+i)%256)
			}
		}()
	}
	wg.Wait()
}

// TestGossipBounded: 10 and then 40 peers follow a model's topic, and
// every one announces ten changes a second. Each host publishes only its
// share of the topic's budget (600 a minute in all), so the topic carries
// about the budget at 40 peers as at 10 and what a peer receives per
// minute grows only as the gossipsub mesh fills, where unlimited
// announcements would grow it fourfold and more. A peer that joins the
// 40 late learns every peer's latest inventory.
func TestGossipBounded(t *testing.T) {
	testenv.SkipShort(t, "50 libp2p hosts gossiping for 15 s")
	const budget = 600
	opts := func(o *Options) {
		o.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		o.AnnounceInterval = time.Second
		o.AnnounceJitter = 200 * time.Millisecond
		o.GossipBudget = budget
		o.DialTimeout = 15 * time.Second // 50 hosts on a loaded 2-core machine
	}
	const window = 5 * time.Second
	perMinute, bytesPerMinute := map[int]float64{}, map[int]float64{}
	var g *gossipSwarm
	for _, n := range []int{10, 40} {
		if g != nil { // the smaller swarm leaves: less load on the machine
			for _, h := range g.hosts {
				h.Close()
			}
		}
		g = newGossipSwarm(t, n, opts)
		time.Sleep(2 * time.Second) // the mesh forms; joins are greeted
		m0, b0, a0 := g.received()
		start := time.Now()
		g.churn(t, window)
		el := time.Since(start)
		m1, b1, a1 := g.received()
		var msgs, byts, most, mostBytes, ann float64
		for i := range g.hosts {
			ann += float64(a1[i]-a0[i]) / el.Minutes()
			m := float64(m1[i]-m0[i]) / el.Minutes()
			b := float64(b1[i]-b0[i]) / el.Minutes()
			msgs += m
			byts += b
			most, mostBytes = max(most, m), max(mostBytes, b)
		}
		msgs /= float64(n)
		byts /= float64(n)
		perMinute[n], bytesPerMinute[n] = msgs, byts
		t.Logf("%d peers, 10 changes/s each: per peer %.0f gossip messages and %.0f KiB a minute received (most %.0f); the topic carried %.0f announcements a minute (unlimited: %d)",
			n, msgs, byts/1024, most, ann, n*600)
		if ann > 1.5*budget {
			t.Errorf("%d peers: the topic carried %.0f announcements a minute; the budget is %d", n, ann, budget)
		}
		// Each message reaches a peer at most once from each mesh peer
		// (gossipsub's D_hi is 12) and once from its author (flood
		// publishing); the budget is kept to within half, burst and
		// estimate errors within the rest.
		if most > 13*budget*2 {
			t.Errorf("%d peers: a peer received %.0f messages a minute; the budget is %d", n, most, budget)
		}
		// Bytes too, gossipsub's control included (IHAVE lists the IDs of
		// the messages of the last heartbeats: it follows the budget, not
		// N): an inventory of 256 shards with its envelope and its share
		// of control is about 600 bytes; 1 KiB a message is the bound.
		if mostBytes > 13*budget*2*1024 {
			t.Errorf("%d peers: a peer received %.0f KiB a minute; the bound is %d KiB", n, mostBytes/1024, 13*budget*2)
		}
	}
	// Some growth between 10 and 40 peers is expected: more of a peer's
	// neighbours are in its mesh, and a message travels more hops, so
	// more duplicates and IHAVE-prompted copies arrive (measured 1.0× to
	// 2.9× under load). Unbounded it would grow 4-fold and more.
	for what, pm := range map[string]map[int]float64{"messages": perMinute, "bytes": bytesPerMinute} {
		if r := pm[40] / pm[10]; r >= 4 {
			t.Errorf("per-peer gossip %s grew %.1f× from 10 to 40 peers; want it bounded", what, r)
		}
	}

	// A late joiner learns every inventory, as last announced.
	late := newHost(t, nil, opts)
	connect(t, late, g.hosts[len(g.hosts)-1])
	g.hosts = append(g.hosts, late)
	g.have = append(g.have, wire.NewBitmap(256))
	g.join(t, len(g.hosts)-1)
	testenv.Eventually(t, 30*time.Second, "the late joiner knows every peer's latest inventory", func() bool {
		invs := late.Inventories(g.model)
		if len(invs) != len(g.hosts)-1 {
			return false
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, e := range invs {
			for i, h := range g.hosts {
				if h.ID() == e.Peer && !bytes.Equal(e.Inv.Have.Bits, g.have[i].Bits) {
					return false
				}
			}
		}
		return true
	})
}
