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
	wg       sync.WaitGroup
}

func newPrefetcher(p *pager) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &prefetcher{p: p, ctx: ctx, cancel: cancel, sem: make(chan struct{}, 2),
		limit: max(4*p.m.Config.ExpertsUsed, 16), ready: map[expertKey]*expertData{}, inflight: map[expertKey]chan struct{}{}}
}

// want starts background reads of up to n of experts (in order of
// preference) that are neither resident nor already held.
func (f *prefetcher) want(layer int, experts []int, n int) {
	lp := f.p.layers[layer]
	for _, e := range experts {
		if n == 0 {
			return
		}
		k := expertKey{layer, e}
		f.mu.Lock()
		_, have := f.ready[k]
		_, busy := f.inflight[k]
		full := len(f.ready)+len(f.inflight) >= f.limit
		if have || busy || full || lp.slotOf[e] >= 0 {
			f.mu.Unlock()
			continue
		}
		n--
		done := make(chan struct{})
		f.inflight[k] = done
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
	return d
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
