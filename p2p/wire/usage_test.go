package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func usageSamples() []Message {
	return []Message{
		&Usage{Peer: "12D3KooWpeer", Model: h(0xaa), Seq: 9, Tokens: 100,
			Counts: []ExpertCount{{Expert{0, 1}, 50}, {Expert{0, 3}, 50}, {Expert{1, 1}, 50}},
			Pairs:  []ExpertPair{{Expert{0, 1}, Expert{0, 3}, 49}, {Expert{0, 1}, Expert{1, 1}, 50}}},
		&Usage{Peer: "p", Model: h(1)},
		&Clusters{Peer: "12D3KooWgate", Model: h(0xbb), Version: 2,
			Clusters: [][]Expert{{{0, 0}, {0, 1}, {1, 0}}, {{0, 2}, {3, 3}}}},
		&Clusters{Peer: "g", Model: h(2), Version: 1},
	}
}

func TestUsageKnownEncodings(t *testing.T) {
	cases := []struct {
		m   Message
		hex string
	}{
		{&Usage{Peer: "p", Model: h(0x44), Seq: 1, Tokens: 2,
			Counts: []ExpertCount{{Expert{1, 2}, 3}},
			Pairs:  []ExpertPair{{Expert{0, 1}, Expert{1, 2}, 4}}},
			"0000005210" + "00000001" + "70" + strings.Repeat("44", 32) + "0000000000000001" + "0000000000000002" +
				"00000001" + "0001" + "0002" + "00000003" +
				"00000001" + "0000" + "0001" + "0001" + "0002" + "00000004"},
		{&Clusters{Peer: "g", Model: h(0x55), Version: 7, Clusters: [][]Expert{{{0, 1}, {2, 3}}}},
			"0000003c11" + "00000001" + "67" + strings.Repeat("55", 32) + "0000000000000007" +
				"00000001" + "0002" + "0000" + "0001" + "0002" + "0003"},
	}
	knownEncodings(t, cases, MaxUsageFrame)
	for _, m := range usageSamples() {
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadMessage(bytes.NewReader(b), MaxUsageFrame)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %+v: %+v, %v", m, got, err)
		}
	}
}

// TestUsageRejects: the encoder refuses invalid messages and the decoder
// refuses hostile bodies without allocating for their claimed sizes.
func TestUsageRejects(t *testing.T) {
	bad := []Message{
		&Usage{Model: h(1)}, // no peer
		&Usage{Peer: "p", Counts: []ExpertCount{{Expert{0, 1}, 0}}},
		&Usage{Peer: "p", Counts: []ExpertCount{{Expert{0, 2}, 1}, {Expert{0, 1}, 1}}},
		&Usage{Peer: "p", Counts: []ExpertCount{{Expert{0, 1}, 1}, {Expert{0, 1}, 1}}},
		&Usage{Peer: "p", Pairs: []ExpertPair{{Expert{1, 0}, Expert{0, 1}, 1}}},
		&Usage{Peer: "p", Pairs: []ExpertPair{{Expert{0, 1}, Expert{0, 1}, 1}}},
		&Usage{Peer: "p", Pairs: []ExpertPair{{Expert{0, 1}, Expert{0, 2}, 0}}},
		&Usage{Peer: "p", Counts: make([]ExpertCount, MaxUsageCounts+1)},
		&Clusters{Peer: "g", Clusters: [][]Expert{{{0, 1}}}},
		&Clusters{Peer: "g", Clusters: [][]Expert{{{0, 2}, {0, 1}}}},
		&Clusters{Peer: "g", Clusters: [][]Expert{{{0, 1}, {0, 2}}, {{0, 2}, {0, 3}}}},
		&Clusters{Peer: "g", Clusters: [][]Expert{make([]Expert, MaxClusterSize+1)}},
		&Clusters{Peer: strings.Repeat("x", MaxPeerID+1)},
	}
	for _, m := range bad {
		if _, err := Marshal(m); !errors.Is(err, errField) {
			t.Errorf("Marshal(%+v) = %v", m, err)
		}
	}
	head := func(t Type, peer string) []byte {
		b := []byte{0, 0, 0, 0, byte(t)}
		b = appendBytes(b, []byte(peer))
		b = append(b, make([]byte, 32)...)
		return binary.BigEndian.AppendUint64(b, 1)
	}
	frame := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		return b
	}
	hostile := map[string][]byte{
		// Claims 2^32-1 counts with none present.
		"huge count list": frame(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(head(TypeUsage, "p"), 0), 0xffffffff)),
		// Claims MaxUsageCounts counts with 8 bytes present.
		"short counts":   frame(append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(head(TypeUsage, "p"), 0), MaxUsageCounts), make([]byte, 8)...)),
		"huge clusters":  frame(binary.BigEndian.AppendUint32(head(TypeClusters, "g"), 0xffffffff)),
		"short clusters": frame(append(binary.BigEndian.AppendUint32(head(TypeClusters, "g"), MaxClusters), make([]byte, 10)...)),
		"cluster of 1":   frame(append(binary.BigEndian.AppendUint32(head(TypeClusters, "g"), 1), 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)),
		"cluster too big": frame(append(binary.BigEndian.AppendUint32(head(TypeClusters, "g"), 1),
			append([]byte{0xff, 0xff}, make([]byte, 8)...)...)),
		"empty peer": frame(binary.BigEndian.AppendUint32(head(TypeClusters, ""), 0)),
		"trailing":   frame(append(binary.BigEndian.AppendUint32(head(TypeClusters, "g"), 0), 0)),
	}
	for name, b := range hostile {
		allocs := testing.AllocsPerRun(1, func() { Unmarshal(b, MaxUsageFrame) })
		if _, err := Unmarshal(b, MaxUsageFrame); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
		if allocs > 20 {
			t.Errorf("%s: %v allocations", name, allocs)
		}
	}
}

func FuzzDecodeUsage(f *testing.F)    { fuzzType(f, TypeUsage, usageSamples(), MaxUsageFrame) }
func FuzzDecodeClusters(f *testing.F) { fuzzType(f, TypeClusters, usageSamples(), MaxUsageFrame) }
