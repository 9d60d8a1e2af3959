//go:build cgo || js

package kernels

import (
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestSubgroupReduceRewrite checks the rewrite of each fast kernel
// (m == 1, batched, gated): every accumulator goes through sgred, the
// first-level loop runs only without usable subgroups, and the kernel
// compiles where the device has subgroups.
func TestSubgroupReduceRewrite(t *testing.T) {
	for _, dt := range []quant.DType{quant.Q4_K, quant.Q6_K, quant.Q8_0, quant.F16} {
		fast := matvecFast(dt, 4096)
		one := matvecFastBody(fast, 4, 2, false)
		batch, err := matvecFastBatch(fast, 4, 2, 8, false)
		if err != nil {
			t.Fatal(err)
		}
		gated, err := gateFast(batch, SiLU, true)
		if err != nil {
			t.Fatal(err)
		}
		for name, src := range map[string]string{"one": one, "batch": batch, "gated": gated} {
			want := len(accStore.FindAllString(src, -1))
			out, err := subgroupReduce(src, "")
			if err != nil {
				t.Fatalf("%s %s: %v", dt, name, err)
			}
			if accStore.MatchString(out) || !strings.Contains(out, "subgroupAdd(") {
				t.Errorf("%s %s: accumulator stores left, or no subgroupAdd", dt, name)
			}
			if got := strings.Count(out, "sgred(") - 1; want == 0 || got != want { // less its definition
				t.Errorf("%s %s: %d sgred calls, want one per accumulator (%d)", dt, name, got, want)
			}
			if strings.Count(out, "workgroupBarrier();") != strings.Count(src, "workgroupBarrier();") {
				t.Errorf("%s %s: barrier count changed", dt, name)
			}
		}
	}
	if _, err := subgroupReduce("fn main() {}", ""); err == nil {
		t.Error("a source without accumulator stores was rewritten")
	}
}
