package signaling

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

func seedStore(t *testing.T) (*swarm.Store, rdrr.ModelID) {
	t.Helper()
	// Small blocks so a shard has several and proofs are non-trivial.
	dir := testmodel.Convert(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{BlockSize: 64 << 10})
	st, err := swarm.Open(filepath.Join(t.TempDir(), "store"), swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	id, err := st.ImportDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return st, id
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestSeed(t *testing.T) {
	st, id := seedStore(t)
	srv := httptest.NewServer(NewSeed(st, SeedOptions{}).Handler()) // 127.0.0.1
	defer srv.Close()

	resp, b := get(t, srv.URL+"/rdrr/v1/models")
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(id.String())) {
		t.Fatalf("models: %d %s", resp.StatusCode, b)
	}
	resp, man := get(t, srv.URL+"/rdrr/v1/models/"+id.String()+"/manifest.json")
	if resp.StatusCode != 200 || rdrr.Sum(man) != id || resp.Header.Get("ETag") != `"`+id.String()+`"` {
		t.Fatalf("manifest: %d, hash matches %v, etag %q", resp.StatusCode, rdrr.Sum(man) == id, resp.Header.Get("ETag"))
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header")
	}
	m, err := rdrr.ParseManifest(man)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.Shards[0]
	url := srv.URL + "/rdrr/v1/shards/" + sh.Hash.String()
	resp, whole := get(t, url)
	if resp.StatusCode != 200 || sha256.Sum256(whole) != sh.Hash || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("shard: %d, %d bytes", resp.StatusCode, len(whole))
	}
	resp, part := get(t, url, "Range", "bytes=70000-70099")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, whole[70000:70100]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(part))
	}
	resp, _ = get(t, url, "If-None-Match", `"`+sh.Hash.String()+`"`)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	for i := range sh.Blocks {
		resp, b := get(t, fmt.Sprintf("%s/blocks/%d/proof", url, i))
		var p struct {
			Index, Blocks int
			Block, Root   rdrr.Hash
			Proof         []rdrr.Hash
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &p) != nil {
			t.Fatalf("proof %d: %d %s", i, resp.StatusCode, b)
		}
		lo := int64(i) * sh.BlockSize
		hi := min(lo+sh.BlockSize, sh.Size)
		if sha256.Sum256(whole[lo:hi]) != p.Block || p.Root != sh.Root {
			t.Fatalf("proof %d: block or root differs from the manifest", i)
		}
		if err := rdrr.VerifyProof(sh.Root, p.Block, i, p.Blocks, p.Proof); err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
	}
	// Preflight, and bad or unknown names.
	req, _ := http.NewRequest(http.MethodOptions, url, nil)
	pre, err := http.DefaultClient.Do(req)
	if err != nil || pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Headers") != "Range" {
		t.Fatalf("preflight: %v %v", err, pre)
	}
	pre.Body.Close()
	for path, want := range map[string]int{
		"/rdrr/v1/models/xyz/manifest.json":                        400,
		"/rdrr/v1/models/" + sh.Hash.String() + "/manifest.json":   404,
		"/rdrr/v1/models/" + id.String() + "/manifest.sig":         404,
		"/rdrr/v1/shards/" + id.String():                           404,
		"/rdrr/v1/shards/zz":                                       400,
		"/rdrr/v1/shards/" + sh.Hash.String() + "/blocks/99/proof": 400,
		"/rdrr/v1/nothing":                                         404,
	} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
