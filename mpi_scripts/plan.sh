#!/usr/bin/env bash
# plan.sh — predictions of the pipeline simulator (`cfsp-mpi plan`) for the cluster-scale cases of
# issue 4, written to results/bench/plan.json and plan.md. Stage costs come from per-op timings
# measured by each `cfsp-mpi plan` call on this machine (one BLAS thread, the model's own shapes at
# the micro-batch size); GFLOPS=G instead uses flops at a uniform G GFLOP/s. Run it on a quiet
# machine: the timings are taken one op after another, and the efficiency is their ratio.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
OUT="$ROOT/results/bench"; mkdir -p "$OUT"
G="${GFLOPS:-}"
export OPENBLAS_NUM_THREADS=1
cases=(
  "llama3-70b 64 0 1024"     "llama3-70b 64 4096 1024"  "llama3-70b 64 4096 256"  "llama3-70b 64 2048 256"
  "llama3-70b 64 4096 128"   "llama3-70b 80 0 1024"
  "llama3.1-405b 128 0 1024" "llama3.1-405b 128 4096 256" "llama3.1-405b 128 4096 128"
  "llama2-7b 8 4096 256"     "llama2-7b 32 4096 256"
)
echo "[" > "$OUT/plan.json.tmp"; first=1
for c in "${cases[@]}"; do
  read -r m p s k <<< "$c"
  "$BUILD/cfsp-mpi" plan --model "$ROOT/configs/models/$m" --ranks "$p" --nsamples 128 --seqlen 1024 \
     --chunk "$k" --ffn-slice "$s" ${G:+--gflops "$G"} --json "$OUT/.plan1.json" > /dev/null
  [ $first -eq 1 ] || echo "," >> "$OUT/plan.json.tmp"; first=0
  cat "$OUT/.plan1.json" >> "$OUT/plan.json.tmp"
done
echo "]" >> "$OUT/plan.json.tmp"; mv "$OUT/plan.json.tmp" "$OUT/plan.json"; rm -f "$OUT/.plan1.json"
/usr/bin/python3 - "$OUT" "$G" <<'PY'
import json, sys
out, g = sys.argv[1], sys.argv[2]
rows = json.load(open(out + "/plan.json"))
L = ["# Pipeline plans (cfsp-mpi plan)", "",
     "N = 128 sequences of T = 1024 tokens. `ffn-slice 0` = whole blocks as stage units (one attention",
     "+ one FFN unit per block); 4096 = FFN split into slices of at most 4096 channels. Goal: predicted",
     "efficiency >= 0.85 for Llama-3-70B at 64 ranks. " + ("Stage times from flops at %s GFLOP/s per rank." % g if g else
     "Stage times from per-op timings measured on this machine, one BLAS thread, at each row's micro-batch size "
     "(attention unit = q/k/v/o sgemms + causal attention at the mean context + RMSNorm + bf16 conversion; FFN slice = "
     "gate/up/down sgemms + SwiGLU + RMSNorm + conversion); the stage split is the program's own."), "",
     "| model | ranks | ffn-slice | chunk | micro-batches | units | balance | fill/drain | predicted efficiency | largest stage (GB) | calibration (h) |",
     "|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    L.append("| %s | %d | %d | %d | %d | %d | %.3f | %.3f | **%.3f** | %.2f | %.2f |" % (
        r["model"].split("/")[-1], r["ranks"], r["ffn_slice"], r["chunk"], r["micro_batches"], r["units"],
        r["load_balance"], r["fill_drain_share"], r["predicted_efficiency"], r["largest_stage_weight_bytes"] / 1e9,
        r["predicted_calibration_seconds"] / 3600))
if not g:
    L += ["", "Measured per micro-batch (seconds):", "",
          "| model | chunk | attention unit | of which projections | attention core | FFN slice (width) |", "|---|---|---|---|---|---|"]
    for r in rows:
        m = r.get("measured_seconds_per_microbatch")
        if m:
            L.append("| %s | %d | %.4f | %.4f | %.4f | %.4f (%d) |" % (r["model"].split("/")[-1], r["chunk"], m["attention_unit"],
                     m["attention_projections"], m["attention_core_mean_context"], m["ffn_slice"], m["ffn_slice_width"]))
open(out + "/plan.md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
