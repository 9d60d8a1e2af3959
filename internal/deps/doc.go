// Package deps holds the test of the dependency rule: the table in
// docs/architecture.md says, for every package of the module, which of the
// module's packages it may import, what it may never depend on (directly
// or through others) and whether cgo may appear among its dependencies.
// TestDependencyRule reads that table and checks it against `go list
// -deps` of every package, natively and for GOOS=js GOARCH=wasm, and fails
// naming the import chain of each violation. The package has no code of
// its own.
package deps
