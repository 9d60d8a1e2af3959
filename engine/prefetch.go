//go:build cgo || js

package engine

import (
	"context"
	"sort"
	"sync"
)

// Prefetch: while layer l of a token runs, the experts that layer l+1 is
// likely to pick — the previous token's choices there and the layer's most
// frequent experts so far — are read (and verified) into host memory in the
// background, so a router miss waits only for the upload.

type expertKey struct{ layer, expert int }

type expertData struct {
	gate, up, down []byte
	bias           [3][]byte // f32 gate/up/down biases, when the model has them
}

type prefetcher struct {
	p      *pager
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{} // bounds concurrent reads
	limit  int           // bounds held entries

	mu       sync.Mutex
	ready    map[expertKey]*expertData
	inflight map[expertKey]chan struct{}
	asked    map[expertKey]uint64 // held entry → pager tick it was last asked for
	wg       sync.WaitGroup
}

func newPrefetcher(p *pager) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &prefetcher{p: p, ctx: ctx, cancel: cancel, sem: make(chan struct{}, 2),
		limit: max(4*p.m.Config.ExpertsUsed, 16), ready: map[expertKey]*expertData{}, inflight: map[expertKey]chan struct{}{},
		asked: map[expertKey]uint64{}}
}

// want starts background reads of up to n of experts (in order of
// preference) that are neither resident nor already held.
func (f *prefetcher) want(layer int, experts []int, n int) { f.request(layer, experts, n, false) }

// hint is want for one expert named by Options.ExpertHints: when the held
// entries are at the limit, it makes room by dropping the read-ahead copy
// asked for least recently (never one asked for during this token's
// current layer), so a cluster's members displace stale speculation.
func (f *prefetcher) hint(layer, e int) { f.request(layer, []int{e}, 1, true) }

func (f *prefetcher) request(layer int, experts []int, n int, evict bool) {
	lp := f.p.layers[layer]
	for _, e := range experts {
		if n == 0 {
			return
		}
		k := expertKey{layer, e}
		f.mu.Lock()
		_, have := f.ready[k]
		_, busy := f.inflight[k]
		if have || busy {
			f.asked[k] = f.p.tick
		}
		full := len(f.ready)+len(f.inflight) >= f.limit
		if full && evict && !have && !busy && lp.slotOf[e] < 0 {
			full = !f.evictLocked()
		}
		if have || busy || full || lp.slotOf[e] >= 0 {
			f.mu.Unlock()
			continue
		}
		n--
		done := make(chan struct{})
		f.inflight[k] = done
		f.asked[k] = f.p.tick
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(done)
			select {
			case f.sem <- struct{}{}:
			case <-f.ctx.Done():
				return
			}
			d, err := f.p.read(f.ctx, layer, e)
			<-f.sem
			f.mu.Lock()
			delete(f.inflight, k)
			if err == nil {
				f.ready[k] = d
			} else {
				delete(f.asked, k)
			}
			f.mu.Unlock()
		}()
	}
}

// take returns a prefetched expert (waiting for one in flight), or nil.
func (f *prefetcher) take(ctx context.Context, layer, e int) *expertData {
	k := expertKey{layer, e}
	f.mu.Lock()
	done, busy := f.inflight[k]
	f.mu.Unlock()
	if busy {
		select {
		case <-done:
		case <-ctx.Done():
			return nil
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.ready[k]
	delete(f.ready, k)
	delete(f.asked, k)
	return d
}

// evictLocked drops the ready entry asked for least recently before the
// current tick; it reports whether there was one.
func (f *prefetcher) evictLocked() bool {
	var victim expertKey
	found := false
	for k := range f.ready {
		if a := f.asked[k]; a < f.p.tick && (!found || a < f.asked[victim] || a == f.asked[victim] && keyLess(k, victim)) {
			victim, found = k, true
		}
	}
	if found {
		delete(f.ready, victim)
		delete(f.asked, victim)
	}
	return found
}

func keyLess(a, b expertKey) bool {
	return a.layer < b.layer || a.layer == b.layer && a.expert < b.expert
}

func (f *prefetcher) stop() {
	f.cancel()
	f.wg.Wait()
}

// predict lists, most likely first, the experts layer l may pick next: the
// previous token's choices, then every expert by how often it was chosen.
func (p *pager) predict(l int) []int {
	lp := p.layers[l]
	out := append([]int(nil), lp.lastChoice...)
	order := make([]int, len(lp.uses))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return lp.uses[order[a]] > lp.uses[order[b]] })
	return append(out, order...)
}
