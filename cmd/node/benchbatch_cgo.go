//go:build cgo

package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/engine"
)

// batchBench generates o.gen tokens after prompt in each of o.batch
// sessions decoding together (an engine.Batch), o.warmup times unmeasured
// and o.runs times measured. Each sequence's prompt is prompt rotated by
// its index (same length, different tokens). It returns every sequence's
// stats of the measured runs and the median aggregate decode rate: the
// tokens all sequences decoded after their first, over the time from the
// last first token (no batched step runs before every sequence has one)
// to the last token.
func batchBench(ctx context.Context, m *engine.Model, prompt []int, o benchOptions) ([]genStats, float64, error) {
	b, err := m.NewBatch(o.batch)
	if err != nil {
		return nil, 0, err
	}
	defer b.Close()
	sess := make([]*engine.Session, o.batch)
	for i := range sess {
		if sess[i], err = b.NewSession(); err != nil {
			return nil, 0, fmt.Errorf("session %d of %d: %w", i+1, o.batch, err)
		}
		defer sess[i].Close()
	}
	var stats []genStats
	var rates []float64
	for r := 0; r < o.warmup+o.runs; r++ {
		first := make([]time.Time, len(sess))
		last := make([]time.Time, len(sess))
		res := make([]*engine.Result, len(sess))
		errs := make([]error, len(sess))
		for _, s := range sess {
			s.Reset()
			if err := b.Join(s); err != nil {
				return nil, 0, err
			}
		}
		var wg sync.WaitGroup
		for i, s := range sess {
			p := append(slices.Clone(prompt[i%len(prompt):]), prompt[:i%len(prompt)]...)
			wg.Go(func() {
				defer b.Leave(s)
				g := engine.GenerateOptions{MaxTokens: o.gen, OnToken: func(int) error {
					if first[i].IsZero() {
						first[i] = time.Now()
					}
					return nil
				}}
				res[i], errs[i] = s.Generate(ctx, p, g)
				last[i] = time.Now()
			})
		}
		wg.Wait()
		if err := errorsJoin(errs); err != nil {
			return nil, 0, err
		}
		if r < o.warmup {
			continue
		}
		start, end := slices.MaxFunc(first, time.Time.Compare), slices.MaxFunc(last, time.Time.Compare)
		decoded := 0
		for _, rs := range res {
			decoded += max(len(rs.Tokens)-1, 0)
			stats = append(stats, statsOf(rs.Stats))
		}
		if d := end.Sub(start); d > 0 {
			rates = append(rates, float64(decoded)/d.Seconds())
		}
	}
	if len(rates) == 0 {
		return stats, 0, nil
	}
	slices.Sort(rates)
	return stats, rates[len(rates)/2], nil
}

func errorsJoin(errs []error) error {
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("sequence %d: %w", i, err)
		}
	}
	return nil
}

// maxBenchBatch must be engine.MaxBatch: either difference is negative,
// a compile error, otherwise.
const _ = uint(maxBenchBatch-engine.MaxBatch) + uint(engine.MaxBatch-maxBenchBatch)
