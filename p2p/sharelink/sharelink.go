// Package sharelink reads and writes share links: one string that names a
// model and where to get it, which `doppler share` prints and `doppler
// pull` takes (docs/protocols.md, "Share links"):
//
//	doppler://<model-id>?seed=<url>&peer=<multiaddr>
//
// <model-id> is the model's 64 hex digits (written lower-case, read in
// either case). Each seed= is the base URL of an HTTP seed (http or https;
// no user info, query or fragment), each peer= a libp2p multiaddr ending in
// /p2p/<peer-id>, both query-escaped; either may repeat, in any order, or
// be absent. Parameters of other names are ignored, so a later revision
// may add some. A link carries no trust: the model ID is what every byte
// is verified against, wherever it comes from.
package sharelink

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/doppler-llm/doppler/p2p/httpseed"
	"github.com/doppler-llm/doppler/rdrr"
)

// Scheme is a share link's URL scheme.
const Scheme = "doppler"

// Limits checked by Parse before anything else.
const (
	MaxLen     = 16 << 10 // bytes in a link
	MaxSources = 64       // seeds and peers together
)

// ErrLink is wrapped by every error of Parse.
var ErrLink = errors.New("bad share link")

// Link is a parsed share link.
type Link struct {
	Model rdrr.ModelID
	Seeds []string // HTTP seeds' base URLs, as httpseed.ParseBase returns them
	Peers []string // libp2p multiaddrs with /p2p/<peer-id>, canonical
}

// Is reports whether s is meant as a share link (it starts with
// "doppler:"), as opposed to a model ID or a path.
func Is(s string) bool {
	return len(s) >= len(Scheme)+1 && strings.EqualFold(s[:len(Scheme)+1], Scheme+":")
}

// Parse reads a share link, checking the model ID and every source. An
// error names the link.
func Parse(s string) (Link, error) {
	bad := func(format string, args ...any) error {
		shown := s
		if len(shown) > 80 {
			shown = shown[:80] + "…"
		}
		return fmt.Errorf("share link %q: %w: %s", shown, ErrLink, fmt.Sprintf(format, args...))
	}
	if len(s) > MaxLen {
		return Link{}, bad("%d bytes, at most %d", len(s), MaxLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Link{}, bad("%v", errors.Unwrap(err))
	}
	switch {
	case u.Scheme != Scheme:
		return Link{}, bad("scheme %q, want %s://", u.Scheme, Scheme)
	case u.Opaque != "" || u.Host == "":
		return Link{}, bad("want %s://<model-id>", Scheme)
	case u.User != nil || u.Port() != "" || (u.Path != "" && u.Path != "/") || u.Fragment != "":
		return Link{}, bad("want %s://<model-id>?seed=…&peer=… and nothing else", Scheme)
	}
	var l Link
	if l.Model, err = rdrr.ParseHash(u.Host); err != nil {
		return Link{}, bad("model ID %q: want 64 hex digits", u.Host)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Link{}, bad("query: %v", err)
	}
	if n := len(q["seed"]) + len(q["peer"]); n > MaxSources {
		return Link{}, bad("%d sources, at most %d", n, MaxSources)
	}
	for _, v := range q["seed"] {
		b, err := httpseed.ParseBase(v)
		if err != nil {
			return Link{}, bad("%v", err)
		}
		if !slices.Contains(l.Seeds, b) {
			l.Seeds = append(l.Seeds, b)
		}
	}
	for _, v := range q["peer"] {
		p, err := ParsePeer(v)
		if err != nil {
			return Link{}, bad("%v", err)
		}
		if !slices.Contains(l.Peers, p) {
			l.Peers = append(l.Peers, p)
		}
	}
	return l, nil
}

// ParsePeer checks a peer's multiaddr (it must end in /p2p/<peer-id>) and
// returns it in canonical form.
func ParsePeer(s string) (string, error) {
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return "", fmt.Errorf("peer %q: %v", s, err)
	}
	if _, last := ma.SplitLast(m); last == nil || last.Code() != ma.P_P2P {
		return "", fmt.Errorf("peer %q: does not end in /p2p/<peer-id>", s)
	}
	return m.String(), nil
}

// String writes the link: seeds first, then peers, each in order.
func (l Link) String() string {
	var b strings.Builder
	b.WriteString(Scheme + "://" + l.Model.String())
	sep := "?"
	add := func(key, v string) {
		b.WriteString(sep + key + "=" + url.QueryEscape(v))
		sep = "&"
	}
	for _, s := range l.Seeds {
		add("seed", s)
	}
	for _, p := range l.Peers {
		add("peer", p)
	}
	return b.String()
}
