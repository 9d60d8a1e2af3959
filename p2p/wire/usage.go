package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/doppler-llm/doppler/rdrr"
)

// Expert-usage gossip (gatekeeper prefetch). Both messages travel on a
// model's usage topic (/doppler/usage/<model-id>), one frame per message.

// Limits of the usage messages.
const (
	MaxUsageCounts    = 1 << 14 // (layer, expert) counts in one Usage
	MaxUsagePairs     = 1 << 14 // co-firing pairs in one Usage
	MaxClusters       = 1 << 12 // clusters in one Clusters message
	MaxClusterSize    = 256     // experts in one cluster
	MaxClusterExperts = 1 << 14 // experts over all clusters of one message
	// MaxUsageFrame bounds a Usage or Clusters frame (gossip messages are ≤ 1 MiB).
	MaxUsageFrame = 1 << 20
)

// ExpertCount is how often one expert was chosen.
type ExpertCount struct {
	E Expert
	N uint32
}

// ExpertPair is how often two experts were chosen by the same token
// (any layers). A < B in (layer, expert) order.
type ExpertPair struct {
	A, B Expert
	N    uint32
}

// Usage is a peer's expert-usage statistics for a model: counts since the
// peer started (halved now and then, so recent use weighs more). Receivers
// keep only a peer's latest Usage, so re-sends do not double count.
type Usage struct {
	Peer   string // the sending peer's ID; receivers check it is the sender
	Model  rdrr.ModelID
	Seq    uint64 // increases with every Usage of a peer
	Tokens uint64 // tokens the counts cover
	// Counts, strictly increasing by expert, each N ≥ 1.
	Counts []ExpertCount
	// Pairs, strictly increasing by (A, B), A < B, each N ≥ 1: the
	// most frequent co-firing pairs.
	Pairs []ExpertPair
}

// Clusters is a gatekeeper's grouping of a model's experts into sets that
// fire together. Nodes read a whole cluster ahead when a token picks one
// of its members.
type Clusters struct {
	Peer    string // the gatekeeper's peer ID; receivers check it is the sender
	Model   rdrr.ModelID
	Version uint64 // increases whenever the gatekeeper's clusters change
	// Clusters are disjoint; each holds 2 … MaxClusterSize experts in
	// strictly increasing order.
	Clusters [][]Expert
}

func (*Usage) Type() Type    { return TypeUsage }
func (*Clusters) Type() Type { return TypeClusters }

// Less orders experts by layer, then expert.
func (e Expert) Less(o Expert) bool {
	return e.Layer < o.Layer || e.Layer == o.Layer && e.Expert < o.Expert
}

func pairLess(a, b ExpertPair) bool {
	return a.A.Less(b.A) || a.A == b.A && a.B.Less(b.B)
}

func validPeer(p string) error {
	if len(p) == 0 || len(p) > MaxPeerID || !utf8.ValidString(p) {
		return bad("peer ID of %d bytes", len(p))
	}
	return nil
}

func (m *Usage) validate() error {
	if err := validPeer(m.Peer); err != nil {
		return err
	}
	if len(m.Counts) > MaxUsageCounts {
		return bad("%d counts", len(m.Counts))
	}
	if len(m.Pairs) > MaxUsagePairs {
		return bad("%d pairs", len(m.Pairs))
	}
	for i, c := range m.Counts {
		if c.N == 0 {
			return bad("count 0 for expert %d/%d", c.E.Layer, c.E.Expert)
		}
		if i > 0 && !m.Counts[i-1].E.Less(c.E) {
			return bad("counts out of order at %d", i)
		}
	}
	for i, p := range m.Pairs {
		if p.N == 0 {
			return bad("pair count 0")
		}
		if !p.A.Less(p.B) {
			return bad("pair %d/%d–%d/%d out of order", p.A.Layer, p.A.Expert, p.B.Layer, p.B.Expert)
		}
		if i > 0 && !pairLess(m.Pairs[i-1], p) {
			return bad("pairs out of order at %d", i)
		}
	}
	return nil
}

func appendExpert(b []byte, e Expert) []byte {
	b = binary.BigEndian.AppendUint16(b, e.Layer)
	return binary.BigEndian.AppendUint16(b, e.Expert)
}

func (d *decoder) expert() Expert { return Expert{Layer: d.u16(), Expert: d.u16()} }

func (m *Usage) appendBody(b []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, err
	}
	b = appendBytes(b, []byte(m.Peer))
	b = append(b, m.Model[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, m.Tokens)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Counts)))
	for _, c := range m.Counts {
		b = appendExpert(b, c.E)
		b = binary.BigEndian.AppendUint32(b, c.N)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Pairs)))
	for _, p := range m.Pairs {
		b = appendExpert(b, p.A)
		b = appendExpert(b, p.B)
		b = binary.BigEndian.AppendUint32(b, p.N)
	}
	return b, nil
}

func (m *Usage) decode(d *decoder) error {
	m.Peer = string(d.bytes(1, MaxPeerID, "peer"))
	m.Model = d.hash()
	m.Seq = d.u64()
	m.Tokens = d.u64()
	nc := d.u32()
	if nc > MaxUsageCounts {
		return fmt.Errorf("%w: %d counts > %d", ErrMalformed, nc, MaxUsageCounts)
	}
	m.Counts = nil
	if d.need(int(nc)*8) && nc > 0 {
		m.Counts = make([]ExpertCount, nc)
		for i := range m.Counts {
			m.Counts[i] = ExpertCount{E: d.expert(), N: d.u32()}
		}
	}
	np := d.u32()
	if np > MaxUsagePairs {
		return fmt.Errorf("%w: %d pairs > %d", ErrMalformed, np, MaxUsagePairs)
	}
	m.Pairs = nil
	if d.need(int(np)*12) && np > 0 {
		m.Pairs = make([]ExpertPair, np)
		for i := range m.Pairs {
			m.Pairs[i] = ExpertPair{A: d.expert(), B: d.expert(), N: d.u32()}
		}
	}
	if d.err != nil {
		return nil
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

func (m *Clusters) validate() error {
	if err := validPeer(m.Peer); err != nil {
		return err
	}
	if len(m.Clusters) > MaxClusters {
		return bad("%d clusters", len(m.Clusters))
	}
	total := 0
	for _, c := range m.Clusters {
		if len(c) < 2 || len(c) > MaxClusterSize {
			return bad("cluster of %d experts", len(c))
		}
		total += len(c)
		if total > MaxClusterExperts {
			return bad("more than %d experts in clusters", MaxClusterExperts)
		}
		for i := 1; i < len(c); i++ {
			if !c[i-1].Less(c[i]) {
				return bad("cluster members out of order")
			}
		}
	}
	seen := make(map[Expert]bool, total)
	for _, c := range m.Clusters {
		for _, e := range c {
			if seen[e] {
				return bad("expert %d/%d in two clusters", e.Layer, e.Expert)
			}
			seen[e] = true
		}
	}
	return nil
}

func (m *Clusters) appendBody(b []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, err
	}
	b = appendBytes(b, []byte(m.Peer))
	b = append(b, m.Model[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Version)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Clusters)))
	for _, c := range m.Clusters {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		for _, e := range c {
			b = appendExpert(b, e)
		}
	}
	return b, nil
}

func (m *Clusters) decode(d *decoder) error {
	m.Peer = string(d.bytes(1, MaxPeerID, "peer"))
	m.Model = d.hash()
	m.Version = d.u64()
	n := d.u32()
	if n > MaxClusters {
		return fmt.Errorf("%w: %d clusters > %d", ErrMalformed, n, MaxClusters)
	}
	// Each cluster takes at least 2 + 2×4 bytes: check before allocating.
	m.Clusters = nil
	if !d.need(int(n) * 10) {
		return nil
	}
	if n > 0 {
		m.Clusters = make([][]Expert, 0, n)
	}
	total := 0
	for range n {
		k := int(d.u16())
		if d.err != nil {
			return nil
		}
		if k < 2 || k > MaxClusterSize {
			return fmt.Errorf("%w: cluster of %d experts", ErrMalformed, k)
		}
		if total += k; total > MaxClusterExperts {
			return fmt.Errorf("%w: more than %d experts in clusters", ErrMalformed, MaxClusterExperts)
		}
		if !d.need(4 * k) {
			return nil
		}
		c := make([]Expert, k)
		for i := range c {
			c[i] = d.expert()
		}
		m.Clusters = append(m.Clusters, c)
	}
	if d.err != nil {
		return nil
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}
