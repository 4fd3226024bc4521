#!/usr/bin/env bash
# bench_phases.sh — where the time of a one-core pruning job goes, phase by phase (issue 14):
#     mpi_scripts/bench_phases.sh                                   # fp32 (default --compute auto)
#     PHASES_TAG=bf16 PHASES_EXTRA_ARGS="--compute bf16" mpi_scripts/bench_phases.sh
# Builds this tree, makes the 7B-shape and 70B-shape slices as bench.sh does (under $PHASES_DIR,
# default /tmp/cfsp-phases, never the repository; reused when their arguments match), runs one job
# per slice at -n 1 with pruned outputs and a pruned evaluation, perf-profiles a short 7B
# calibration for the share of the statistics hooks, measures the disk (dd oflag=direct of the
# 7B job's first output size), and writes results/bench/phases-$PHASES_TAG.{json,md} through
# mpi_scripts/bench_phases_report.py. About 6-8 minutes on the 2-core AMD EPYC VM.
# Environment (all optional):
#  PHASES_TAG          output name tag (default fp32)
#  PHASES_EXTRA_ARGS   extra cfsp-mpi arguments for every job (e.g. "--compute bf16")
#  PHASES_MODELS       slices (default "7b 70b")
#  PHASES_7B_NT, PHASES_70B_NT   N x T of calibration (default 4x512, 2x512)
#  PHASES_RATIOS       (default 0.2,0.4,0.6)
#  PHASES_EVAL_WINDOWS pruned evaluation windows of T tokens per ratio (default 1; 0 = no evaluation)
#  PHASES_SOURCE       worktree (default) | a commit: build that commit (git archive) instead, for a "before" table
#  PHASES_PROFILE      1 (default when perf works) | 0
#  PHASES_BUILD_DIR, PHASES_DIR, PHASES_OUT (default <repo>/results/bench)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s)
TAG="${PHASES_TAG:-fp32}"
EXTRA="${PHASES_EXTRA_ARGS:-}"
MODELS="${PHASES_MODELS:-7b 70b}"
NT_7B="${PHASES_7B_NT:-4x512}"
NT_70B="${PHASES_70B_NT:-2x512}"
RATIOS="${PHASES_RATIOS:-0.2,0.4,0.6}"
EVALW="${PHASES_EVAL_WINDOWS:-1}"
SOURCE="${PHASES_SOURCE:-worktree}"
PROFILE="${PHASES_PROFILE:-1}"
BUILD="${PHASES_BUILD_DIR:-/tmp/build-phases-bench}"
PDIR="${PHASES_DIR:-/tmp/cfsp-phases}"
OUT="${PHASES_OUT:-$ROOT/results/bench}"
PY=/usr/bin/python3
BENCH_NAME=bench_phases
source "$ROOT/mpi_scripts/bench_common.sh"
RAW="$PDIR/raw-$TAG"
mkdir -p "$PDIR" "$RAW" "$OUT"
rm -f "$RAW"/*

# ---------------------------------------------------------------- build
bench_build "$SOURCE" "$BUILD" "$PDIR"
{
  bench_machine "$SOURCE"
  echo "extra_args=$EXTRA"
} > "$RAW/machine.txt"

# ---------------------------------------------------------------- slices and tokens (as bench.sh)
bench_slices "$PDIR" "$MODELS" "$RAW"

# ---------------------------------------------------------------- the jobs
: > "$RAW/commands.txt"
for m in $MODELS; do
  nt=$([ "$m" = 70b ] && echo "$NT_70B" || echo "$NT_7B"); n=${nt%x*}; t=${nt#*x}
  od="$PDIR/out-$TAG-$m"; rm -rf "$od"
  ev=()
  [ "$EVALW" -gt 0 ] && ev=(--eval-tokens "$TOK@200000:$((200000 + EVALW * t))" --eval-dense 0)
  cmd=(mpirun -n 1 "$BUILD/cfsp-mpi" run --model "$PDIR/llama$m-slice" --calib-tokens "$TOK@0:200000" --nsamples "$n" --seqlen "$t"
       --ratios "$RATIOS" "${ev[@]}" --output-dir "$od" --force $EXTRA)
  echo "${cmd[*]}" >> "$RAW/commands.txt"
  say "job $m: ${cmd[*]}"
  s0=$(date +%s.%N)
  "${cmd[@]}" > "$RAW/job-$m.log" 2>&1 || die "job $m failed (see $RAW/job-$m.log)"
  s1=$(date +%s.%N)
  cp "$od/results.json" "$RAW/results-$m.json"
  echo "$m $($PY -c "print($s1 - $s0)")" >> "$RAW/wall.txt"
  # the disk, right after: dd oflag=direct of the first output's size
  bytes=$($PY -c "import json; print(json.load(open('$od/results.json'))['pruned'][0]['write_bytes'])")
  cnt=$(( (bytes + 8388607) / 8388608 ))
  dd if=/dev/zero of="$od/dd.tmp" bs=8M count="$cnt" oflag=direct 2> "$RAW/dd-$m.txt" || true
  rm -f "$od/dd.tmp" "$od"/*.h5              # the outputs are large (70B: ~14 GB)
  say "  $m done in $($PY -c "print(round($s1 - $s0, 1))") s"
done

# ---------------------------------------------------------------- profile: the statistics hooks inside calibration
if [ "$PROFILE" = 1 ] && perf stat -e task-clock true >/dev/null 2>&1 && [[ " $MODELS " == *" 7b "* ]]; then
  pcmd=(mpirun -n 1 "$BUILD/cfsp-mpi" run --model "$PDIR/llama7b-slice" --calib-tokens "$TOK@0:200000" --nsamples 1 --seqlen 512
        --eval-dense 0 --save-stats 0 --output-dir "$PDIR/out-$TAG-perf" --force $EXTRA)
  echo "perf record -F 999 -g -o $PDIR/perf-$TAG.data -- ${pcmd[*]}" >> "$RAW/commands.txt"
  say "profile: 7B calibration, 1 x 512"
  perf record -F 999 -o "$PDIR/perf-$TAG.data" -- "${pcmd[@]}" > "$RAW/perf-job.log" 2>&1 || true
  perf report -i "$PDIR/perf-$TAG.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -40 > "$RAW/profile.txt" || true
  perf report -i "$PDIR/perf-$TAG.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -20 > "$RAW/profile-dso.txt" || true
fi
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RAW/machine.txt"
$PY "$ROOT/mpi_scripts/bench_phases_report.py" "$RAW" "$OUT" "$TAG" "$MODELS"
say "wrote $OUT/phases-$TAG.json and $OUT/phases-$TAG.md in $(( $(date +%s) - T0 )) s"
