package tokenizer

import "slices"

// symbol is one piece of the text being merged, linked to its neighbours.
type symbol struct {
	prev, next int // -1 at either end
	start, n   int // bytes of the text; n == 0 once merged away
}

// bigram is a candidate merge of the adjacent symbols left and right, size
// bytes together; score is what the tokenizer orders candidates by (SPM:
// the joined token's score, BPE: the merge's rank).
type bigram[S any] struct {
	left, right int
	score       S
	size        int
}

// merger is the merge loop llama.cpp's SPM and BPE sessions share, with
// its storage kept for the next text. The tokenizers differ only in how a
// candidate is scored and ordered, and what a piece left over becomes.
type merger[S any] struct {
	syms []symbol
	q    queue[bigram[S]]
}

// newMerger returns a merger popping candidates in before's order.
func newMerger[S any](before func(a, b bigram[S]) bool) *merger[S] {
	return &merger[S]{q: queue[bigram[S]]{before: before}}
}

// merge splits text into UTF-8 characters and joins adjacent pieces, best
// candidate first, until none is left. rate(start, mid, end) scores
// joining text[start:mid] with text[mid:end]; ok false: they never join.
// It returns the pieces left, in order, valid until the next merge.
func (m *merger[S]) merge(text string, rate func(start, mid, end int) (score S, ok bool)) []symbol {
	m.syms, m.q.items = slices.Grow(m.syms[:0], len(text)), m.q.items[:0]
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		next := len(m.syms) + 1
		if off+n == len(text) {
			next = -1
		}
		m.syms = append(m.syms, symbol{prev: len(m.syms) - 1, next: next, start: off, n: n})
		off += n
	}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		l, r := m.syms[left], m.syms[right]
		if score, ok := rate(l.start, r.start, r.start+r.n); ok {
			m.q.push(bigram[S]{left: left, right: right, score: score, size: l.n + r.n})
		}
	}
	for i := 1; i < len(m.syms); i++ {
		tryAdd(i-1, i)
	}
	for m.q.len() > 0 {
		b := m.q.pop()
		l, r := &m.syms[b.left], &m.syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // a side was merged since b was queued
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			m.syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	// A join keeps the left symbol, so the ones not merged away are the
	// pieces in order.
	return slices.DeleteFunc(m.syms, func(s symbol) bool { return s.n == 0 })
}
