#!/usr/bin/env bash
# plan_train.sh — `cfsp-mpi plan --train-batch`: predictions for a pipelined recovery training step
# (recover --trainer pipeline) of the cluster-scale cases, written to results/bench/plan-train.json
# and plan-train.md. Stage costs are a step's flops per token (forward, recomputation, backward;
# the head on the last stage) on the program's own stage map of whole blocks; the prediction is
# load balance x B / (B + S - 1) x S / P, without communication; memory per stage from the formula
# in plan_cmd.c. FFN widths x KEEP (default 0.7: a model pruned at 0.3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
OUT="$ROOT/results/bench"; mkdir -p "$OUT"
KEEP="${KEEP:-0.7}"
cases=(   # model ranks batch seqlen replicas
  "llama3-70b 64 256 2048 1"  "llama3-70b 64 256 512 1"   "llama3-70b 64 1024 512 1"  "llama3-70b 64 1024 512 2"
  "llama3-70b 64 1024 512 4"  "llama3-70b 64 2048 512 2"  "llama3-70b 64 512 512 4"   "llama3-70b 80 1024 512 1"  "llama3-70b 81 1024 512 1"
  "llama3.1-405b 128 1024 512 1"  "llama2-7b 8 64 2048 1"  "llama2-7b 32 256 512 1"  "llama2-7b 32 256 512 2"
)
echo "[" > "$OUT/plan-train.json.tmp"; first=1
for c in "${cases[@]}"; do
  read -r m p b t rr <<< "$c"
  "$BUILD/cfsp-mpi" plan --model "$ROOT/configs/models/$m" --ranks "$p" --train-batch "$b" --train-seqlen "$t" --train-rank 8 \
     --train-keep "$KEEP" --train-replicas "$rr" --json "$OUT/.plan1.json" > /dev/null
  [ $first -eq 1 ] || echo "," >> "$OUT/plan-train.json.tmp"; first=0
  cat "$OUT/.plan1.json" >> "$OUT/plan-train.json.tmp"
done
echo "]" >> "$OUT/plan-train.json.tmp"; mv "$OUT/plan-train.json.tmp" "$OUT/plan-train.json"; rm -f "$OUT/.plan1.json"
/usr/bin/python3 - "$OUT" "$KEEP" <<'PY'
import json, sys
out, keep = sys.argv[1:3]
rows = json.load(open(out + "/plan-train.json"))
L = ["# Pipelined recovery training plans (cfsp-mpi plan --train-batch)", "",
     "`mpi_scripts/plan_train.sh`. One training step of B windows of T tokens, LoRA r = 8 on all 7 projections, FFN widths x %s "
     "(a model pruned at %.1f), stages of whole blocks as `recover --trainer pipeline` runs them. Predicted efficiency = load "
     "balance x B_r / (B_r + S - 1) x R S / P for R replicas of S stages with B_r = B / R windows each (1F1B fill and drain; "
     "communication not modelled). Memory: the largest stage's weights "
     "(stored dtype), adapters with AdamW state, and activations (block inputs of the S - s windows in flight, one block's kept "
     "activations, scratch, logits on the last stage)." % (keep, 1 - float(keep)), "",
     "| model | ranks | replicas x stages | B | T | balance | fill/drain | predicted efficiency | largest stage (GB) |",
     "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    L.append("| %s | %d | %d x %d | %d | %d | %.3f | %.3f | **%.3f** | %.2f |" % (
        r["model"].split("/")[-1], r["ranks"], r["replicas"], r["nstages"], r["batch"], r["seqlen"], r["load_balance"], r["fill_drain_share"],
        r["predicted_efficiency"], r["largest_stage_bytes"] / 1e9))
L += ["", "Whole blocks are the stage units: where the blocks do not split evenly over the stages (80 blocks on 64 stages: one "
      "or two blocks a stage) the balance, not the fill, limits the efficiency; replicas of shorter pipelines (`recover "
      "--replicas R`) put more blocks on each stage, at R times the per-rank weights. Finer stage units (the calibration's FFN "
      "slices) are not implemented in the trainer."]
open(out + "/plan-train.md", "w").write("\n".join(L) + "\n")
PY
cat "$OUT/plan-train.md"
