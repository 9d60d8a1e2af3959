#!/usr/bin/env bash
# Runs every fuzz target of the module, one after the other:
#
#   scripts/fuzz.sh TIME [PARSER_TIME]
#
# each for TIME (a -fuzztime: 5s, 1m, 1000x), except the fuzz targets of
# parsers of outside bytes (GGUF, safetensors, manifests, wire frames,
# signaling messages), which run for PARSER_TIME (default TIME). A parser's
# target is one whose name matches $FUZZ_PARSERS, by default
# ^Fuzz(Parse|Decode|Read): name new targets that way. Targets are found
# with go test -list in every package that has a func Fuzz in its tests,
# so new ones are picked up without touching this file. A failing input
# is written to the package's testdata/fuzz/<target>/ by go test (commit
# it: it then runs as a regression test in every go test).
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
time=${1:?usage: fuzz.sh TIME [PARSER_TIME]}
ptime=${2:-$time}
parsers=${FUZZ_PARSERS:-'^Fuzz(Parse|Decode|Read)'}

# Packages whose test files declare a fuzz target.
pkgs=()
while read -r dir pkg files; do
  for f in $files; do
    if grep -q '^func Fuzz[A-Z0-9_]' "$dir/$f"; then
      pkgs+=("$pkg")
      break
    fi
  done
done < <($go list -f '{{.Dir}} {{.ImportPath}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)

# fuzz_one PKG TARGET TIME runs one target. Go's fuzzing coordinator at
# times ends a clean run with a bare "context deadline exceeded" when
# -fuzztime expires while a worker is busy (no input found, none written):
# such a run is tried again, up to three runs in all (two in a row were
# seen on a loaded 2-core machine, FuzzDecodeClusters, 2026-12-08). A real
# failure writes its input under testdata/fuzz ("Failing input written
# to"), which ends it at once, and a retry's baseline would run it first.
fuzz_one() {
  local out
  out=$(mktemp)
  for try in 1 2 3; do
    if $go test -run '^$' -fuzz "^$2\$" -fuzztime "$3" "$1" 2>&1 | tee "$out"; then
      rm -f "$out"
      return 0
    fi
    if grep -q 'Failing input written' "$out" || ! grep -q '^    context deadline exceeded$' "$out" || [ "$try" -eq 3 ]; then
      rm -f "$out"
      return 1
    fi
    echo "fuzz: $2 ended with Go's spurious \"context deadline exceeded\" (no failing input); again"
  done
}

n=0
failed=()
start=$SECONDS
for pkg in "${pkgs[@]}"; do
  targets=$($go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
  if [ -z "$targets" ]; then
    echo "fuzz: $pkg: go test -list found no fuzz target" >&2
    exit 1
  fi
  for target in $targets; do
    t=$time
    if [[ $target =~ $parsers ]]; then t=$ptime; fi
    n=$((n + 1))
    echo "=== fuzz $pkg $target for $t"
    if ! fuzz_one "$pkg" "$target" "$t"; then
      failed+=("$pkg $target")
    fi
  done
done
echo "fuzz: $n targets in ${#pkgs[@]} packages, $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz: FAIL %s\n' "${failed[@]}" >&2
  exit 1
fi
if [ "$n" -eq 0 ]; then
  echo "fuzz: no fuzz target found" >&2
  exit 1
fi
