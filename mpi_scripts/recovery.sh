#!/usr/bin/env bash
# recovery.sh — the LoRA recovery experiment of issue 7 (a few minutes on 2 cores):
#   1. stories260K pruned at ratio 0.4 with cfsp, calibrated on TinyStories tokens [0, 100000)
#      (statistics saved: the importances of the adaptive rank plan);
#   2. `cfsp-mpi recover` on TinyStories tokens [100000, 300000) with the uniform rank-8 plan and the
#      importance-adaptive plan (at most the same LoRA parameter count, short of it by less than one
#      rank of one block; all 7 projections), SEEDS seeds each;
#   3. held-out perplexity on TinyStories tokens [300000, 393013) (disjoint from training and
#      calibration; the first EVAL_WINDOWS windows of 256) before and after;
#   4. results/recovery/{recovery.json, README.md, loss.svg} (mpi_scripts/recovery_report.py).
#      A run into a subdirectory of an earlier report (RANK=16 RESULTS=results/recovery/rank16) is a
#      variant: the parent README's variants section is rewritten from every recovery.json.
# Environment: NP (2), STEPS (100), BATCH (8), LR (2e-3), SEEDS ("0 1 2"), EVAL_WINDOWS (120), RANK (8),
# ALPHA (2 x RANK), ALPHA_SCALES (1), RESULTS (results/recovery), WORK (a scratch directory; default
# /tmp/cfsp-recovery-r$RANK), CFSP_BUILD_DIR (setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
cd "$ROOT"
NP="${NP:-2}"; STEPS="${STEPS:-100}"; BATCH="${BATCH:-8}"; LR="${LR:-2e-3}"; SEEDS="${SEEDS:-0 1 2}"
EVAL_WINDOWS="${EVAL_WINDOWS:-120}"; RANK="${RANK:-8}"; ALPHA="${ALPHA:-$((2 * RANK))}"; ALPHA_SCALES="${ALPHA_SCALES:-1}"
RESULTS="${RESULTS:-results/recovery}"; WORK="${WORK:-/tmp/cfsp-recovery-r$RANK}"
TOK=../shared/data/tokens/stories260K/tinystories_val_head.u32.bin
MODEL=../shared/models/stories260K
mkdir -p "$WORK"
BIN="$BUILD/cfsp-mpi"

mpirun -n "$NP" "$BIN" --model "$MODEL" --calib-tokens "$TOK@0:100000" --eval-tokens "$TOK@300000:393013" \
  --nsamples 32 --seqlen 256 --eval-windows "$EVAL_WINDOWS" --ratios 0.4 --method cfsp --save-stats 1 \
  --output-dir "$WORK/prune" --force
PRUNED="$WORK/prune/cfsp_r0.4.h5"

runs=()
for seed in $SEEDS; do
  for plan in uniform adaptive; do
    out="$WORK/${plan}_s${seed}"
    mpirun -n "$NP" "$BIN" recover --model "$PRUNED" --stats "$WORK/prune/stats.h5" --plan "$plan" --rank "$RANK" --alpha "$ALPHA" \
      --train-tokens "$TOK@100000:300000" --eval-tokens "$TOK@300000:393013" --eval-windows "$EVAL_WINDOWS" \
      --seqlen 256 --batch "$BATCH" --steps "$STEPS" --lr "$LR" --warmup 10 --seed "$seed" \
      --alpha-scales "$ALPHA_SCALES" --output-dir "$out" --force
    runs+=("$out")
  done
done
/usr/bin/python3 "$ROOT/mpi_scripts/recovery_report.py" --prune "$WORK/prune" --out "$RESULTS" "${runs[@]}"
cat "$RESULTS/README.md"
parent="$(dirname "$RESULTS")"
if [ -f "$parent/recovery.json" ] && [ -f "$parent/README.md" ]; then
  /usr/bin/python3 "$ROOT/mpi_scripts/recovery_report.py" --variants-only "$parent"
  echo "recovery: variants section of $parent/README.md rewritten"
fi
