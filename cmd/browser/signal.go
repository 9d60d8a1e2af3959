//go:build js && wasm

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"syscall/js"
	"time"

	"github.com/doppler-llm/doppler/signaling/sigwire"
)

// signaler is the WebSocket to the signaling server. Messages received
// are queued by the onmessage callback and delivered in order on recv.
type signaler struct {
	ws js.Value
	h  handlers

	mu     sync.Mutex
	queue  []sigwire.Message
	closed error
	wake   chan struct{}
}

// dialSignal connects to url and waits for the welcome.
func dialSignal(ctx context.Context, url string) (*signaler, sigwire.Message, error) {
	ws, err := newJS("WebSocket", url)
	if err != nil {
		return nil, sigwire.Message{}, err
	}
	s := &signaler{ws: ws, wake: make(chan struct{}, 1)}
	on := func(ev string, f func(js.Value)) { s.h.on(ws, ev, f) }
	on("onmessage", func(ev js.Value) {
		var m sigwire.Message
		if d := ev.Get("data"); d.Type() != js.TypeString || json.Unmarshal([]byte(d.String()), &m) != nil {
			return
		}
		s.mu.Lock()
		s.queue = append(s.queue, m)
		s.mu.Unlock()
		signal(s.wake)
	})
	on("onclose", func(ev js.Value) {
		s.mu.Lock()
		if s.closed == nil {
			s.closed = fmt.Errorf("signaling closed (%d %s)", ev.Get("code").Int(), ev.Get("reason").String())
		}
		s.mu.Unlock()
		signal(s.wake)
	})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := s.recv(ctx)
	if err != nil {
		s.close()
		return nil, m, fmt.Errorf("signaling %s: %w", url, err)
	}
	if m.Type != sigwire.TypeWelcome {
		s.close()
		return nil, m, fmt.Errorf("signaling %s: %s %s", url, m.Type, m.Error)
	}
	return s, m, nil
}

// recv returns the next message.
func (s *signaler) recv(ctx context.Context) (sigwire.Message, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			m := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return m, nil
		}
		err := s.closed
		s.mu.Unlock()
		if err != nil {
			return sigwire.Message{}, err
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return sigwire.Message{}, ctx.Err()
		}
	}
}

// send sends one message.
func (s *signaler) send(m sigwire.Message) error {
	s.mu.Lock()
	err := s.closed
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if s.ws.Get("readyState").Int() != 1 {
		return errors.New("signaling socket not open")
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = call(s.ws, "send", string(b))
	return err
}

func (s *signaler) close() {
	s.mu.Lock()
	if s.closed == nil {
		s.closed = errors.New("signaling closed")
	}
	s.mu.Unlock()
	call(s.ws, "close")
	s.h.release()
	signal(s.wake)
}
