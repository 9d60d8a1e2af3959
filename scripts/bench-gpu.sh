#!/usr/bin/env bash
# bench-gpu.sh: the engine-speed table of docs/BENCHMARKS.md, on a GPU machine.
#
#   scripts/bench-gpu.sh [DOPPLER [WORKDIR]]
#
# Writes Llama-3.2-1B- and Llama-3-8B-shaped Q4_K models with random weights
# (doppler bench synth), times them with llama-bench's shapes (512-token
# prompt, 128 generated tokens: doppler bench inference --json) and prints
# the markdown rows for docs/BENCHMARKS.md with the llama.cpp figures beside
# them. With ENGINE_TEST set to an engine test binary (go test -c ./engine)
# and DOPPLER_SHARED to the shared test data, it then runs the golden suite
# (every shared GGUF and HF golden, token-exact) on the same GPU, with
# CI=true so that nothing skips.
#
# Environment: SHAPES (default "1b 8b"), RUNS (3), PROMPT (512), GEN (128),
# BATCH (sequences for batched decode, e.g. "1 8"; empty: not measured).
# On the project's GPU machine, carry the Vulkan loader debs in .gl (see
# the device README); this script unpacks them and points the loader at
# NVIDIA's ICD when it finds them.
set -euo pipefail
doppler=$(realpath "${1:-./doppler}")
work=${2:-$(mktemp -d)}
mkdir -p "$work"
: "${SHAPES:=1b 8b}" "${RUNS:=3}" "${PROMPT:=512}" "${GEN:=128}" "${BATCH:=}"

. "$(dirname "$0")/gpu-setup.sh"

# llama.cpp upstream, CUDA, flash attention, llama-bench -p 512 -n 128, same
# shapes with random weights, on an H200 (issue 15; ../shared/DESIGN.md §7).
declare -A ref_decode=([1b]=890 [8b]=267) ref_prefill=([1b]=41624 [8b]=9841)
declare -A name=([1b]="Llama-3.2-1B shape, Q4_K" [8b]="Llama-3-8B shape, Q4_K")

echo "| model | prefill tok/s ($PROMPT) | × llama.cpp | decode tok/s | × llama.cpp | p50 / p99 ms | dispatches / token | GPU memory / file | weights / file |"
echo "|---|---|---|---|---|---|---|---|---|"
for s in $SHAPES; do
	m=$work/m$s
	[ -e "$m/manifest.json" ] || "$doppler" bench synth --shape "$s" --quant q4_k -o "$m" >&2
	"$doppler" bench inference -m "$m" --prompt "$PROMPT" -n "$GEN" --runs "$RUNS" --json >"$work/$s.json"
	python3 - "$work/$s.json" "${name[$s]}" "${ref_prefill[$s]}" "${ref_decode[$s]}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); r = d["results"][0]
pre, dec = float(sys.argv[3]), float(sys.argv[4])
mb = d["model_bytes"]
print(f'| {sys.argv[2]} | {r["prefill_tok_s"]:,.0f} | {r["prefill_tok_s"]/pre:.2f} | {r["decode_tok_s"]:,.1f} | '
      f'{r["decode_tok_s"]/dec:.2f} | {r["decode_p50_ms"]:.2f} / {r["decode_p99_ms"]:.2f} | '
      f'{r.get("dispatches_per_token", 0):.0f} | {d["gpu_bytes_allocated"]/mb:.2f}× | {d["weight_bytes"]/mb:.2f}× |')
PY
	for b in $BATCH; do
		"$doppler" bench inference -m "$m" --prompt "$PROMPT" -n "$GEN" --runs "$RUNS" --batch "$b" --json >"$work/$s.b$b.json"
		python3 - "$work/$s.b$b.json" "${name[$s]}" "$b" "$work/$s.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); r = d["results"][0]
one = json.load(open(sys.argv[4]))["results"][0]["decode_tok_s"]
agg = r.get("aggregate_decode_tok_s", r["decode_tok_s"])
print(f'| {sys.argv[2]}, {sys.argv[3]} sequences | | | {agg:,.1f} aggregate ({agg/one:.2f}× one) | | | | | |')
PY
	done
done

if [ -n "${ENGINE_TEST:-}" ]; then
	echo
	echo "golden suite ($ENGINE_TEST, DOPPLER_SHARED=${DOPPLER_SHARED:-unset}):"
	log=$work/goldens.log
	if CI=true "$ENGINE_TEST" -test.count=1 -test.v -test.run 'Golden' >"$log" 2>&1; then
		echo "PASS: $(grep -c -- '--- PASS' "$log") tests and subtests token-exact"
	else
		grep -E -- '--- FAIL|FAIL|panic' "$log" | head -20
		echo "FAIL (log: $log)"
		exit 1
	fi
fi
