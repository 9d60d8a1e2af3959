package p2p

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// gatedProvider holds every ReadBlock until gate is closed, so a block
// request keeps its upload slot.
type gatedProvider struct {
	*memProvider
	gate    chan struct{}
	reading chan struct{} // gets a value when a ReadBlock starts waiting
}

func (p *gatedProvider) ReadBlock(h rdrr.Hash, i int, buf []byte) (int, error) {
	select {
	case p.reading <- struct{}{}:
	default:
	}
	<-p.gate
	return p.memProvider.ReadBlock(h, i, buf)
}

// TestUploadSlots: a host answers at most UploadSlots block requests at
// once and answers the next one CodeBusy at once (not after the others),
// counts it, and serves again once a slot is free.
func TestUploadSlots(t *testing.T) {
	f := newFixture(t, 5, false)
	prov := &gatedProvider{memProvider: &memProvider{models: []*fixture{f}}, gate: make(chan struct{}), reading: make(chan struct{}, 1)}
	a := newHost(t, prov, func(o *Options) { o.UploadSlots = 1 })
	b := newHost(t, nil, nil)
	connect(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := b.Remote(a.ID())
	sh := f.m.Shards[1]
	noop := func(int, []byte) error { return nil }

	first := make(chan error, 1)
	go func() { first <- r.ReadBlocks(ctx, sh, 0, 1, noop) }()
	select {
	case <-prov.reading: // the first request holds the only slot
	case <-ctx.Done():
		t.Fatal("the first request never reached the provider")
	}
	start := time.Now()
	err := r.ReadBlocks(ctx, sh, 1, 1, noop)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeBusy || !errors.Is(err, ErrRemote) {
		t.Fatalf("second request while the slot is taken: %v, want a CodeBusy wire.Error (ErrRemote)", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("busy answer took %v: it must come at once", d)
	}
	if n := a.Stats().BusyAnswers; n != 1 {
		t.Errorf("BusyAnswers = %d, want 1", n)
	}
	close(prov.gate)
	if err := <-first; err != nil {
		t.Fatalf("first request: %v", err)
	}
	if err := r.ReadBlocks(ctx, sh, 1, 1, noop); err != nil {
		t.Fatalf("request after the slot was freed: %v", err)
	}
}
