// Package wasmbuild builds the browser client (cmd/browser) as
// WebAssembly reproducibly and compresses it deterministically, for the
// generator of signaling/web's embedded artifact and for the test that
// fails when that artifact is stale.
package wasmbuild
