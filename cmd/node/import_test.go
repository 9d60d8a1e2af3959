package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/swarm"
)

// TestImportOnce: serve and seed take a GGUF through importModel, which
// converts it straight into the store. The same GGUF under two names is
// one model stored once: the store's bytes are the model's, no conversion
// is left beside it (in the store's temporaries or a cache), importing a
// name again converts nothing, and doppler list counts the bytes once.
func TestImportOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "cache")
	t.Setenv("DOPPLER_CACHE", cache)
	gguf, err := os.ReadFile(testenv.Path(t, "models/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range []string{"a.gguf", "b.gguf"} {
		p := filepath.Join(tmp, n)
		if err := os.WriteFile(p, gguf, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, p)
	}
	dir := filepath.Join(tmp, "store")
	store, err := swarm.Open(dir, swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	first, err := importModel(ctx, store, names[0])
	if err != nil {
		t.Fatal(err)
	}
	second, err := importModel(ctx, store, names[1])
	if err != nil || second != first {
		t.Fatalf("the same GGUF under another name: %v, %v; want model %s", second.Short(), err, first.Short())
	}
	st, _ := store.Status(first)
	if st.CompleteShards != st.Shards || store.Used() != st.Bytes {
		t.Fatalf("store holds %d bytes for a %d-byte model (%d/%d shards): want it once", store.Used(), st.Bytes, st.CompleteShards, st.Shards)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left in the store: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(cache, "converted")); !os.IsNotExist(err) {
		t.Errorf("a conversion cache exists beside the store: %v", err)
	}
	// Again: the record says the store holds it, so nothing is converted —
	// nor read: garbage of the same size and mtime would fail to convert.
	fi, err := os.Stat(names[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(names[0], make([]byte, len(gguf)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(names[0], fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if again, err := importModel(ctx, store, names[0]); err != nil || again != first {
		t.Fatalf("import again: %v, %v", again.Short(), err)
	}
	store.Close()

	out, err := doppler(t, "", "list", "--store", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "total: 1 models, " + humanBytes(st.Bytes) + " on disk"
	if strings.Count(out, first.String()) != 1 || !strings.Contains(out, want) {
		t.Fatalf("list:\n%s\nwant the model once and %q", out, want)
	}
}
