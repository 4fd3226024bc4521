#!/usr/bin/env bash
# bench.sh — the performance benchmark of issue 4, one command:
#     mpi_scripts/bench.sh                 # full: shared models + 7B-shape + 70B-shape slices (~15-25 min on 2 cores)
#     BENCH_QUICK=1 mpi_scripts/bench.sh   # quick: shared models + 7B-shape slice (~3-6 min)
# Writes results/bench/bench.json, results/bench/README.md (each figure next to its goal),
# results/bench/bench.png/.svg, and the raw material under results/bench/raw/ (every results.json,
# gemm-bench output, log, timing). Generated models, token files and pruned outputs live under
# $BENCH_DIR (default /tmp/cfsp-bench, never the repository); models are generated once and reused.
#
# Figures (see mpi_scripts/bench_report.py for the exact formulas):
#  1 fraction of the GEMM limit   useful calibration FLOPs / wall time / sgemm GFLOP/s (cfsp-mpi-gemm-bench,
#                                 same shapes, same thread count, same run)        goal >= 0.85 at -n 1, 7B and 70B shapes
#  2 pipeline efficiency          T(-n 1) / (P x T(-n P))                           goal >= 0.85 at -n 2
#  3 peak memory per rank         VmHWM vs 1.25 x own stored bytes + 1 GB          goal on the 70B shape, -n 4, seqlen 1024
#  4 output bandwidth             HDF5 bytes / write time vs dd conv=fdatasync     goal >= 0.8
#                                 (--write-io direct; the 7B job again with --write-io mpiio for comparison)
#  5 sweep cost                   5 ratios vs 1 ratio, no eval, no output          goal <= 1.2x
#
# Environment (all optional):
#  BENCH_QUICK=1              models "stories260K tinystories656K 7b"
#  BENCH_MODELS               models to run, from: stories260K tinystories656K 7b 70b (default: all four)
#  BENCH_NP                   rank counts (default "1 2 4"; counts above a model's block count are skipped)
#  BENCH_SHARED_NT            N x T on the shared models (default 128x256)
#  BENCH_7B_NT, BENCH_70B_NT  N x T on the slices (default 4x512, 2x512)
#  BENCH_7B_CHUNKS            --chunk values on the 7B slice (default "0 128"; 0 = whole sequence)
#  BENCH_70B_CHUNKS           (default "0 128")
#  BENCH_MEM_NT, BENCH_MEM_NP memory figure on the 70B slice (default 1x1024, 4; nothing scales with N)
#  BENCH_SWEEP_MODELS         models with the sweep figure (default "stories260K 7b"), at -n BENCH_SWEEP_NP (2):
#                             the -n 2 calibration job carries --ratios 0.3 and a second job runs 0.1..0.5
#  BENCH_OUTPUT_MODELS        models with the output figure (default "7b 70b"; the 70B one is the memory job)
#  BENCH_GEMM_REPS            sgemm repetitions per shape (default 3, 2 on the 70B shapes; median reported)
#  BENCH_GEMM_BF16_MODELS     models whose -n 1 gemm-bench also times the bf16-panel scheme (default "7b")
#  BENCH_OPENBLAS_CORETYPE    auto (default): if OpenBLAS's runtime dispatch falls back to a generic core
#                             (Prescott) on this CPU, use SkylakeX (AVX-512) or Haswell (AVX2) for every
#                             program of the run and record it; "default": leave OpenBLAS alone; or a name
#  BENCH_PROFILE=0|1          perf-record a small 7B-slice calibration (default 1 when perf works)
#  BENCH_SOURCE               worktree (default: build this tree) | HEAD | a commit (git archive of it,
#                             for measuring while the tree is mid-refactor; gemm-bench comes from the tree)
#  BENCH_BUILD_DIR            build directory (default /tmp/build-bench)
#  BENCH_DIR                  scratch directory (default /tmp/cfsp-bench)
#  BENCH_OUT                  output directory (default <repo>/results/bench)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T_START=$(date +%s)

QUICK="${BENCH_QUICK:-0}"
if [ "$QUICK" = 1 ]; then MODELS="${BENCH_MODELS:-stories260K tinystories656K 7b}"
else MODELS="${BENCH_MODELS:-stories260K tinystories656K 7b 70b}"; fi
NPS="${BENCH_NP:-1 2 4}"
SHARED_NT="${BENCH_SHARED_NT:-128x256}"
NT_7B="${BENCH_7B_NT:-4x512}"
NT_70B="${BENCH_70B_NT:-2x512}"
CHUNKS_7B="${BENCH_7B_CHUNKS:-0 128}"
CHUNKS_70B="${BENCH_70B_CHUNKS:-0 128}"
MEM_NT="${BENCH_MEM_NT:-1x1024}"
MEM_NP="${BENCH_MEM_NP:-4}"
SWEEP_MODELS="${BENCH_SWEEP_MODELS:-stories260K 7b}"
SWEEP_NP="${BENCH_SWEEP_NP:-2}"
OUTPUT_MODELS="${BENCH_OUTPUT_MODELS:-7b 70b}"
GEMM_REPS="${BENCH_GEMM_REPS:-}"
GEMM_BF16_MODELS="${BENCH_GEMM_BF16_MODELS:-7b}"
CORETYPE="${BENCH_OPENBLAS_CORETYPE:-auto}"
PROFILE="${BENCH_PROFILE:-1}"
SOURCE="${BENCH_SOURCE:-worktree}"
BUILD="${BENCH_BUILD_DIR:-/tmp/build-bench}"
BDIR="${BENCH_DIR:-/tmp/cfsp-bench}"
OUT="${BENCH_OUT:-$ROOT/results/bench}"
SHARED="${CFSP_SHARED:-$ROOT/../shared}"
PY=/usr/bin/python3

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
NCORES=$(getconf _NPROCESSORS_ONLN)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

say() { printf 'bench [%4ds]: %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { say "error: $*"; exit 1; }

mkdir -p "$BDIR" "$OUT/raw/logs"
rm -f "$OUT"/raw/*.json "$OUT"/raw/*.jsonl "$OUT"/raw/logs/* 2>/dev/null || true
RUNS="$OUT/raw/runs.jsonl"
: > "$RUNS"

# ---------------------------------------------------------------- machine, at the start
{
  echo "model_name=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p')"
  echo "nproc=$NCORES"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "mem_total_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo)"
  echo "mem_available_kb=$(awk '/MemAvailable/{print $2}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "hypervisor=$(lscpu | sed -n 's/^Hypervisor vendor:[[:space:]]*//p')"
  echo "avx512f=$(grep -qw avx512f /proc/cpuinfo && echo 1 || echo 0)"
  echo "avx512_bf16=$(grep -qw avx512_bf16 /proc/cpuinfo && echo 1 || echo 0)"
  echo "openmpi=$(mpirun --version 2>/dev/null | head -1)"
  echo "git_commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "git_dirty_files=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)"
  echo "source=$SOURCE"
  echo "quick=$QUICK"
  echo "date=$(date -Is)"
  echo "top_other_processes=$(ps -eo pcpu=,comm= --sort=-pcpu | head -5 | awk '{printf "%s%s %s%%", (NR>1?"; ":""), $2, $1}')"
} > "$OUT/raw/machine.txt"
say "machine: $(sed -n 's/^model_name=//p' "$OUT/raw/machine.txt"), $NCORES cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- build
command -v mpirun >/dev/null || die "mpirun not found (run mpi_scripts/setup.sh once)"
if [ "$SOURCE" = worktree ]; then
  SRC="$ROOT"
else
  commit=$(git -C "$ROOT" rev-parse "$SOURCE") || die "BENCH_SOURCE=$SOURCE is not a commit"
  SRC="$BDIR/src-${commit:0:12}"
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    rm -rf "$SRC"; mkdir -p "$SRC"
    git -C "$ROOT" archive "$commit" | tar -x -C "$SRC"
  fi
  echo "measured_commit=$commit" >> "$OUT/raw/machine.txt"
fi
say "building $SRC into $BUILD"
if [ "$SRC" = "$ROOT" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$NCORES" --target cfsp-mpi cfsp-mpi-mkmodel cfsp-mpi-gemm-bench >/dev/null \
    || die "build failed (cmake --build $BUILD); BENCH_SOURCE=HEAD measures the last commit instead"
  BIN="$BUILD"; GEMM="$BUILD/cfsp-mpi-gemm-bench"
else
  cmake -S "$SRC" -B "$BUILD-${SRC##*/}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD-${SRC##*/}" -j "$NCORES" --target cfsp-mpi cfsp-mpi-mkmodel >/dev/null || die "build of $SRC failed"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$NCORES" --target cfsp-mpi-gemm-bench >/dev/null || die "build of cfsp-mpi-gemm-bench failed"
  BIN="$BUILD-${SRC##*/}"; GEMM="$BUILD/cfsp-mpi-gemm-bench"
fi

# FFN slicing of the stage units (cfsp-mpi --ffn-slice, when the program has it): gemm-bench times
# the same slice shapes; BENCH_FFN_SLICE overrides the program's default for every job
FFN_SLICE="${BENCH_FFN_SLICE:-}"
if "$BIN/cfsp-mpi" --help 2>&1 | grep -q -- '--ffn-slice'; then
  [ -n "$FFN_SLICE" ] || FFN_SLICE=$("$BIN/cfsp-mpi" --help 2>&1 | sed -n 's/.*--ffn-slice.*(default: \([0-9]*\)).*/\1/p' | head -1)
  SLICE_ARGS=(--ffn-slice "${FFN_SLICE:-0}")
else
  FFN_SLICE=0; SLICE_ARGS=()
fi
echo "ffn_slice=${FFN_SLICE:-0}" >> "$OUT/raw/machine.txt"

# ---------------------------------------------------------------- OpenBLAS kernel choice
core_of() { sed -n 's/.*"openblas_config": "\([^"]*\)".*/\1/p' | awk '{print $(NF-1)}'; }
DEFAULT_CORE=$(env -u OPENBLAS_CORETYPE "$GEMM" --hidden 64 --ffn 128 --heads 2 --kv-heads 2 --tokens 16 --reps 1 | core_of)
case "$CORETYPE" in
  auto)
    case "$DEFAULT_CORE" in
      Prescott|Core2|Penryn|Dunnington|Nehalem|Atom|Katmai|Coppermine|Northwood|Banias|Opteron*|Athlon|Barcelona)
        if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
        elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
        else unset OPENBLAS_CORETYPE; fi ;;
      *) unset OPENBLAS_CORETYPE ;;
    esac ;;
  default) unset OPENBLAS_CORETYPE ;;
  *) export OPENBLAS_CORETYPE="$CORETYPE" ;;
esac
USED_CORE=$("$GEMM" --hidden 64 --ffn 128 --heads 2 --kv-heads 2 --tokens 16 --reps 1 | core_of)
echo "openblas_library=$(readlink -f "$(ldd "$GEMM" | awk '/libopenblas/{print $3; exit}')")" >> "$OUT/raw/machine.txt"
echo "openblas_default_core=$DEFAULT_CORE" >> "$OUT/raw/machine.txt"
echo "openblas_coretype_env=${OPENBLAS_CORETYPE:-}" >> "$OUT/raw/machine.txt"
echo "openblas_used_core=$USED_CORE" >> "$OUT/raw/machine.txt"
say "OpenBLAS: runtime dispatch picks $DEFAULT_CORE; this run uses $USED_CORE${OPENBLAS_CORETYPE:+ (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)}"

# ---------------------------------------------------------------- models and tokens
model_dir() {
  case "$1" in
    7b)  echo "$BDIR/llama7b-slice" ;;
    70b) echo "$BDIR/llama70b-slice" ;;
    *)   echo "$SHARED/models/$1" ;;
  esac
}
model_args() {
  case "$1" in
    7b)  echo "--hidden 4096 --ffn 11008 --layers 2 --heads 32 --kv-heads 32 --vocab 512 --dtype bf16 --shard-bytes 2000000000" ;;
    70b) echo "--hidden 8192 --ffn 28672 --layers 4 --heads 64 --kv-heads 8 --head-dim 128 --vocab 512 --dtype bf16 --shard-bytes 2000000000" ;;
  esac
}
model_tokens() {
  case "$1" in
    7b|70b) echo "$BDIR/tokens-v512.u32.bin" ;;
    *)      echo "$SHARED/data/tokens/$1/tinystories_val_head.u32.bin@100000:" ;;
  esac
}
cfg() { $PY -c "import json,sys; c=json.load(open(sys.argv[1]+'/config.json')); print(c.get(sys.argv[2], sys.argv[3]))" "$(model_dir "$1")" "$2" "${3:-0}"; }

# the model's files in the page cache before its timed runs, so that no run (in particular -n 1,
# the reference of the efficiency figure) pays for reading them from disk and the others not
warm_model() { cat "$(model_dir "$1")"/*.safetensors > /dev/null; }

ensure_model() {
  local m=$1 dir args
  case "$m" in 7b|70b) ;; *) [ -f "$(model_dir "$m")/config.json" ] || die "shared model $m missing under $SHARED/models"; warm_model "$m"; return 0 ;; esac
  dir=$(model_dir "$m"); args=$(model_args "$m")
  if [ -f "$dir/.bench-args" ] && [ "$(cat "$dir/.bench-args")" = "$args" ]; then warm_model "$m"; return 0; fi
  local avail_kb need_kb
  avail_kb=$(df -Pk "$BDIR" | awk 'NR==2{print $4}')
  need_kb=$([ "$m" = 70b ] && echo 9000000 || echo 1200000)
  [ "$avail_kb" -gt "$need_kb" ] || die "not enough free disk under $BDIR for the $m slice ($((avail_kb/1000000)) GB free)"
  say "generating the $m slice into $dir"
  # shellcheck disable=SC2086
  "$BIN/cfsp-mpi-mkmodel" --out "$dir" $args --force > "$OUT/raw/logs/mkmodel-$m.log" 2>&1
  echo "$args" > "$dir/.bench-args"
  warm_model "$m"
}
if [ ! -f "$BDIR/tokens-v512.u32.bin" ]; then
  $PY -c "import numpy as np; np.random.default_rng(0).integers(0, 512, 262144).astype('<u4').tofile('$BDIR/tokens-v512.u32.bin')"
fi

# ---------------------------------------------------------------- measurement helpers
# run_cfsp TAG MODEL NP N T CHUNK [cfsp-mpi options...]: one job; its results.json to raw/TAG.json
run_cfsp() {
  local tag=$1 m=$2 np=$3 n=$4 t=$5 chunk=$6; shift 6
  local od="$BDIR/out/$tag" la0 la1 rc=0 tm
  rm -rf "$od"
  la0=$(cut -d' ' -f1 /proc/loadavg)
  local TIMEFORMAT='%R %U %S'
  { time mpirun -n "$np" --oversubscribe "$BIN/cfsp-mpi" --model "$(model_dir "$m")" --calib-tokens "$(model_tokens "$m")" \
      --nsamples "$n" --seqlen "$t" --chunk "$chunk" ${SLICE_ARGS[@]+"${SLICE_ARGS[@]}"} --save-stats 0 --output-dir "$od" --force "$@" \
      > "$OUT/raw/logs/$tag.log" 2>&1 ; } 2> "$OUT/raw/logs/$tag.time" || rc=$?
  la1=$(cut -d' ' -f1 /proc/loadavg)
  tm=$(tail -1 "$OUT/raw/logs/$tag.time")
  if [ $rc -eq 0 ] && [ -f "$od/results.json" ]; then cp "$od/results.json" "$OUT/raw/$tag.json"
  elif [ $rc -eq 0 ]; then rc=1; fi
  printf '{"tag":"%s","kind":"cfsp","model":"%s","np":%d,"nsamples":%d,"seqlen":%d,"chunk":%d,"args":"%s","rc":%d,"time_real_user_sys":"%s","loadavg_before":%s,"loadavg_after":%s}\n' \
    "$tag" "$m" "$np" "$n" "$t" "$chunk" "$*" "$rc" "$tm" "$la0" "$la1" >> "$RUNS"
  [ $rc -eq 0 ] || { say "  $tag FAILED (rc $rc), see raw/logs/$tag.log"; tail -3 "$OUT/raw/logs/$tag.log" >&2; return 0; }
  say "  $tag: $(echo "$tm" | awk '{printf "%.1f s wall, %.1f s CPU", $1, $2+$3}'), load $la0 -> $la1"
}

# run_gemm TAG MODEL NP TOKENS [--bf16 1] [--reps R]
run_gemm() {
  local tag=$1 m=$2 np=$3 tok=$4; shift 4
  local la0 rc=0
  la0=$(cut -d' ' -f1 /proc/loadavg)
  mpirun -n "$np" --oversubscribe "$GEMM" --hidden "$(cfg "$m" hidden_size)" --ffn "$(cfg "$m" intermediate_size)" \
    --heads "$(cfg "$m" num_attention_heads)" --kv-heads "$(cfg "$m" num_key_value_heads)" \
    --head-dim "$(cfg "$m" head_dim 0)" --ffn-slice "${FFN_SLICE:-0}" --tokens "$tok" --reps "${GEMM_REPS:-$([ "$m" = 70b ] && echo 2 || echo 3)}" "$@" \
    > "$OUT/raw/$tag.json" 2> "$OUT/raw/logs/$tag.log" || rc=$?
  printf '{"tag":"%s","kind":"gemm","model":"%s","np":%d,"tokens":%d,"args":"%s","rc":%d,"loadavg_before":%s,"loadavg_after":%s}\n' \
    "$tag" "$m" "$np" "$tok" "$*" "$rc" "$la0" "$(cut -d' ' -f1 /proc/loadavg)" >> "$RUNS"
  say "  $tag: $($PY -c "import json,sys; d=json.load(open(sys.argv[1])); print('block sgemm GFLOP/s per rank', d['block_gflops_fp32'])" "$OUT/raw/$tag.json" 2>/dev/null || echo failed)"
}

# run_dd TAG BYTES: dd of the same size: conv=fdatasync (the goal's reference), without a sync (the
# page cache alone), and oflag=direct (the device without the page cache: what O_DIRECT writes can reach)
run_dd() {
  local tag=$1 bytes=$2 count f="$BDIR/dd.bin"
  count=$(( (bytes + 16777215) / 16777216 ))
  [ "$count" -ge 1 ] || count=1
  local s0 s1 s2 s3 s4 s5
  rm -f "$f"; drop_caches || true
  s0=$(date +%s.%N); dd if=/dev/zero of="$f" bs=16M count="$count" conv=fdatasync status=none; s1=$(date +%s.%N)
  rm -f "$f"; sync
  s2=$(date +%s.%N); dd if=/dev/zero of="$f" bs=16M count="$count" status=none; s3=$(date +%s.%N)
  rm -f "$f"; sync
  s4=$(date +%s.%N); dd if=/dev/zero of="$f" bs=16M count="$count" oflag=direct conv=fdatasync status=none; s5=$(date +%s.%N)
  rm -f "$f"; sync
  printf '{"tag":"%s","kind":"dd","bytes":%d,"dd_fdatasync_seconds":%s,"dd_nosync_seconds":%s,"dd_direct_seconds":%s}\n' \
    "$tag" "$((count * 16777216))" "$(sub "$s1" "$s0")" "$(sub "$s3" "$s2")" "$(sub "$s5" "$s4")" >> "$RUNS"
  say "  $tag: dd $((count * 16)) MiB: fdatasync $(sub "$s1" "$s0") s, no sync $(sub "$s3" "$s2") s, O_DIRECT $(sub "$s5" "$s4") s"
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", a - b}'; }

# The page cache's state decides how fast a write is: writing into a cache full of other files'
# pages (the generated models) first reclaims them (measured here: 354 MB/s), into free memory
# 4400 MB/s. The output jobs and their dd therefore both start from dropped caches (root only;
# recorded in machine.txt).
drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; return 0; fi
  return 1
}
if [ -w /proc/sys/vm/drop_caches ]; then echo "drop_caches_before_output_figures=1" >> "$OUT/raw/machine.txt"
else echo "drop_caches_before_output_figures=0" >> "$OUT/raw/machine.txt"; fi

nt_n() { echo "${1%x*}"; }
nt_t() { echo "${1#*x}"; }
in_list() { case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- the runs
if [ -n "${OPENBLAS_CORETYPE:-}" ] && in_list 7b "$MODELS"; then
  say "sgemm on the 7B shapes with OpenBLAS's own dispatch ($DEFAULT_CORE), for the record"
  ensure_model 7b
  ( unset OPENBLAS_CORETYPE; GEMM_REPS=1 run_gemm gemm-7b-default-core-m512-n1 7b 1 512 )
fi

for m in $MODELS; do
  case "$m" in
    7b)  NT=$NT_7B; CHUNKS=$CHUNKS_7B ;;
    70b) NT=$NT_70B; CHUNKS=$CHUNKS_70B ;;
    stories260K|tinystories656K) NT=$SHARED_NT; CHUNKS=0 ;;
    *) die "unknown model '$m' (stories260K tinystories656K 7b 70b)" ;;
  esac
  ensure_model "$m"
  N=$(nt_n "$NT"); T=$(nt_t "$NT"); L=$(cfg "$m" num_hidden_layers)
  # pipeline stage units: one per block, or (with FFN slicing) attention + ceil(m / slice) FFN slices per block
  U=$($PY -c "import sys; L, m, s = (int(x) for x in sys.argv[1:]); print(L * (1 + -(-m // s)) if s > 0 else L)" "$L" "$(cfg "$m" intermediate_size)" "${FFN_SLICE:-0}")
  say "model $m: $L blocks ($U stage units), calibration $N x $T, chunks [$CHUNKS], ranks [$NPS]"
  for c in $CHUNKS; do
    tok=$([ "$c" = 0 ] && echo "$T" || echo "$c")
    bf=$(in_list "$m" "$GEMM_BF16_MODELS" && echo "--bf16 1" || echo "")
    # shellcheck disable=SC2086
    run_gemm "gemm-$m-m$tok-n1" "$m" 1 "$tok" $bf
    run_gemm "gemm-$m-m$tok-n2" "$m" 2 "$tok"
    for np in $NPS; do
      if [ "$np" -gt "$U" ]; then
        printf '{"tag":"calib-%s-c%s-n%s","kind":"skipped","model":"%s","np":%d,"reason":"%d ranks > %d stage units"}\n' "$m" "$c" "$np" "$m" "$np" "$np" "$U" >> "$RUNS"
        continue
      fi
      # the sweep baseline (1 ratio) rides on a calibration job: ratios run after the timed pass
      if [ "$c" = 0 ] && [ "$np" = "$SWEEP_NP" ] && in_list "$m" "$SWEEP_MODELS"; then
        run_cfsp "calib-$m-c$c-n$np" "$m" "$np" "$N" "$T" "$c" --ratios 0.3 --save-models 0
      else
        run_cfsp "calib-$m-c$c-n$np" "$m" "$np" "$N" "$T" "$c"
      fi
    done
  done
  if in_list "$m" "$SWEEP_MODELS" && [ "$SWEEP_NP" -le "$U" ]; then
    run_cfsp "sweep5-$m-n$SWEEP_NP" "$m" "$SWEEP_NP" "$N" "$T" 0 --ratios 0.1,0.2,0.3,0.4,0.5 --save-models 0
  fi
  if [ "$m" = 70b ]; then
    MN=$(nt_n "$MEM_NT"); MT=$(nt_t "$MEM_NT"); np=$MEM_NP; [ "$np" -gt "$U" ] && np=$U
    run_cfsp "mem-calib-$m-n$np" "$m" "$np" "$MN" "$MT" 0
    # the real job: calibrate, prune at 0.2, write the checkpoint (also the 70B output figure)
    drop_caches || true
    run_cfsp "mem-job-$m-n$np" "$m" "$np" "$MN" "$MT" 0 --ratios 0.2 --save-models 1
    if in_list "$m" "$OUTPUT_MODELS" && [ -f "$OUT/raw/mem-job-$m-n$np.json" ]; then
      b=$($PY -c "import json,sys; print(int(json.load(open(sys.argv[1]))['pruned'][0]['write_bytes']))" "$OUT/raw/mem-job-$m-n$np.json")
      rm -rf "$BDIR/out/mem-job-$m-n$np"
      run_dd "dd-mem-job-$m-n$np" "$b"
    fi
    rm -rf "$BDIR/out/mem-job-$m-n$np"
  elif in_list "$m" "$OUTPUT_MODELS"; then
    np=2; [ "$np" -gt "$U" ] && np=1
    # the default writer (--write-io direct), then the H5Dwrite (MPI-IO) path for comparison
    for io in direct mpiio; do
      tag="output-$m-n$np"; [ "$io" = direct ] || tag="$tag-$io"
      drop_caches || true
      run_cfsp "$tag" "$m" "$np" 1 "$T" 0 --ratios 0.2 --save-models 1 --write-io "$io"
      if [ -f "$OUT/raw/$tag.json" ]; then
        b=$($PY -c "import json,sys; print(int(json.load(open(sys.argv[1]))['pruned'][0]['write_bytes']))" "$OUT/raw/$tag.json")
        rm -rf "$BDIR/out/$tag"
        run_dd "dd-$tag" "$b"
      fi
    done
  fi
done

# ---------------------------------------------------------------- profile (where the time goes)
if [ "$PROFILE" = 1 ] && in_list 7b "$MODELS" && command -v perf >/dev/null \
   && perf record -e cpu-clock -o "$BDIR/perf-probe.data" true >/dev/null 2>&1; then
  say "profile: perf record -e cpu-clock on a 7B-slice calibration, -n 1, 2 x 512"
  warm_model 7b
  for c in 0 128; do
    perf record -e cpu-clock -F 499 -g -o "$BDIR/perf-7b-c$c.data" \
      "$BIN/cfsp-mpi" --model "$(model_dir 7b)" --calib-tokens "$(model_tokens 7b)" --nsamples 2 --seqlen 512 --chunk "$c" ${SLICE_ARGS[@]+"${SLICE_ARGS[@]}"} \
      --save-stats 0 --output-dir "$BDIR/out/perf" --force > "$OUT/raw/logs/perf-7b-c$c.log" 2>&1 || true
    perf report -i "$BDIR/perf-7b-c$c.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
      | grep -v '^#' | grep '%' | head -30 > "$OUT/raw/profile-7b-c$c.txt" || true
  done
  rm -f "$BDIR"/perf-*.data
fi
rm -rf "$BDIR/out"

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/raw/machine.txt"
echo "bench_seconds=$(( $(date +%s) - T_START ))" >> "$OUT/raw/machine.txt"
say "report"
$PY "$ROOT/mpi_scripts/bench_report.py" "$OUT"
say "done: $OUT/README.md, $OUT/bench.json"
