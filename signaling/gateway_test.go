//go:build !js

package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/p2p/rtc"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// peerTimeout is the rtc peers' frame timeouts in tests: pion's SCTP
// streams keep a goroutine until a read deadline passes, even closed, so
// it must be well under checkLeaks' wait.
const peerTimeout = 2 * time.Second

// startGateway starts a signaling server on 127.0.0.1 (rooms: the models
// in st) and a loopback gateway serving st, closed at cleanup.
func startGateway(t *testing.T, st *swarm.Store, opts GatewayOptions) (*Server, *Gateway, string) {
	t.Helper()
	srv, base := start(t, Options{Allow: func(room rdrr.ModelID) bool { _, _, ok := st.Manifest(room); return ok }})
	opts.Loopback = true
	if opts.Peer.FrameTimeout == 0 {
		opts.Peer.RequestTimeout, opts.Peer.FrameTimeout = peerTimeout, peerTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	g, err := NewGateway(srv, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeGateway(t, g) })
	return srv, g, base
}

// testWriter writes log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// closeGateway closes g, failing the test if it takes more than wait.
func closeGateway(t *testing.T, g *Gateway) {
	t.Helper()
	done := make(chan struct{})
	go func() { g.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("gateway Close did not return within %v", wait)
	}
}

// addRoom has g answer in id's room for the rest of the test.
func addRoom(t *testing.T, g *Gateway, id rdrr.ModelID) {
	t.Helper()
	if err := g.Add(t.Context(), id); err != nil {
		t.Fatal(err)
	}
}

// browser is a Go stand-in for a browser tab: a WebSocket signaling
// client and an offering rtc.Peer (loopback), the node being the one peer
// of its welcome. A goroutine relays the node's answer and candidates to
// the current peer.
type browser struct {
	t    *testing.T
	cl   *client
	node PeerID
	invs chan *wire.Inventory
	msgs chan Message // every message seen (answers and candidates relayed to the peer)
	done chan struct{}

	mu   sync.Mutex
	peer *rtc.Peer
}

// newBrowser joins room and offers to g's node: the SDP as an
// RTCSessionDescription object, or a bare string when bare.
func newBrowser(t *testing.T, g *Gateway, base string, room rdrr.ModelID, bare bool) *browser {
	t.Helper()
	node, ok := g.ID(room)
	if !ok {
		t.Fatalf("the gateway is not in room %s", room.Short())
	}
	cl := join(t, base, room)
	if !slices.Contains(cl.peers, node) {
		t.Fatalf("welcome lists %v, without the node %s", cl.peers, node)
	}
	b := &browser{t: t, cl: cl, node: node, invs: make(chan *wire.Inventory, 16),
		msgs: make(chan Message, 256), done: make(chan struct{})}
	t.Cleanup(func() {
		cl.close()
		<-b.done
	})
	go b.pump()
	b.connect(bare)
	return b
}

// connect offers to the node with a new peer, which becomes b's.
func (b *browser) connect(bare bool) *rtc.Peer {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, offer, err := rtc.Dial(ctx, rtc.Options{Loopback: true, PeerID: "node", FrameTimeout: peerTimeout, DialTimeout: wait})
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { p.Close() })
	p.OnInventory(func(inv *wire.Inventory) {
		select {
		case b.invs <- inv:
		default:
		}
	})
	b.mu.Lock()
	b.peer = p
	b.mu.Unlock()
	var raw []byte
	if bare {
		raw, _ = json.Marshal(offer)
	} else {
		raw, _ = json.Marshal(map[string]string{"type": "offer", "sdp": offer})
	}
	b.cl.send(Message{Type: TypeOffer, To: b.node, SDP: raw})
	// Candidates after the offer, as a browser trickles them.
	p.OnCandidate(func(c string) {
		b.write(Message{Type: TypeCandidate, To: b.node, Candidate: json.RawMessage(c)})
	})
	return p
}

// current is b's peer.
func (b *browser) current() *rtc.Peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peer
}

// write sends m from any goroutine; errors (the socket closed) are ignored.
func (b *browser) write(m Message) {
	raw, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b.cl.c.Write(ctx, websocket.MessageText, raw)
}

// pump applies the node's answer and candidates to the current peer,
// checking their form, and passes every message on to msgs.
func (b *browser) pump() {
	defer close(b.done)
	for {
		var m Message
		select {
		case m = <-b.cl.msgs:
		case <-b.cl.done:
			return
		case <-b.cl.stop:
			return
		}
		switch m.Type {
		case TypeAnswer:
			var d struct{ Type, SDP string }
			if err := json.Unmarshal(m.SDP, &d); err != nil || d.Type != "answer" || d.SDP == "" || m.From != b.node {
				b.t.Errorf("answer %s from %s: want {\"type\":\"answer\",\"sdp\":…} from %s", m.SDP, m.From, b.node)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			if err := b.current().Accept(ctx, string(m.SDP)); err != nil {
				b.t.Errorf("accept: %v", err)
			}
			cancel()
		case TypeCandidate:
			var c struct {
				Candidate string `json:"candidate"`
			}
			if err := json.Unmarshal(m.Candidate, &c); err != nil || c.Candidate == "" {
				b.t.Errorf("candidate %s: want an RTCIceCandidateInit", m.Candidate)
			}
			if err := b.current().AddCandidate(string(m.Candidate)); err != nil {
				b.t.Errorf("add candidate: %v", err)
			}
		}
		select {
		case b.msgs <- m:
		default:
		}
	}
}

// inventory waits for the node's next inventory.
func (b *browser) inventory() *wire.Inventory {
	b.t.Helper()
	select {
	case inv := <-b.invs:
		return inv
	case <-time.After(3 * wait):
		b.t.Fatalf("no inventory from the node within %v", 3*wait)
	}
	return nil
}

// fetchAll fetches the manifest and every block of every shard through
// the browser's connection and checks them against st.
func (b *browser) fetchAll(ctx context.Context, st *swarm.Store, id rdrr.ModelID) error {
	man, sig, err := b.current().Manifest(ctx, id)
	if err != nil {
		return err
	}
	want, wsig, _ := st.Manifest(id)
	if !bytes.Equal(man, want) || !bytes.Equal(sig, wsig) {
		return errors.New("manifest differs from the store's")
	}
	m, err := rdrr.ParseManifest(man)
	if err != nil {
		return err
	}
	for _, sh := range m.Shards {
		got := make([]byte, 0, sh.Size)
		err := b.current().ReadBlocks(ctx, sh, 0, len(sh.Blocks), func(i int, data []byte) error {
			got = append(got, data...)
			return nil
		})
		if err != nil {
			return err
		}
		buf := make([]byte, sh.Size)
		for i := range sh.Blocks {
			off := int64(i) * sh.BlockSize
			if _, err := st.ReadBlock(sh.Hash, i, buf[off:min(off+sh.BlockSize, sh.Size)]); err != nil {
				return err
			}
		}
		if !bytes.Equal(got, buf) {
			return fmt.Errorf("shard %s: bytes differ", sh.Hash.Short())
		}
	}
	return nil
}

func checkInventory(t *testing.T, inv *wire.Inventory, node PeerID, id rdrr.ModelID, shards int, models ...rdrr.ModelID) {
	t.Helper()
	if inv.Peer != string(node) || inv.Model != id || inv.Have.N != shards || inv.Have.Count() != shards ||
		!slices.Equal(inv.Models, models) || inv.TTL == 0 || inv.Seq == 0 {
		t.Fatalf("inventory %+v: want peer %s, model %s, %d shards held, models %v", inv, node, id.Short(), shards, models)
	}
}

func shardCount(t *testing.T, st *swarm.Store, id rdrr.ModelID) int {
	s, ok := st.Status(id)
	if !ok {
		t.Fatal("model not in store")
	}
	return s.Shards
}

// A browser connects through the signaling, fetches the manifest and every
// block, and gets the node's inventory, again when the store changes.
func TestGatewayFetch(t *testing.T) {
	st, id := seedStore(t)
	_, g, base := startGateway(t, st, GatewayOptions{ChangeDelay: 10 * time.Millisecond})
	addRoom(t, g, id)
	addRoom(t, g, id) // a no-op
	b := newBrowser(t, g, base, id, false)
	n := shardCount(t, st, id)
	checkInventory(t, b.inventory(), b.node, id, n, id)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.fetchAll(ctx, st, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection counted", func() bool { return g.Stats().Connected == 1 })
	if s := g.Stats(); s.Rooms != 1 || s.Peers != 1 || s.Answered != 1 || s.Refused != 0 || s.Bad != 0 {
		t.Fatalf("stats %+v", s)
	}

	// A second model in the store: the inventory is re-sent, listing it.
	dir := testmodel.Convert(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{BlockSize: 32 << 10})
	id2, err := st.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	both := []rdrr.ModelID{id, id2}
	slices.SortFunc(both, func(a, b rdrr.ModelID) int { return bytes.Compare(a[:], b[:]) })
	for {
		inv := b.inventory()
		if len(inv.Models) == 2 {
			checkInventory(t, inv, b.node, id, n, both...)
			break
		}
	}
}

// Two browsers at once, one offering a bare SDP string, fetch in parallel.
func TestGatewayTwoBrowsers(t *testing.T) {
	st, id := seedStore(t)
	_, g, base := startGateway(t, st, GatewayOptions{})
	addRoom(t, g, id)
	var bs []*browser
	for i := range 2 {
		bs = append(bs, newBrowser(t, g, base, id, i == 1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(bs))
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.fetchAll(ctx, st, id)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("browser %d: %v", i, err)
		}
	}
	for _, b := range bs {
		checkInventory(t, b.inventory(), b.node, id, shardCount(t, st, id), id)
	}
	waitFor(t, "the connections counted", func() bool { return g.Stats().Connected == 2 })
	if s := g.Stats(); s.Peers != 2 || s.Answered != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// A browser leaving the room closes the node's connection to it; a second
// offer from a browser replaces its connection.
func TestGatewayLeaveReplace(t *testing.T) {
	st, id := seedStore(t)
	_, g, base := startGateway(t, st, GatewayOptions{})
	addRoom(t, g, id)
	a := newBrowser(t, g, base, id, false)
	b := newBrowser(t, g, base, id, false)
	a.inventory()
	b.inventory()
	if s := g.Stats(); s.Peers != 2 {
		t.Fatalf("stats %+v, want 2 connections", s)
	}

	a.cl.close()
	waitFor(t, "the leaver's connection closed", func() bool { return g.Stats().Peers == 1 })
	expectDone(t, a.current())

	old := b.current()
	b.connect(false)
	b.inventory()
	waitFor(t, "the new connection", func() bool { return g.Stats().Connected == 3 })
	if s := g.Stats(); s.Peers != 1 || s.Answered != 3 {
		t.Fatalf("stats %+v, want 1 connection, 3 answered", s)
	}
	expectDone(t, old)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.fetchAll(ctx, st, id); err != nil {
		t.Fatal(err)
	}
}

// expectDone waits for the node to have closed p's connection.
func expectDone(t *testing.T, p *rtc.Peer) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(3 * wait):
		t.Fatalf("a connection the node closed is still up after %v", 3*wait)
	}
}

// Malformed offers are answered with nothing; the node keeps answering.
func TestGatewayBadOffers(t *testing.T) {
	st, id := seedStore(t)
	_, g, base := startGateway(t, st, GatewayOptions{})
	addRoom(t, g, id)
	node, _ := g.ID(id)
	bad := []struct {
		name string
		sdp  string
	}{
		{"garbage string", `"hello"`},
		{"garbage sdp", `{"type":"offer","sdp":"v=0\r\nnonsense"}`},
		{"wrong type", `{"type":"answer","sdp":"v=0\r\n"}`},
		{"no type", `{"sdp":"v=0\r\n"}`},
		{"empty sdp", `{"type":"offer","sdp":""}`},
		{"empty string", `""`},
		{"number", `42`},
		{"array", `[1,2]`},
		{"object of the wrong shape", `{"type":{"a":1}}`},
	}
	// One browser per offer: a second offer from one would replace the
	// first before it is answered, or refused.
	var cls []*client
	for _, c := range bad {
		cl := join(t, base, id)
		cl.send(Message{Type: TypeOffer, To: node, SDP: json.RawMessage(c.sdp)})
		cls = append(cls, cl)
	}
	// Candidates and answers with no connection are ignored too.
	cls[0].send(Message{Type: TypeCandidate, To: node, Candidate: json.RawMessage(`{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}`)})
	cls[0].send(Message{Type: TypeAnswer, To: node, SDP: json.RawMessage(`{"type":"answer","sdp":"v=0"}`)})
	waitFor(t, "the bad offers", func() bool { return g.Stats().Bad >= uint64(len(bad)) })
	time.Sleep(100 * time.Millisecond)
	for i, cl := range cls {
		for done := false; !done; {
			select {
			case m := <-cl.msgs:
				if m.Type != TypeJoin {
					t.Errorf("%s: the node sent %+v", bad[i].name, m)
				}
			default:
				done = true
			}
		}
	}
	if s := g.Stats(); s.Peers != 0 || s.Answered != 0 || s.Rooms != 1 || s.Bad != uint64(len(bad)) {
		t.Fatalf("stats %+v, want %d bad offers", s, len(bad))
	}
	b := newBrowser(t, g, base, id, false)
	checkInventory(t, b.inventory(), node, id, shardCount(t, st, id), id)
}

// Offers beyond MaxRoomPeers or MaxPeers are ignored until a connection
// ends.
func TestGatewayLimits(t *testing.T) {
	st, id := seedStore(t)
	for _, c := range []struct {
		name string
		opts GatewayOptions
	}{
		{"room", GatewayOptions{MaxRoomPeers: 1}},
		{"all", GatewayOptions{MaxPeers: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, g, base := startGateway(t, st, c.opts)
			addRoom(t, g, id)
			a := newBrowser(t, g, base, id, false)
			a.inventory()
			b := newBrowser(t, g, base, id, false)
			waitFor(t, "the refusal", func() bool { return g.Stats().Refused == 1 })
			time.Sleep(100 * time.Millisecond)
			select {
			case m := <-b.msgs:
				t.Fatalf("the node sent %+v to a refused browser", m)
			default:
			}
			a.cl.close()
			waitFor(t, "the leaver's connection closed", func() bool { return g.Stats().Peers == 0 })
			b.connect(false)
			b.inventory()
			if s := g.Stats(); s.Peers != 1 || s.Answered != 2 || s.Refused != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// An offerer that never completes the connection is dropped after
// ConnectTimeout.
func TestGatewayConnectTimeout(t *testing.T) {
	st, id := seedStore(t)
	_, g, base := startGateway(t, st, GatewayOptions{ConnectTimeout: 300 * time.Millisecond})
	addRoom(t, g, id)
	node, _ := g.ID(id)
	cl := join(t, base, id)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, offer, err := rtc.Dial(ctx, rtc.Options{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	raw, _ := json.Marshal(map[string]string{"type": "offer", "sdp": offer})
	cl.send(Message{Type: TypeOffer, To: node, SDP: raw}) // the answer is never applied
	cl.expectRelay(TypeAnswer)
	waitFor(t, "the connection to be given up", func() bool { s := g.Stats(); return s.Answered == 1 && s.Peers == 0 })
	if s := g.Stats(); s.Connected != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Close with browsers connected returns promptly and leaves the rooms;
// Add after it fails.
func TestGatewayClose(t *testing.T) {
	st, id := seedStore(t)
	srv, g, base := startGateway(t, st, GatewayOptions{})
	addRoom(t, g, id)
	var bs []*browser
	for range 2 {
		b := newBrowser(t, g, base, id, false)
		b.inventory()
		bs = append(bs, b)
	}
	// A fetch in flight when the gateway closes.
	m, err := rdrr.ParseManifest(must(st.Manifest(id)))
	if err != nil {
		t.Fatal(err)
	}
	fetched := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
		defer cancel()
		fetched <- bs[0].current().ReadBlocks(ctx, m.Shards[0], 0, len(m.Shards[0].Blocks), func(int, []byte) error {
			time.Sleep(10 * time.Millisecond)
			return nil
		})
	}()
	start := time.Now()
	closeGateway(t, g)
	t.Logf("Close took %v", time.Since(start))
	if s := g.Stats(); s.Peers != 0 || s.Rooms != 0 {
		t.Fatalf("stats after Close %+v", s)
	}
	if n := srv.Stats().RoomPeers[id.String()]; n != 2 {
		t.Fatalf("room has %d peers after Close, want the 2 browsers", n)
	}
	if err := g.Add(context.Background(), id); !errors.Is(err, ErrGatewayClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
	<-fetched // ends one way or the other, bounded by its context
	for _, b := range bs {
		expectDone(t, b.current())
	}
}

func must(b, _ []byte, ok bool) []byte {
	if !ok {
		panic("no manifest")
	}
	return b
}

// Rooms come and go: unknown models are refused, Remove and the Add
// context leave, a server shutdown ends them.
func TestGatewayRooms(t *testing.T) {
	st, id := seedStore(t)
	srv, g, _ := startGateway(t, st, GatewayOptions{})
	if err := g.Add(context.Background(), roomA); !errors.Is(err, ErrUnknownRoom) {
		t.Fatalf("Add of a model not in the store: %v", err)
	}
	roomPeers := func() int { return srv.Stats().RoomPeers[id.String()] }

	ctx, cancel := context.WithCancel(context.Background())
	if err := g.Add(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.ID(id); !ok || roomPeers() != 1 {
		t.Fatalf("not in the room after Add")
	}
	cancel()
	waitFor(t, "the room left on cancel", func() bool { return g.Stats().Rooms == 0 && roomPeers() == 0 })

	addRoom(t, g, id)
	g.Remove(id)
	waitFor(t, "the room left on Remove", func() bool { return g.Stats().Rooms == 0 && roomPeers() == 0 })
	if _, ok := g.ID(id); ok {
		t.Fatal("ID after Remove")
	}

	addRoom(t, g, id)
	sctx, scancel := context.WithTimeout(context.Background(), wait)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the room ended by shutdown", func() bool { return g.Stats().Rooms == 0 })
	if err := g.Add(context.Background(), id); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after the server shut down: %v", err)
	}
}

func TestNewGatewayOptions(t *testing.T) {
	if _, err := NewGateway(New(Options{}), nil, GatewayOptions{Loopback: true, ICEServers: []string{"stun:127.0.0.1:3478"}}); err == nil {
		t.Fatal("ICE servers with Loopback accepted")
	}
}

func TestOfferSDP(t *testing.T) {
	for _, c := range []struct {
		raw, want string
		ok        bool
	}{
		{`{"type":"offer","sdp":"v=0\r\n"}`, "v=0\r\n", true},
		{`"v=0\r\n"`, "v=0\r\n", true},
		{`{"type":"answer","sdp":"v=0"}`, "", false},
		{`{"type":"pranswer","sdp":"v=0"}`, "", false},
		{`{"sdp":"v=0"}`, "", false},
		{`{"type":"offer"}`, "", false},
		{`{"type":"offer","sdp":"  "}`, "", false},
		{`"  "`, "", false},
		{`42`, "", false},
		{`null`, "", false},
		{`{"type":"offer","sdp":42}`, "", false},
	} {
		got, err := offerSDP(json.RawMessage(c.raw))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("offerSDP(%s) = %q, %v; want %q, ok %v", c.raw, got, err, c.want, c.ok)
		}
	}
}
