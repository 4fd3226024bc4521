#!/usr/bin/env bash
# quality_bf16.sh — what --compute bf16 changes against fp32 (issue 14), on both shared models and on
# a 7B-shape slice (2 blocks of LLaMA-7B's shapes, random bf16 weights): the block importances (max
# relative difference), the kept FFN channel sets at ratios 0.2/0.4/0.6 (overlap), and the dense and
# pruned perplexities. Same job twice, --compute fp32 and --compute bf16, everything else equal.
# Writes results/quality/bf16.json and results/quality/bf16.md (report: quality_bf16_report.py).
#     mpi_scripts/quality_bf16.sh            # ~5-10 min on 2 cores
# Environment: NP (ranks, default 2), QB_DIR (scratch, default /tmp/cfsp-quality-bf16: the slice,
# its tokens and the pruned files, which are read for their kept channels and deleted).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
SHARED="${CFSP_SHARED:-$ROOT/../shared}"
OUT="$ROOT/results/quality"
NP="${NP:-2}"
QB="${QB_DIR:-/tmp/cfsp-quality-bf16}"
PY=/usr/bin/python3
mkdir -p "$OUT" "$QB"

if [ ! -f "$QB/llama7b-slice/config.json" ]; then
  "$BUILD/cfsp-mpi-mkmodel" --out "$QB/llama7b-slice" --hidden 4096 --ffn 11008 --layers 2 --heads 32 --kv-heads 32 \
    --vocab 512 --dtype bf16 --seed 7 --force >/dev/null
fi
[ -f "$QB/tokens-v512.u32.bin" ] || \
  $PY -c "import numpy as np; np.random.default_rng(0).integers(0, 512, 262144).astype('<u4').tofile('$QB/tokens-v512.u32.bin')"

for model in stories260K tinystories656K 7b; do
  if [ "$model" = 7b ]; then
    mdir="$QB/llama7b-slice"; tok="$QB/tokens-v512.u32.bin"
    args=(--calib-tokens "$tok@0:131072" --eval-tokens "$tok@131072:" --eval-windows 4 --nsamples 4 --seqlen 512)
  else
    mdir="$SHARED/models/$model"; tok="$SHARED/data/tokens/$model/tinystories_val_head.u32.bin"
    args=(--calib-tokens "$tok@100000:" --eval-tokens "$tok@0:100000" --eval-windows 400 --nsamples 128 --seqlen 256)
  fi
  for c in fp32 bf16; do
    o="$QB/$model-$c"
    echo "quality_bf16: $model --compute $c" >&2
    mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" --model "$mdir" "${args[@]}" --ratios 0.2,0.4,0.6 --method cfsp \
      --compute "$c" --save-stats 0 --output-dir "$o" --force > "$QB/$model-$c.log" 2>&1 \
      || { tail -5 "$QB/$model-$c.log" >&2; exit 1; }
  done
done
$PY "$ROOT/mpi_scripts/quality_bf16_report.py" "$QB" "$OUT"
for model in stories260K tinystories656K 7b; do rm -f "$QB/$model"-*/cfsp_r*.h5; done
