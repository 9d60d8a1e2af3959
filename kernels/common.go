//go:build cgo || js

package kernels

import (
	_ "embed"
	"strings"
)

//go:embed common.wgsl
var commonWGSL string

const bytesMarker = "// ---- byte readers"

// helpersWGSL returns the WGSL helpers to prepend to a kernel: the scalar
// conversions (f16_to_f32, bf16_to_f32, i8_to_i32) once, then for each
// named array<u32> binding `a` the readers a_u8, a_u16, a_u32, a_f16 and
// a_bf16 taking a byte offset. WGSL cannot pass a storage array to a
// function, so the readers are stamped out per binding.
func helpersWGSL(arrays ...string) string {
	scalar, readers, _ := strings.Cut(commonWGSL, bytesMarker)
	var sb strings.Builder
	sb.WriteString(scalar)
	for _, a := range arrays {
		sb.WriteString(strings.ReplaceAll(bytesMarker+readers, "BYTES", a))
	}
	return sb.String()
}
