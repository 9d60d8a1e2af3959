package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/p2p/httpseed"
	"github.com/doppler-llm/doppler/p2p/sharelink"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// sources is where a model comes from: share's and pull's argument (a
// model ID or a share link) and their --seed and --peer flags.
type sources struct {
	arg   string          // the model ID as given; empty when a link named it
	link  *sharelink.Link // the argument, when it is a share link
	seeds []string        // base URLs, checked and without duplicates
	peers []string        // multiaddrs with /p2p/, checked, without duplicates
}

// parseSources reads the argument and the flags: a share link's seeds
// and peers come after the flags'. Errors name the flag or the link.
func parseSources(arg string, seeds, peers []string) (*sources, error) {
	s := &sources{arg: arg}
	if sharelink.Is(arg) {
		l, err := sharelink.Parse(arg)
		if err != nil {
			return nil, err
		}
		s.link, s.arg = &l, ""
	}
	for _, u := range seeds {
		b, err := httpseed.ParseBase(u)
		if err != nil {
			return nil, fmt.Errorf("--seed: %w", err)
		}
		s.addSeed(b)
	}
	if err := checkPeers("--peer", peers); err != nil {
		return nil, err
	}
	for _, p := range peers {
		m, err := sharelink.ParsePeer(p)
		if err != nil {
			return nil, fmt.Errorf("--peer: %w", err)
		}
		s.addPeer(m)
	}
	if s.link != nil {
		for _, b := range s.link.Seeds {
			s.addSeed(b)
		}
		for _, p := range s.link.Peers {
			s.addPeer(p)
		}
	}
	return s, nil
}

func (s *sources) addSeed(b string) {
	if !slices.Contains(s.seeds, b) {
		s.seeds = append(s.seeds, b)
	}
}

func (s *sources) addPeer(p string) {
	if !slices.Contains(s.peers, p) {
		s.peers = append(s.peers, p)
	}
}

// model is the model ID: the link's, or the argument (a full ID, or a
// unique prefix of a model in store, which may be nil).
func (s *sources) model(store *swarm.Store) (rdrr.ModelID, error) {
	if s.link != nil {
		return s.link.Model, nil
	}
	return parseModelID(store, s.arg)
}

// clients are the seeds as swarm sources, trusting the certificates in
// the PEM files ca (pull --ca) besides the system's.
func (s *sources) clients(ca []string) ([]swarm.Source, error) {
	doer, err := seedDoer(ca)
	if err != nil {
		return nil, err
	}
	var out []swarm.Source
	for _, u := range s.seeds {
		c, err := httpseed.New(u, httpseed.Options{Doer: doer})
		if err != nil {
			return nil, fmt.Errorf("--seed: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// seedDoer is the HTTP client of pull's seeds: http.DefaultClient, or
// with --ca one that trusts the certificates of those PEM files as well as
// the system's roots (which $SSL_CERT_FILE and $SSL_CERT_DIR replace, on
// Linux). There is no way to skip verification: a self-signed seed's
// certificate is given with --ca.
func seedDoer(ca []string) (httpseed.Doer, error) {
	if len(ca) == 0 {
		return http.DefaultClient, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range ca {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", f)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	return &http.Client{Transport: tr}, nil
}

// tlsHint adds to a pull's error, when a seed's certificate was not
// trusted, how to trust it.
func tlsHint(err error) error {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) {
		return fmt.Errorf("%w (a seed's certificate is not trusted: for a self-signed one, pass --ca CERT.pem)", err)
	}
	return err
}

// errAllBad ends a pull whose every source sent bad blocks.
var errAllBad = errors.New("every source sent bad blocks")

// badSources watches a pull whose sources are fixed (--seed and --peer,
// no --bootstrap or --mdns to find others): the fetcher drops a source
// for a model at its first bad block, so once every one is dropped the
// pull can only wait out --wait. badSources ends it at once instead, with
// an error naming each source and what it sent.
type badSources struct {
	store *swarm.Store
	id    rdrr.ModelID
	seeds []string // the seeds' IDs (their URLs)
	peers []string // the peers' IDs

	mu   sync.Mutex
	errs map[string]error // a seed's first bad block
	kick chan struct{}
}

// watchSources wraps the seeds so that their bad blocks are seen.
func watchSources(store *swarm.Store, id rdrr.ModelID, seeds []swarm.Source, peerAddrs []string) ([]swarm.Source, *badSources) {
	w := &badSources{store: store, id: id, errs: map[string]error{}, kick: make(chan struct{}, 1)}
	out := make([]swarm.Source, len(seeds))
	for i, s := range seeds {
		out[i] = watchedSource{Source: s, w: w}
		w.seeds = append(w.seeds, s.ID())
	}
	for _, a := range peerAddrs {
		if ai, err := peer.AddrInfoFromString(a); err == nil {
			w.peers = append(w.peers, ai.ID.String())
		}
	}
	return out, w
}

// watchedSource is a seed whose bad blocks badSources records.
type watchedSource struct {
	swarm.Source
	w *badSources
}

func (s watchedSource) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(int, []byte) error) error {
	err := s.Source.ReadBlocks(ctx, sh, first, count, fn)
	if errors.Is(err, rdrr.ErrBadBlock) {
		s.w.mu.Lock()
		if s.w.errs[s.ID()] == nil {
			s.w.errs[s.ID()] = err
		}
		s.w.mu.Unlock()
		select {
		case s.w.kick <- struct{}{}:
		default:
		}
	}
	return err
}

// run cancels the pull (cancel, with an error wrapping errAllBad) once
// every source is dropped for bad blocks, checking after each bad block a
// seed sends and, for peers (whose bad blocks the fetcher sees), every
// 100 ms. It returns when ctx ends.
func (w *badSources) run(ctx context.Context, cancel context.CancelCauseFunc) {
	if len(w.seeds)+len(w.peers) == 0 {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-tick.C:
		}
		if err := w.allBad(); err != nil {
			cancel(err)
			return
		}
	}
}

// allBad returns errAllBad, with what each source sent, when every source
// is dropped for bad blocks; else nil.
func (w *badSources) allBad() error {
	var why []string
	w.mu.Lock()
	for _, s := range w.seeds {
		err := w.errs[s]
		if err == nil {
			w.mu.Unlock()
			return nil
		}
		why = append(why, oneLine(err).Error())
	}
	w.mu.Unlock()
	dropped := map[string]swarm.PeerStats{}
	for _, ps := range w.store.PeerStats() {
		if slices.Contains(ps.Dropped, w.id) {
			dropped[ps.ID] = ps
		}
	}
	for _, p := range w.peers {
		ps, ok := dropped[p]
		if !ok {
			return nil
		}
		why = append(why, fmt.Sprintf("peer %s: %d bad blocks", p, ps.BadBlocks))
	}
	return fmt.Errorf("model %s: %w, none is left to ask: %s", w.id.Short(), errAllBad, strings.Join(why, "; "))
}

// blame names the sources a failed pull of id set aside for bad blocks
// (they are logged as they happen; the error says it once more).
func blame(store *swarm.Store, id rdrr.ModelID) string {
	var bad []string
	for _, p := range store.PeerStats() {
		if p.BadBlocks > 0 && slices.Contains(p.Dropped, id) {
			bad = append(bad, p.ID)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf(" (dropped for sending bad blocks: %s)", strings.Join(bad, ", "))
}

func newShare() *cobra.Command {
	var (
		storeFlag    string
		seeds, peers []string
	)
	cmd := &cobra.Command{
		Use:   "share MODEL_ID|LINK --seed URL... --peer MULTIADDR...",
		Short: "Print a doppler:// link naming the model and where to get it (HTTP seeds, peers), for doppler pull LINK",
		Long: `Print one doppler:// share link: the model ID and the sources given, each
HTTP seed (--seed, the http(s) URL of a doppler serve or node --http) and
peer (--peer, a multiaddr with /p2p/<peer-id>, as seed and node print it).
doppler pull LINK fetches the model from them, verifying every block
against the ID. A link as the argument is shared again with the sources
given added. The grammar is in docs/protocols.md ("Share links").`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := parseSources(args[0], seeds, peers)
			if err != nil {
				return err
			}
			if len(src.seeds)+len(src.peers) == 0 {
				return errors.New("nothing to share from: pass at least one --seed URL (a running doppler serve or node --http) or --peer MULTIADDR (a running doppler seed or node)")
			}
			var store *swarm.Store
			if _, err := rdrr.ParseHash(src.arg); src.arg != "" && err != nil {
				// A prefix: look it up in the store.
				if store, err = openStore(storeFlag); err != nil {
					return err
				}
				defer store.Close()
			}
			id, err := src.model(store)
			if err != nil {
				return err
			}
			link := sharelink.Link{Model: id, Seeds: src.seeds, Peers: src.peers}.String()
			if _, err := sharelink.Parse(link); err != nil {
				return err // over the limits
			}
			fmt.Fprintln(cmd.OutOrStdout(), link)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&storeFlag, "store", "", storeFlagHelp+"; read only to expand a model ID prefix")
	fl.StringArrayVar(&seeds, "seed", nil, "an HTTP seed to name: the http(s) URL of a doppler serve or node --http; repeatable")
	fl.StringArrayVar(&peers, "peer", nil, "a peer to name: a full multiaddr with /p2p/<peer-id>; repeatable")
	return cmd
}
