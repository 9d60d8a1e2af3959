#!/usr/bin/env bash
# Prints how long each package's tests took, slowest last, from the output
# of go test (the ok/FAIL lines), and the totals:
#
#   scripts/test-times.sh LOG [WALL_SECONDS]
set -euo pipefail
log=${1:?usage: test-times.sh LOG [WALL_SECONDS]}
wall=${2:-}
echo
echo "=== time per package (go test; packages run in parallel)"
awk '
  ($1 == "ok" || $1 == "FAIL") && NF >= 3 && $3 ~ /^[0-9.]+s$/ {
    t = $3; sub(/s$/, "", t)
    printf "%9.2fs  %-4s  %s\n", t, $1, $2
  }
  $1 == "FAIL" && $2 ~ /\// && $3 !~ /^[0-9.]+s$/ {
    rest = $0; sub(/^FAIL[ \t]+/, "", rest)
    printf "%10s  FAIL  %s\n", "-", rest
  }
' "$log" | sort -n
awk -v wall="$wall" '
  ($1 == "ok" || $1 == "FAIL") && NF >= 3 && $3 ~ /^[0-9.]+s$/ {
    t = $3; sub(/s$/, "", t); sum += t
  }
  $1 == "ok" { ok++ }
  $1 == "FAIL" && $2 ~ /\// { failed++ }
  END {
    line = sprintf("total: %.1fs of package test time", sum)
    if (wall != "") line = line sprintf(", %ds wall", wall)
    print line
    printf "packages: %d passed, %d failed\n", ok, failed
  }
' "$log"
