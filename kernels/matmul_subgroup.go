package kernels

import (
	"fmt"
	"regexp"
	"strings"
)

// The fast matrix-vector kernels (matmul_vecfast.wgsl: one vector, the
// batched and the gated rewrites) end with a two-level reduction through
// workgroup memory: every invocation stores each of its accumulators in
// red, a barrier, 8 invocations per accumulator sum strided eighths into
// red2, a barrier, and the epilogue sums red2's 8 partials per output.
// With subgroups, subgroupReduce replaces the first level: each
// subgroup adds an accumulator across its lanes (subgroupAdd), its first
// lane stores the sum in red2 slot (lid / subgroup size), the last
// subgroup zeroes the slots past the last subgroup, and one barrier
// follows. The epilogues are unchanged: they still add the 8 partials in
// order (a zero adds nothing). Where the subgroup is narrower than an
// eighth of the workgroup (WG/8 invocations), which no GPU we know of has,
// the kernel takes the old path at run time.
//
// The sums are not those of the kernel without subgroups (subgroupAdd
// adds in its own order), so the m == 1 and the batched kernel choose it
// together: a batched sequence's tokens stay those of running it alone.

// useSubgroups reports whether the fast matrix-vector kernels reduce
// through subgroups (o.vecSG; the device must have them).
func (d *Device) useSubgroups(o MatMulOpts) bool {
	return o.vecSG > 0 && d.features.Subgroups
}

// accStore is the generated body's store of accumulator k.
var accStore = regexp.MustCompile(`(?m)^    red\[(\d+)u \* RS \+ lid\] = (\w+);$`)

// red2Loop is the prelude's first-level reduction (matmul_vecfast.wgsl),
// with its bound as the batched rewrite leaves it.
var red2Loop = regexp.MustCompile(`    workgroupBarrier\(\);\n    for \(var q = lid; q < (R(?: \* NB)? \* 8u); q \+= WG\) \{\n(?s:.*?)\n        red2\[q\] = s;\n    \}\n    workgroupBarrier\(\);\n`)

// sgReduceWGSL is the per-accumulator first level with subgroups.
const sgReduceWGSL = `
// sgred stores accumulator k's partial: with subgroups (sgs ≥ WG/8) the
// subgroup's sum in red2 slot lid / sgs, the slots past the last subgroup
// zeroed; else the value in red for the loop after the barrier.
fn sgred(k: u32, a: f32, lid: u32, sgl: u32, sgs: u32) {
    if (sgs * 8u >= WG) {
        let s = subgroupAdd(a);
        if (sgl == 0u) {
            let sgi = lid / sgs;
            red2[k * 8u + sgi] = s;
            if (sgi == WG / sgs - 1u) {
                for (var i = sgi + 1u; i < 8u; i++) {
                    red2[k * 8u + i] = 0.0;
                }
            }
        }
    } else {
        red[k * RS + lid] = a;
    }
}
`

// subgroupReduce rewrites a fast matrix-vector kernel's source (after
// matvecFastBody or matvecFastBatch) to reduce through subgroups.
// enable is the directive the platform's WGSL needs first ("" for naga).
func subgroupReduce(src, enable string) (string, error) {
	if n := len(accStore.FindAllStringIndex(src, -1)); n == 0 {
		return "", fmt.Errorf("kernels: subgroup rewrite: no accumulator stores")
	}
	src = accStore.ReplaceAllString(src, "    sgred(${1}u, $2, lid, sgl, sgs);")
	m := red2Loop.FindStringSubmatch(src)
	if m == nil {
		return "", fmt.Errorf("kernels: subgroup rewrite: no first-level reduction")
	}
	loop := strings.TrimPrefix(m[0], "    workgroupBarrier();\n")
	loop = strings.TrimSuffix(loop, "    workgroupBarrier();\n")
	loop = strings.ReplaceAll(loop, "\n    ", "\n        ")
	src = strings.Replace(src, m[0], "    workgroupBarrier();\n    if (sgs * 8u < WG) {\n    "+loop+"        workgroupBarrier();\n    }\n", 1)
	src, err := replaceOnce(src, "@builtin(local_invocation_index) lid: u32) {",
		"@builtin(local_invocation_index) lid: u32,\n        @builtin(subgroup_invocation_id) sgl: u32,\n        @builtin(subgroup_size) sgs: u32) {")
	if err != nil {
		return "", err
	}
	return enable + src + sgReduceWGSL, nil
}
