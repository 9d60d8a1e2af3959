//go:build cgo || js

package kernels

// KernelInfo describes one kernel of the package.
type KernelInfo struct {
	Name   string // Go name stem: foo → foo.go, foo_ref.go, foo_test.go
	WGSL   string // its embedded shader file
	HasRef bool   // a scalar Go reference exists (foo_ref.go)
}

// All lists the package's kernels. A test checks that every .wgsl file is
// listed here (except the common.wgsl helpers) and has a reference and a
// test, so a kernel cannot land untested.
func All() []KernelInfo {
	return []KernelInfo{
		{Name: "rmsnorm", WGSL: "rmsnorm.wgsl", HasRef: true},
		{Name: "matmul", WGSL: "matmul_vec.wgsl", HasRef: true},
		{Name: "matmul", WGSL: "matmul_tile.wgsl", HasRef: true},    // m > 1 below matmulTiledMinM tokens
		{Name: "matmul", WGSL: "matmul_tiled.wgsl", HasRef: true},   // m > 1, register-blocked
		{Name: "matmul", WGSL: "matmul_dtypes.wgsl", HasRef: true},  // decoders prepended to matmul_vec, matmul_tile, moe_matmul
		{Name: "matmul", WGSL: "matmul_vecfast.wgsl", HasRef: true}, // m == 1 fast path: Q4_K, Q6_K, Q8_0, F16; Q4_K, Q6_K on 8-bit x
		{Name: "quant8", WGSL: "quant8.wgsl", HasRef: true},         // x to 8 bits for the latter
		{Name: "ropekv", WGSL: "ropekv.wgsl", HasRef: true},
		{Name: "attention", WGSL: "attention_decode.wgsl", HasRef: true},
		{Name: "attention", WGSL: "attention_prefill.wgsl", HasRef: true},       // m > 1 where the tiled one does not fit
		{Name: "attention", WGSL: "attention_prefill_tiled.wgsl", HasRef: true}, // m > 1, register-blocked
		{Name: "embed", WGSL: "embed.wgsl", HasRef: true},
		{Name: "add", WGSL: "add.wgsl", HasRef: true}, // + AddInPlace's IO block
		{Name: "act", WGSL: "act.wgsl", HasRef: true},
		{Name: "act", WGSL: "act_fn.wgsl", HasRef: true}, // prepended to act.wgsl and the gated matvec
		{Name: "argmax", WGSL: "argmax.wgsl", HasRef: true},
		{Name: "sample", WGSL: "sample.wgsl", HasRef: true},
		{Name: "moe", WGSL: "moe_route.wgsl", HasRef: true},
		{Name: "moe", WGSL: "moe_matmul.wgsl", HasRef: true}, // + matmul_dtypes.wgsl decoders, matmul_vec.wgsl x loaders and loop
		{Name: "moe", WGSL: "moe_combine.wgsl", HasRef: true},
	}
}
