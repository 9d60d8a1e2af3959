package swarm

// Changes returns a channel that receives a value (coalesced: at most one
// pending) whenever the store's contents change — a model added or
// removed, a shard completed, evicted or found bad — and a func that stops
// the notifications. The channel is never closed.
func (s *Store) Changes() (<-chan struct{}, func()) { return s.subscribe(&s.watch) }

// BlockChanges is Changes for blocks: the channel receives a value
// (coalesced) whenever a verified block is written into a partial shard,
// so that the shard's inventory (its partial blocks) can be announced
// again.
func (s *Store) BlockChanges() (<-chan struct{}, func()) { return s.subscribe(&s.bwatch) }

// subscribe adds a coalescing channel to the subscriber list *subs (one
// of the store's, guarded by s.mu) and returns it with the func that
// removes it.
func (s *Store) subscribe(subs *[]chan struct{}) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	*subs = append(*subs, ch)
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, c := range *subs {
			if c == ch {
				*subs = append((*subs)[:i], (*subs)[i+1:]...)
				return
			}
		}
	}
}

// blockChangedLocked signals the BlockChanges subscribers without
// blocking. The caller holds s.mu.
func (s *Store) blockChangedLocked() { notify(s.bwatch) }

// changedLocked signals the Changes subscribers without blocking. The
// caller holds s.mu.
func (s *Store) changedLocked() { notify(s.watch) }

// notify sends each subscriber a value unless one is already pending.
func notify(subs []chan struct{}) {
	for _, c := range subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
