//go:build js && wasm

package main

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall/js"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
)

// Data channel labels and sizes: the same as the node's (p2p/rtc).
const (
	shardLabel = "doppler-shard/1"
	invLabel   = "doppler-inv/1"
	maxMessage = 16 << 10 // bytes per data channel message sent
	highWater  = 1 << 20  // a writer waits while more than this is queued
	lowWater   = 256 << 10
)

// channel is an RTCDataChannel as a stream of frames: the shard
// protocol's shardproto.MsgConn. Incoming messages are queued by the
// onmessage callback (which never blocks) and read as a byte stream; a
// frame is sent as consecutive messages of at most maxMessage bytes.
type channel struct {
	dc      js.Value
	timeout time.Duration // per frame, either way
	count   func(up, down int)

	mu     sync.Mutex
	queue  [][]byte
	closed bool
	err    error
	wake   chan struct{} // a message arrived or the channel closed
	drain  chan struct{} // bufferedamountlow
	opened chan struct{}
	h      handlers
	ctx    context.Context
	cancel context.CancelFunc
}

// newChannel wraps dc; ctx ends it (closing the channel).
func newChannel(ctx context.Context, dc js.Value, timeout time.Duration, count func(up, down int)) *channel {
	ctx, cancel := context.WithCancel(ctx)
	c := &channel{dc: dc, timeout: timeout, count: count, wake: make(chan struct{}, 1), drain: make(chan struct{}, 1),
		opened: make(chan struct{}), ctx: ctx, cancel: cancel}
	dc.Set("binaryType", "arraybuffer")
	dc.Set("bufferedAmountLowThreshold", lowWater)
	on := func(ev string, f func(v js.Value)) { c.h.on(dc, ev, f) }
	on("onopen", func(js.Value) { c.open() })
	on("onmessage", func(ev js.Value) {
		d := ev.Get("data")
		if d.Type() == js.TypeString {
			c.fail(errors.New("text message on a binary channel"))
			return
		}
		b := goBytes(d)
		c.mu.Lock()
		c.queue = append(c.queue, b)
		c.mu.Unlock()
		signal(c.wake)
	})
	on("onclose", func(js.Value) { c.fail(io.EOF) })
	on("onerror", func(ev js.Value) {
		msg := "data channel error"
		if e := ev.Get("error"); e.Truthy() {
			msg = jsError(e)
		}
		c.fail(errors.New(msg))
	})
	on("onbufferedamountlow", func(js.Value) { signal(c.drain) })
	if dc.Get("readyState").String() == "open" {
		c.open()
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	return c
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *channel) open() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.opened:
	default:
		close(c.opened)
	}
}

func (c *channel) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	signal(c.wake)
	signal(c.drain)
}

// waitOpen waits for the channel to open.
func (c *channel) waitOpen(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-c.opened:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return io.ErrClosedPipe
		case <-t.C:
			return errors.New("data channel did not open in time")
		case <-c.wake:
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// Read reads queued message bytes, waiting up to the frame timeout.
func (c *channel) Read(p []byte) (int, error) {
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			n := copy(p, c.queue[0])
			if n == len(c.queue[0]) {
				c.queue = c.queue[1:]
			} else {
				c.queue[0] = c.queue[0][n:]
			}
			c.mu.Unlock()
			if c.count != nil {
				c.count(0, n)
			}
			return n, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			return 0, io.ErrClosedPipe
		case <-t.C:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// Write sends p as messages of at most maxMessage bytes, waiting while
// more than highWater bytes are queued in the channel.
func (c *channel) Write(p []byte) (int, error) {
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	sent := 0
	for sent < len(p) {
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return sent, err
		}
		if c.dc.Get("bufferedAmount").Int() > highWater {
			select {
			case <-c.drain:
			case <-c.ctx.Done():
				return sent, io.ErrClosedPipe
			case <-t.C:
				return sent, os.ErrDeadlineExceeded
			case <-time.After(50 * time.Millisecond): // bufferedamountlow may have fired before we waited
			}
			continue
		}
		n := min(len(p)-sent, maxMessage)
		if _, err := call(c.dc, "send", jsBytes(p[sent:sent+n])); err != nil {
			return sent, err
		}
		sent += n
	}
	if c.count != nil {
		c.count(sent, 0)
	}
	return sent, nil
}

// ReadMsg and WriteMsg make a channel a shardproto.MsgConn.
func (c *channel) ReadMsg(max int) (wire.Message, error) { return wire.ReadMessage(c, max) }
func (c *channel) WriteMsg(m wire.Message) error         { return wire.WriteMessage(c, m) }

// Close closes the data channel and releases its callbacks.
func (c *channel) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.err == nil {
		c.err = io.ErrClosedPipe
	}
	c.mu.Unlock()
	c.cancel()
	call(c.dc, "close")
	c.h.release()
	signal(c.wake)
	return nil
}

// errDeadline is what Read returns when no byte came within the timeout.
var errDeadline = os.ErrDeadlineExceeded

// flush waits (bounded by the frame timeout) until the channel has sent
// what is queued, so closing it does not cut the answer short.
func (c *channel) flush(ctx context.Context) {
	deadline := time.Now().Add(c.timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		if err != nil || c.dc.Get("bufferedAmount").Int() == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
