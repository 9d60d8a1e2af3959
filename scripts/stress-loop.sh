#!/usr/bin/env bash
# stress-loop.sh TEST_BINARY SECONDS OUT_DIR
#
# Runs a Go test binary (go test -c) again and again on simulated 2-core
# machines, to catch rare crashes (issue 16). The machine's cores are cut
# into pairs (taskset, LP_NUM_THREADS=2 for lavapipe); the first half of
# the pairs run one copy at a time, the second half two copies at once. Each
# pair starts with an empty Mesa shader cache, as a fresh CI machine does, and
# starts no run after SECONDS. GOTRACEBACK=crash and unlimited core dumps:
# a crashing run leaves its log and core in OUT_DIR/pN/<iter><copy>/.
#
# OUT_DIR/rc gets one line per run: pair iteration copy exit-status seconds.
# Summary: awk '{n++; if ($4) f++} END {print n, "runs,", f+0, "failed"}' OUT_DIR/rc
#
# Example (test data and lavapipe as for make test):
#   go test -c -o /tmp/engine.test ./engine
#   DOPPLER_SHARED=$PWD/../shared scripts/stress-loop.sh /tmp/engine.test 600 /tmp/stress
set -uo pipefail
bin=$(realpath "$1") secs=$2 out=$(realpath -m "$3")
pairs=$(( $(nproc) / 2 )); [ "$pairs" -ge 1 ] || pairs=1
mkdir -p "$out"; end=$(( $(date +%s) + secs ))
export GOTRACEBACK=crash
for ((p = 0; p < pairs; p++)); do
	(
		cpus=$((2 * p)),$((2 * p + 1)); [ "$(nproc)" -ge 2 ] || cpus=0
		copies=a; [ $((2 * p)) -ge "$pairs" ] && copies="a b"
		mkdir -p "$out/p$p/cache"
		for ((i = 1; $(date +%s) < end; i++)); do
			for c in $copies; do
				(
					d=$out/p$p/$i$c; mkdir -p "$d"; cd "$d" || exit; ulimit -c unlimited; s=$(date +%s)
					MESA_SHADER_CACHE_DIR=$out/p$p/cache LP_NUM_THREADS=2 \
						timeout -s QUIT 600 taskset -c "$cpus" "$bin" -test.count=1 -test.v >log 2>&1
					rc=$?
					echo "$p $i $c $rc $(($(date +%s) - s))" >>"$out/rc"
					[ $rc -eq 0 ] && rm -rf "$d"
				) &
			done
			wait
		done
	) &
done
wait
awk '{n++; if ($4) f++} END {print n+0, "runs,", f+0, "failed"}' "$out/rc"
