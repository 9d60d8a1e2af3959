package signaling

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// With Follow (doppler node --http), a model that becomes complete in the
// store later gets browsers answered in its room and is announced to
// OnModel; a model removed, no more.
func TestSiteFollow(t *testing.T) {
	src, id := seedStore(t)
	dir := filepath.Join(t.TempDir(), "export")
	if err := src.Export(t.Context(), id, dir); err != nil {
		t.Fatal(err)
	}
	st, err := swarm.Open(filepath.Join(t.TempDir(), "store"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	announced := make(chan string, 4)
	site, err := StartSite(t.Context(), st, SiteOptions{Addr: "127.0.0.1:0", Follow: true,
		OnModel: func(id rdrr.ModelID) { announced <- id.String() }})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	if _, err := st.ImportDir(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	answering := func() bool { _, ok := site.gw.ID(id); return ok }
	waitFor(t, "the room of a model imported later", answering)
	if got := <-announced; got != id.String() {
		t.Errorf("OnModel(%s), want %s", got, id)
	}
	// The seed answers under its prefix; the root leads to the page.
	resp, err := http.Get(site.URL() + "/rdrr/v1/models/" + id.String() + "/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("manifest: %s", resp.Status)
	}
	if err := st.Remove(id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the room of a model removed to be left", func() bool { return !answering() })
}
