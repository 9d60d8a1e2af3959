#!/usr/bin/env bash
# bench-ab.sh: two builds of doppler, alternated on one GPU machine.
#
#   scripts/bench-ab.sh OLD NEW [WORKDIR]
#
# Before/after figures for docs/BENCHMARKS.md: a change is kept when it is
# faster than the build before it on the same warm machine, and the cards
# the device lends vary, so both builds run there one after the other, on
# the same synthetic models (doppler bench synth, Q4_K, written once by
# NEW), ROUNDS times in turn (old, new, old, new, ...). Each row is one
# `bench inference --prompt PROMPT -n GEN --runs RUNS [--batch B] --json`:
# prefill and decode tok/s, the batch's aggregate, dispatches per token.
#
# Environment: SHAPES (default "8b 1b"), BATCH ("1 8"), ROUNDS (1),
# RUNS (2), PROMPT (512), GEN (128), BENCH_FLAGS (more bench inference
# flags, e.g. --allow-software to try the script on lavapipe with a model
# put at WORKDIR/mSHAPE). The Vulkan setup is gpu-setup.sh's.
#
# KERNELS="OLD.test NEW.test" (each build's `go test -c ./kernels`) adds
# the kernels' own figures, one binary after the other, for the
# benchmarks KBENCH matches (default: the Q4_K decode matvec, the
# batched one at 8 vectors in each variant (rows, row groups), the 8B
# prefill matmuls and the tiled prefill attention at 512 tokens; 20
# iterations each): a table of µs per op, old against new.
set -euo pipefail
old=$(realpath "$1")
new=$(realpath "$2")
work=${3:-$(mktemp -d)}
mkdir -p "$work"
: "${SHAPES:=8b 1b}" "${BATCH:=1 8}" "${ROUNDS:=1}" "${RUNS:=2}" "${PROMPT:=512}" "${GEN:=128}" "${BENCH_FLAGS:=}"

. "$(dirname "$0")/gpu-setup.sh"
date -u

echo "| shape | batch | build | prefill tok/s | decode tok/s | aggregate tok/s | dispatches / token |"
echo "|---|---|---|---|---|---|---|"
for s in $SHAPES; do
	m=$work/m$s
	[ -e "$m/manifest.json" ] || "$new" bench synth --shape "$s" --quant q4_k -o "$m" >&2
	for b in $BATCH; do
		for round in $(seq "$ROUNDS"); do
			for which in old new; do
				bin=$old
				[ "$which" = new ] && bin=$new
				out=$work/$s.b$b.$which.$round.json
				if ! "$bin" bench inference -m "$m" --prompt "$PROMPT" -n "$GEN" --runs "$RUNS" --batch "$b" $BENCH_FLAGS --json >"$out" 2>"$out.err"; then
					echo "| $s | $b | $which | failed: $(tail -1 "$out.err") | | | |"
					continue
				fi
				python3 - "$out" "$s" "$b" "$which" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
agg = r.get("aggregate_decode_tok_s")
print(f'| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {r["prefill_tok_s"]:,.0f} | {r["decode_tok_s"]:,.1f} | '
      f'{"" if agg is None else f"{agg:,.1f}"} | {r.get("dispatches_per_token", 0):.0f} |')
PY
			done
		done
	done
done

if [ -n "${KERNELS:-}" ]; then
	read -r kold knew <<<"$KERNELS"
	: "${KBENCH:=MatVec\$/Q4_K/|MatVecBatch/Q4_K/.*/n8\$|MatMulPrefill/8b-(qkv|down)/m512/(old|default)\$|AttentionPrefillTiled/hd128/m512/q16k32\$}"
	echo
	echo "| kernel | old µs | new µs |"
	echo "|---|---|---|"
	for which in old new; do
		bin=$(realpath "$kold")
		[ "$which" = new ] && bin=$(realpath "$knew")
		# Benchmarks find their data next to the package's sources.
		if ! (cd "$(dirname "$0")/../kernels" && "$bin" -test.run '^$' -test.bench "$KBENCH" -test.benchtime 20x) >"$work/k.$which.txt" 2>&1; then
			echo "| $which kernels failed: $(tail -1 "$work/k.$which.txt") | | |"
		fi
	done
	python3 - "$work/k.old.txt" "$work/k.new.txt" <<'PY'
import re, sys
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r"Benchmark(\S+?)(-\d+)?\s+\d+\s+(\d+(?:\.\d+)?) ns/op", line)
        if m:
            out[m.group(1)] = float(m.group(3)) / 1000
    return out
old, new = read(sys.argv[1]), read(sys.argv[2])
for name in list(dict.fromkeys(list(old) + list(new))):
    f = lambda d: f"{d[name]:,.1f}" if name in d else "–"
    print(f"| {name} | {f(old)} | {f(new)} |")
PY
fi
date -u
