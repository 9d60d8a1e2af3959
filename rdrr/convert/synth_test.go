package convert

import (
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestSynthScales: synthetic weight matrices have zero-mean values of the
// requested standard deviation in every dtype the synthesizer sets scales
// for, so long contexts stay finite (activations keep their scale).
func TestSynthScales(t *testing.T) {
	const std = 1 / 64.0
	for _, d := range []quant.DType{quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q5_0, quant.Q4_K, quant.Q6_K} {
		t.Run(d.String(), func(t *testing.T) {
			const n = 256 * 64
			row, err := d.RowBytes(n)
			if err != nil {
				t.Fatal(err)
			}
			r := &randomBlocks{rng: rand.New(rand.NewPCG(1, 2)), dt: d, left: int64(row), std: std}
			raw, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			vals := make([]float32, n)
			if err := quant.Dequantize(d, raw, vals); err != nil {
				t.Fatal(err)
			}
			var sum, sq float64
			for _, v := range vals {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("non-finite value %v", v)
				}
				sum += float64(v)
				sq += float64(v) * float64(v)
			}
			mean := sum / n
			sd := math.Sqrt(sq/n - mean*mean)
			// Q4_0's integers, q−8 for q in 0…15, average −0.5: a mean of
			// −0.11σ is inherent to the format.
			if math.Abs(mean) > 0.12*std || math.Abs(sd-std)/std > 0.1 {
				t.Fatalf("mean %.3g, std %.3g; want 0 and %.3g", mean, sd, std)
			}
		})
	}
}
