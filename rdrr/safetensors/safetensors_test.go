package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// build returns a safetensors file with the given JSON header and data.
func build(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

const twoTensors = `{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`

func TestOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	data := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if err := os.WriteFile(p, build(twoTensors, data), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 2 || f.Tensors[0].Name != "a" || f.Tensors[1].Name != "b" || f.Metadata["format"] != "pt" {
		t.Fatalf("tensors %+v, metadata %v", f.Tensors, f.Metadata)
	}
	b, err := f.Read(&f.Tensors[1])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, data[8:12]) {
		t.Fatalf("b = %v, want %v", b, data[8:12])
	}
}

func TestMalformed(t *testing.T) {
	for name, file := range map[string][]byte{
		"short":          {1, 2, 3},
		"header too big": build(`{}`, nil)[:9],
		"not JSON":       build(`{"a":`, nil),
		"unknown dtype":  build(`{"a":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}}`, []byte{0}),
		"size mismatch":  build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4)),
		"past the end":   build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)),
		"offset overflow": build(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[9223372036854775800,9223372036854775804]}}`,
			make([]byte, 4)),
	} {
		if _, err := parse(bytes.NewReader(file), int64(len(file))); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err %v, want ErrFormat", name, err)
		}
	}
}

// FuzzParse: parse never panics, and every tensor it accepts lies inside
// the data section with the size its dtype and shape give.
func FuzzParse(f *testing.F) {
	f.Add(build(twoTensors, make([]byte, 12)))
	f.Add(build(`{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}`, make([]byte, 2)))
	f.Add(build(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := parse(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		start := 8 + int64(binary.LittleEndian.Uint64(data))
		for i, tn := range file.Tensors {
			if tn.Offset < start || tn.Size < 0 || tn.Offset+tn.Size < tn.Offset || tn.Offset+tn.Size > int64(len(data)) {
				t.Fatalf("tensor %q at [%d, +%d) outside the data section [%d, %d)", tn.Name, tn.Offset, tn.Size, start, len(data))
			}
			elems := int64(1)
			for _, d := range tn.Shape {
				elems *= d
			}
			if tn.Size != elems*dtypeSize[tn.DType] {
				t.Fatalf("tensor %q: %d bytes for %s%v", tn.Name, tn.Size, tn.DType, tn.Shape)
			}
			if i > 0 && tn.Offset < file.Tensors[i-1].Offset {
				t.Fatalf("tensors not sorted by offset")
			}
		}
	})
}
