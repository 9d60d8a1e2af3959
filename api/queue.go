//go:build cgo || js

package api

import (
	"context"
	"errors"
	"sync"
)

// errQueueFull is returned by push when the queue holds its limit.
var errQueueFull = errors.New("too many requests waiting")

// fairQueue holds the requests waiting for a model's worker. It is bounded
// and fair between clients: the worker takes one request from each client
// in turn (round robin over clients, first come first served within one),
// so a client sending many requests does not starve the others. Several
// workers may pop at once.
type fairQueue struct {
	max int

	mu      sync.Mutex
	n       int
	order   []string          // clients with waiting jobs, in turn order
	waiting map[string][]*job // per client, oldest first
	wake    chan struct{}     // 1-buffered: something was pushed
}

func newFairQueue(max int) *fairQueue {
	return &fairQueue{max: max, waiting: make(map[string][]*job), wake: make(chan struct{}, 1)}
}

// push adds j behind its client's other requests.
func (q *fairQueue) push(j *job) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= q.max {
		return errQueueFull
	}
	if len(q.waiting[j.client]) == 0 {
		q.order = append(q.order, j.client)
	}
	q.waiting[j.client] = append(q.waiting[j.client], j)
	q.n++
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// remove takes j out of the queue (its client went away while it
// waited); false when the worker has already taken it.
func (q *fairQueue) remove(j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	js := q.waiting[j.client]
	for i, w := range js {
		if w != j {
			continue
		}
		q.waiting[j.client] = append(js[:i:i], js[i+1:]...)
		q.n--
		if len(q.waiting[j.client]) == 0 {
			q.dropClient(j.client)
		}
		return true
	}
	return false
}

// pop waits for a request and takes the next one in turn; nil when ctx
// ends first.
func (q *fairQueue) pop(ctx context.Context) *job {
	for {
		if j := q.take(); j != nil {
			return j
		}
		select {
		case <-ctx.Done():
			return nil
		case <-q.wake:
		}
	}
}

func (q *fairQueue) take() *job {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil
	}
	c := q.order[0]
	js := q.waiting[c]
	j := js[0]
	q.waiting[c] = js[1:]
	q.n--
	if q.n > 0 {
		// Another worker may be waiting: pass the wake-up on.
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	q.order = q.order[1:]
	if len(q.waiting[c]) > 0 {
		q.order = append(q.order, c) // its next request waits its turn
	} else {
		delete(q.waiting, c)
	}
	return j
}

func (q *fairQueue) dropClient(c string) {
	delete(q.waiting, c)
	for i, o := range q.order {
		if o == c {
			q.order = append(q.order[:i:i], q.order[i+1:]...)
			return
		}
	}
}

// len is the number of requests waiting.
func (q *fairQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
