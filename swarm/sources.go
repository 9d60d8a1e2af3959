package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/rdrr"
)

// Source is a peer named in advance that also serves manifests: an HTTP
// seed (p2p/httpseed) given to a pull by --seed or a share link.
type Source interface {
	Peer
	// Manifest returns model id's manifest, which must hash to id, and
	// its signature (nil when unsigned).
	Manifest(ctx context.Context, id rdrr.ModelID) (manifest, sig []byte, err error)
}

// Sources is a PeerSet of fixed sources. Each is assumed to hold every
// shard (a seed serves whole models) until it answers that it lacks one
// (an error wrapping shardproto.ErrNotFound): it is not asked for that
// shard again.
type Sources struct {
	list []*source
	mu   sync.Mutex
	lack map[string]map[rdrr.Hash]bool // source ID → shards it said it lacks
}

// NewSources returns the PeerSet of list (duplicates by ID dropped).
func NewSources(list ...Source) *Sources {
	s := &Sources{lack: map[string]map[rdrr.Hash]bool{}}
	seen := map[string]bool{}
	for _, p := range list {
		if !seen[p.ID()] {
			seen[p.ID()] = true
			s.list = append(s.list, &source{Source: p, set: s})
		}
	}
	return s
}

// Len is the number of sources.
func (s *Sources) Len() int {
	if s == nil {
		return 0
	}
	return len(s.list)
}

// Peers implements PeerSet: every source, for any model.
func (s *Sources) Peers(rdrr.ModelID) []Peer {
	out := make([]Peer, 0, s.Len())
	for _, p := range s.list {
		out = append(out, p)
	}
	return out
}

// Has implements PeerSet: p is one of the sources and has not said it
// lacks the shard.
func (s *Sources) Has(p Peer, shard rdrr.Hash) bool {
	id := p.ID()
	for _, q := range s.list {
		if q.ID() == id {
			s.mu.Lock()
			defer s.mu.Unlock()
			return !s.lack[id][shard]
		}
	}
	return false
}

// Manifest returns model id's manifest from the first source that serves
// one hashing to id, asking each for at most timeout (0: no limit); the
// error names every source tried.
func (s *Sources) Manifest(ctx context.Context, id rdrr.ModelID, timeout time.Duration) (manifest, sig []byte, err error) {
	var errs []error
	for _, p := range s.list {
		mctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			mctx, cancel = context.WithTimeout(ctx, timeout)
		}
		manifest, sig, err := p.Manifest(mctx, id)
		cancel()
		if err == nil && rdrr.Sum(manifest) != id {
			err = fmt.Errorf("source %s: model %s: %w", p.ID(), id.Short(), shardproto.ErrBadManifest)
		}
		if err == nil {
			return manifest, sig, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, nil, errors.New("no source to ask")
	}
	return nil, nil, errors.Join(errs...)
}

// source wraps a Source to note the shards it says it lacks.
type source struct {
	Source
	set *Sources
}

func (p *source) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	err := p.Source.ReadBlocks(ctx, sh, first, count, fn)
	if errors.Is(err, shardproto.ErrNotFound) {
		id := p.ID()
		p.set.mu.Lock()
		if p.set.lack[id] == nil {
			p.set.lack[id] = map[rdrr.Hash]bool{}
		}
		p.set.lack[id][sh.Hash] = true
		p.set.mu.Unlock()
	}
	return err
}
