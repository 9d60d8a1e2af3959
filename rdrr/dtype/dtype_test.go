package dtype

import "testing"

// TestTable: every type round-trips through its name and its ggml id, and
// RowBytes takes whole blocks only.
func TestTable(t *testing.T) {
	for _, d := range All() {
		b, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back DType
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Fatalf("%s: text round trip gave %s, %v", d, back, err)
		}
		if g, ok := FromGGML(d.GGML()); !ok || g != d {
			t.Fatalf("%s: ggml %d maps back to %s", d, d.GGML(), g)
		}
		n, err := d.RowBytes(4 * d.BlockSize())
		if err != nil || n != 4*d.BlockBytes() {
			t.Fatalf("%s: RowBytes(4 blocks) = %d, %v", d, n, err)
		}
		if d.Quantized() {
			if _, err := d.RowBytes(d.BlockSize() + 1); err == nil {
				t.Fatalf("%s: RowBytes of a partial block succeeded", d)
			}
		}
	}
	if Invalid.Valid() || DType(len(dtypes)).Valid() {
		t.Fatal("out-of-table types report valid")
	}
	if _, err := Parse("q3_k"); err == nil {
		t.Fatal("Parse accepted an unknown name")
	}
}
