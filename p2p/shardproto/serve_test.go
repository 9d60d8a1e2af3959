package shardproto

import (
	"bytes"
	"testing"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// rotProv serves a shard whose stored copy rotted after it was verified:
// ReadBlock returns block 1 with a flipped byte.
type rotProv struct {
	sh   rdrr.Shard
	data []byte
}

func (p *rotProv) Manifest(rdrr.ModelID) ([]byte, []byte, bool) { return nil, nil, false }
func (p *rotProv) Shard(h rdrr.Hash) (rdrr.Shard, bool)         { return p.sh, h == p.sh.Hash }
func (p *rotProv) ReadBlock(_ rdrr.Hash, i int, buf []byte) (int, error) {
	off := int64(i) * p.sh.BlockSize
	n := copy(buf, p.data[off:off+int64(p.sh.BlockLen(i))])
	if i == 1 {
		buf[0] ^= 1
	}
	return n, nil
}

// verifiedRot claims its reads are verified (shardproto.VerifiedProvider).
type verifiedRot struct{ *rotProv }

func (verifiedRot) ReadsVerified() {}

// TestAnswerHashesUnlessVerified: Answer hashes each block of an ordinary
// Provider before sending it (a rotten block becomes CodeInternal), and
// trusts a VerifiedProvider's reads (sent as read: the provider is the
// one that hashes), so a served byte is hashed once.
func TestAnswerHashesUnlessVerified(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4 KiB: 4 blocks of 1 KiB
	sh := rdrr.Shard{Hash: rdrr.Sum(data), Size: int64(len(data)), BlockSize: 1024}
	for off := 0; off < len(data); off += 1024 {
		sh.Blocks = append(sh.Blocks, rdrr.Sum(data[off:off+1024]))
	}
	sh.Root = rdrr.MerkleRoot(sh.Blocks)
	rot := &rotProv{sh: sh, data: data}
	cases := []struct {
		name   string
		prov   Provider
		blocks int // Block frames before the end
		last   wire.Type
	}{
		{"ordinary provider: hashed, refused", rot, 1, wire.TypeError},
		{"verified provider: sent as read", verifiedRot{rot}, 4, wire.TypeEnd},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			req := &wire.BlocksRequest{Shard: sh.Hash, First: 0, Count: 4}
			if err := Answer(Frames(&out), c.prov, req, ServeOptions{Buf: make([]byte, 1024)}); err != nil {
				t.Fatal(err)
			}
			blocks := 0
			for {
				m, err := wire.ReadMessage(&out, wire.MaxFrame)
				if err != nil {
					t.Fatal(err)
				}
				if m.Type() != wire.TypeBlock {
					if m.Type() != c.last || blocks != c.blocks {
						t.Fatalf("%d blocks then %v, want %d then %v", blocks, m.Type(), c.blocks, c.last)
					}
					return
				}
				blocks++
			}
		})
	}
}
