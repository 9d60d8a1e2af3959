package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// build writes a small GGUF v3 file: one string KV, one u32 array, one F32
// tensor of 4 values.
func build(version uint32) []byte {
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(version)
	w(uint64(1)) // tensors
	w(uint64(2)) // kv
	str("general.architecture")
	w(uint32(TypeString))
	str("llama")
	str("x.ids")
	w(uint32(TypeArray))
	w(uint32(TypeUint32))
	w(uint64(3))
	w([]uint32{7, 8, 9})
	str("t")
	w(uint32(1))
	w(uint64(4))
	w(uint32(0)) // F32
	w(uint64(0))
	for b.Len()%DefaultAlignment != 0 {
		b.WriteByte(0)
	}
	w([]float32{1, 2, 3, 4})
	return b.Bytes()
}

func TestParseBuilt(t *testing.T) {
	data := build(3)
	f, err := Parse(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Architecture() != "llama" {
		t.Fatalf("architecture %q", f.Architecture())
	}
	if ids, ok := f.Int32s("x.ids"); !ok || len(ids) != 3 || ids[2] != 9 {
		t.Fatalf("array: %v %v", ids, ok)
	}
	tn, ok := f.Tensor("t")
	if !ok || tn.Size != 16 {
		t.Fatalf("tensor: %+v", tn)
	}
	b, err := f.ReadTensor(tn)
	if err != nil || len(b) != 16 {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	good := build(3)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"magic", append([]byte("GGML"), good[4:]...), "bad magic"},
		{"version", build(1), "version 1"},
		{"header cut", good[:30], "truncated"},
		{"data cut", good[:len(good)-4], "past the end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(bytes.NewReader(c.data), int64(len(c.data)))
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrFormat with %q", err, c.want)
			}
		})
	}
}

func TestOpenShared(t *testing.T) {
	for _, p := range testenv.Glob(t, "models/*.gguf") {
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Tensors) == 0 || f.Architecture() == "" {
			t.Fatalf("%s: nothing parsed", p)
		}
		f.Close()
	}
}

func FuzzParse(f *testing.F) {
	f.Add(build(3))
	f.Add(build(2))
	b, err := os.ReadFile(testenv.Path(f, "models/stories260K-Q4_0.gguf"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:4096])
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for i := range file.Tensors {
			if file.Tensors[i].DType.Valid() {
				file.ReadTensor(&file.Tensors[i])
			}
		}
	})
}
