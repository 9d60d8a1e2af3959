package main

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/browsertest"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestServePage: `doppler serve` as a user runs it, and the page it
// serves at /d in headless Chromium: the page downloads stories260K from
// the command over WebRTC (nothing over HTTP) and generates llama.cpp's
// greedy continuation with WebGPU.
func TestServePage(t *testing.T) {
	browsertest.Chromium(t)
	var golden struct {
		Prompt    string `json:"prompt"`
		Generated []int  `json:"generated"`
	}
	b, err := os.ReadFile(testenv.Path(t, "golden/stories260K.once.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	dir := convertStories(t)
	raw, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	id := rdrr.Sum(raw)
	m, err := rdrr.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, sh := range m.Shards {
		size += sh.Size
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := startCommand(t, ctx, cancel, []string{"serve", dir, "--http", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "store")}, id, false)
	page := base + "/d?model=" + id.String() + "&prompt=" + url.QueryEscape(golden.Prompt) +
		"&n=" + strconv.Itoa(len(golden.Generated)) + "&temp=0&autorun=1"
	// The page has as long as it makes progress: slower on a loaded
	// machine, never failed for it.
	br := browsertest.New(t)
	pctx, pcancel := br.Progress(ctx, browsertest.Stall)
	defer pcancel()
	got, err := br.Run(pctx, page)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Tokens           []int `json:"tokens"`
		BytesByTransport struct {
			WebRTC int64 `json:"webrtc"`
			HTTP   int64 `json:"http"`
		} `json:"bytesByTransport"`
	}
	if err := json.Unmarshal(got, &r); err != nil {
		t.Fatalf("dopplerResult %s: %v", got, err)
	}
	if !slices.Equal(r.Tokens, golden.Generated) {
		t.Fatalf("tokens %v\nwant   %v", r.Tokens, golden.Generated)
	}
	if r.BytesByTransport.WebRTC < size || r.BytesByTransport.HTTP != 0 {
		t.Fatalf("bytes %+v for a %d-byte model: want all over WebRTC", r.BytesByTransport, size)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return within 20 s of its context's end")
	}
}
