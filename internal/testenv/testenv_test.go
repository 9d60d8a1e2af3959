package testenv

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records how a helper ended the test: Fatalf and Skipf stop the
// goroutine like the real ones do.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// outcome runs fn on a fakeTB in its own goroutine and returns the fake.
func outcome(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestCI(t *testing.T) {
	for v, want := range map[string]bool{"": false, "true": true, "1": true, "yes": true, "false": false, "0": false, "FALSE": false} {
		t.Setenv("CI", v)
		if got := CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", v, got, want)
		}
	}
}

func TestNeed(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		f := outcome(t, func(tb testing.TB) { Need(tb, "a %s", "GPU adapter") })
		got, other := f.skip, f.fatal
		if ci != "" {
			got, other = f.fatal, f.skip
		}
		if !strings.Contains(got, "missing: a GPU adapter") || other != "" {
			t.Errorf("CI=%q: fatal %q, skip %q", ci, f.fatal, f.skip)
		}
	}
}

func TestSkipUnderCI(t *testing.T) {
	t.Setenv("CI", "true")
	if f := outcome(t, func(tb testing.TB) { Skip(tb, "why") }); f.skip != "why" || f.fatal != "" {
		t.Errorf("Skip under CI: fatal %q, skip %q", f.fatal, f.skip)
	}
}

func TestSharedDir(t *testing.T) {
	root := t.TempDir()
	shared := filepath.Join(root, "shared")
	pkg := filepath.Join(root, "repo", "a", "b")
	for _, d := range []string{shared, pkg, filepath.Join(root, "repo", "a", "shared")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(shared, "README.md"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "x.gguf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkg)
	t.Setenv("DOPPLER_SHARED", "")
	// repo/a/shared has no README.md: the walk goes on up to root/shared.
	if got := SharedDir(); got != shared {
		t.Fatalf("SharedDir() = %q, want %q", got, shared)
	}
	if got := Path(t, "x.gguf"); got != filepath.Join(shared, "x.gguf") {
		t.Errorf("Path = %q", got)
	}
	if got := Glob(t, "*.gguf"); len(got) != 1 {
		t.Errorf("Glob = %q", got)
	}

	t.Setenv("DOPPLER_SHARED", filepath.Join(root, "elsewhere"))
	if got := SharedDir(); got != filepath.Join(root, "elsewhere") {
		t.Errorf("with DOPPLER_SHARED: SharedDir() = %q", got)
	}
	t.Setenv("CI", "true")
	f := outcome(t, func(tb testing.TB) { Path(tb, "x.gguf") })
	if !strings.Contains(f.fatal, "missing: shared test data") || !strings.Contains(f.fatal, "elsewhere") {
		t.Errorf("Path of a missing file under CI: fatal %q, skip %q", f.fatal, f.skip)
	}
	t.Setenv("DOPPLER_SHARED", shared)
	if f := outcome(t, func(tb testing.TB) { Glob(tb, "*.none") }); !strings.Contains(f.fatal, "nothing matches *.none") {
		t.Errorf("Glob with no match under CI: fatal %q, skip %q", f.fatal, f.skip)
	}
}

// TestNoDirectSkips fails when a Go file of the module calls Skip, Skipf
// or SkipNow on anything but this package: a test that skips itself could
// skip in CI and pass green. Use Need for a missing resource, Skip or
// SkipShort for any other reason.
func TestNoDirectSkips(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	self, err := filepath.Abs("testenv.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			// What the go tool ignores (testdata, _x, .x) and node_modules.
			if path != root && (name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || path == self {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "Skip", "Skipf", "SkipNow":
			default:
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "testenv" {
				return true
			}
			rel, _ := filepath.Rel(root, fset.Position(call.Pos()).Filename)
			t.Errorf("%s:%d: calls %s directly: use testenv.Need (missing resource: fails under CI) or testenv.Skip/SkipShort",
				rel, fset.Position(call.Pos()).Line, sel.Sel.Name)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d Go files under %s", checked, root)
	}
}
