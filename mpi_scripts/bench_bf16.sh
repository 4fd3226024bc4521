#!/usr/bin/env bash
# bench_bf16.sh — the bf16 compute benchmark of issue 14, one command, every figure from one run:
#     mpi_scripts/bench_bf16.sh                 # 7B- and 70B-shape slices (~10-20 min on 2 cores)
#     BF_MODELS=7b mpi_scripts/bench_bf16.sh    # the 7B slice only
# Per slice (random bf16 weights of LLaMA-7B / Llama-3-70B block shapes, bench.sh's generator arguments):
#  a. cfsp-mpi-gemm-bench --onednn 1 at the slice's block shapes, M = tokens per micro-batch: fp32
#     sgemm, the bare oneDNN bf16 matmul primitive (where oneDNN has one on this CPU) and cfsp-mpi's
#     own bf16 product (operand rounding included);
#  b. the whole calibration + pruning job (3 ratios, pruned files written) at -n 1 with --compute fp32
#     and with --compute bf16, and the bf16 job at -n 2;
# and reports: calibration GFLOP/s in bf16 / oneDNN bf16 GFLOP/s (goal >= 0.85 at -n 1), whole job
# bf16 vs fp32 (goal >= 3x on AMX, >= 1.7x on AVX512-BF16 only), -n 2 pipeline efficiency in bf16
# (goal >= 0.85), peak RSS per rank bf16 vs fp32 (goal: not higher). The goals are for CPUs with native
# bf16; on a CPU without (AVX2), bf16 is emulated and the figures say so. CPU model and flags are
# recorded. Writes results/bench/bf16.json, bf16.md, bf16.png (report: bench_bf16_report.py).
# Environment: BF_MODELS ("7b 70b"), BF_NT_7B (4x512), BF_NT_70B (2x512), BF_CHUNK (128),
# BF_DIR (scratch, default /tmp/cfsp-bench: the slices are shared with bench.sh), BF_OUT (results/bench).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
PY=/usr/bin/python3
MODELS="${BF_MODELS:-7b 70b}"
NT_7B="${BF_NT_7B:-4x512}"
NT_70B="${BF_NT_70B:-2x512}"
CHUNK="${BF_CHUNK:-128}"
BDIR="${BF_DIR:-/tmp/cfsp-bench}"
OUT="${BF_OUT:-$ROOT/results/bench}"
RAW="$OUT/raw-bf16"
mkdir -p "$BDIR" "$RAW"
rm -f "$RAW"/*.json "$RAW"/*.log 2>/dev/null || true
dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q "install ok installed" || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
say() { printf 'bench_bf16 [%s]: %s\n' "$(date +%T)" "$*" >&2; }

{ echo "model_name=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p')"
  echo "flags=$(grep -m1 -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16|amx_tile|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "nproc=$(getconf _NPROCESSORS_ONLN)"; echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "top_other_processes_start=$(ps -eo pcpu=,comm= --sort=-pcpu | head -5 | awk '{printf "%s%s %s%%", (NR>1?"; ":""), $2, $1}')"
  echo "git_commit=$(git -C "$ROOT" rev-parse HEAD)"; echo "git_dirty_files=$(git -C "$ROOT" status --porcelain | wc -l)"
  echo "date=$(date -Is)"; } > "$RAW/machine.txt"

[ -f "$BDIR/tokens-v512.u32.bin" ] || \
  $PY -c "import numpy as np; np.random.default_rng(0).integers(0, 512, 262144).astype('<u4').tofile('$BDIR/tokens-v512.u32.bin')"
for m in $MODELS; do
  case "$m" in
    7b)  dir="$BDIR/llama7b-slice"; margs="--hidden 4096 --ffn 11008 --layers 2 --heads 32 --kv-heads 32 --vocab 512 --dtype bf16 --shard-bytes 2000000000"
         gargs="--hidden 4096 --ffn 11008 --heads 32 --kv-heads 32"; nt=$NT_7B ;;
    70b) dir="$BDIR/llama70b-slice"; margs="--hidden 8192 --ffn 28672 --layers 4 --heads 64 --kv-heads 8 --head-dim 128 --vocab 512 --dtype bf16 --shard-bytes 2000000000"
         gargs="--hidden 8192 --ffn 28672 --heads 64 --kv-heads 8 --head-dim 128"; nt=$NT_70B ;;
    *) echo "bench_bf16: unknown model $m (7b, 70b)" >&2; exit 1 ;;
  esac
  if [ ! -f "$dir/.bench-args" ] || [ "$(cat "$dir/.bench-args")" != "$margs" ]; then
    say "generating the $m slice into $dir"
    # shellcheck disable=SC2086
    "$BUILD/cfsp-mpi-mkmodel" --out "$dir" $margs --force > "$RAW/mkmodel-$m.log" 2>&1
    echo "$margs" > "$dir/.bench-args"
  fi
  cat "$dir"/*.safetensors > /dev/null
  slice=$("$BUILD/cfsp-mpi" --help 2>&1 | sed -n 's/.*--ffn-slice.*(default: \([0-9]*\)).*/\1/p' | head -1)
  say "$m: gemm-bench (fp32 sgemm, oneDNN bf16, cfsp-mpi bf16) at M=$CHUNK"
  # shellcheck disable=SC2086
  mpirun -n 1 "$BUILD/cfsp-mpi-gemm-bench" $gargs --tokens "$CHUNK" --ffn-slice "${slice:-0}" --reps 3 --onednn 1 \
    > "$RAW/gemm-$m.json" 2> "$RAW/gemm-$m.log"
  N=${nt%x*}; T=${nt#*x}
  for job in "fp32 1" "bf16 1" "bf16 2"; do
    read -r c np <<< "$job"
    o="$BDIR/bf16bench-$m-$c-n$np"
    say "$m: whole job --compute $c at -n $np ($N x $T, chunk $CHUNK)"
    echo "load_before_$m-$c-n$np=$(cut -d' ' -f1 /proc/loadavg); $(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | awk '{printf "%s%s %s%%", (NR>1?", ":""), $2, $1}')" >> "$RAW/machine.txt"
    mpirun -n "$np" "$BUILD/cfsp-mpi" --model "$dir" --calib-tokens "$BDIR/tokens-v512.u32.bin" --nsamples "$N" --seqlen "$T" \
      --chunk "$CHUNK" --ratios 0.2,0.4,0.6 --eval-dense 0 --eval-pruned 0 --compute "$c" --output-dir "$o" --force \
      > "$RAW/job-$m-$c-n$np.log" 2>&1 || { tail -5 "$RAW/job-$m-$c-n$np.log" >&2; exit 1; }
    cp "$o/results.json" "$RAW/job-$m-$c-n$np.json"
    rm -f "$o"/cfsp_r*.h5
  done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RAW/machine.txt"
$PY "$ROOT/mpi_scripts/bench_bf16_report.py" "$RAW" "$OUT" $MODELS
