package deps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// tableFile is where the rule is written, relative to the module root.
const tableFile = "docs/architecture.md"

// rule is one row of the table.
type rule struct {
	line    int      // in tableFile
	pkgs    []string // the packages the row is for (patterns)
	imports []string // the module's packages they may import
	never   []string // what they may never depend on
	cgo     bool     // whether cgo may appear among their dependencies
}

func (r rule) String() string { return fmt.Sprintf("%s:%d", tableFile, r.line) }

var tick = regexp.MustCompile("`([^`]+)`")

// parseTable reads the rows between the deps:begin and deps:end markers
// of text: four cells each, patterns in backticks.
func parseTable(text string) ([]rule, error) {
	var rules []rule
	in, done := false, false
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "<!-- deps:begin -->":
			in = true
			continue
		case line == "<!-- deps:end -->":
			in, done = false, true
		}
		if !in || !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| Packages") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			return nil, fmt.Errorf("%s:%d: %d cells, want 4", tableFile, i+1, len(cells))
		}
		r := rule{line: i + 1, pkgs: ticks(cells[0]), imports: ticks(cells[1]), never: ticks(cells[2])}
		switch strings.TrimSpace(cells[3]) {
		case "yes":
			r.cgo = true
		case "no":
		default:
			return nil, fmt.Errorf("%s:%d: cgo cell %q, want yes or no", tableFile, i+1, strings.TrimSpace(cells[3]))
		}
		if len(r.pkgs) == 0 {
			return nil, fmt.Errorf("%s:%d: a row for no package", tableFile, i+1)
		}
		rules = append(rules, r)
	}
	if !done || len(rules) == 0 {
		return nil, fmt.Errorf("%s: no table between <!-- deps:begin --> and <!-- deps:end -->", tableFile)
	}
	return rules, nil
}

func ticks(cell string) []string {
	var out []string
	for _, m := range tick.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// pkg is what go list says of a package.
type pkg struct {
	ImportPath string
	Imports    []string
	GoFiles    []string
	CgoFiles   []string
	Standard   bool
	Error      *struct{ Err string }
}

// graph is one go list run: its packages by import path, and the module's.
type graph struct {
	mod  string
	pkgs map[string]*pkg
	own  []string // the module's packages, sorted
}

// rel is p relative to the module ("swarm"), or p itself when outside it.
func (g *graph) rel(p string) string {
	if p == g.mod {
		return "."
	}
	if r, ok := strings.CutPrefix(p, g.mod+"/"); ok {
		return r
	}
	return p
}

// match reports whether package p matches pattern: relative to the module
// unless its first element has a dot; "x/..." matches x and below it,
// "..." the whole module.
func (g *graph) match(pattern, p string) bool {
	full := pattern
	if first, _, _ := strings.Cut(pattern, "/"); first == "..." || !strings.Contains(first, ".") {
		full = g.mod + "/" + pattern
	}
	if base, ok := strings.CutSuffix(full, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == full
}

func (g *graph) matchAny(patterns []string, p string) bool {
	return slices.ContainsFunc(patterns, func(pat string) bool { return g.match(pat, p) })
}

// walk finds everything p depends on, directly or not, by a breadth-first
// walk of the imports: deps sorted, and prev, the package through which
// each was first reached (so prev[d] ends the shortest chain from p to d).
func (g *graph) walk(p string) (deps []string, prev map[string]string) {
	prev = map[string]string{p: ""}
	queue := []string{p}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		q := g.pkgs[cur]
		if q == nil {
			continue
		}
		for _, imp := range q.Imports {
			if _, seen := prev[imp]; !seen {
				prev[imp] = cur
				queue = append(queue, imp)
				deps = append(deps, imp)
			}
		}
	}
	slices.Sort(deps)
	return deps, prev
}

// chain is the import chain from the walk's start to d, module-relative.
func (g *graph) chain(prev map[string]string, d string) string {
	var path []string
	for at := d; at != ""; at = prev[at] {
		path = append(path, g.rel(at))
	}
	slices.Reverse(path)
	return strings.Join(path, " → ")
}

// check returns the violations of the rules in g, and marks in used the
// rows that matched a package. A dependency that breaks the rule is named
// with its import chain; what it pulls in after it is not named again.
func check(rules []rule, g *graph, used map[int]bool) []string {
	var bad []string
	for _, p := range g.own {
		i := slices.IndexFunc(rules, func(r rule) bool { return g.matchAny(r.pkgs, p) })
		if i < 0 {
			bad = append(bad, fmt.Sprintf("%s has no row in %s: add it to the table", g.rel(p), tableFile))
			continue
		}
		r := rules[i]
		used[r.line] = true
		for _, imp := range g.pkgs[p].Imports {
			if g.match("...", imp) && !g.matchAny(r.imports, imp) {
				bad = append(bad, fmt.Sprintf("%s imports %s, outside its row (%s allows %s)",
					g.rel(p), g.rel(imp), r, strings.Join(r.imports, " ")))
			}
		}
		// why says what is wrong with depending on d ("" if nothing).
		why := func(d string) string {
			switch {
			case g.match("cmd/...", d):
				return "; nothing may depend on cmd/..."
			case g.matchAny(r.never, d):
				return fmt.Sprintf(", which its row (%s) forbids", r)
			case !r.cgo && g.pkgs[d] != nil && !g.pkgs[d].Standard && len(g.pkgs[d].CgoFiles) > 0:
				return fmt.Sprintf(", which uses cgo, and its row (%s) allows none", r)
			}
			return ""
		}
		deps, prev := g.walk(p)
		for _, d := range deps {
			if w := why(d); w != "" && (prev[d] == p || why(prev[d]) == "") {
				bad = append(bad, fmt.Sprintf("%s depends on %s%s: %s", g.rel(p), g.rel(d), w, g.chain(prev, d)))
			}
		}
	}
	return bad
}

// goList runs go list -deps over the module with env added.
func goList(t *testing.T, root string, env ...string) *graph {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		testenv.Need(t, "the go command on PATH: %v", err)
	}
	run := func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s (%s): %v\n%s", strings.Join(args, " "), strings.Join(env, " "), err, stderr.Bytes())
		}
		return out
	}
	g := &graph{mod: strings.TrimSpace(string(run("list", "-m"))), pkgs: map[string]*pkg{}}
	dec := json.NewDecoder(bytes.NewReader(run("list", "-e", "-deps", "-json=ImportPath,Imports,GoFiles,CgoFiles,Standard,Error", "./...")))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil && len(p.GoFiles)+len(p.CgoFiles) == 0 && strings.Contains(p.Error.Err, "build constraints exclude all Go files") {
			continue // not built for this platform
		}
		if p.Error != nil {
			t.Errorf("go list (%s): %s: %s", strings.Join(env, " "), p.ImportPath, p.Error.Err)
		}
		g.pkgs[p.ImportPath] = p
		if g.match("...", p.ImportPath) {
			g.own = append(g.own, p.ImportPath)
		}
	}
	slices.Sort(g.own)
	return g
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
}

// TestDependencyRule checks every package of the module against the table
// in docs/architecture.md: natively (with cgo, so that cgo packages show)
// and for the browser (GOOS=js GOARCH=wasm). Every row must match some
// package.
func TestDependencyRule(t *testing.T) {
	root := moduleRoot(t)
	text, err := os.ReadFile(filepath.Join(root, tableFile))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseTable(string(text))
	if err != nil {
		t.Fatal(err)
	}
	used := map[int]bool{}
	for _, c := range []struct {
		name string
		env  []string
	}{
		{"native", []string{"CGO_ENABLED=1"}},
		{"js-wasm", []string{"GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := goList(t, root, c.env...)
			if len(g.own) == 0 {
				t.Fatal("go list found no package of the module")
			}
			for _, v := range check(rules, g, used) {
				t.Error(v)
			}
		})
	}
	if t.Failed() {
		return
	}
	for _, r := range rules {
		if !used[r.line] {
			t.Errorf("the row at %s matches no package: remove it or fix its patterns", r)
		}
	}
}

// TestCheck: the checker reports each kind of violation with its chain,
// and nothing for a graph that keeps the rule.
func TestCheck(t *testing.T) {
	const table = "<!-- deps:begin -->\n" +
		"| Packages | May import | Never | cgo |\n|---|---|---|---|\n" +
		"| `cmd/...` | `...` | | yes |\n" +
		"| `swarm` | `p2p/...` | `engine/...` `example.org/gpu/...` | no |\n" +
		"| `p2p/...` | `p2p/...` | | no |\n" +
		"| `engine/...` `kernels` | `engine/...` `kernels` | | yes |\n" +
		"<!-- deps:end -->\n"
	rules, err := parseTable(table)
	if err != nil {
		t.Fatal(err)
	}
	const m = "example.com/m/"
	base := func() map[string][]string {
		return map[string][]string{
			m + "cmd/x":            {m + "swarm", m + "engine"},
			m + "swarm":            {m + "p2p", "fmt"},
			m + "p2p":              {m + "p2p/wire", "net"},
			m + "p2p/wire":         nil,
			m + "engine":           {m + "kernels"},
			m + "kernels":          {"example.org/gpu/wgpu"},
			"example.org/gpu/wgpu": nil,
			"example.org/cgolib":   nil,
			"fmt":                  nil,
			"net":                  nil,
		}
	}
	for _, c := range []struct {
		name string
		edit func(imports map[string][]string)
		want []string
	}{
		{"clean", func(map[string][]string) {}, nil},
		{"direct import outside the row", func(im map[string][]string) { im[m+"swarm"] = append(im[m+"swarm"], m+"engine") }, []string{
			"swarm imports engine, outside its row (docs/architecture.md:5 allows p2p/...)",
			"swarm depends on engine, which its row (docs/architecture.md:5) forbids: swarm → engine",
		}},
		{"cgo through an allowed import", func(im map[string][]string) { im[m+"p2p"] = append(im[m+"p2p"], "example.org/cgolib") }, []string{
			"p2p depends on example.org/cgolib, which uses cgo, and its row (docs/architecture.md:6) allows none: p2p → example.org/cgolib",
			"swarm depends on example.org/cgolib, which uses cgo, and its row (docs/architecture.md:5) allows none: swarm → p2p → example.org/cgolib",
		}},
		{"forbidden through an allowed import", func(im map[string][]string) { im[m+"p2p/wire"] = []string{"example.org/gpu/wgpu"} }, []string{
			"swarm depends on example.org/gpu/wgpu, which its row (docs/architecture.md:5) forbids: swarm → p2p → p2p/wire → example.org/gpu/wgpu",
		}},
		{"no row", func(im map[string][]string) { im[m+"api"] = nil }, []string{"api has no row in docs/architecture.md: add it to the table"}},
		{"depends on cmd", func(im map[string][]string) { im[m+"cmd/y"] = nil; im[m+"p2p/wire"] = []string{m + "cmd/y"} }, []string{
			"p2p/wire imports cmd/y, outside its row (docs/architecture.md:6 allows p2p/...)",
			"p2p/wire depends on cmd/y; nothing may depend on cmd/...: p2p/wire → cmd/y",
			"p2p depends on cmd/y; nothing may depend on cmd/...: p2p → p2p/wire → cmd/y",
			"swarm depends on cmd/y; nothing may depend on cmd/...: swarm → p2p → p2p/wire → cmd/y",
			"cmd/x depends on cmd/y; nothing may depend on cmd/...: cmd/x → swarm → p2p → p2p/wire → cmd/y",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := base()
			c.edit(im)
			g := &graph{mod: "example.com/m", pkgs: map[string]*pkg{}}
			for p, imps := range im {
				q := &pkg{ImportPath: p, Imports: imps, Standard: !strings.Contains(p, ".")}
				if p == m+"kernels" || p == "example.org/cgolib" {
					q.CgoFiles = []string{"c.go"}
				}
				g.pkgs[p] = q
				if g.match("...", p) {
					g.own = append(g.own, p)
				}
			}
			slices.Sort(g.own)
			got := check(rules, g, map[int]bool{})
			for _, w := range c.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing violation %q", w)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("%d violations, want %d:\n%s", len(got), len(c.want), strings.Join(got, "\n"))
			}
		})
	}
}
