//go:build !js

package rtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// buffered is what the detached channel offers for backpressure.
type buffered interface {
	BufferedAmount() uint64
	SetBufferedAmountLowThreshold(uint64)
	OnBufferedAmountLow(func())
}

// stream is a detached data channel as a byte stream: writes are split into
// MaxMessage messages (with backpressure), reads reassemble them. It is
// also a p2p.MsgConn with a deadline per frame.
type stream struct {
	dc      datachannel.ReadWriteCloserDeadliner
	buf     buffered // nil if the channel offers none
	low     chan struct{}
	timeout time.Duration
	up      *atomic.Uint64
	down    *atomic.Uint64
	frames  p2p.MsgConn

	mu      sync.Mutex
	wdl     time.Time // write deadline (backpressure waits honour it)
	aborted bool
	dead    chan struct{} // closed by abort
	stop    func() bool

	msg  []byte // receive buffer
	pend []byte // unread part of the last message
}

func (p *Peer) newStream(dc datachannel.ReadWriteCloserDeadliner, timeout time.Duration) *stream {
	s := &stream{dc: dc, low: make(chan struct{}, 1), timeout: timeout, up: &p.up, down: &p.down,
		dead: make(chan struct{}), msg: make([]byte, maxRecvMessage)}
	s.frames = p2p.Frames(s)
	if b, ok := dc.(buffered); ok {
		s.buf = b
		b.SetBufferedAmountLowThreshold(LowWater)
		b.OnBufferedAmountLow(func() {
			select {
			case s.low <- struct{}{}:
			default:
			}
		})
	}
	s.stop = func() bool { return true }
	return s
}

// watch aborts the stream when ctx ends.
func (s *stream) watch(ctx context.Context) {
	s.stop = context.AfterFunc(ctx, s.abort)
}

// abort unblocks every call at once and closes the channel.
func (s *stream) abort() {
	s.mu.Lock()
	if s.aborted {
		s.mu.Unlock()
		return
	}
	s.aborted = true
	close(s.dead)
	past := time.Unix(1, 0)
	s.dc.SetReadDeadline(past)
	s.dc.SetWriteDeadline(past)
	s.mu.Unlock()
	s.dc.Close()
}

// close ends the exchange normally: queued messages still go out before the
// stream reset.
func (s *stream) close() {
	s.stop()
	s.dc.Close()
}

func (s *stream) setDeadlines(read bool, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return errChannelClosed
	}
	if read {
		return s.dc.SetReadDeadline(t)
	}
	s.wdl = t
	return s.dc.SetWriteDeadline(t)
}

var errChannelClosed = fmt.Errorf("%w: data channel closed", io.ErrClosedPipe)

// ReadMsg reads one frame of at most max bytes within the frame timeout.
func (s *stream) ReadMsg(max int) (wire.Message, error) {
	if err := s.setDeadlines(true, time.Now().Add(s.timeout)); err != nil {
		return nil, err
	}
	return s.frames.ReadMsg(max)
}

// WriteMsg writes one frame within the frame timeout.
func (s *stream) WriteMsg(m wire.Message) error {
	if err := s.setDeadlines(false, time.Now().Add(s.timeout)); err != nil {
		return err
	}
	return s.frames.WriteMsg(m)
}

// Read reads the stream's bytes, a message at a time.
func (s *stream) Read(b []byte) (int, error) {
	for len(s.pend) == 0 {
		n, err := s.dc.Read(s.msg)
		if errors.Is(err, io.ErrShortBuffer) {
			return 0, fmt.Errorf("%w: a message over %d bytes", wire.ErrMalformed, len(s.msg))
		}
		if err != nil {
			return 0, err
		}
		s.down.Add(uint64(n))
		s.pend = s.msg[:n]
	}
	n := copy(b, s.pend)
	s.pend = s.pend[n:]
	return n, nil
}

// Write sends b as messages of at most MaxMessage bytes, waiting while more
// than HighWater bytes are queued.
func (s *stream) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		if err := s.waitBuffer(); err != nil {
			return done, err
		}
		chunk := b[done:min(len(b), done+MaxMessage)]
		n, err := s.dc.Write(chunk)
		done += n
		s.up.Add(uint64(n))
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (s *stream) waitBuffer() error {
	if s.buf == nil {
		return nil
	}
	s.mu.Lock()
	wdl := s.wdl
	s.mu.Unlock()
	var timer <-chan time.Time
	for s.buf.BufferedAmount() > HighWater {
		if timer == nil {
			d := time.Until(wdl)
			if wdl.IsZero() {
				d = s.timeout
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-s.low:
		case <-timer:
			return fmt.Errorf("data channel: %w: %d bytes queued", os.ErrDeadlineExceeded, s.buf.BufferedAmount())
		case <-s.dead:
			return errChannelClosed
		}
	}
	return nil
}

// onOpen detaches dc when it opens and hands it to f on a goroutine Close
// waits for.
func (p *Peer) onOpen(dc *webrtc.DataChannel, f func(raw datachannel.ReadWriteCloserDeadliner)) {
	dc.OnOpen(func() {
		raw, err := dc.DetachWithDeadline()
		if err != nil {
			p.log.Debug("detach", "label", dc.Label(), "err", err)
			dc.Close()
			return
		}
		if !p.goServe(func() { f(raw) }) {
			raw.Close()
		}
	})
}
