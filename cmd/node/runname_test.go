//go:build cgo

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/swarm"
)

// TestRunByName: a model imported into the store runs by its name, and
// greedy output is llama.cpp's; a positional model gets the hint to use
// -m, and an unknown name says where it was looked for.
func TestRunByName(t *testing.T) {
	dir := convertStories(t)
	store := filepath.Join(t.TempDir(), "store")
	st, err := swarm.Open(store, swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.ImportDir(t.Context(), dir)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := doppler(t, "", "run", "-m", "stories260K", "--store", store, "-p", "Once upon a time", "-n", "8", "--temp", "0", "--json")
	if err != nil {
		t.Fatalf("run -m stories260K: %v\n%s", err, out)
	}
	var res struct{ Tokens []int }
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var g struct{ Generated []int }
	b, err := os.ReadFile(testenv.Path(t, "golden/stories260K.once.json"))
	if err != nil || json.Unmarshal(b, &g) != nil {
		t.Fatalf("golden: %v", err)
	}
	if !slices.Equal(res.Tokens, g.Generated[:8]) {
		t.Errorf("tokens %v, llama.cpp %v", res.Tokens, g.Generated[:8])
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "stories.gguf"}, "-m stories.gguf"},
		{[]string{"run", "-m", "no-such-model", "--store", store, "-p", "x"}, "the name of a model in store " + store},
	} {
		if _, err := doppler(t, "", c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
}
