// Package httpseed is the client of a node's HTTP seed (signaling.Seed,
// served by `doppler serve` and `doppler node --http`): it fetches a
// model's manifest and runs of a shard's blocks over plain HTTP(S), and is
// a swarm.Peer, so the fetcher uses a seed as it uses any peer.
//
// The seed's layout (docs/protocols.md, "HTTP seed"), under Prefix:
//
//	GET <base>/rdrr/v1/models/<id>/manifest.json  the manifest; must hash to <id>
//	GET <base>/rdrr/v1/models/<id>/manifest.sig   the signature; 404 when unsigned
//	GET <base>/rdrr/v1/shards/<hash>              the shard, one Range per run of blocks
//
// Every byte is checked before the caller sees it: the manifest against
// the model ID (and its signature, when there is one), each block against
// the manifest's block hash. Bodies are read one block at a time into one
// buffer (a request holds at most one block, rdrr.MaxBlockSize), and sizes
// are checked before anything is allocated. Every request carries the
// caller's context, and every error names the URL.
//
// It uses the standard library's HTTP client through Doer, so it builds
// for GOOS=js too (net/http goes through fetch there).
package httpseed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/rdrr"
)

// Prefix is where a seed serves manifests and shards; it equals
// sigwire.SeedPrefix, which the server mounts (a test checks).
const Prefix = "/rdrr/v1"

// MaxSignature bounds manifest.sig (a few hundred bytes of JSON in practice).
const MaxSignature = 4 << 10

// Errors are shardproto's, so that the swarm treats a seed as any peer:
// shardproto.ErrNotFound (HTTP 404), shardproto.ErrRemote (another status),
// shardproto.ErrProtocol (a body of the wrong size or range),
// shardproto.ErrBadManifest, and rdrr.ErrBadBlock for a block that does
// not match its hash.

// Doer sends an HTTP request; *http.Client is one.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Options configures a Client; the zero value is the default.
type Options struct {
	// Doer sends the requests (http.DefaultClient).
	Doer Doer
}

// Client is one HTTP seed.
type Client struct {
	base string // no trailing slash
	doer Doer
}

// New returns a client of the seed at base, an http or https URL (a path
// is kept: a seed may sit behind a proxy under one).
func New(base string, opts Options) (*Client, error) {
	b, err := ParseBase(base)
	if err != nil {
		return nil, err
	}
	if opts.Doer == nil {
		opts.Doer = http.DefaultClient
	}
	return &Client{base: b, doer: opts.Doer}, nil
}

// ParseBase checks a seed's base URL and returns it without a trailing
// slash: http or https, a host, no user info, query or fragment.
func ParseBase(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("seed URL %q: %v", raw, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("seed URL %q: want an http:// or https:// URL", raw)
	case u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("seed URL %q: no host", raw)
	case u.User != nil:
		return "", fmt.Errorf("seed URL %q: user info is not allowed", raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("seed URL %q: no query or fragment allowed", raw)
	case !validHost(u.Hostname()):
		return "", fmt.Errorf("seed URL %q: host %q is neither an IP address nor a DNS name", raw, u.Hostname())
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("seed URL %q: port %q", raw, p)
		}
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// validHost reports whether h is an IP address or a DNS name (letters,
// digits, '-' and '.', at most 253 bytes): url.Parse lets other bytes
// through in a host.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range []byte(h) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// ID names the seed: its base URL.
func (c *Client) ID() string { return c.base }

// URL returns the seed's base URL (as ID).
func (c *Client) URL() string { return c.base }

// get sends GET url with an optional Range and returns the response when
// its status is one of ok; 404 is shardproto.ErrNotFound.
func (c *Client) get(ctx context.Context, url, rng string, ok ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.doer.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GET %s: %w", url, ctx.Err())
		}
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp, nil
		}
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("GET %s: %w", url, shardproto.ErrNotFound)
	}
	return nil, fmt.Errorf("GET %s: %w: HTTP %s", url, shardproto.ErrRemote, resp.Status)
}

// readAll reads a body of at most max bytes, refusing a longer one before
// allocating for it when the response says its length.
func readAll(url string, resp *http.Response, max int64) ([]byte, error) {
	defer resp.Body.Close()
	if resp.ContentLength > max {
		return nil, fmt.Errorf("GET %s: %w: %d bytes (at most %d)", url, shardproto.ErrProtocol, resp.ContentLength, max)
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if n > max {
		return nil, fmt.Errorf("GET %s: %w: over %d bytes", url, shardproto.ErrProtocol, max)
	}
	return buf.Bytes(), nil
}

// Manifest fetches model id's manifest and signature (nil when the model
// is unsigned). The manifest must hash to id and parse; a signature must
// verify.
func (c *Client) Manifest(ctx context.Context, id rdrr.ModelID) (manifest, sig []byte, err error) {
	dir := c.base + Prefix + "/models/" + id.String() + "/"
	u := dir + rdrr.ManifestFile
	resp, err := c.get(ctx, u, "", http.StatusOK)
	if err != nil {
		return nil, nil, err
	}
	if manifest, err = readAll(u, resp, rdrr.MaxManifestSize); err != nil {
		return nil, nil, err
	}
	if rdrr.Sum(manifest) != id {
		return nil, nil, fmt.Errorf("GET %s: model %s: %w", u, id.Short(), shardproto.ErrBadManifest)
	}
	if _, err := rdrr.ParseManifest(manifest); err != nil {
		return nil, nil, fmt.Errorf("GET %s: model %s: %w: %w", u, id.Short(), shardproto.ErrBadManifest, err)
	}
	u = dir + rdrr.SignatureFile
	resp, err = c.get(ctx, u, "", http.StatusOK)
	switch {
	case errors.Is(err, shardproto.ErrNotFound):
		return manifest, nil, nil
	case err != nil:
		return nil, nil, err
	}
	if sig, err = readAll(u, resp, MaxSignature); err != nil {
		return nil, nil, err
	}
	if _, err := rdrr.VerifySignature(manifest, sig); err != nil {
		return nil, nil, fmt.Errorf("GET %s: model %s: %w", u, id.Short(), err)
	}
	return manifest, sig, nil
}

// ReadBlocks implements swarm.Peer: one GET with one Range for blocks
// [first, first+count) of sh, read a block at a time; each block is
// checked against sh.Blocks before fn sees it (a bad one: an error
// wrapping rdrr.ErrBadBlock that names the URL and the block, and fn is
// not called). sh must come from a verified manifest. A seed that ignores
// Range (HTTP 200) is read from the start, the bytes before the run
// discarded.
func (c *Client) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	if err := shardproto.CheckRange(sh, first, count); err != nil {
		return err
	}
	if sh.BlockSize <= 0 || sh.BlockSize > rdrr.MaxBlockSize {
		return fmt.Errorf("shard %s: block size %d", sh.Hash.Short(), sh.BlockSize)
	}
	u := c.base + Prefix + "/shards/" + sh.Hash.String()
	lo := int64(first) * sh.BlockSize
	hi := min(int64(first+count)*sh.BlockSize, sh.Size) // exclusive
	resp, err := c.get(ctx, u, fmt.Sprintf("bytes=%d-%d", lo, hi-1), http.StatusPartialContent, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if resp.ContentLength >= 0 && resp.ContentLength != sh.Size {
			return fmt.Errorf("GET %s: %w: %d bytes, the shard has %d", u, shardproto.ErrProtocol, resp.ContentLength, sh.Size)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, lo); err != nil {
			return c.bodyErr(ctx, u, first, err)
		}
	} else if err := checkContentRange(resp.Header.Get("Content-Range"), lo, hi, sh.Size); err != nil {
		return fmt.Errorf("GET %s: %w: %v", u, shardproto.ErrProtocol, err)
	}
	buf := make([]byte, min(sh.BlockSize, hi-lo))
	for i := first; i < first+count; i++ {
		b := buf[:sh.BlockLen(i)]
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return c.bodyErr(ctx, u, i, err)
		}
		if err := sh.CheckBlock(i, b); err != nil {
			return fmt.Errorf("GET %s: %w", u, err)
		}
		if err := fn(i, b); err != nil {
			return err
		}
	}
	return nil
}

// bodyErr describes a body that failed while block i was due.
func (c *Client) bodyErr(ctx context.Context, url string, i int, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("GET %s: %w", url, ctx.Err())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("GET %s: %w: the body ended before block %d", url, shardproto.ErrProtocol, i)
	}
	return fmt.Errorf("GET %s: block %d: %w", url, i, err)
}

// checkContentRange checks a 206's "bytes lo-last/size" against the range
// asked for, [lo, hi) of a shard of size bytes.
func checkContentRange(h string, lo, hi, size int64) error {
	rest, ok := strings.CutPrefix(h, "bytes ")
	span, total, ok2 := strings.Cut(rest, "/")
	first, last, ok3 := strings.Cut(span, "-")
	if !ok || !ok2 || !ok3 {
		return fmt.Errorf("Content-Range %q", h)
	}
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || a != lo || b != hi-1 {
		return fmt.Errorf("Content-Range %q, asked for bytes %d-%d", h, lo, hi-1)
	}
	if total != "*" {
		if n, err := strconv.ParseInt(total, 10, 64); err != nil || n != size {
			return fmt.Errorf("Content-Range %q: the shard has %d bytes", h, size)
		}
	}
	return nil
}
