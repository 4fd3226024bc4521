#!/usr/bin/env bash
# recovery_plans.sh — the recovery experiment of issue 15: the three LoRA rank plans with the
# pipelined trainer on both shared models (about 15 minutes on 2 cores):
#   for MODEL in stories260K (5 blocks) and tinystories656K (2 blocks):
#   1. pruned at RATIO (0.4) with cfsp, calibrated on the first TinyStories tokens (statistics saved);
#   2. `cfsp-mpi recover --trainer pipeline` at -n NP (2: one stage per rank) on the next tokens with
#      --plan uniform (rank RANK everywhere), adaptive (rank by the block's importance share, as its
#      pruning budget) and pruned (rank by the fraction of the block's FFN channels pruned: more
#      capacity to the blocks pruned hardest), the same parameter budget up to less than one
#      block-rank, SEEDS seeds each (the seed fixes the batches and the adapter initialisation, so
#      the plans are paired by seed);
#   3. held-out perplexity on the last TinyStories tokens (disjoint from both) before and after;
#   4. results/recovery/plans/{plans.json, README.md} (mpi_scripts/recovery_plans_report.py).
# Environment: NP (2), STEPS (100), BATCH (8), SEQLEN (256), LR (2e-3), SEEDS ("0 1 2"), RATIO (0.4),
# RANK (8), EVAL_WINDOWS (120), MODELS ("stories260K tinystories656K"), RESULTS
# (results/recovery/plans), WORK (/tmp/cfsp-recovery-plans), CFSP_BUILD_DIR (setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
cd "$ROOT"
NP="${NP:-2}"; STEPS="${STEPS:-100}"; BATCH="${BATCH:-8}"; SEQLEN="${SEQLEN:-256}"; LR="${LR:-2e-3}"; SEEDS="${SEEDS:-0 1 2}"
RATIO="${RATIO:-0.4}"; RANK="${RANK:-8}"; EVAL_WINDOWS="${EVAL_WINDOWS:-120}"
MODELS="${MODELS:-stories260K tinystories656K}"
RESULTS="${RESULTS:-results/recovery/plans}"; WORK="${WORK:-/tmp/cfsp-recovery-plans}"
BIN="$BUILD/cfsp-mpi"
mkdir -p "$WORK" "$RESULTS"
args=()
for model in $MODELS; do
  TOK=../shared/data/tokens/$model/tinystories_val_head.u32.bin
  n=$(( $(stat -c %s "$TOK") / 4 ))
  c1=$(( n / 4 )); t1=$(( n * 3 / 4 ))               # calibration [0, n/4), training [n/4, 3n/4), held-out [3n/4, n)
  w="$WORK/$model"
  mkdir -p "$w"
  mpirun -n "$NP" "$BIN" --model "../shared/models/$model" --calib-tokens "$TOK@0:$c1" --eval-tokens "$TOK@$t1:$n" \
    --nsamples 32 --seqlen "$SEQLEN" --eval-windows "$EVAL_WINDOWS" --ratios "$RATIO" --method cfsp --save-stats 1 \
    --output-dir "$w/prune" --force
  pruned=$(ls "$w"/prune/cfsp_r*.h5)
  for seed in $SEEDS; do
    for plan in uniform adaptive pruned; do
      out="$w/${plan}_s${seed}"
      st=(); [ "$plan" = adaptive ] && st=(--stats "$w/prune/stats.h5")      # pruned: the keep fractions of --model
      mpirun -n "$NP" "$BIN" recover --model "$pruned" "${st[@]}" --plan "$plan" --rank "$RANK" --alpha $((2 * RANK)) \
        --train-tokens "$TOK@$c1:$t1" --eval-tokens "$TOK@$t1:$n" --eval-windows "$EVAL_WINDOWS" \
        --seqlen "$SEQLEN" --batch "$BATCH" --steps "$STEPS" --lr "$LR" --warmup 10 --seed "$seed" \
        --trainer pipeline --output-dir "$out" --force
      args+=("$model=$out")
    done
  done
  args+=("$model=prune:$w/prune")
done
/usr/bin/python3 "$ROOT/mpi_scripts/recovery_plans_report.py" --out "$RESULTS" "${args[@]}"
cat "$RESULTS/README.md"
