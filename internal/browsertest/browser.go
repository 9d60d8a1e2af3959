//go:build !js

package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// DefaultChromium is where Debian's chromium package puts the browser.
const DefaultChromium = "/usr/lib/chromium/chromium"

// ErrPage is wrapped by the error [Page.Wait] returns when the page set
// document.body.dataset.state to "error".
var ErrPage = errors.New("page reported an error")

// pollInterval is how often Wait reads the page's state.
const pollInterval = 100 * time.Millisecond

// ErrStalled is the cause of a context from [Page.Progress] that ended
// because the page stopped making progress.
var ErrStalled = errors.New("the page made no progress")

// Stall is a generous window without any progress after which a page is
// taken to be stuck: a page that works on a loaded 2-core machine shows
// something new (a downloaded block, a token, a log line) far more often.
const Stall = 2 * time.Minute

// progressPoll is how often [Page.Progress] looks at the page.
const progressPoll = time.Second

// Chromium returns the Chromium executable: $DOPPLER_CHROMIUM when set,
// else [DefaultChromium]. When there is none it calls [testenv.Need]: the
// test is skipped, or fails under CI (a CI machine must run these tests).
func Chromium(t testing.TB) string {
	t.Helper()
	path := os.Getenv("DOPPLER_CHROMIUM")
	if path == "" {
		path = DefaultChromium
	}
	fi, err := os.Stat(path)
	if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		testenv.Need(t, "Chromium at %s (%v): apt-get install chromium, or set DOPPLER_CHROMIUM", path, err)
	}
	return path
}

// Option configures [New].
type Option func(*config)

type config struct {
	profile string
	flags   []chromedp.ExecAllocatorOption
	size    [2]int
}

// WithProfile runs the browser on the given profile directory
// (--user-data-dir) instead of a fresh one, so storage survives from one
// browser to the next. The directory is not removed.
func WithProfile(dir string) Option {
	return func(c *config) { c.profile = dir }
}

// WithFlag adds (or, with value false, removes) a Chromium command-line
// flag, e.g. WithFlag("force-webrtc-ip-handling-policy", "default_public_interface_only").
func WithFlag(name string, value any) Option {
	return func(c *config) { c.flags = append(c.flags, chromedp.Flag(name, value)) }
}

// WithWindowSize sets the viewport size in CSS pixels (default 1024×768).
func WithWindowSize(width, height int) Option {
	return func(c *config) { c.size = [2]int{width, height} }
}

// loopbackOnly are the flags that keep Chromium off the network: no
// background or component traffic, and every host but localhost,
// 127.0.0.1 and [::1] resolves to nothing (IP literals go through these
// rules too, so 10.0.0.1 or 8.8.8.8 fail like names do). chromedp's defaults already add disable-background-networking,
// disable-sync, disable-default-apps, disable-extensions, no-first-run,
// safebrowsing-disable-auto-update and metrics-recording-only (record
// locally, upload nothing).
var loopbackOnly = []chromedp.ExecAllocatorOption{
	chromedp.Flag("disable-background-networking", true),
	chromedp.Flag("disable-component-update", true),
	chromedp.Flag("disable-domain-reliability", true),
	chromedp.Flag("disable-field-trial-config", true),
	chromedp.Flag("disable-sync", true),
	chromedp.Flag("disable-default-apps", true),
	chromedp.Flag("no-pings", true),
	chromedp.Flag("no-service-autorun", true),
	chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,CertificateTransparencyComponentUpdater,WebRtcHideLocalIpsWithMdns"),
	// WebRTC between pages and loopback nodes: gather 127.0.0.1 host
	// candidates, under their real address (not an mDNS name).
	chromedp.Flag("allow-loopback-in-peer-connection", true),
	chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"),
}

// Browser is a running headless Chromium. It embeds its first tab, so
// b.Run, b.Wait, b.Screenshot act on that tab; [Browser.NewPage] opens
// more tabs in the same browser (same profile and storage).
type Browser struct {
	*Page
	t       testing.TB
	logMu   sync.Mutex
	closed  bool // no more t.Log calls (the test may have ended)
	alloc   context.CancelFunc
	ctx     context.Context // the browser's chromedp context (first tab)
	mu      sync.Mutex
	pages   []*Page
	tabs    int
	closeMu sync.Mutex
}

// New starts a headless Chromium (see the package documentation for its
// flags) with its first tab open, and registers its Close with t.Cleanup.
// It fails the test when the browser does not start.
func New(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	exe := Chromium(t)
	cfg := config{size: [2]int{1024, 768}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.profile == "" {
		cfg.profile = t.TempDir()
	}
	aopts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(cfg.profile),
		chromedp.NoSandbox,
		chromedp.Flag("enable-unsafe-webgpu", true),
		chromedp.WindowSize(cfg.size[0], cfg.size[1]),
	)
	aopts = append(aopts, loopbackOnly...)
	aopts = append(aopts, cfg.flags...)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), aopts...)
	b := &Browser{t: t, alloc: acancel}
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithErrorf(b.logf))
	b.ctx = bctx
	// The first Run starts the browser and binds its life to bctx: no
	// timeout here (a timeout would stop the browser when it fires).
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		t.Fatalf("browsertest: start %s: %v", exe, err)
	}
	b.Page = b.attach(bctx, bcancel)
	t.Cleanup(b.Close)
	return b
}

// logf forwards to t.Logf until the browser is closed.
func (b *Browser) logf(format string, args ...any) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	if !b.closed {
		b.t.Logf(format, args...)
	}
}

// attach wraps an open tab context in a Page and starts forwarding its
// console.
func (b *Browser) attach(ctx context.Context, cancel context.CancelFunc) *Page {
	b.mu.Lock()
	b.tabs++
	p := &Page{b: b, ctx: ctx, cancel: cancel, name: fmt.Sprintf("tab%d", b.tabs)}
	b.pages = append(b.pages, p)
	b.mu.Unlock()
	// Console queues the messages for the forwarder; Listen counts them
	// as they arrive, so Close can wait until all have been logged.
	cctx, ccancel := context.WithCancel(ctx)
	p.stopConsole = ccancel
	msgs := chromedp.Console(cctx)
	chromedp.Listen(cctx, func(ev any) {
		switch ev.(type) {
		case *runtime.EventConsoleAPICalled, *runtime.EventExceptionThrown, *cdplog.EventEntryAdded:
			p.received.Add(1)
		}
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				if p.exception == "" {
					p.exception = m.Text
				}
				p.mu.Unlock()
			}
			b.logf("%s %s: %s", p.name, m.Type, m.Text)
			p.logged.Add(1)
		}
	}()
	return p
}

// NewPage opens another tab in this browser. It is closed with the
// browser, or earlier by [Page.Close].
func (b *Browser) NewPage() (*Page, error) {
	ctx, cancel := chromedp.NewContext(b.ctx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("browsertest: new tab: %w", err)
	}
	return b.attach(ctx, cancel), nil
}

// Close closes every tab and stops the browser, waiting for the process
// to exit (so its profile can be reused). It is safe to call more than
// once; New registers it with t.Cleanup.
func (b *Browser) Close() {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.alloc == nil {
		return
	}
	b.mu.Lock()
	pages := b.pages
	b.mu.Unlock()
	for _, p := range pages {
		if p != b.Page {
			p.Close()
		}
	}
	// Close the browser gracefully (it flushes the profile), bounded.
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
		b.logf("browsertest: closing the browser: %v", err)
	}
	cancel()
	b.Page.Close()
	b.alloc()
	b.alloc = nil
	b.logMu.Lock()
	b.closed = true
	b.logMu.Unlock()
}

// Page is one browser tab. Open and Run navigate and must not run
// concurrently with each other on one Page; Wait, Eval and Screenshot may
// run concurrently with anything (a screenshot taken while Wait polls shows
// the page mid-run).
type Page struct {
	b      *Browser
	ctx    context.Context
	cancel context.CancelFunc
	name   string
	wg     sync.WaitGroup // the console forwarder

	stopConsole      context.CancelFunc
	received, logged atomic.Int64 // console messages arrived, forwarded

	mu        sync.Mutex
	exception string // the first uncaught exception, for Wait's timeout error
	closed    bool
}

// Name is the tab's name in forwarded log lines ("tab1", "tab2", …).
func (p *Page) Name() string { return p.name }

// bound returns a context that carries the tab (for chromedp) and ends
// when ctx does.
func (p *Page) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancelCause(p.ctx)
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	return c, func() {
		stop()
		cancel(context.Canceled)
	}
}

// Open navigates the tab to url and waits for its load event (bounded by
// ctx), not for the page's state.
func (p *Page) Open(ctx context.Context, url string) error {
	p.mu.Lock()
	p.exception = ""
	p.mu.Unlock()
	c, done := p.bound(ctx)
	defer done()
	if err := chromedp.Do(c, chromedp.Navigate(url)); err != nil {
		return fmt.Errorf("browsertest: %s: open %s: %w", p.name, url, ctxErr(ctx, err))
	}
	return nil
}

// pageState is what the polling expression returns.
type pageState struct {
	State  string  `json:"state"`
	Result *string `json:"result"`
	Error  string  `json:"error"`
}

const stateJS = `(() => {
	const b = document.body;
	const s = b ? (b.dataset.state || "") : "";
	if (s === "done") {
		const r = window.dopplerResult;
		return {state: s, result: JSON.stringify(r === undefined ? null : r)};
	}
	if (s === "error") return {state: s, error: String(b.dataset.error || "(no data-error set)")};
	return {state: s};
})()`

// Wait polls the page until document.body.dataset.state is "done" — and
// returns JSON.stringify(window.dopplerResult) ("null" when unset) — or
// "error" — and returns an error wrapping [ErrPage] with
// document.body.dataset.error. When ctx ends first, the error wraps
// ctx.Err() and says the last state seen and the first uncaught exception.
func (p *Page) Wait(ctx context.Context) (json.RawMessage, error) {
	c, done := p.bound(ctx)
	defer done()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last pageState
	var lastErr error
	for {
		st, err := chromedp.Run(c, chromedp.Evaluate[pageState](stateJS))
		switch {
		case err != nil:
			// Transient while a navigation replaces the document.
			lastErr = err
		case st.State == "done":
			if st.Result == nil {
				return json.RawMessage("null"), nil
			}
			return json.RawMessage(*st.Result), nil
		case st.State == "error":
			return nil, fmt.Errorf("browsertest: %s: %w: %s", p.name, ErrPage, st.Error)
		default:
			last, lastErr = st, nil
		}
		select {
		case <-ctx.Done():
			p.mu.Lock()
			exc := p.exception
			p.mu.Unlock()
			msg := fmt.Sprintf("state %q", last.State)
			if lastErr != nil {
				msg += fmt.Sprintf(", last poll: %v", lastErr)
			}
			if exc != "" {
				msg += ", uncaught: " + exc
			}
			return nil, fmt.Errorf("browsertest: %s: waiting for the page (%s): %w", p.name, msg, cause(ctx))
		case <-tick.C:
		}
	}
}

// progressJS fingerprints what the page shows: its state, an optional
// document.body.dataset.progress and a hash of its text (bytes downloaded,
// tokens generated, log lines all change it).
const progressJS = `(() => {
	const b = document.body;
	if (!b) return "";
	const s = (b.dataset.state || "") + "\x00" + (b.dataset.progress || "") + "\x00" + b.textContent;
	let h = 2166136261;
	for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
	return (b.dataset.state || "") + "/" + s.length + "/" + (h >>> 0).toString(16);
})()`

// Progress returns a context derived from ctx that follows the page's
// work rather than the wall clock: it ends, with a cause wrapping
// [ErrStalled], once the page has shown no progress for stall — no
// change of its state or text and no console message — and otherwise
// lasts as long as ctx. A loaded machine makes a working page slower, not
// the test red; a stuck page still fails, stall after its last sign of
// life. Pass it to Open, Wait, Run or Eval; cancel releases its watcher.
// The page is looked at every second, beside whatever else runs on it.
func (p *Page) Progress(ctx context.Context, stall time.Duration) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancelCause(ctx)
	go func() {
		tick := time.NewTicker(progressPoll)
		defer tick.Stop()
		last, msgs, fp := time.Now(), p.received.Load(), ""
		for {
			select {
			case <-c.Done():
				return
			case <-tick.C:
			}
			if n := p.received.Load(); n != msgs {
				msgs, last = n, time.Now()
			}
			// A page busy in a long synchronous stretch answers late: a
			// look that times out is no progress, and no failure either.
			ec, done := p.bound(c)
			ec, stop := context.WithTimeout(ec, max(progressPoll, stall/8))
			v, err := chromedp.Run(ec, chromedp.Evaluate[string](progressJS))
			stop()
			done()
			if err == nil && v != fp {
				fp, last = v, time.Now()
			}
			if idle := time.Since(last); idle >= stall {
				state, _, _ := strings.Cut(fp, "/")
				cancel(fmt.Errorf("%w for %v (state %q)", ErrStalled, idle.Round(time.Second), state))
				return
			}
		}
	}()
	return c, func() { cancel(context.Canceled) }
}

// Run opens url and waits for the page's result: Open, then Wait.
func (p *Page) Run(ctx context.Context, url string) (json.RawMessage, error) {
	if err := p.Open(ctx, url); err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Eval evaluates a JavaScript expression in the page and decodes its
// JSON value into out (which may be nil to discard it). A promise is
// awaited.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	c, done := p.bound(ctx)
	defer done()
	raw, err := chromedp.Run(c, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Errorf("browsertest: %s: eval: %w", p.name, ctxErr(ctx, err))
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("browsertest: %s: eval result %.200s: %w", p.name, raw, err)
	}
	return nil
}

// Screenshot writes a PNG of the whole page (beyond the viewport) to path.
func (p *Page) Screenshot(ctx context.Context, path string) error {
	c, done := p.bound(ctx)
	defer done()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("browsertest: %s: screenshot: %w", p.name, ctxErr(ctx, err))
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("browsertest: %s: screenshot: %w", p.name, err)
	}
	return nil
}

// Close closes the tab (the first tab closes with the browser), after
// logging the console messages the page sent before.
func (p *Page) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.flushConsole()
	p.stopConsole()
	p.cancel()
	p.wg.Wait()
}

// flushConsole waits (up to a second) until every console message that
// arrived before a round trip to the page has been logged.
func (p *Page) flushConsole() {
	ctx, cancel := context.WithTimeout(p.ctx, time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void]("0")); err != nil {
		return // the page or browser is gone: nothing more will come
	}
	for p.logged.Load() < p.received.Load() && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// ctxErr prefers the caller's context error, which says why an action was
// cut short, over chromedp's plain "context canceled".
func ctxErr(ctx context.Context, err error) error {
	if c := cause(ctx); c != nil && !errors.Is(err, c) {
		return fmt.Errorf("%w (%v)", c, err)
	}
	return err
}

// cause is why ctx ended: its cause (a stall from [Page.Progress]) when
// it says more than ctx.Err(), which it wraps or replaces.
func cause(ctx context.Context) error {
	err := ctx.Err()
	if c := context.Cause(ctx); c != nil && c != err && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}
