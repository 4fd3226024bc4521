#!/usr/bin/env bash
# bench_recover.sh — a LoRA recovery training step at scale (issue 15): tokens/s per rank, pipeline
# efficiency and peak RSS per rank of `cfsp-mpi recover` on the 7B-shape and 70B-shape slices:
#     mpi_scripts/bench_recover.sh
# Builds this tree (or RECBENCH_SOURCE=<commit>), makes the slices as bench.sh does (under
# $RECBENCH_DIR, default /tmp/cfsp-recbench, reused when their arguments match), then per slice:
# the data-parallel trainer at -n 1 (the one-rank reference, the same arithmetic as one stage) and
# the pipelined trainer at -n 2 (and at -n 4 when RECBENCH_N4=1: oversubscribed on a 2-core machine,
# so not an efficiency figure there), RECBENCH_STEPS steps of B windows x T tokens each.
# Writes results/bench/recover.{json,md} through mpi_scripts/bench_recover_report.py.
# Environment: RECBENCH_MODELS (default "7b 70b"), RECBENCH_7B_BT / RECBENCH_70B_BT (B x T, default
# 8x128 / 4x64), RECBENCH_STEPS (default 2), RECBENCH_RANK (LoRA r, default 8), RECBENCH_N4 (0),
# RECBENCH_BUILD_DIR, RECBENCH_DIR, RECBENCH_OUT (default <repo>/results/bench).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s)
MODELS="${RECBENCH_MODELS:-7b 70b}"
BT_7B="${RECBENCH_7B_BT:-8x128}"
BT_70B="${RECBENCH_70B_BT:-4x64}"
STEPS="${RECBENCH_STEPS:-2}"
LR="${RECBENCH_RANK:-8}"
N4="${RECBENCH_N4:-0}"
SOURCE="${RECBENCH_SOURCE:-worktree}"
BUILD="${RECBENCH_BUILD_DIR:-/tmp/build-recbench}"
PDIR="${RECBENCH_DIR:-/tmp/cfsp-recbench}"
OUT="${RECBENCH_OUT:-$ROOT/results/bench}"
PY=/usr/bin/python3
BENCH_NAME=bench_recover
source "$ROOT/mpi_scripts/bench_common.sh"
RAW="$PDIR/raw"
mkdir -p "$PDIR" "$RAW" "$OUT"
rm -f "$RAW"/*

bench_build "$SOURCE" "$BUILD" "$PDIR"
{
  bench_machine "$SOURCE"
} > "$RAW/machine.txt"

bench_slices "$PDIR" "$MODELS" "$RAW"
NLIST="1 2"; [ "$N4" = 1 ] && NLIST="1 2 4"
for m in $MODELS; do
  dir="$PDIR/llama$m-slice"
  bt=$([ "$m" = 70b ] && echo "$BT_70B" || echo "$BT_7B"); b=${bt%x*}; t=${bt#*x}
  for n in $NLIST; do
    tr=$([ "$n" = 1 ] && echo data || echo pipeline)
    od="$PDIR/out-$m-n$n"; rm -rf "$od"
    cmd=(mpirun -n "$n" "$BUILD/cfsp-mpi" recover --model "$dir" --train-tokens "$TOK@0:200000" --seqlen "$t" --batch "$b"
         --steps "$STEPS" --warmup 0 --rank "$LR" --trainer "$tr" --output-dir "$od" --force)
    echo "${cmd[*]}" >> "$RAW/commands.txt"
    say "$m -n $n ($tr): ${cmd[*]}"
    "${cmd[@]}" > "$RAW/job-$m-n$n.log" 2>&1 || die "$m -n $n failed (see $RAW/job-$m-n$n.log)"
    cp "$od/recover.json" "$RAW/recover-$m-n$n.json"
    rm -f "$od"/*.h5
  done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RAW/machine.txt"
$PY "$ROOT/mpi_scripts/bench_recover_report.py" "$RAW" "$OUT" "$MODELS" "$NLIST"
say "wrote $OUT/recover.json and $OUT/recover.md in $(( $(date +%s) - T0 )) s"
