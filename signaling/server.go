package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/doppler-llm/doppler/rdrr"
)

// Options configure a Server. Zero fields take the defaults shown.
type Options struct {
	MaxRoomSize    int           // peers per room; 64
	MaxRooms       int           // rooms at once; 1024
	MaxMessageSize int64         // bytes per client message (the WebSocket read limit; over it: close 1009); 64 KiB
	Rate           float64       // client messages per second (a golang.org/x/time/rate token bucket); 50; negative: no limit
	Burst          int           // token bucket size; 100
	MaxRateStrikes int           // messages dropped over the rate before the client is closed (4429); 100
	MaxMalformed   int           // bad messages before the client is closed (4400); 10
	IdleTimeout    time.Duration // a client must answer a ping (sent every IdleTimeout/2) within IdleTimeout/2, else it is closed (4408); 60 s; negative: no pings
	WriteTimeout   time.Duration // one message write to a client; on expiry the client is dropped; 10 s
	QueueSize      int           // messages queued to one peer; when full, relays to it fail (peer-busy) and a notification removes it; 256

	// Allow, when set, says whether a room may be joined (serve: the model
	// is in the store). Refused: the client is closed with 4404.
	Allow func(room rdrr.ModelID) bool
	// OriginPatterns are the cross-origin hosts allowed to connect (see
	// websocket.AcceptOptions); none: same origin or no Origin header.
	OriginPatterns []string
	// AnyOrigin accepts pages of every origin (the browser SDK used from
	// another site, docs/sdk.md). Safe here: a room is public, joining it
	// needs no credential, and cookies carry no authority.
	AnyOrigin bool
	// ICEServers are handed to every client in its welcome (a Relay's
	// ICEServer on a loopback node).
	ICEServers []ICEServer
	Logger     *slog.Logger
	Now        func() time.Time // the rate limiter's clock; time.Now
}

func (o *Options) defaults() {
	set := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	set(&o.MaxRoomSize, 64)
	set(&o.MaxRooms, 1024)
	set(&o.Burst, 100)
	set(&o.MaxRateStrikes, 100)
	set(&o.MaxMalformed, 10)
	set(&o.QueueSize, 256)
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 64 << 10
	}
	if o.Rate == 0 {
		o.Rate = 50
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Server is the WebSocket signaling server: browsers (and the node itself,
// through Join) meet in rooms, one per model ID, and exchange WebRTC offers,
// answers and ICE candidates relayed by the server, which sets "from".
// Mount Handler at /signal; clients connect to /signal?room=<model-id>.
type Server struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context // cancelled last on Shutdown: aborts what is left
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection handlers

	mu     sync.Mutex
	closed bool
	rooms  map[rdrr.ModelID]*room

	stats struct {
		joins, relayed, busy, dropped, malformed, oversize, kicked, rejected atomic.Uint64
	}
}

// New returns a server with opts (defaults filled in).
func New(opts Options) *Server {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, rooms: make(map[rdrr.ModelID]*room)}
}

// Stats is a snapshot of the server's state and counters.
type Stats struct {
	Rooms, Peers int            // now
	RoomPeers    map[string]int // room (model ID hex) → peers, now
	Joins        uint64         // peers that ever joined (WebSocket and Endpoint)
	Relayed      uint64         // offers, answers and candidates delivered to a queue
	Busy         uint64         // relays refused: recipient queue full
	Dropped      uint64         // client messages over the rate limit
	Malformed    uint64         // bad client messages
	Oversize     uint64         // clients closed for a message over MaxMessageSize
	Kicked       uint64         // peers removed by the server (abuse, idle, slow, oversize)
	Rejected     uint64         // connections refused: unknown room, room full, too many rooms, closed
}

// Stats returns a snapshot, for tests and monitoring.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Rooms: len(s.rooms), RoomPeers: make(map[string]int, len(s.rooms))}
	for id, r := range s.rooms {
		st.Peers += len(r.peers)
		st.RoomPeers[id.String()] = len(r.peers)
	}
	s.mu.Unlock()
	c := &s.stats
	st.Joins, st.Relayed, st.Busy = c.joins.Load(), c.relayed.Load(), c.busy.Load()
	st.Dropped, st.Malformed, st.Oversize = c.dropped.Load(), c.malformed.Load(), c.oversize.Load()
	st.Kicked, st.Rejected = c.kicked.Load(), c.rejected.Load()
	return st
}

// Handler returns the WebSocket handler; mount it at /signal. The room
// query parameter must be a model ID (64 hex digits), else 400 before the
// upgrade. Refusals after the upgrade (unknown room, full) are WebSocket
// closes with a code and reason, which a browser can read.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveWS) }

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	roomID, err := rdrr.ParseHash(r.URL.Query().Get("room"))
	if err != nil {
		http.Error(w, "room must be a model id: 64 hex digits", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closed {
		http.Error(w, "signaling server shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.opts.OriginPatterns, InsecureSkipVerify: s.opts.AnyOrigin})
	if err != nil {
		return // Accept has answered
	}
	c.SetReadLimit(s.opts.MaxMessageSize)
	if s.opts.Allow != nil && !s.opts.Allow(roomID) {
		s.stats.rejected.Add(1)
		c.Close(CloseUnknownRoom, "unknown room: this node does not serve that model")
		return
	}
	p, _, err := s.join(roomID, false)
	if err != nil {
		s.stats.rejected.Add(1)
		code := CloseFull
		if errors.Is(err, ErrClosed) {
			code = websocket.StatusGoingAway
		}
		c.Close(code, err.Error())
		return
	}
	s.log.Debug("signaling: join", "room", roomID.Short(), "peer", p.id, "remote", r.RemoteAddr)
	s.serveConn(c, p)
	s.log.Debug("signaling: leave", "room", roomID.Short(), "peer", p.id, "code", int(p.code), "reason", p.reason)
}

// serveConn runs one client: this goroutine reads, one writes (and does the
// closing handshake when the peer is removed), one pings.
func (s *Server) serveConn(c *websocket.Conn, p *peer) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.writeLoop(ctx, c, p) }()
	go func() { defer wg.Done(); s.pingLoop(ctx, c, p) }()
	s.readLoop(ctx, c, p)
	wg.Wait()
	c.CloseNow()
}

func (s *Server) writeLoop(ctx context.Context, c *websocket.Conn, p *peer) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.gone:
			// p.code and p.reason were set before gone was closed. Close
			// is bounded by the library (5 s to write, 5 s for the reply).
			c.Close(p.code, p.reason)
			return
		case m := <-p.out:
			b, err := json.Marshal(m)
			if err != nil {
				continue
			}
			// On a write timeout the peer leaves first, then the
			// connection is cut (which ends Write and the reader).
			timer := time.AfterFunc(s.opts.WriteTimeout, func() {
				s.leave(p, CloseTimeout, "write timeout")
				c.CloseNow()
			})
			err = c.Write(ctx, websocket.MessageText, b)
			timer.Stop()
			if err != nil {
				s.leave(p, websocket.StatusAbnormalClosure, "write failed")
				c.CloseNow()
				return
			}
		}
	}
}

func (s *Server) pingLoop(ctx context.Context, c *websocket.Conn, p *peer) {
	if s.opts.IdleTimeout < 0 {
		return
	}
	every := max(s.opts.IdleTimeout/2, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.gone:
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, every)
		err := c.Ping(pctx)
		pcancel()
		if err != nil {
			if ctx.Err() == nil {
				s.leave(p, CloseTimeout, "idle timeout")
			}
			return
		}
	}
}

func (s *Server) readLoop(ctx context.Context, c *websocket.Conn, p *peer) {
	lim := s.limiter()
	var strikes, malformed int
	reply := func(m Message) {
		select { // our own queue: drop rather than wait
		case p.out <- m:
		default:
		}
	}
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrMessageTooBig):
				s.stats.oversize.Add(1)
				s.leave(p, websocket.StatusMessageTooBig, "message too big")
			case websocket.CloseStatus(err) == websocket.StatusGoingAway:
				s.leave(p, websocket.StatusGoingAway, "")
			case websocket.CloseStatus(err) != -1:
				s.leave(p, websocket.StatusNormalClosure, "")
			default: // connection lost (or cut by a timeout, which left first)
				s.leave(p, websocket.StatusAbnormalClosure, "connection lost")
			}
			return
		}
		select {
		case <-p.gone:
			return // removed; the writer closes the connection
		default:
		}
		if now := s.opts.Now(); !lim.AllowN(now, 1) {
			s.stats.dropped.Add(1)
			if strikes++; strikes >= s.opts.MaxRateStrikes {
				s.log.Info("signaling: closing a client over the rate limit", "room", p.room.id.Short(), "peer", p.id)
				s.leave(p, CloseRateLimited, "rate limit exceeded")
				continue // the writer closes; Read then fails
			}
			reply(errorMsg(CodeRateLimited, "over the rate limit: message dropped", ""))
			// Read nothing more from this client until its next token:
			// a flooder then meets TCP backpressure instead of costing
			// the server a read and a reply for every message it sends.
			pause(ctx, p.gone, time.Duration((1-lim.TokensAt(now))/float64(lim.Limit())*float64(time.Second)))
			continue
		}
		var m Message
		code, text := CodeBadMessage, "binary messages are not accepted"
		if typ == websocket.MessageText {
			if err := json.Unmarshal(b, &m); err != nil {
				text = "malformed JSON"
			} else {
				code, text = check(&m)
			}
		}
		switch code {
		case "":
		case CodeBadMessage:
			s.stats.malformed.Add(1)
			if malformed++; malformed >= s.opts.MaxMalformed {
				s.leave(p, CloseMalformed, "too many malformed messages")
				continue
			}
			reply(errorMsg(code, text, ""))
			continue
		default:
			reply(errorMsg(code, text, ""))
			continue
		}
		if m.Type == TypePeers {
			reply(Message{Type: TypePeers, Peers: s.others(p)})
			continue
		}
		switch s.relay(p, &m) {
		case "":
		case CodeUnknownPeer:
			reply(errorMsg(CodeUnknownPeer, "no peer "+quote(string(m.To))+" in this room", m.To))
		case CodePeerBusy:
			reply(errorMsg(CodePeerBusy, "peer is not keeping up: message dropped", m.To))
		}
	}
}

// Shutdown closes every client with 1001 (going away) and ends every
// Endpoint, refuses new ones, and waits for the connection goroutines until
// ctx is done; then it aborts the connections left and returns ctx.Err()
// without waiting further.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, r := range s.rooms {
			for _, p := range r.peers {
				s.leaveLocked(p, websocket.StatusGoingAway, "server shutting down")
			}
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pause waits d, or until ctx is done or gone is closed.
func pause(ctx context.Context, gone <-chan struct{}, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-gone:
	}
}

// limiter returns one client's message limiter: Rate messages a second,
// bursts of Burst, starting full; a negative Rate never limits.
func (s *Server) limiter() *rate.Limiter {
	if s.opts.Rate < 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(s.opts.Rate), s.opts.Burst)
}
