//go:build linux

package swarmbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/doppler-llm/doppler/swarm"
)

// Link mode runs every node as a child process of o.Binary in a network
// namespace of its own (netLab): the seed a `doppler node` over a store
// the model was imported into, each honest peer a `doppler node --pull
// ID` bootstrapped to the seed (and to the malicious peers, as a swarm's
// DHT would hand them out), each malicious peer a `doppler node --evil
// KIND`. Nodes report on stdout ("listening ...", "pulled ...") and, on
// exit, in a --stats file. Churned peers get SIGKILL. The HTTP baseline is
// `doppler pull ID --seed URL` in the honest peers' namespaces against the
// seed restarted as `doppler node --http`.

// The ports every node listens on in its namespace.
const (
	linkP2PPort  = 4001
	linkHTTPPort = 8080
)

// linkProc is one child process.
type linkProc struct {
	name   string
	role   string // seed, honest, evil, http
	net    labNode
	store  string // its store directory
	stats  string // its --stats file ("" none)
	cmd    *exec.Cmd
	ready  chan struct{} // closed at its first "listening" line of kind want
	done   chan struct{} // closed once it exited and was reaped
	want   string        // the ready line's prefix
	addr   string        // that line's address
	victim bool          // churned
	kind   EvilKind

	// Under linkRun.mu.
	pulled   time.Duration // from t0 (0: not yet)
	failures []string
	exitErr  error
	cpu      time.Duration // once exited
}

// linkRun is one link-mode run.
type linkRun struct {
	e   *runEnv
	o   *Options
	lab *netLab
	bin string
	env []string
	t0  time.Time

	mu    sync.Mutex
	procs []*linkProc
	nets  []labNode // made ahead, taken in order
}

func runLink(ctx context.Context, e *runEnv) error {
	o := e.o
	if err := needLinkTools(); err != nil {
		return err
	}
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("link mode: the doppler binary: %w", err)
		}
	}
	// Ctrl-C, SIGTERM and SIGHUP end the run through ctx, so the deferred
	// Close below removes every namespace; a panic unwinds through it too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	go func() {
		select {
		case s := <-sig:
			o.Logger.Warn("swarmbench: signal: stopping the run and removing its namespaces", "signal", s)
			cancel()
		case <-ctx.Done():
		}
	}()
	lab, err := newNetLab(ctx, o.Rate, o.Logger)
	if err != nil {
		return err
	}
	r := &linkRun{e: e, o: o, lab: lab, bin: bin,
		env: append(os.Environ(), "DOPPLER_STORE=", "DOPPLER_API_KEY=", "CI=")}
	defer func() {
		r.killAll()
		if err := lab.Close(); err != nil {
			o.Logger.Error("swarmbench: removing the namespaces", "err", err)
		}
	}()
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o755); err != nil {
		return err
	}
	// Every namespace is made before the clock starts: the seed, the
	// honest peers, the malicious ones, the churned ones' replacements.
	n := 1 + e.plan.honest + len(e.plan.evil) + len(e.plan.killAt)
	t := time.Now()
	for i := range n {
		ln, err := lab.node(ctx, i)
		if err != nil {
			return err
		}
		r.nets = append(r.nets, ln)
	}
	fmt.Fprintf(o.Progress, "link: %d namespaces on bridge %s, every node capped at %s up and down (%v)\n",
		n, lab.bridge, FormatRate(o.Rate), time.Since(t).Round(time.Millisecond))
	if err := r.p2p(ctx); err != nil {
		return err
	}
	if o.NoHTTP {
		return nil
	}
	return r.http(ctx)
}

// takeNet hands out the next namespace.
func (r *linkRun) takeNet() labNode {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nets[0]
	r.nets = r.nets[1:]
	return n
}

// start runs bin args in ln as a child named name; want is the prefix of
// the stdout line that says it is ready ("listening /ip4/" or
// "listening http").
func (r *linkRun) start(ctx context.Context, name, role string, ln labNode, want string, args ...string) (*linkProc, error) {
	p := &linkProc{name: name, role: role, net: ln, ready: make(chan struct{}), done: make(chan struct{}), want: want}
	p.cmd = r.lab.command(ctx, ln.NS, r.bin, args...)
	p.cmd.Env = r.env
	logf, err := os.Create(filepath.Join(r.o.Dir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = logf
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	go func() {
		defer close(p.done)
		defer logf.Close()
		r.read(p, out)
		err := p.cmd.Wait()
		r.mu.Lock()
		p.exitErr = err
		if ps := p.cmd.ProcessState; ps != nil {
			p.cpu = ps.UserTime() + ps.SystemTime()
		}
		r.mu.Unlock()
	}()
	return p, nil
}

// read follows a child's stdout contract lines.
func (r *linkRun) read(p *linkProc, out io.Reader) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case p.addr == "" && strings.HasPrefix(line, p.want):
			p.addr = strings.TrimSpace(strings.TrimPrefix(line, "listening "))
			close(p.ready)
		case strings.HasPrefix(line, "pulled "):
			r.mu.Lock()
			if p.pulled == 0 {
				p.pulled = max(time.Since(r.t0), time.Nanosecond)
			}
			r.mu.Unlock()
		case strings.HasPrefix(line, "pull ") && strings.Contains(line, " failed: "):
			r.mu.Lock()
			p.failures = append(p.failures, line)
			r.mu.Unlock()
		}
	}
	io.Copy(io.Discard, out)
}

// waitReady waits for p's ready line.
func (r *linkRun) waitReady(ctx context.Context, p *linkProc, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready: %v (log: %s)", p.name, p.exitErr, r.logTail(p))
	case <-t.C:
		return fmt.Errorf("%s: not ready within %v (log: %s)", p.name, d, r.logTail(p))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logTail is the end of p's stderr log, on one line.
func (r *linkRun) logTail(p *linkProc) string {
	b, _ := os.ReadFile(filepath.Join(r.o.Dir, "logs", p.name+".log"))
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// stop ends p with SIGTERM (its --stats file is written on the way out),
// and SIGKILL after 20 s.
func stop(p *linkProc) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stopAll stops ps at once.
func stopAll(ps []*linkProc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { stop(p) })
	}
	wg.Wait()
}

// killAll SIGKILLs every child still running and reaps it.
func (r *linkRun) killAll() {
	r.mu.Lock()
	ps := slices.Clone(r.procs)
	r.mu.Unlock()
	for _, p := range ps {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// nodeArgs are a node's common arguments; with the harness's logger at
// debug level (bench -v), the node logs debug detail too (into
// Dir/logs/NAME.log).
func (r *linkRun) nodeArgs(p *linkProc) []string {
	args := []string{"node", "--store", p.store, "--listen", fmt.Sprintf("/ip4/%s/tcp/%d", p.net.Addr, linkP2PPort), "--stats", p.stats}
	if r.o.Logger.Enabled(context.Background(), slog.LevelDebug) {
		args = append(args, "-v")
	}
	return args
}

// p2p runs the swarm phase and fills the p2p figures.
func (r *linkRun) p2p(ctx context.Context) error {
	o, e, res := r.o, r.e, r.e.res
	id := e.id.String()

	// The seed: the model imported into its store here, then served.
	seed := &linkProc{name: "seed", net: r.takeNet(), store: filepath.Join(o.Dir, "seed"), stats: filepath.Join(o.Dir, "seed.json")}
	st, err := swarm.Open(seed.store, swarm.StoreOptions{Logger: o.Logger})
	if err != nil {
		return err
	}
	_, err = st.ImportDir(ctx, e.src)
	st.Close()
	if err != nil {
		return fmt.Errorf("seed import: %w", err)
	}
	sp, err := r.start(ctx, seed.name, "seed", seed.net, "listening /ip4/", append(r.nodeArgs(seed), "--super-seed")...) // as doppler seed
	if err != nil {
		return err
	}
	sp.store, sp.stats = seed.store, seed.stats
	seed = sp
	if err := r.waitReady(ctx, seed, time.Minute); err != nil {
		return err
	}

	// The malicious peers, before the clock: they dial the seed, and the
	// honest peers bootstrap through them too.
	bootstrap := []string{"--bootstrap", seed.addr}
	var evil []*linkProc
	for i, kind := range e.plan.evil {
		name := fmt.Sprintf("evil%d-%s", i, kind)
		ln := r.takeNet()
		p, err := r.start(ctx, name, "evil", ln, "listening /ip4/", "node", "--evil", string(kind), "--evil-src", e.src,
			"--pull", id, "--listen", fmt.Sprintf("/ip4/%s/tcp/%d", ln.Addr, linkP2PPort), "--bootstrap", seed.addr)
		if err != nil {
			return err
		}
		p.kind = kind
		evil = append(evil, p)
	}
	for _, p := range evil {
		if err := r.waitReady(ctx, p, time.Minute); err != nil {
			return err
		}
		bootstrap = append(bootstrap, "--bootstrap", p.addr)
	}

	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	startPeer := func(name string) (*linkProc, error) {
		ln := r.takeNet()
		p := &linkProc{store: filepath.Join(o.Dir, name), stats: filepath.Join(o.Dir, name+".json"), net: ln}
		args := append(r.nodeArgs(p), "--pull", id)
		q, err := r.start(ctx, name, "honest", ln, "listening /ip4/", append(args, bootstrap...)...)
		if err != nil {
			return nil, err
		}
		q.store, q.stats = p.store, p.stats
		return q, nil
	}
	r.mu.Lock()
	r.t0 = time.Now()
	r.mu.Unlock()
	cpu0 := childrenCPU([]*linkProc{seed})
	for _, p := range evil {
		cpu0 += childrenCPU([]*linkProc{p})
	}
	var honest []*linkProc
	for i := range e.plan.honest {
		p, err := startPeer(fmt.Sprintf("peer%d", i))
		if err != nil {
			return err
		}
		honest = append(honest, p)
	}
	fmt.Fprintf(o.Progress, "link: seed, %d honest and %d malicious peers started\n", e.plan.honest, len(e.plan.evil))

	// Churn: SIGKILL at the planned times, a fresh peer at once.
	rng := rand.New(rand.NewPCG(o.Seed, 0x11))
	victims := rng.Perm(len(honest))[:len(e.plan.killAt)]
	var churn sync.WaitGroup
	fresh := make([]*linkProc, 0, len(victims))
	var churnErr error
	for k, vi := range victims {
		v, at := honest[vi], e.plan.killAt[k]
		churn.Go(func() {
			t := time.NewTimer(time.Until(r.t0.Add(at)))
			defer t.Stop()
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			v.cmd.Process.Kill()
			r.mu.Lock()
			v.victim = true
			r.mu.Unlock()
			fmt.Fprintf(o.Progress, "%6.1fs: churn: %s killed (SIGKILL)\n", time.Since(r.t0).Seconds(), v.name)
			p, err := startPeer(fmt.Sprintf("fresh%d", k))
			r.mu.Lock()
			defer r.mu.Unlock()
			if err != nil {
				churnErr = errors.Join(churnErr, err)
				return
			}
			fresh = append(fresh, p)
		})
	}
	churnDone := make(chan struct{})
	go func() { churn.Wait(); close(churnDone) }()

	// Wait for every honest peer's "pulled" line (or its exit, or the
	// timeout).
	live := func() []*linkProc {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []*linkProc
		for _, p := range append(slices.Clone(honest), fresh...) {
			if !p.victim {
				out = append(out, p)
			}
		}
		return out
	}
	finished := func(p *linkProc) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if p.pulled > 0 {
			return true
		}
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	complete := func() bool {
		select {
		case <-churnDone:
		default:
			return false
		}
		ps := live()
		return len(ps) >= e.plan.honest && !slices.ContainsFunc(ps, func(p *linkProc) bool { return !finished(p) })
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Now()
wait:
	for !complete() {
		select {
		case <-pctx.Done():
			fmt.Fprintf(o.Progress, "link: p2p phase ended with peers incomplete: %v\n", context.Cause(pctx))
			break wait
		case <-tick.C:
		}
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			n := 0
			for _, p := range live() {
				if finished(p) {
					n++
				}
			}
			fmt.Fprintf(o.Progress, "%6.1fs: %d/%d honest peers complete\n", time.Since(r.t0).Seconds(), n, e.plan.honest)
		}
	}
	cancel()
	<-churnDone
	if err := ctx.Err(); err != nil { // interrupted: the children are gone
		return fmt.Errorf("link run stopped: %w", context.Cause(ctx))
	}
	if churnErr != nil {
		return churnErr
	}
	wall := time.Since(r.t0)
	all := append(append(append([]*linkProc{seed}, honest...), fresh...), evil...)
	cpu := childrenCPU(all) - cpu0

	// Wire bytes (headers included), read while the namespaces stand.
	_, seedWire := counters(seed.net.Veth)
	var maxWire int64
	for _, p := range live() {
		down, _ := counters(p.net.Veth)
		maxWire = max(maxWire, down)
	}
	stopAll(all)

	total := float64(res.ModelBytes)
	var seedStats linkStats
	if err := readStats(seed.stats, &seedStats); err != nil {
		return err
	}
	res.SeedUploadRatio = float64(seedStats.Uploaded) / total
	evilIDs := map[string]bool{}
	for _, p := range evil {
		if i := strings.LastIndex(p.addr, "/p2p/"); i >= 0 {
			evilIDs[p.addr[i+5:]] = true
		}
	}
	var last time.Duration
	banned, senders := map[string]bool{}, map[string]bool{}
	for _, p := range append(slices.Clone(honest), fresh...) {
		if p.victim {
			res.Churned++
			continue
		}
		for _, f := range p.failures {
			res.Failed = append(res.Failed, p.name+": "+f)
		}
		if p.pulled == 0 {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: no verified copy after %.1fs (exit: %v; log: %s)", p.name, wall.Seconds(), p.exitErr, r.logTail(p)))
			last = max(last, wall)
		}
		last = max(last, p.pulled)
		var ns linkStats
		if err := readStats(p.stats, &ns); err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", p.name, err))
			continue
		}
		res.MaxDownloadRatio = max(res.MaxDownloadRatio, float64(ns.Downloaded)/total)
		for _, ps := range ns.PeerStats {
			dropped := slices.Contains(ps.Dropped, e.id)
			if ps.BadBlocks > 0 {
				senders[ps.ID] = true
				if !dropped {
					res.Unbanned++
				}
			}
			if dropped && evilIDs[ps.ID] {
				banned[ps.ID] = true
			}
		}
	}
	res.Banned, res.BadSenders = len(banned), len(senders)
	res.P2PSeconds = last.Seconds()
	var took []float64
	for _, p := range append(slices.Clone(honest), fresh...) {
		if !p.victim && p.pulled > 0 {
			took = append(took, p.pulled.Seconds())
		}
	}
	if len(took) > 0 {
		slices.Sort(took)
		fmt.Fprintf(o.Progress, "link: honest peers complete from %.1fs to %.1fs (median %.1fs)\n", took[0], took[len(took)-1], took[len(took)/2])
	}
	if wall > 0 {
		res.CPUCoresBusy = cpu.Seconds() / wall.Seconds()
	}
	fmt.Fprintf(o.Progress, "link: on the wire (headers included): seed sent %.2f× the model, the busiest peer received %.2f×\n",
		float64(seedWire)/total, float64(maxWire)/total)

	// Every honest store, the churned ones' included, block by block.
	var errs []error
	for _, p := range append(slices.Clone(honest), fresh...) {
		c, err := CheckStore(p.store, e.id, e.man)
		if err != nil {
			errs = append(errs, fmt.Errorf("check %s: %w", p.name, err))
			continue
		}
		res.BadBytesStored += c.BadBytes
		if !p.victim && p.pulled > 0 && c.Complete && c.BadBytes == 0 {
			res.HonestComplete++
		}
		if c.BadBytes > 0 {
			o.Logger.Error("swarmbench: bad bytes stored", "peer", p.name, "bytes", c.BadBytes, "shards", len(c.BadShards))
		}
	}
	return errors.Join(errs...)
}

// linkStats is what link mode reads of a node's --stats file.
type linkStats struct {
	ID         string            `json:"id"`
	Uploaded   uint64            `json:"uploaded_bytes"`
	Downloaded uint64            `json:"downloaded_bytes"`
	PeerStats  []swarm.PeerStats `json:"peer_stats"`
}

func readStats(path string, s *linkStats) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("node stats: %w", err)
	}
	if err := json.Unmarshal(b, s); err != nil {
		return fmt.Errorf("node stats %s: %w", path, err)
	}
	return nil
}

// childrenCPU is the CPU time ps used so far: from /proc while they run,
// from their exit status after.
func childrenCPU(ps []*linkProc) time.Duration {
	var sum time.Duration
	for _, p := range ps {
		select {
		case <-p.done:
			sum += p.cpu
			continue
		default:
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state is
		// field 3, utime 14, stime 15, in clock ticks (100 a second).
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		sum += time.Duration(u+k) * 10 * time.Millisecond
	}
	return sum
}

// http runs the baseline: the seed restarted with --http, one `doppler
// pull --seed` alone, then one in every honest peer's namespace at once.
func (r *linkRun) http(ctx context.Context) error {
	o, e, res := r.o, r.e, r.e.res
	var seedNet labNode
	r.mu.Lock()
	for _, p := range r.procs {
		if p.role == "seed" {
			seedNet = p.net
		}
	}
	var clients []labNode
	for _, p := range r.procs {
		if p.role == "honest" && len(clients) < e.plan.honest {
			clients = append(clients, p.net)
		}
	}
	r.mu.Unlock()
	seed, err := r.start(ctx, "seed-http", "seed", seedNet, "listening http",
		"node", "--store", filepath.Join(o.Dir, "seed"), "--listen", fmt.Sprintf("/ip4/%s/tcp/%d", seedNet.Addr, linkP2PPort+1),
		"--http", fmt.Sprintf("%s:%d", seedNet.Addr, linkHTTPPort), "--no-api")
	if err != nil {
		return err
	}
	defer stop(seed)
	if err := r.waitReady(ctx, seed, time.Minute); err != nil {
		return err
	}
	pull := func(ctx context.Context, n int) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		t0 := time.Now()
		errs := make([]error, n)
		var wg sync.WaitGroup
		for c := range n {
			name := fmt.Sprintf("http%d-of-%d", c, n)
			store := filepath.Join(o.Dir, name)
			p, err := r.start(ctx, name, "http", clients[c], "\x00", "pull", e.id.String(), "--seed", seed.addr,
				"--store", store, "--linger", "0", "--wait", "1m")
			if err != nil {
				errs[c] = err
				continue
			}
			wg.Go(func() {
				<-p.done
				r.mu.Lock()
				if p.exitErr != nil {
					errs[c] = fmt.Errorf("%s: %v (log: %s)", name, p.exitErr, r.logTail(p))
				}
				r.mu.Unlock()
				os.RemoveAll(store)
			})
		}
		wg.Wait()
		return time.Since(t0), errors.Join(errs...)
	}
	one, err := pull(ctx, 1)
	if err != nil {
		return fmt.Errorf("http baseline, 1 client: %w", err)
	}
	fmt.Fprintf(o.Progress, "http: 1 client in %.2fs\n", one.Seconds())
	all, err := pull(ctx, len(clients))
	if err != nil {
		return fmt.Errorf("http baseline, %d clients: %w", len(clients), err)
	}
	res.OneHTTPSeconds, res.HTTPSeconds, res.HTTPClients = one.Seconds(), all.Seconds(), len(clients)
	return nil
}
