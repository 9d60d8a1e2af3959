package p2p

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// bigProvider serves one shard held in memory, already verified (as the
// swarm's store serves blocks it hashed when it stored them).
type bigProvider struct {
	sh   rdrr.Shard
	data []byte
}

func newBigProvider(size, block int64) *bigProvider {
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{'b', 'i', 'g'})
	rng.Read(data)
	sh := rdrr.Shard{Hash: rdrr.Sum(data), Size: size, BlockSize: block}
	for off := int64(0); off < size; off += block {
		sh.Blocks = append(sh.Blocks, rdrr.Sum(data[off:min(off+block, size)]))
	}
	sh.Root = rdrr.MerkleRoot(sh.Blocks)
	return &bigProvider{sh: sh, data: data}
}

func (p *bigProvider) Manifest(rdrr.ModelID) ([]byte, []byte, bool) { return nil, nil, false }
func (p *bigProvider) Shard(h rdrr.Hash) (rdrr.Shard, bool)         { return p.sh, h == p.sh.Hash }
func (p *bigProvider) ReadBlock(_ rdrr.Hash, i int, buf []byte) (int, error) {
	off := int64(i) * p.sh.BlockSize
	return copy(buf, p.data[off:off+int64(p.sh.BlockLen(i))]), nil
}
func (p *bigProvider) BlocksVerified() bool { return true }

// cpuTime is the process's user + system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkShardStream moves a 16 MiB shard of 1 MiB blocks between two
// hosts on loopback TCP with Remote.ReadBlocks, streams requests in
// flight at once, every block verified on arrival. It reports verified
// MiB per CPU-second of the process (both ends: the server's reads and
// sends, the client's receive and verification), the transport and wire
// part of issue #14's data-path figure.
func BenchmarkShardStream(b *testing.B) {
	for _, streams := range []int{1, 4} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			const size, block = 16 << 20, 1 << 20
			prov := newBigProvider(size, block)
			srv := benchHost(b, prov)
			cli := benchHost(b, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if _, err := cli.Connect(ctx, srv.Addrs()[0]); err != nil {
				b.Fatal(err)
			}
			r := cli.Remote(srv.ID())
			nb := len(prov.sh.Blocks)
			b.SetBytes(size)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			var moved int64
			for range b.N {
				var wg sync.WaitGroup
				errs := make([]error, streams)
				got := make([]int64, streams)
				for s := range streams {
					first, last := s*nb/streams, (s+1)*nb/streams
					wg.Go(func() {
						errs[s] = r.ReadBlocks(ctx, prov.sh, first, last-first, func(_ int, data []byte) error {
							got[s] += int64(len(data))
							return nil
						})
					})
				}
				wg.Wait()
				for s := range streams {
					if errs[s] != nil {
						b.Fatal(errs[s])
					}
					moved += got[s]
				}
			}
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			if moved != int64(b.N)*size {
				b.Fatalf("moved %d bytes, want %d", moved, int64(b.N)*size)
			}
			b.ReportMetric(float64(moved)/(1<<20)/cpu.Seconds(), "MiB/cpu-s")
		})
	}
}

func benchHost(b *testing.B, prov Provider) *Host {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := New(ctx, Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}}, prov)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}
