package swarm

// Changes returns a channel that receives a value (coalesced: at most one
// pending) whenever the store's contents change — a model added or
// removed, a shard completed, evicted or found bad — and a func that stops
// the notifications. The channel is never closed.
func (s *Store) Changes() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watch = append(s.watch, ch)
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, c := range s.watch {
			if c == ch {
				s.watch = append(s.watch[:i], s.watch[i+1:]...)
				return
			}
		}
	}
}

// BlockChanges is Changes for blocks: the channel receives a value
// (coalesced) whenever a verified block is written into a partial shard,
// so that the shard's inventory (its partial blocks) can be announced
// again.
func (s *Store) BlockChanges() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.bwatch = append(s.bwatch, ch)
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, c := range s.bwatch {
			if c == ch {
				s.bwatch = append(s.bwatch[:i], s.bwatch[i+1:]...)
				return
			}
		}
	}
}

// blockChangedLocked signals the BlockChanges subscribers without
// blocking. The caller holds s.mu.
func (s *Store) blockChangedLocked() {
	for _, c := range s.bwatch {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// changedLocked signals the Changes subscribers without blocking. The
// caller holds s.mu.
func (s *Store) changedLocked() {
	for _, c := range s.watch {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
