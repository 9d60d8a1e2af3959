//go:build linux

package swarmbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A netLab is link mode's network: one Linux bridge in the root network
// namespace and, per node, a network namespace joined to it by a veth
// pair, with the node's upload capped by a tbf qdisc on the namespace's
// end (eth0) and its download by one on the bridge's end. netem does not
// exist on every kernel (DESIGN.md §4), so links get a rate but no delay.
//
// Every name starts with the run's prefix, "dpl" and this process's PID in
// base 36 (interface names have at most 15 bytes): Close removes what the
// run made, and newNetLab first removes what runs whose process is gone
// left behind (a run killed with SIGKILL cannot clean up).
type netLab struct {
	prefix string
	bridge string
	rate   int64 // bits/s per node and direction
	log    *slog.Logger

	mu     sync.Mutex
	nss    []string // namespaces made, in order
	closed bool
}

// labNet is the subnet every node's address is in (the bridge itself has
// no address: the harness talks to the nodes through their stdio only).
const labNet = "10.213"

// labPrefix is the resource prefix of the run of process pid: "dpl" and
// the PID in base 36, zero-padded to labPIDLen digits so the sweep can cut
// it off without guessing where it ends (base-36 digits include the
// letters that follow it in link names). The longest name made, a veth
// end "dpl" + 5 + "h" + 5 digits, fits Linux's 15-byte limit.
func labPrefix(pid int) string {
	s := strconv.FormatInt(int64(pid), 36)
	return "dpl" + strings.Repeat("0", max(labPIDLen-len(s), 0)) + s
}

// labPID returns the PID of the run that made a namespace or link name,
// and false for a name no lab makes.
func labPID(name string) (int, bool) {
	if !strings.HasPrefix(name, "dpl") || len(name) <= 3+labPIDLen {
		return 0, false
	}
	pid, err := strconv.ParseInt(name[3:3+labPIDLen], 36, 64)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return int(pid), true
}

// labPIDLen is the width of the PID in a lab prefix: 36⁵ exceeds Linux's
// largest pid_max (2²²).
const labPIDLen = 5

// needLinkTools checks what link mode needs before anything is made: root,
// and ip and tc on PATH.
func needLinkTools() error {
	if os.Geteuid() != 0 {
		return errNoRoot
	}
	for _, t := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("link mode needs %s (iproute2) on PATH: %w", t, err)
		}
	}
	return nil
}

// newNetLab sweeps stale resources and makes the bridge.
func newNetLab(ctx context.Context, rate int64, log *slog.Logger) (*netLab, error) {
	if err := needLinkTools(); err != nil {
		return nil, err
	}
	sweepStale(ctx, log)
	p := labPrefix(os.Getpid())
	l := &netLab{prefix: p, bridge: p + "br", rate: rate, log: log}
	if err := ipRun(ctx, "ip", "link", "add", l.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := ipRun(ctx, "ip", "link", "set", l.bridge, "up"); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// labNode is one node's place on the lab's network.
type labNode struct {
	NS   string // network namespace
	Veth string // the bridge's end of its veth pair, in the root namespace
	Addr string // its IPv4 address
}

// node makes namespace i (0 ≤ i < 65,000) with its veth pair, address and
// both directions' qdiscs.
func (l *netLab) node(ctx context.Context, i int) (labNode, error) {
	h := i + 2
	n := labNode{NS: fmt.Sprintf("%s-%d", l.prefix, i), Veth: fmt.Sprintf("%sh%d", l.prefix, i),
		Addr: fmt.Sprintf("%s.%d.%d", labNet, h/256, h%256)}
	peer := fmt.Sprintf("%sp%d", l.prefix, i)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return n, errors.New("network closed")
	}
	l.nss = append(l.nss, n.NS) // before it exists: Close removes a half-made one too
	l.mu.Unlock()
	tbf := l.tbf()
	steps := [][]string{
		{"ip", "netns", "add", n.NS},
		{"ip", "link", "add", n.Veth, "type", "veth", "peer", "name", peer, "netns", n.NS},
		{"ip", "-n", n.NS, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", n.NS, "addr", "add", n.Addr + "/16", "dev", "eth0"},
		{"ip", "-n", n.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", n.NS, "link", "set", "lo", "up"},
		{"ip", "link", "set", n.Veth, "master", l.bridge, "up"},
		append([]string{"tc", "-n", n.NS, "qdisc", "add", "dev", "eth0", "root"}, tbf...), // upload
		append([]string{"tc", "qdisc", "add", "dev", n.Veth, "root"}, tbf...),             // download
	}
	for _, s := range steps {
		if err := ipRun(ctx, s[0], s[1:]...); err != nil {
			return n, fmt.Errorf("namespace %s: %w", n.NS, err)
		}
	}
	return n, nil
}

// tbf is the qdisc both ends of a veth get: the rate, a bucket of 1/50 s
// of it (at least 16 KiB, as sim mode's shaper), and up to 100 ms queued.
func (l *netLab) tbf() []string {
	burst := max(l.rate/8/50, 16<<10)
	return []string{"tbf", "rate", strconv.FormatInt(l.rate, 10) + "bit", "burst", strconv.FormatInt(burst, 10), "latency", "100ms"}
}

// counters reads the bytes the bridge's end of a node's veth sent (to the
// node: its download) and received (from the node: its upload), headers
// included.
func counters(veth string) (toNode, fromNode int64) {
	read := func(name string) int64 {
		b, err := os.ReadFile("/sys/class/net/" + veth + "/statistics/" + name)
		if err != nil {
			return 0
		}
		v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v
	}
	return read("tx_bytes"), read("rx_bytes")
}

// command returns a command running bin in namespace ns. The child gets
// SIGKILL if this process dies first (a child must not outlive its
// namespace's owner), and on ctx's end.
func (l *netLab) command(ctx context.Context, ns, bin string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = 5 * time.Second
	return c
}

// Close kills whatever still runs in the run's namespaces and removes
// them (their veth pairs go with them) and the bridge. It may be called
// again; it uses its own context, so it works after the run's ended.
func (l *netLab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	nss := l.nss
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, ns := range nss {
		if err := removeNS(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	// A namespace's veth pair goes with it, but the kernel removes it a
	// moment later: delete the bridge's ends at once, then make sure.
	for i := range nss {
		if v := fmt.Sprintf("%sh%d", l.prefix, i); linkExists(v) {
			ipRun(ctx, "ip", "link", "del", v)
		}
	}
	if err := ipRun(ctx, "ip", "link", "del", l.bridge); err != nil && linkExists(l.bridge) {
		errs = append(errs, err)
	}
	for range 50 {
		if len(l.left()) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := l.left(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("still present: %v", left))
	}
	return errors.Join(errs...)
}

// left lists the run's namespaces and links still present.
func (l *netLab) left() []string {
	var out []string
	for _, d := range []string{"/run/netns", "/sys/class/net"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if n := e.Name(); strings.HasPrefix(n, l.prefix) && strings.IndexAny(n[len(l.prefix):], "-hpb") == 0 {
				out = append(out, d+"/"+n)
			}
		}
	}
	return out
}

// removeNS kills the processes in ns and deletes it (a missing one is
// no error).
func removeNS(ctx context.Context, ns string) error {
	if !nsExists(ns) {
		return nil
	}
	for range 20 { // a killed process leaves the namespace when it is reaped
		out, _ := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ipRun(ctx, "ip", "netns", "del", ns)
}

func nsExists(ns string) bool {
	_, err := os.Stat("/run/netns/" + ns)
	return err == nil
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// sweepStale removes the namespaces and links of earlier runs whose
// process is gone.
func sweepStale(ctx context.Context, log *slog.Logger) {
	stale := func(name string) bool {
		pid, ok := labPID(name)
		if !ok || pid == os.Getpid() {
			return false
		}
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		return errors.Is(err, os.ErrNotExist)
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if stale(e.Name()) {
				log.Info("swarmbench: removing a stale namespace", "ns", e.Name())
				if err := removeNS(ctx, e.Name()); err != nil {
					log.Warn("swarmbench: stale namespace", "ns", e.Name(), "err", err)
				}
			}
		}
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if stale(e.Name()) && linkExists(e.Name()) {
				log.Info("swarmbench: removing a stale link", "link", e.Name())
				ipRun(ctx, "ip", "link", "del", e.Name())
			}
		}
	}
}

// ipRun runs a command, its output in the error.
func ipRun(ctx context.Context, name string, args ...string) error {
	var out bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
