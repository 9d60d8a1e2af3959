package swarmbench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/dtype"
)

// SynthModel writes to dir an RDRR directory of about size bytes of
// random F32 weights (deterministic), in shards of shard bytes and blocks
// of block bytes, and returns its model ID.
func SynthModel(dir string, size, shard, block int64) (rdrr.ModelID, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rdrr.ModelID{}, err
	}
	w, err := rdrr.NewWriter(dir, rdrr.WriterOptions{ShardSize: shard, BlockSize: block})
	if err != nil {
		return rdrr.ModelID{}, err
	}
	rng := rand.NewChaCha8([32]byte{'d', 'o', 'p'})
	const cols = 1024
	tensor := min(size, 48<<20)
	for i := 0; int64(i)*tensor < size; i++ {
		rows := min(tensor, size-int64(i)*tensor) / (cols * 4)
		if rows == 0 {
			break
		}
		if err := w.AddTensor(fmt.Sprintf("blk.%d.ffn_up.weight", i), dtype.F32, []int64{rows, cols}, io.LimitReader(rng, rows*cols*4)); err != nil {
			return rdrr.ModelID{}, err
		}
	}
	cfg := rdrr.Config{Architecture: "llama", ContextLength: 128, HiddenSize: 64, Layers: 1, Heads: 1, KVHeads: 1, HeadDim: 64,
		FFN: 128, VocabSize: 32, NormEps: 1e-5, Activation: "silu", Rope: rdrr.RoPE{Theta: 10000, Dim: 64, Style: "normal"}}
	return w.Finish(&rdrr.Manifest{Name: "bench-swarm", Config: cfg})
}
