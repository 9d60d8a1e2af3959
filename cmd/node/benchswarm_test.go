package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchSwarmJSON: bench swarm --sim --json prints exactly one line on
// stdout, a JSON object with the stable keys, and its progress on stderr.
func TestBenchSwarmJSON(t *testing.T) {
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"bench", "swarm", "--sim", "--link", "20mbit", "--latency", "5ms", "--peers", "4",
		"--size", "1MiB", "--shard", "256KiB", "--block", "64KiB", "--dir", t.TempDir(), "--json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("stdout has %d lines, want 1:\n%s", len(lines), out.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	for _, k := range []string{"peers", "model_bytes", "p2p_s", "http_s", "one_http_s", "seed_upload_ratio",
		"max_download_ratio", "honest_peers", "honest_complete", "bad_bytes_stored", "banned", "cpu_cores_busy"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing: %s", k, lines[0])
		}
	}
	if got["peers"] != 4.0 || got["honest_complete"] != 4.0 || got["model_bytes"] != float64(1<<20) || got["mode"] != "sim" {
		t.Errorf("unexpected figures: %s", lines[0])
	}
	if !strings.Contains(errOut.String(), "p2p: 4/4 honest peers complete") {
		t.Errorf("no progress on stderr:\n%s", errOut.String())
	}
}
