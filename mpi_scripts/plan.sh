#!/usr/bin/env bash
# plan.sh — predictions of the pipeline simulator (`cfsp-mpi plan`) for the cluster-scale cases of
# issue 4, written to results/bench/plan.json and plan.md. Stage costs come from per-op timings
# measured by each `cfsp-mpi plan` call on this machine (one BLAS thread, the model's own shapes at
# the micro-batch size); GFLOPS=G instead uses flops at a uniform G GFLOP/s. Run it on a quiet
# machine: the timings are taken one op after another, and the efficiency is their ratio.
# COMPUTE=bf16 times the bf16 products (cfsp-mpi plan --compute bf16; the oneDNN bf16 primitives where
# the CPU has them, the emulated bf16 path elsewhere: the CPU model and the mode are recorded) and
# writes results/bench/plan-bf16.json and plan-bf16.md; COMPUTE=fp32 (default) plan.json and plan.md.
# PRODUCT_GFLOPS=P costs every matrix product at P GFLOP/s (plus the measured bf16 rounding of its
# activations) and times the other ops here: the prediction for a CPU whose products are that fast
# (e.g. 480, oneDNN's AMX-BF16 matmul on one core of the Intel machine kind); tag -pP in the file names.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
OUT="$ROOT/results/bench"; mkdir -p "$OUT"
G="${GFLOPS:-}"
COMPUTE="${COMPUTE:-fp32}"
TAG=""; [ "$COMPUTE" = fp32 ] || TAG="-$COMPUTE"
PG="${PRODUCT_GFLOPS:-}"; [ -z "$PG" ] || TAG="$TAG-p$PG"
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
     --chunk "$k" --ffn-slice "$s" --compute "$COMPUTE" ${G:+--gflops "$G"} ${PG:+--product-gflops "$PG"} --json "$OUT/.plan1.json" > /dev/null
  [ $first -eq 1 ] || echo "," >> "$OUT/plan.json.tmp"; first=0
  cat "$OUT/.plan1.json" >> "$OUT/plan.json.tmp"
done
echo "]" >> "$OUT/plan.json.tmp"; mv "$OUT/plan.json.tmp" "$OUT/plan$TAG.json"; rm -f "$OUT/.plan1.json"
/usr/bin/python3 - "$OUT" "$G" "$TAG" "$PG" "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p')" \
  "$(grep -m1 -o -w -E 'amx_bf16|avx512_bf16|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')" <<'PY'
import json, sys
out, g, tag, pg, cpu, flags = sys.argv[1:7]
rows = json.load(open(out + "/plan%s.json" % tag))
cp = rows[0].get("compute", {})
L = ["# Pipeline plans (cfsp-mpi plan)", "",
     "N = 128 sequences of T = 1024 tokens. `ffn-slice 0` = whole blocks as stage units (one attention",
     "+ one FFN unit per block); 4096 = FFN split into slices of at most 4096 channels. Goal: predicted",
     "efficiency >= 0.85 for Llama-3-70B at 64 ranks. " + ("Stage times from flops at %s GFLOP/s per rank." % g if g else
     "Stage times from per-op timings measured on this machine, one BLAS thread, at each row's micro-batch size "
     "(attention unit = q/k/v/o products + causal attention at the mean context + RMSNorm + bf16 conversion in fp32; FFN slice = "
     "gate/up/down products + SwiGLU + RMSNorm + conversion in fp32); the stage split is the program's own."),
     "Compute: %s (%s). CPU: %s (flags: %s)." % (cp.get("mode", "fp32"), cp.get("reason", "?"), cpu, flags.strip() or "none of interest") +
     (" **Every matrix product is costed at %s GFLOP/s** (plus the measured bf16 rounding of its activations; the other ops, "
      "softmax, RMSNorm, SwiGLU, timed here): the prediction for a CPU with products that fast, not a measurement of one." % pg if pg else ""), "",
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
open(out + "/plan%s.md" % tag, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
