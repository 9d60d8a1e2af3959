package sharelink

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

const (
	id    = "8c1f0a43a0a5ee7f4b0b5b0a3f3b9ad5e0c4c1a3d2e1f0a9b8c7d6e5f4a3b2c1"
	peer  = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLRPJAA5o6tnwkR2ZAYG5CEvExbEvYKxbwuT9kBSzwDps"
	peer6 = "/ip6/::1/udp/4001/quic-v1/p2p/12D3KooWLRPJAA5o6tnwkR2ZAYG5CEvExbEvYKxbwuT9kBSzwDps"
)

func mustID(t *testing.T) rdrr.ModelID {
	t.Helper()
	h, err := rdrr.ParseHash(id)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Known links and what they parse to; String writes them back as given
// (their canonical form).
func TestKnown(t *testing.T) {
	m := mustID(t)
	esc := url.QueryEscape
	for _, c := range []struct {
		link string
		want Link
	}{
		{"doppler://" + id, Link{Model: m}},
		{"doppler://" + id + "?seed=" + esc("http://127.0.0.1:8080"), Link{Model: m, Seeds: []string{"http://127.0.0.1:8080"}}},
		{"doppler://" + id + "?seed=" + esc("https://example.org/models") + "&seed=" + esc("http://[::1]:9") + "&peer=" + esc(peer) + "&peer=" + esc(peer6),
			Link{Model: m, Seeds: []string{"https://example.org/models", "http://[::1]:9"}, Peers: []string{peer, peer6}}},
	} {
		got, err := Parse(c.link)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.link, got, err, c.want)
			continue
		}
		if s := got.String(); s != c.link {
			t.Errorf("String() = %q, want %q", s, c.link)
		}
	}
}

// Other spellings of the same link parse to it: upper-case scheme and ID,
// a trailing slash, parameters interleaved, duplicates, unknown names,
// unescaped values.
func TestLenient(t *testing.T) {
	want := Link{Model: mustID(t), Seeds: []string{"http://127.0.0.1:8080"}, Peers: []string{peer}}
	for _, s := range []string{
		"DOPPLER://" + strings.ToUpper(id) + "?peer=" + peer + "&seed=http://127.0.0.1:8080/",
		"doppler://" + id + "/?seed=http%3A%2F%2F127.0.0.1%3A8080&name=stories&peer=" + url.QueryEscape(peer) + "&seed=http://127.0.0.1:8080",
	} {
		got, err := Parse(s)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
}

// Bad links are refused with ErrLink and an error that names the link
// and says what is wrong.
func TestBad(t *testing.T) {
	long := "doppler://" + id + "?seed=" + strings.Repeat("a", MaxLen)
	many := "doppler://" + id + "?x=y" + strings.Repeat("&seed=http://127.0.0.1:1", MaxSources+1)
	for _, c := range []struct{ link, want string }{
		{"", "scheme"},
		{id, "scheme"},
		{"magnet:?xt=urn:btih:" + id, "scheme"},
		{"https://" + id, "scheme"},
		{"doppler:" + id, "doppler://<model-id>"},
		{"doppler://", "doppler://<model-id>"},
		{"doppler://abc", "model ID"},
		{"doppler://" + id + "00", "model ID"},
		{"doppler://" + strings.Repeat("zz", 32), "model ID"},
		{"doppler://" + id + ":80", "nothing else"},
		{"doppler://user@" + id, "nothing else"},
		{"doppler://" + id + "/path", "nothing else"},
		{"doppler://" + id + "#x", "nothing else"},
		{"doppler://" + id + "?seed=ftp://example.org", "http:// or https://"},
		{"doppler://" + id + "?seed=file:///etc/passwd", "http:// or https://"},
		{"doppler://" + id + "?seed=javascript:alert(1)", "http:// or https://"},
		{"doppler://" + id + "?seed=http://u:p@example.org", "user info"},
		{"doppler://" + id + "?seed=" + url.QueryEscape("http://example.org/?a=b"), "query"},
		{"doppler://" + id + "?seed=", "http:// or https://"},
		{"doppler://" + id + "?peer=/ip4/127.0.0.1/tcp/4001", "/p2p/"},
		{"doppler://" + id + "?peer=" + strings.Replace(peer, "/ip4/127.0.0.1/tcp/4001", "", 1) + "/tcp/1", "/p2p/"},
		{"doppler://" + id + "?peer=nonsense", "peer"},
		{"doppler://" + id + "?seed=%zz", "query"},
		{"doppler://" + id + "?a;b", "query"},
		{long, "at most"},
		{many, "sources"},
	} {
		_, err := Parse(c.link)
		shown := c.link
		if len(shown) > 80 {
			shown = shown[:80]
		}
		if !errors.Is(err, ErrLink) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", shown)[:len(shown)/2]) {
			t.Errorf("Parse(%.100q): %v; want ErrLink naming the link and mentioning %q", c.link, err, c.want)
		}
	}
}

func TestIs(t *testing.T) {
	for s, want := range map[string]bool{
		"doppler://" + id: true, "DOPPLER:x": true, "doppler:": true, id: false, "./doppler:x": false, "dop": false,
	} {
		if Is(s) != want {
			t.Errorf("Is(%q) = %v", s, !want)
		}
	}
}

// FuzzParse: whatever parses writes back to a link that parses to the
// same Link and writes back identically; nothing panics.
func FuzzParse(f *testing.F) {
	f.Add("doppler://" + id)
	f.Add("doppler://" + id + "?seed=http%3A%2F%2F127.0.0.1%3A8080&peer=" + url.QueryEscape(peer))
	f.Add("DOPPLER://" + strings.ToUpper(id) + "/?seed=https://a.example/b/&peer=" + peer6 + "&x=y")
	f.Add("doppler://" + id + "?seed=http://[fe80::1%25eth0]:80")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrLink) {
				t.Fatalf("Parse(%q): %v does not wrap ErrLink", s, err)
			}
			return
		}
		out := l.String()
		l2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok, its String %q: %v", s, out, err)
		}
		if !reflect.DeepEqual(l, l2) {
			t.Fatalf("Parse(%q) = %+v; through String %q: %+v", s, l, out, l2)
		}
		if out2 := l2.String(); out2 != out {
			t.Fatalf("String not stable: %q then %q", out, out2)
		}
	})
}
