package signaling

import (
	"net"
	"net/http"
	"path/filepath"
	"slices"
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
	st, err := swarm.Open(filepath.Join(t.TempDir(), "store"), swarm.StoreOptions{})
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

func TestInterfaceURLs(t *testing.T) {
	addrs := func(cidrs ...string) []net.Addr {
		var out []net.Addr
		for _, c := range cidrs {
			ip, n, err := net.ParseCIDR(c)
			if err != nil {
				t.Fatal(err)
			}
			n.IP = ip
			out = append(out, n)
		}
		return out
	}
	ifs := addrs("127.0.0.1/8", "192.168.1.20/24", "::1/128", "fe80::1/64", "2001:db8::5/64")
	cases := []struct {
		name  string
		bound *net.TCPAddr
		want  []string
	}{
		{"0.0.0.0: IPv4 only", &net.TCPAddr{IP: net.IPv4zero, Port: 8080},
			[]string{"http://127.0.0.1:8080", "http://192.168.1.20:8080"}},
		{"[::]: both, no link-local", &net.TCPAddr{IP: net.IPv6unspecified, Port: 443},
			[]string{"http://127.0.0.1:443", "http://192.168.1.20:443", "http://[::1]:443", "http://[2001:db8::5]:443"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := interfaceURLs("http", c.bound, ifs)
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
