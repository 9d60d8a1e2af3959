//go:build !js

package swarm

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// Prefill offload: a node with a long prompt asks a faster peer holding the
// same model to prefill it over /doppler/prefill/1, imports the KV cache
// the peer streams back, checks it, and decodes locally. The session is a
// PrefillSession (engine.go), so the swarm never sees the engine.

// speeds are the tokens/s a node announces for a model.
type speeds struct{ prefill, decode float64 }

// SetSpeeds sets the prefill and decode tokens/s announced in the model's
// inventory (0 = unknown). Figures are rounded to two significant digits,
// and the inventory is re-announced when the rounded figures change.
func (n *Node) SetSpeeds(id rdrr.ModelID, prefill, decode float64) {
	sp := speeds{round2(prefill), round2(decode)}
	n.mu.Lock()
	if n.speeds == nil {
		n.speeds = map[rdrr.ModelID]speeds{}
	}
	changed := n.speeds[id] != sp
	n.speeds[id] = sp
	n.mu.Unlock()
	if changed {
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
}

func round2(f float64) float64 {
	if !(f > 0) || math.IsInf(f, 0) {
		return 0
	}
	e := math.Pow(10, math.Floor(math.Log10(f))-1)
	return math.Round(f/e) * e
}

// ---- client ----

// OffloadMode says when a node offloads a prefill.
type OffloadMode int

const (
	// OffloadOff never offloads.
	OffloadOff OffloadMode = iota
	// OffloadAuto offloads when the estimate (transfer + the peer's
	// prefill) beats the local prefill.
	OffloadAuto
	// OffloadForce offloads whenever a candidate peer exists (tests, demos).
	OffloadForce
)

func (m OffloadMode) String() string {
	switch m {
	case OffloadAuto:
		return "auto"
	case OffloadForce:
		return "force"
	}
	return "off"
}

// ParseOffloadMode parses auto, force or off.
func ParseOffloadMode(s string) (OffloadMode, error) {
	switch strings.ToLower(s) {
	case "off", "":
		return OffloadOff, nil
	case "auto":
		return OffloadAuto, nil
	case "force":
		return OffloadForce, nil
	}
	return OffloadOff, fmt.Errorf("offload mode %q: want auto, force or off", s)
}

// Verification tolerances: the largest |Δlogit| of the last prompt
// position between the peer's logits and this node's recomputation over
// the peer's KV cache.
const (
	ToleranceF16 = 5e-2
	ToleranceF32 = 1e-2
)

// OffloadPolicy configures one Offload call.
type OffloadPolicy struct {
	Mode OffloadMode
	// Peers lists the peer IDs a prefill may go to; empty allows none
	// unless Any.
	Peers []string
	Any   bool
	// LocalTokS is this node's prefill speed for the model; 0 = measured
	// with a short warm-up on the session, once per model, and remembered.
	LocalTokS float64
	// Wait is how long to wait for a candidate's inventory when none is
	// known yet (0 = none in auto mode, 3 s with force).
	Wait time.Duration
	// Timeout bounds the exchange with the peer (0 = max(10 s, 4 × the
	// estimate)).
	Timeout time.Duration
	// Tolerance is the largest |Δlogit| accepted (0 = ToleranceF16 or
	// ToleranceF32 by the session's KV type).
	Tolerance float64
	// MinTokens: in auto mode, shorter prompts are prefilled locally (16).
	MinTokens int
}

// OffloadResult says what Offload did.
type OffloadResult struct {
	Used   bool
	Peer   string // the peer asked, if any
	Reason string // why the prefill stays local (empty when Used)
	// Estimates: remote (transfer + the peer's prefill) and local.
	Estimate, Local time.Duration
	KVBytes         int           // raw KV bytes of the prompt
	Received        uint64        // payload bytes received
	Compressed      bool          // the peer sent DEFLATE
	Elapsed         time.Duration // exchange + import + check
	MaxDiff         float64       // largest |Δlogit| of the check
	Rejected        bool          // the peer's result failed the check
}

// offloadState is a node's prefill-offload client memory.
type offloadState struct {
	local map[rdrr.ModelID]float64 // measured local prefill tokens/s
	peers map[string]*offloadPeer
}

type offloadPeer struct {
	rtt      time.Duration
	tput     float64 // bytes/s of KV payload
	failures int
	bad      bool // sent a result that failed the check: never asked again
}

type offloadCand struct {
	peer string
	toks float64
	est  time.Duration
}

// Offload tries to have a peer prefill prompt for session s of model id,
// whose manifest gives cfg (the vocabulary and the KV cache's shape). The
// session must be empty. On success (Used) the session
// holds positions [0, len(prompt)-1) — the peer's KV cache, checked by
// recomputing the last position locally and comparing its logits with the
// peer's — and the caller continues with Generate(prompt[len-1:]). When
// not Used, the session is empty again and Reason says why: no candidate,
// local is faster, the peer failed, was busy, stalled past Timeout, or
// sent a cache that failed the check (that peer is never asked again).
// The error is non-nil only for a session Offload cannot use.
func (n *Node) Offload(ctx context.Context, id rdrr.ModelID, cfg rdrr.Config, s PrefillSession, prompt []int, p OffloadPolicy) (OffloadResult, error) {
	var res OffloadResult
	if p.Mode == OffloadOff {
		res.Reason = "offload off"
		return res, nil
	}
	if s.Pos() != 0 {
		return res, fmt.Errorf("offload: the session holds %d positions; it must be empty", s.Pos())
	}
	np := len(prompt)
	switch {
	case np < 2:
		res.Reason = "prompt too short"
		return res, nil
	case np > wire.MaxPrefillTokens || np > s.Context():
		res.Reason = fmt.Sprintf("a %d-token prompt is too long to offload", np)
		return res, nil
	}
	minTok := p.MinTokens
	if minTok <= 0 {
		minTok = 16
	}
	if p.Mode == OffloadAuto && np < minTok {
		res.Reason = fmt.Sprintf("prompt shorter than %d tokens", minTok)
		return res, nil
	}
	res.KVBytes = s.KVBytes(np)
	wait := p.Wait
	if wait == 0 && p.Mode == OffloadForce {
		wait = 3 * time.Second
	}
	cands := n.offloadCandidates(ctx, id, p, wait)
	if len(cands) == 0 {
		res.Reason = "no peer advertises a prefill speed for this model"
		return res, nil
	}
	for i := range cands {
		cands[i].est = n.offloadEstimate(cands[i], np, res.KVBytes)
	}
	slices.SortFunc(cands, func(a, b offloadCand) int { return cmp.Compare(a.est, b.est) })
	c := cands[0]
	res.Peer, res.Estimate = c.peer, c.est
	if p.Mode == OffloadAuto {
		local := p.LocalTokS
		if local <= 0 {
			var err error
			if local, err = n.localPrefillSpeed(id, s, prompt); err != nil {
				return res, err
			}
		}
		res.Local = time.Duration(float64(np) / local * float64(time.Second))
		if res.Estimate >= res.Local {
			res.Reason = fmt.Sprintf("local prefill is faster (%v vs %v at peer %s)", res.Local.Round(time.Millisecond), res.Estimate.Round(time.Millisecond), shortID(c.peer))
			return res, nil
		}
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = max(10*time.Second, 4*res.Estimate)
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: make([]uint32, np)}
	if !s.KVF16() {
		req.KV = wire.KVF32
	}
	for i, t := range prompt {
		if t < 0 || t >= cfg.VocabSize {
			res.Reason = fmt.Sprintf("token id %d outside the vocabulary", t)
			return res, nil
		}
		req.Tokens[i] = uint32(t)
	}
	n.mu.Lock()
	r := n.remote(c.peer)
	n.mu.Unlock()
	pr, st, err := r.Prefill(rctx, req, p2p.PrefillExpect{KVBytes: s.KVBytes, Vocab: cfg.VocabSize, Wait: timeout})
	if err != nil {
		n.offloadPeerUpdate(c.peer, func(op *offloadPeer) { op.failures++ })
		res.Reason = fmt.Sprintf("peer %s: %v", shortID(c.peer), err)
		res.Elapsed = time.Since(start)
		n.log.Info("offload: peer failed; prefilling locally", "peer", c.peer, "err", err)
		return res, nil
	}
	res.Received, res.Compressed = st.Received, st.Compressed
	if d := st.Total - st.Wait; d > 0 {
		n.offloadPeerUpdate(c.peer, func(op *offloadPeer) {
			op.rtt = st.Wait - time.Duration(float64(np)/c.toks*float64(time.Second))
			op.rtt = max(op.rtt, 0)
			op.tput = float64(st.Received) / d.Seconds()
			op.failures = 0
		})
	}
	// Check: import [0, n-1), recompute the last position, compare.
	prefix := kvPrefix(pr.KV, cfg.Layers*2*cfg.KVHeads, np, np-1)
	tol := p.Tolerance
	if tol <= 0 {
		tol = ToleranceF16
		if !s.KVF16() {
			tol = ToleranceF32
		}
	}
	if err := s.ImportKV(np-1, prefix); err != nil {
		s.Reset()
		return res, fmt.Errorf("offload: import the peer's KV cache: %w", err)
	}
	logits, err := s.Forward(prompt[np-1:])
	if err != nil {
		s.Reset()
		return res, fmt.Errorf("offload: recompute the last position: %w", err)
	}
	diff, same := compareLogits(logits, pr.Logits)
	res.MaxDiff = diff
	if !(diff <= tol) || !same {
		s.Reset()
		n.offloadPeerUpdate(c.peer, func(op *offloadPeer) { op.bad = true })
		res.Rejected = true
		res.Elapsed = time.Since(start)
		res.Reason = fmt.Sprintf("peer %s sent a KV cache that fails the check (max |Δlogit| %.3g, argmax equal %v)", shortID(c.peer), diff, same)
		n.log.Warn("offload: rejected a peer's prefill; prefilling locally", "peer", c.peer, "max_diff", diff, "argmax_equal", same)
		return res, nil
	}
	// Back to [0, n-1): the caller's Generate runs the last token again
	// (its sampler needs that step).
	if err := s.ImportKV(np-1, prefix); err != nil {
		s.Reset()
		return res, fmt.Errorf("offload: import the peer's KV cache: %w", err)
	}
	res.Used = true
	res.Elapsed = time.Since(start)
	return res, nil
}

// offloadCandidates lists the allowed peers whose inventory holds the model
// complete and advertises a prefill speed, waiting up to wait for one.
func (n *Node) offloadCandidates(ctx context.Context, id rdrr.ModelID, p OffloadPolicy, wait time.Duration) []offloadCand {
	n.mu.Lock()
	_, err := n.track(id)
	n.mu.Unlock()
	if err != nil {
		return nil
	}
	deadline := time.Now().Add(wait)
	for {
		var out []offloadCand
		for _, e := range n.host.Inventories(id) {
			inv := e.Inv
			if e.Peer == n.ID() || !(inv.PrefillTokS > 0) || (!p.Any && !slices.Contains(p.Peers, e.Peer)) {
				continue
			}
			complete := slices.Contains(inv.Models, id) || (inv.Have.N > 0 && inv.Have.Count() == inv.Have.N)
			n.mu.Lock()
			bad := n.offload.peers[e.Peer] != nil && n.offload.peers[e.Peer].bad
			n.mu.Unlock()
			if complete && !bad {
				out = append(out, offloadCand{peer: e.Peer, toks: inv.PrefillTokS})
			}
		}
		if len(out) > 0 || !time.Now().Before(deadline) {
			return out
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Defaults for a peer this node never measured.
const (
	defaultRTT        = 20 * time.Millisecond
	defaultThroughput = 10e6 // bytes/s
)

// offloadEstimate: rtt + kvBytes/throughput + prompt/peer's tokens/s,
// scaled up by recent failures. Throughput and RTT come from past
// exchanges with the peer, else the store's shard-fetch measurements,
// else conservative defaults.
func (n *Node) offloadEstimate(c offloadCand, np, kvBytes int) time.Duration {
	rtt, tput, fails, measured := defaultRTT, float64(defaultThroughput), 0, false
	n.mu.Lock()
	if op := n.offload.peers[c.peer]; op != nil {
		fails = op.failures
		if op.tput > 0 {
			rtt, tput, measured = op.rtt, op.tput, true
		}
	}
	n.mu.Unlock()
	if !measured {
		for _, ps := range n.store.PeerStats() {
			if ps.ID == c.peer && ps.Samples > 0 && ps.Throughput > 0 {
				rtt, tput = ps.RTT, ps.Throughput
			}
		}
	}
	sec := rtt.Seconds() + float64(kvBytes)/tput + float64(np)/c.toks
	return time.Duration(sec * float64(1+fails) * float64(time.Second))
}

func (n *Node) offloadPeerUpdate(peer string, f func(*offloadPeer)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.offload.peers == nil {
		n.offload.peers = map[string]*offloadPeer{}
	}
	op := n.offload.peers[peer]
	if op == nil {
		op = &offloadPeer{}
		n.offload.peers[peer] = op
	}
	f(op)
}

// localPrefillSpeed measures (once per model) this node's prefill speed on
// the first tokens of the prompt: one pass to build the plans, one timed,
// then the session is emptied again.
func (n *Node) localPrefillSpeed(id rdrr.ModelID, s PrefillSession, prompt []int) (float64, error) {
	n.mu.Lock()
	v, ok := n.offload.local[id]
	n.mu.Unlock()
	if ok {
		return v, nil
	}
	k := min(len(prompt), 128)
	var d time.Duration
	for range 2 {
		s.Reset()
		start := time.Now()
		if _, err := s.Forward(prompt[:k]); err != nil {
			s.Reset()
			return 0, fmt.Errorf("offload: measure the local prefill: %w", err)
		}
		d = time.Since(start)
	}
	s.Reset()
	v = float64(k) / max(d.Seconds(), 1e-6)
	n.mu.Lock()
	if n.offload.local == nil {
		n.offload.local = map[rdrr.ModelID]float64{}
	}
	n.offload.local[id] = v
	n.mu.Unlock()
	return v, nil
}

// SetLocalPrefillSpeed records this node's measured prefill speed for a
// model (say, from a previous generation's statistics) for Offload's
// estimate.
func (n *Node) SetLocalPrefillSpeed(id rdrr.ModelID, tokS float64) {
	if !(tokS > 0) {
		return
	}
	n.mu.Lock()
	if n.offload.local == nil {
		n.offload.local = map[rdrr.ModelID]float64{}
	}
	n.offload.local[id] = tokS
	n.mu.Unlock()
}

// kvPrefix cuts an exported cache of n positions (blocks × n rows, as
// PrefillSession.ExportKV lays it out) down to its first k positions.
func kvPrefix(kv []byte, blocks, n, k int) []byte {
	if k == n {
		return kv
	}
	row := len(kv) / (blocks * n)
	out := make([]byte, 0, blocks*k*row)
	for b := 0; b < blocks; b++ {
		off := b * n * row
		out = append(out, kv[off:off+k*row]...)
	}
	return out
}

// compareLogits returns max |a-b| and whether the argmaxes agree.
func compareLogits(a, b []float32) (float64, bool) {
	if len(a) != len(b) || len(a) == 0 {
		return math.Inf(1), false
	}
	var d float64
	ia, ib := 0, 0
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		if math.IsNaN(float64(a[i])) {
			d = math.Inf(1)
		}
		if a[i] > a[ia] {
			ia = i
		}
		if b[i] > b[ib] {
			ib = i
		}
	}
	return d, ia == ib
}

// ParsePeerList splits a comma-separated list of peer IDs.
func ParsePeerList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
