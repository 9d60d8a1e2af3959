//go:build !js

package rtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/rtc/loopback"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// Data channel labels (the protocol's major version is in the label).
const (
	ShardLabel = "doppler-shard/1"
	InvLabel   = "doppler-inv/1"
)

// Message and buffering sizes.
const (
	// MaxMessage is the largest data channel message sent.
	MaxMessage = 16 << 10
	// maxRecvMessage is the largest message accepted (SCTP's default
	// max-message-size), for senders that use bigger messages.
	maxRecvMessage = 64 << 10
	// HighWater: a writer waits while more than this is queued.
	HighWater = 1 << 20
	// LowWater is the BufferedAmountLowThreshold that wakes it.
	LowWater = 256 << 10

	maxPendingCandidates = 64
)

// Errors.
var (
	// ErrClosed: the peer connection is closed or failed.
	ErrClosed = errors.New("rtc: peer connection closed")
	// ErrSignaling: a bad SDP or candidate, or a call out of order.
	ErrSignaling = errors.New("rtc: signaling")
)

// Options configures a Peer. Zero values take the documented defaults.
type Options struct {
	// Loopback: gather and accept UDP4 loopback candidates only (mDNS off,
	// no ICE servers allowed). Set it when the node is bound to loopback.
	Loopback bool
	// ICEServers are STUN/TURN URLs ("stun:host:port"). Empty by default:
	// host candidates only, so no address beyond the host's own is ever
	// learnt or sent.
	ICEServers []string
	// MDNS resolves remote ".local" candidates (browsers hide their
	// addresses behind them) with multicast DNS queries; it never
	// announces a name. Off by default; refused with Loopback.
	MDNS   bool
	Logger *slog.Logger

	// PeerID names the remote peer in errors and ID() (the signaling's name
	// for it). Default "webrtc-" + 8 random hex digits.
	PeerID string

	// Limits; defaults in parentheses, as p2p.Options.
	MaxServing          int           // shard channels served at once (16); more are answered CodeBusy
	MaxBlocksPerRequest int           // largest BlocksRequest.Count served (1024)
	RequestTimeout      time.Duration // server: time to read a request (10 s)
	FrameTimeout        time.Duration // both sides: time to write or read one frame (30 s)
	DialTimeout         time.Duration // client: time for a channel to open, connection included (10 s)

	// ServeUnverified, for tests only, as p2p.Options.ServeUnverified.
	ServeUnverified bool
}

func (o *Options) fill() {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PeerID == "" {
		var b [4]byte
		rand.Read(b[:])
		o.PeerID = "webrtc-" + hex.EncodeToString(b[:])
	}
	if o.MaxServing <= 0 {
		o.MaxServing = 16
	}
	if o.MaxBlocksPerRequest <= 0 {
		o.MaxBlocksPerRequest = 1024
	}
	def(&o.RequestTimeout, 10*time.Second)
	def(&o.FrameTimeout, 30*time.Second)
	def(&o.DialTimeout, 10*time.Second)
}

// Stats counts the frames' bytes on the peer's channels.
type Stats struct {
	Uploaded, Downloaded uint64
	BlocksServed         uint64
}

// Peer is one WebRTC peer connection speaking the shard protocol: it serves
// prov on the channels the remote opens and fetches from the remote
// (Manifest, ReadBlocks: it satisfies swarm.Peer). Safe for concurrent use.
type Peer struct {
	opts Options
	log  *slog.Logger
	pc   *webrtc.PeerConnection
	prov p2p.Provider
	sem  chan struct{}

	ctx    context.Context // canceled by Close or a failed connection
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	closed        bool
	haveRemote    bool
	onCand        func(string)
	localCands    []string
	remoteCands   []webrtc.ICECandidateInit
	onInv         func(*wire.Inventory)
	inv           *stream
	invReady      chan struct{} // closed once inv is set
	invWrite      sync.Mutex
	up, down, blk atomic.Uint64

	// serve answers one shard channel; tests replace it.
	serve func(s *stream)
}

// NewPeer returns a peer connection serving prov (nil serves nothing).
// Nothing is sent until Offer or Answer.
func NewPeer(opts Options, prov p2p.Provider) (*Peer, error) {
	opts.fill()
	if opts.Loopback && len(opts.ICEServers) > 0 {
		return nil, fmt.Errorf("%w: ICE servers with a loopback-only peer", ErrSignaling)
	}
	if opts.Loopback && opts.MDNS {
		return nil, fmt.Errorf("%w: mDNS with a loopback-only peer", ErrSignaling)
	}
	var se webrtc.SettingEngine
	se.DetachDataChannels()
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if opts.MDNS {
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeQueryOnly)
	}
	if opts.Loopback {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetInterfaceFilter(isLoopbackInterface)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
		se.SetIncludeLoopbackCandidate(true)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	var cfg webrtc.Configuration
	for _, u := range opts.ICEServers {
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: []string{u}})
	}
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		return nil, fmt.Errorf("rtc: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{opts: opts, log: opts.Logger.With("peer", opts.PeerID), pc: pc, prov: prov,
		sem: make(chan struct{}, opts.MaxServing), ctx: ctx, cancel: cancel, invReady: make(chan struct{})}
	p.serve = p.serveShard
	pc.OnICECandidate(p.localCandidate)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		p.log.Debug("connection", "state", s)
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			cancel()
		}
	})
	pc.OnDataChannel(p.remoteChannel)
	return p, nil
}

func isLoopbackInterface(name string) bool {
	ifi, err := net.InterfaceByName(name)
	return err == nil && ifi.Flags&net.FlagLoopback != 0
}

// ID names the remote peer (Options.PeerID).
func (p *Peer) ID() string { return p.opts.PeerID }

// Done is closed when the peer is closed or its connection failed.
func (p *Peer) Done() <-chan struct{} { return p.ctx.Done() }

// Stats returns the traffic counters.
func (p *Peer) Stats() Stats {
	return Stats{Uploaded: p.up.Load(), Downloaded: p.down.Load(), BlocksServed: p.blk.Load()}
}

// Dial returns a fetching-side Peer (serving nothing) and its offer: send
// the offer through the signaling, relay candidates with OnCandidate and
// AddCandidate, and pass the answer to Accept. The Peer then fetches with
// Manifest and ReadBlocks (it is a swarm.Peer).
func Dial(ctx context.Context, opts Options) (*Peer, string, error) {
	p, err := NewPeer(opts, nil)
	if err != nil {
		return nil, "", err
	}
	offer, err := p.Offer(ctx)
	if err != nil {
		p.Close()
		return nil, "", err
	}
	return p, offer, nil
}

// Offer starts a connection as the offering side: it opens the inventory
// channel and returns the offer's SDP. Candidates trickle to OnCandidate;
// pass the remote's answer to Accept.
func (p *Peer) Offer(ctx context.Context) (string, error) {
	if err := p.usable(ctx); err != nil {
		return "", err
	}
	dc, err := p.pc.CreateDataChannel(InvLabel, nil)
	if err != nil {
		return "", fmt.Errorf("rtc: %w", err)
	}
	p.onOpen(dc, p.setInventory)
	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("rtc: offer: %w", err)
	}
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return "", fmt.Errorf("rtc: offer: %w", err)
	}
	return offer.SDP, nil
}

// Accept applies the remote's answer to Offer: its SDP, or the JSON of an
// RTCSessionDescription ({"type":"answer","sdp":…}).
func (p *Peer) Accept(ctx context.Context, answerSDP string) error {
	if err := p.usable(ctx); err != nil {
		return err
	}
	return p.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answerSDP})
}

// Answer answers a remote offer (its SDP, or the JSON of an
// RTCSessionDescription, {"type":"offer","sdp":…}, as a browser sends it)
// and returns the answer's SDP. Candidates trickle to OnCandidate.
func (p *Peer) Answer(ctx context.Context, offerSDP string) (string, error) {
	if err := p.usable(ctx); err != nil {
		return "", err
	}
	if err := p.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}); err != nil {
		return "", err
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: answer: %w", ErrSignaling, err)
	}
	if err := p.pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("%w: answer: %w", ErrSignaling, err)
	}
	return answer.SDP, nil
}

// LocalDescription waits (bounded by ctx) until candidate gathering is
// complete and returns the local SDP with every candidate in it, for a
// signaling path that does not trickle.
func (p *Peer) LocalDescription(ctx context.Context) (string, error) {
	if p.pc.LocalDescription() == nil {
		return "", fmt.Errorf("%w: no local description yet", ErrSignaling)
	}
	done := webrtc.GatheringCompletePromise(p.pc)
	select {
	case <-done:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-p.ctx.Done():
		return "", ErrClosed
	}
	return p.pc.LocalDescription().SDP, nil
}

func (p *Peer) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

func (p *Peer) setRemote(d webrtc.SessionDescription) error {
	if t := strings.TrimSpace(d.SDP); strings.HasPrefix(t, "{") {
		// An RTCSessionDescription's JSON, as a browser sends it.
		var j struct {
			Type string `json:"type"`
			SDP  string `json:"sdp"`
		}
		if err := json.Unmarshal([]byte(t), &j); err != nil {
			return fmt.Errorf("%w: remote %s: %w", ErrSignaling, d.Type, err)
		}
		if j.Type != "" && j.Type != d.Type.String() {
			return fmt.Errorf("%w: got an %q where an %s was due", ErrSignaling, j.Type, d.Type)
		}
		d.SDP = j.SDP
	}
	if p.opts.Loopback {
		d.SDP = loopback.SDP(d.SDP)
	}
	if err := p.pc.SetRemoteDescription(d); err != nil {
		return fmt.Errorf("%w: remote %s: %w", ErrSignaling, d.Type, err)
	}
	p.mu.Lock()
	p.haveRemote = true
	pending := p.remoteCands
	p.remoteCands = nil
	p.mu.Unlock()
	for _, c := range pending {
		if err := p.pc.AddICECandidate(c); err != nil {
			p.log.Debug("remote candidate", "candidate", c.Candidate, "err", err)
		}
	}
	return nil
}

// OnCandidate sets the callback that receives each local ICE candidate (the
// JSON of an RTCIceCandidateInit) for the signaling to relay. Candidates
// gathered before it is set are delivered at once. f must not block long.
func (p *Peer) OnCandidate(f func(candidate string)) {
	p.mu.Lock()
	p.onCand = f
	pending := p.localCands
	p.localCands = nil
	p.mu.Unlock()
	for _, c := range pending {
		f(c)
	}
}

func (p *Peer) localCandidate(c *webrtc.ICECandidate) {
	if c == nil {
		return // gathering complete
	}
	init := c.ToJSON()
	if p.opts.Loopback && !loopback.Candidate(init.Candidate) {
		p.log.Warn("dropping a non-loopback local candidate", "candidate", init.Candidate)
		return
	}
	b, err := json.Marshal(init)
	if err != nil {
		return
	}
	p.mu.Lock()
	f := p.onCand
	if f == nil {
		if len(p.localCands) < maxPendingCandidates {
			p.localCands = append(p.localCands, string(b))
		}
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	f(string(b))
}

// AddCandidate adds a remote ICE candidate: the JSON of an
// RTCIceCandidateInit or a bare "candidate:…" line. An empty candidate or
// JSON null (end of candidates) is ignored; with Options.Loopback a candidate that is
// not a UDP4 loopback address is dropped (nil error).
func (p *Peer) AddCandidate(candidate string) error {
	var init webrtc.ICECandidateInit
	s := strings.TrimSpace(candidate)
	if s == "null" {
		return nil // the end of candidates, as signaling relays it
	}
	if strings.HasPrefix(s, "{") {
		if err := json.Unmarshal([]byte(s), &init); err != nil {
			return fmt.Errorf("%w: candidate: %w", ErrSignaling, err)
		}
	} else {
		init.Candidate = s
	}
	init.Candidate = strings.TrimPrefix(strings.TrimSpace(init.Candidate), "a=")
	if init.Candidate == "" {
		return nil
	}
	if p.opts.Loopback && !loopback.Candidate(init.Candidate) {
		p.log.Debug("dropping a non-loopback remote candidate", "candidate", init.Candidate)
		return nil
	}
	if init.SDPMid == nil && init.SDPMLineIndex == nil {
		var zero uint16
		init.SDPMLineIndex = &zero
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if !p.haveRemote {
		defer p.mu.Unlock()
		if len(p.remoteCands) >= maxPendingCandidates {
			return fmt.Errorf("%w: more than %d candidates before the remote description", ErrSignaling, maxPendingCandidates)
		}
		p.remoteCands = append(p.remoteCands, init)
		return nil
	}
	p.mu.Unlock()
	if err := p.pc.AddICECandidate(init); err != nil {
		return fmt.Errorf("%w: candidate: %w", ErrSignaling, err)
	}
	return nil
}

// Close closes the connection and waits for the peer's goroutines.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	inv := p.inv
	p.mu.Unlock()
	p.cancel()
	if inv != nil {
		inv.abort()
	}
	err := p.pc.GracefulClose()
	p.wg.Wait()
	return err
}

// goServe runs f in a goroutine Close waits for; false if closed.
func (p *Peer) goServe(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}
