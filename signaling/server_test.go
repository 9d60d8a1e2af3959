package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/internal/leaktest"
	"github.com/doppler-llm/doppler/rdrr"
)

var (
	roomA = rdrr.Sum([]byte("model a"))
	roomB = rdrr.Sum([]byte("model b"))
)

const wait = 5 * time.Second // bound on any single expectation

// checkLeaks fails the test if goroutines started during it outlive it.
// Register it first: cleanups run last-in first-out.
func checkLeaks(t *testing.T) { leaktest.Check(t, wait) }

// start returns a signaling server behind an httptest server on 127.0.0.1.
func start(t *testing.T, opts Options) (*Server, string) {
	return startWith(t, opts, nil)
}

// smallBuffers makes the server's socket send buffers small, so that a
// client that does not read blocks the server's writes soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

func startWith(t *testing.T, opts Options, wrap func(net.Listener) net.Listener) (*Server, string) {
	checkLeaks(t)
	srv := New(opts)
	hs := httptest.NewUnstartedServer(srv.Handler())
	if wrap != nil {
		hs.Listener = wrap(hs.Listener)
	}
	hs.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http")
}

// client is a test WebSocket peer; a goroutine reads into msgs (so pings
// are answered) until the connection ends, then sets err.
type client struct {
	t     *testing.T
	c     *websocket.Conn
	id    PeerID
	peers []PeerID
	msgs  chan Message
	stash []Message     // join/leave set aside by expectRelay; next returns them first
	done  chan struct{} // reader ended; err set
	stop  chan struct{}
	err   error
	once  sync.Once
}

func dialRaw(t *testing.T, base string, room rdrr.ModelID) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, base+"?room="+room.String(), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// dialSlow dials a client that never reads, with a small socket receive
// buffer: what the server writes to it stops fitting in the kernel's
// buffers after a few tens of KB, however the goroutines were scheduled.
func dialSlow(t *testing.T, base string, room rdrr.ModelID) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(8 << 10)
		}
		return c, err
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: dial}}
	c, _, err := websocket.Dial(ctx, base+"?room="+room.String(), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// connect dials without expecting a welcome.
func connect(t *testing.T, base string, room rdrr.ModelID) *client {
	t.Helper()
	cl := &client{t: t, c: dialRaw(t, base, room), msgs: make(chan Message, 4096), done: make(chan struct{}), stop: make(chan struct{})}
	go cl.read()
	t.Cleanup(cl.close)
	return cl
}

// join dials and reads the welcome.
func join(t *testing.T, base string, room rdrr.ModelID) *client {
	t.Helper()
	cl := connect(t, base, room)
	w := cl.expect(TypeWelcome)
	if w.ID == "" || w.Room != room.String() || w.Peers == nil {
		t.Fatalf("welcome %+v", w)
	}
	cl.id, cl.peers = w.ID, w.Peers
	return cl
}

func (cl *client) read() {
	defer close(cl.done)
	for {
		_, b, err := cl.c.Read(context.Background())
		if err != nil {
			cl.err = err
			return
		}
		var m Message
		if err := json.Unmarshal(b, &m); err != nil {
			cl.err = fmt.Errorf("server sent bad JSON %q: %v", b, err)
			return
		}
		select {
		case cl.msgs <- m:
		case <-cl.stop:
			return
		}
	}
}

func (cl *client) close() {
	cl.once.Do(func() {
		close(cl.stop)
		cl.c.Close(websocket.StatusNormalClosure, "")
		cl.c.CloseNow()
		<-cl.done
	})
}

func (cl *client) send(m any) {
	cl.t.Helper()
	var b []byte
	switch m := m.(type) {
	case string:
		b = []byte(m)
	default:
		var err error
		if b, err = json.Marshal(m); err != nil {
			cl.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := cl.c.Write(ctx, websocket.MessageText, b); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// next returns the next message within wait.
func (cl *client) next() Message {
	cl.t.Helper()
	if len(cl.stash) > 0 {
		m := cl.stash[0]
		cl.stash = cl.stash[1:]
		return m
	}
	return cl.recv()
}

func (cl *client) recv() Message {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		return m
	case <-cl.done:
		select {
		case m := <-cl.msgs:
			return m
		default:
		}
		cl.t.Fatalf("peer %s: connection ended: %v", cl.id, cl.err)
	case <-time.After(wait):
		cl.t.Fatalf("peer %s: no message within %v", cl.id, wait)
	}
	return Message{}
}

func (cl *client) expect(typ string) Message {
	cl.t.Helper()
	m := cl.next()
	if m.Type != typ {
		cl.t.Fatalf("peer %s: got %+v, want type %q", cl.id, m, typ)
	}
	return m
}

// expectRelay expects a relayed message of type typ, setting aside join
// and leave notifications that come first (for next).
func (cl *client) expectRelay(typ string) Message {
	cl.t.Helper()
	for {
		m := cl.recv()
		if m.Type == TypeJoin || m.Type == TypeLeave {
			cl.stash = append(cl.stash, m)
			continue
		}
		if m.Type != typ {
			cl.t.Fatalf("peer %s: got %+v, want type %q", cl.id, m, typ)
		}
		return m
	}
}

// closed waits for the server to close the connection and returns the code.
func (cl *client) closed() (websocket.StatusCode, string) {
	cl.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case <-cl.msgs: // drain
			continue
		case <-cl.done:
			var ce websocket.CloseError
			if errors.As(cl.err, &ce) {
				return ce.Code, ce.Reason
			}
			return websocket.CloseStatus(cl.err), fmt.Sprint(cl.err)
		case <-deadline:
			cl.t.Fatalf("peer %s: not closed within %v", cl.id, wait)
		}
	}
}

func (cl *client) expectClosed(code websocket.StatusCode) {
	cl.t.Helper()
	if got, reason := cl.closed(); got != code {
		cl.t.Fatalf("peer %s: closed with %d %q, want %d", cl.id, got, reason, code)
	}
}

// exchange checks that a and b can signal each other (offer, answer).
func exchange(t *testing.T, a, b *client) {
	t.Helper()
	a.send(Message{Type: TypeOffer, To: b.id, SDP: json.RawMessage(`{"type":"offer","sdp":"v=0"}`)})
	m := b.expectRelay(TypeOffer)
	if m.From != a.id || string(m.SDP) != `{"type":"offer","sdp":"v=0"}` {
		t.Fatalf("offer %+v", m)
	}
	b.send(Message{Type: TypeAnswer, To: a.id, SDP: json.RawMessage(`"v=0 answer"`)})
	if m := a.expectRelay(TypeAnswer); m.From != b.id || string(m.SDP) != `"v=0 answer"` {
		t.Fatalf("answer %+v", m)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRelay(t *testing.T) {
	srv, base := start(t, Options{})
	a := join(t, base, roomA)
	if len(a.peers) != 0 {
		t.Fatalf("first peer sees %v", a.peers)
	}
	b := join(t, base, roomA)
	if !slices.Equal(b.peers, []PeerID{a.id}) {
		t.Fatalf("b sees %v, want [%s]", b.peers, a.id)
	}
	if m := a.expect(TypeJoin); m.ID != b.id {
		t.Fatalf("a: %+v", m)
	}
	exchange(t, a, b)

	c := join(t, base, roomA)
	want := []PeerID{a.id, b.id}
	slices.Sort(want)
	if !slices.Equal(c.peers, want) {
		t.Fatalf("c sees %v, want %v", c.peers, want)
	}
	for _, x := range []*client{a, b} {
		if m := x.expect(TypeJoin); m.ID != c.id {
			t.Fatalf("%s: %+v", x.id, m)
		}
	}
	// A peer in another room is not reachable, and is not listed.
	other := join(t, base, roomB)
	if len(other.peers) != 0 {
		t.Fatalf("room B sees %v", other.peers)
	}

	// "from" comes from the server, never from the client; other fields
	// the client sets are not relayed.
	a.send(`{"type":"candidate","to":"` + string(c.id) + `","from":"` + string(b.id) + `","id":"x","peers":["y"],"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}}`)
	m := c.expect(TypeCandidate)
	if m.From != a.id || m.ID != "" || m.Peers != nil || !strings.Contains(string(m.Candidate), "127.0.0.1 5000") {
		t.Fatalf("candidate %+v", m)
	}
	c.send(Message{Type: TypeCandidate, To: a.id, Candidate: json.RawMessage("null")}) // end of candidates
	if m := a.expect(TypeCandidate); m.From != c.id || string(m.Candidate) != "null" {
		t.Fatalf("end of candidates %+v", m)
	}
	exchange(t, c, b)
	exchange(t, b, c)

	a.send(Message{Type: TypePeers})
	want = []PeerID{b.id, c.id}
	slices.Sort(want)
	if m := a.expect(TypePeers); !slices.Equal(m.Peers, want) {
		t.Fatalf("peers %v, want %v", m.Peers, want)
	}
	a.send(Message{Type: TypeOffer, To: other.id, SDP: json.RawMessage(`"x"`)})
	if m := a.expect(TypeError); m.Code != CodeUnknownPeer || m.ID != other.id {
		t.Fatalf("offer to another room: %+v", m)
	}

	b.close()
	for _, x := range []*client{a, c} {
		if m := x.expect(TypeLeave); m.ID != b.id {
			t.Fatalf("%s: %+v", x.id, m)
		}
	}
	st := srv.Stats()
	if st.Rooms != 2 || st.Peers != 3 || st.RoomPeers[roomA.String()] != 2 || st.Relayed < 8 || st.Kicked != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBadMessages(t *testing.T) {
	srv, base := start(t, Options{MaxMalformed: 3})
	a, b := join(t, base, roomA), join(t, base, roomA)
	a.expect(TypeJoin)

	b.send(`{"type":"offer","to":`)
	if m := b.expect(TypeError); m.Code != CodeBadMessage {
		t.Fatalf("%+v", m)
	}
	b.send(Message{Type: TypeOffer, To: "0123456789abcdef", SDP: json.RawMessage(`"x"`)})
	if m := b.expect(TypeError); m.Code != CodeUnknownPeer || m.ID != "0123456789abcdef" {
		t.Fatalf("%+v", m)
	}
	b.send(Message{Type: TypeOffer, To: b.id, SDP: json.RawMessage(`"x"`)})
	if m := b.expect(TypeError); m.Code != CodeUnknownPeer {
		t.Fatalf("offer to self: %+v", m)
	}
	b.send(`{"type":"welcome","id":"x"}`)
	if m := b.expect(TypeError); m.Code != CodeUnknownType {
		t.Fatalf("%+v", m)
	}
	b.send(Message{Type: TypeAnswer, To: a.id}) // no sdp
	if m := b.expect(TypeError); m.Code != CodeBadMessage {
		t.Fatalf("%+v", m)
	}
	exchange(t, a, b) // still fine
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b.c.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3}) // the third bad message
	b.expectClosed(CloseMalformed)
	if m := a.expect(TypeLeave); m.ID != b.id {
		t.Fatalf("%+v", m)
	}
	c := join(t, base, roomA)
	a.expect(TypeJoin)
	exchange(t, a, c)
	if st := srv.Stats(); st.Malformed != 3 || st.Kicked != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOversize(t *testing.T) {
	srv, base := start(t, Options{MaxMessageSize: 1024})
	a, b := join(t, base, roomA), join(t, base, roomA)
	a.expect(TypeJoin)
	b.send(Message{Type: TypeOffer, To: a.id, SDP: json.RawMessage(`"` + strings.Repeat("v", 900) + `"`)}) // fits
	a.expect(TypeOffer)
	b.send(Message{Type: TypeOffer, To: a.id, SDP: json.RawMessage(`"` + strings.Repeat("v", 2000) + `"`)})
	b.expectClosed(websocket.StatusMessageTooBig)
	a.expect(TypeLeave)
	c := join(t, base, roomA)
	a.expect(TypeJoin)
	exchange(t, c, a)
	if st := srv.Stats(); st.Oversize != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A client flooding the room is rate-limited, then closed; meanwhile the
// others exchange messages normally.
func TestFlood(t *testing.T) {
	srv, base := start(t, Options{Rate: 50, Burst: 100, MaxRateStrikes: 50})
	a, b := join(t, base, roomA), join(t, base, roomA)
	a.expect(TypeJoin)
	victim := join(t, base, roomA)
	a.expect(TypeJoin)
	b.expect(TypeJoin)
	f := join(t, base, roomA)
	for _, x := range []*client{a, b, victim} {
		x.expect(TypeJoin)
	}

	flood := []byte(`{"type":"candidate","to":"` + string(victim.id) + `","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}}`)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for range 5000 {
			if f.c.Write(ctx, websocket.MessageText, flood) != nil {
				return // closed by the server
			}
		}
	}()
	start := time.Now()
	for range 20 {
		exchange(t, a, b)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("20 exchanges during the flood took %v", d)
	}
	f.expectClosed(CloseRateLimited)
	floodFor := time.Since(start) // an upper bound on how long the flooder was read
	wg.Wait()
	for _, x := range []*client{a, b} {
		if m := x.expect(TypeLeave); m.ID != f.id {
			t.Fatalf("%+v", m)
		}
	}
	// The victim got at most the burst plus what the rate allowed while
	// the flooder collected its strikes (a drop pauses its reads until
	// its next token, so 50 strikes take about a second), and is still a
	// working peer.
	n := 0
	for m := victim.next(); m.Type == TypeCandidate; m = victim.next() {
		n++
		if m.From != f.id {
			t.Fatalf("%+v", m)
		}
	}
	if most := 100 + int(50*floodFor.Seconds()) + 1; n < 100 || n > most {
		t.Errorf("victim got %d flood messages in %v, want 100..%d", n, floodFor, most)
	}
	exchange(t, victim, a)
	if st := srv.Stats(); st.Dropped < 50 || st.Kicked != 1 || st.Peers != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// A client that does not take its messages is dropped on the write
// timeout; the room does not wait for it.
func TestSlowClient(t *testing.T) {
	// The queue alone (32 offers of 8 KB) holds more than the server's
	// send buffer and the slow client's receive buffer together, so the
	// server's writer blocks past its timeout whether or not it drained
	// the queue while a was sending.
	srv, base := startWith(t, Options{Rate: -1, WriteTimeout: 300 * time.Millisecond, QueueSize: 32},
		func(l net.Listener) net.Listener { return smallBuffers{l} })
	a, b := join(t, base, roomA), join(t, base, roomA)
	a.expect(TypeJoin)
	c := join(t, base, roomA)
	a.expect(TypeJoin)
	b.expect(TypeJoin)
	slow := dialSlow(t, base, roomA) // never reads
	slowID := a.expect(TypeJoin).ID
	b.expect(TypeJoin)
	c.expect(TypeJoin)

	offer := `{"type":"offer","to":"` + string(slowID) + `","sdp":"` + strings.Repeat("s", 8<<10) + `"}`
	t0 := time.Now()
	for range 100 { // 800 KB: more than the socket buffers
		a.send(offer)
	}
	for range 5 {
		exchange(t, b, c)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("a's 100 offers and 5 exchanges took %v", d)
	}
	// a sees peer-busy errors (the slow queue is full), then the slow
	// client's leave (and unknown-peer errors after it).
	busy := 0
	for {
		m := a.next()
		if m.Type == TypeError && (m.Code == CodePeerBusy || m.Code == CodeUnknownPeer) {
			busy++
			continue
		}
		if m.Type == TypeLeave && m.ID == slowID {
			break
		}
		t.Fatalf("a: %+v", m.Type)
	}
	t.Logf("%d peer-busy or unknown-peer errors", busy) // how many depends on timing; TestBusy checks them
	for _, x := range []*client{b, c} {
		if m := x.next(); m.Type != TypeLeave || m.ID != slowID {
			t.Fatalf("%+v", m)
		}
	}
	a.stash = nil
	for len(a.msgs) > 0 { // unknown-peer errors after the leave
		if m := <-a.msgs; m.Type != TypeError {
			t.Fatalf("a: %+v", m)
		}
	}
	exchange(t, b, c)
	if st := srv.Stats(); st.Peers != 3 || st.Kicked != 1 || st.Busy == 0 {
		t.Fatalf("stats %+v", st)
	}
	slow.CloseNow()
}

func TestUnknownRoom(t *testing.T) {
	srv, base := start(t, Options{Allow: func(r rdrr.ModelID) bool { return r == roomA }})
	a := join(t, base, roomA)
	u := connect(t, base, roomB)
	u.expectClosed(CloseUnknownRoom)

	for _, q := range []string{"", "?room=xyz", "?room=" + strings.Repeat("g", 64)} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, resp, err := websocket.Dial(ctx, base+q, nil)
		cancel()
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%q: %v %v", q, resp, err)
		}
	}
	if _, err := srv.Join(context.Background(), roomB); !errors.Is(err, ErrUnknownRoom) {
		t.Fatalf("Join: %v", err)
	}
	b := join(t, base, roomA)
	a.expect(TypeJoin)
	exchange(t, a, b)
	if st := srv.Stats(); st.Rejected != 1 || st.Rooms != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRoomLimits(t *testing.T) {
	srv, base := start(t, Options{MaxRoomSize: 2, MaxRooms: 1})
	a, b := join(t, base, roomA), join(t, base, roomA)
	a.expect(TypeJoin)
	connect(t, base, roomA).expectClosed(CloseFull)
	connect(t, base, roomB).expectClosed(CloseFull) // too many rooms
	if _, err := srv.Join(context.Background(), roomA); !errors.Is(err, ErrRoomFull) {
		t.Fatalf("Join: %v", err)
	}
	if _, err := srv.Join(context.Background(), roomB); !errors.Is(err, ErrTooManyRooms) {
		t.Fatalf("Join: %v", err)
	}
	exchange(t, a, b)
	b.close()
	a.expect(TypeLeave)
	c := join(t, base, roomA) // room for one again
	a.expect(TypeJoin)
	exchange(t, c, a)
	a.close()
	c.close()
	waitFor(t, "room A to go", func() bool { return srv.Stats().Rooms == 0 })
	join(t, base, roomB) // room A is gone, so room B may open
}

func TestIdleTimeout(t *testing.T) {
	srv, base := start(t, Options{IdleTimeout: time.Second})
	a := join(t, base, roomA) // answers pings
	idle := dialRaw(t, base, roomA)
	joined := a.expect(TypeJoin)
	if m := a.expect(TypeLeave); m.ID != joined.ID {
		t.Fatalf("%+v, want the leave of %s", m, joined.ID)
	}
	// Read now: the server is waiting for the close reply.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var err error
	for err == nil {
		_, _, err = idle.Read(ctx) // the welcome, then the close
	}
	if websocket.CloseStatus(err) != CloseTimeout {
		t.Fatalf("idle client: %v", err)
	}
	time.Sleep(1200 * time.Millisecond) // more ping rounds: a, which answers, stays
	if st := srv.Stats(); st.Peers != 1 || st.Kicked != 1 {
		t.Fatalf("stats %+v", st)
	}
	b := join(t, base, roomA)
	a.expect(TypeJoin)
	exchange(t, a, b)
}

func TestShutdown(t *testing.T) {
	checkLeaks(t)
	srv := New(Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	base := "ws" + strings.TrimPrefix(hs.URL, "http")
	a, b, c := join(t, base, roomA), join(t, base, roomA), join(t, base, roomB)
	ep, err := srv.Join(context.Background(), roomA)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	t0 := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	for _, x := range []*client{a, b, c} {
		x.expectClosed(websocket.StatusGoingAway)
	}
	for range ep.Recv() { // drains a's and b's joins, then ends
	}
	if !errors.Is(ep.Err(), ErrClosed) {
		t.Fatalf("endpoint: %v", ep.Err())
	}
	if _, err := srv.Join(context.Background(), roomA); !errors.Is(err, ErrClosed) {
		t.Fatalf("Join after shutdown: %v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), wait)
	defer dcancel()
	if _, resp, err := websocket.Dial(dctx, base+"?room="+roomA.String(), nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v %v", resp, err)
	}
	if st := srv.Stats(); st.Peers != 0 || st.Rooms != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The node's in-process endpoint and a WebSocket client signal each other.
func TestEndpoint(t *testing.T) {
	srv, base := start(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ep, err := srv.Join(ctx, roomA)
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Peers()) != 0 || ep.Room() != roomA {
		t.Fatalf("endpoint: %v %v", ep.Peers(), ep.Room())
	}
	recv := func() Message {
		t.Helper()
		select {
		case m, ok := <-ep.Recv():
			if !ok {
				t.Fatalf("endpoint closed: %v", ep.Err())
			}
			return m
		case <-time.After(wait):
			t.Fatal("endpoint: nothing within", wait)
		}
		return Message{}
	}
	br := join(t, base, roomA)
	if !slices.Equal(br.peers, []PeerID{ep.ID()}) {
		t.Fatalf("browser sees %v, want the node %s", br.peers, ep.ID())
	}
	if m := recv(); m.Type != TypeJoin || m.ID != br.id {
		t.Fatalf("%+v", m)
	}
	br.send(Message{Type: TypeOffer, To: ep.ID(), From: "spoofed", SDP: json.RawMessage(`{"type":"offer","sdp":"v=0 browser"}`)})
	if m := recv(); m.Type != TypeOffer || m.From != br.id || !strings.Contains(string(m.SDP), "browser") {
		t.Fatalf("%+v", m)
	}
	if err := ep.Send(ctx, Message{Type: TypeAnswer, To: br.id, SDP: json.RawMessage(`{"type":"answer","sdp":"v=0 node"}`)}); err != nil {
		t.Fatal(err)
	}
	if m := br.expect(TypeAnswer); m.From != ep.ID() || !strings.Contains(string(m.SDP), "node") {
		t.Fatalf("%+v", m)
	}
	if err := ep.Send(ctx, Message{Type: TypeCandidate, To: br.id, Candidate: json.RawMessage(`{"candidate":"candidate:2 1 udp 1 127.0.0.1 6000 typ host"}`)}); err != nil {
		t.Fatal(err)
	}
	if m := br.expect(TypeCandidate); m.From != ep.ID() {
		t.Fatalf("%+v", m)
	}
	if err := ep.Send(ctx, Message{Type: TypeAnswer, To: "nobody", SDP: json.RawMessage(`"x"`)}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("to nobody: %v", err)
	}
	if err := ep.Send(ctx, Message{Type: TypeOffer, To: br.id}); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("no sdp: %v", err)
	}
	if got := ep.List(); !slices.Equal(got, []PeerID{br.id}) {
		t.Fatalf("List %v", got)
	}
	br2 := join(t, base, roomA)
	recv() // join
	br.expect(TypeJoin)
	br2.close()
	if m := recv(); m.Type != TypeLeave || m.ID != br2.id {
		t.Fatalf("%+v", m)
	}
	br.expect(TypeLeave)

	cancel() // the endpoint leaves with its context
	if m := br.expect(TypeLeave); m.ID != ep.ID() {
		t.Fatalf("%+v", m)
	}
	for range ep.Recv() {
	}
	if err := ep.Err(); err != nil {
		t.Fatalf("Err after leaving: %v", err)
	}
	if err := ep.Send(context.Background(), Message{Type: TypeAnswer, To: br.id, SDP: json.RawMessage(`"x"`)}); !errors.Is(err, ErrLeft) {
		t.Fatalf("Send after leaving: %v", err)
	}
	ep.Close()
}

// A relay to a full queue fails for the sender; a notification to a full
// queue removes the peer that does not keep up.
func TestBusy(t *testing.T) {
	srv, base := start(t, Options{QueueSize: 4})
	ep, err := srv.Join(context.Background(), roomA) // never drained until the end
	if err != nil {
		t.Fatal(err)
	}
	br := join(t, base, roomA) // the endpoint's queue: join (1)
	for range 5 {
		br.send(Message{Type: TypeCandidate, To: ep.ID(), Candidate: json.RawMessage("null")})
	}
	if m := br.expect(TypeError); m.Code != CodePeerBusy || m.ID != ep.ID() { // the 4th relay
		t.Fatalf("%+v", m)
	}
	if m := br.expect(TypeError); m.Code != CodePeerBusy {
		t.Fatalf("%+v", m)
	}
	if err := ep.Err(); err != nil {
		t.Fatalf("endpoint removed early: %v", err)
	}
	late := join(t, base, roomA) // the endpoint cannot take this join: removed
	if m := br.expect(TypeJoin); m.ID != late.id {
		t.Fatalf("%+v", m)
	}
	for _, x := range []*client{br, late} {
		if m := x.expect(TypeLeave); m.ID != ep.ID() {
			t.Fatalf("%+v", m)
		}
	}
	n := 0
	for range ep.Recv() {
		n++
	}
	if n != 4 || ep.Err() == nil || !strings.Contains(ep.Err().Error(), "too slow") {
		t.Fatalf("endpoint: %d messages, %v", n, ep.Err())
	}
	if st := srv.Stats(); st.Busy != 2 || st.Kicked != 1 || st.Relayed != 3 {
		t.Fatalf("stats %+v", st)
	}
}
