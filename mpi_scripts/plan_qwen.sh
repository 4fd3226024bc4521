#!/usr/bin/env bash
# plan_qwen.sh — where `cfsp-mpi plan` puts a real Qwen model's stages, embedding and lm_head on 64
# ranks, and what each rank must request (issue 16): Qwen2.5-72B (152,064-token vocabulary, untied:
# embed_tokens and lm_head 2.49 GB each in bf16) and Qwen3-32B (q/k norms, head_dim 128), from their
# real config.json files in configs/models/. Flops at a uniform 100 GFLOP/s (GFLOPS=G to change it):
# the split and the memory do not depend on this machine. Writes results/bench/plan-qwen.json / .md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
OUT="$ROOT/results/bench"; mkdir -p "$OUT"
G="${GFLOPS:-100}"
export OPENBLAS_NUM_THREADS=1
echo "[" > "$OUT/plan-qwen.json.tmp"; first=1
for c in "qwen2.5-72b 64" "qwen2.5-72b 80" "qwen3-32b 64"; do
  read -r m p <<< "$c"
  "$BUILD/cfsp-mpi" plan --model "$ROOT/configs/models/$m" --ranks "$p" --nsamples 128 --seqlen 1024 --chunk 128 \
     --gflops "$G" --json "$OUT/.planq.json" > /dev/null
  [ $first -eq 1 ] || echo "," >> "$OUT/plan-qwen.json.tmp"; first=0
  cat "$OUT/.planq.json" >> "$OUT/plan-qwen.json.tmp"
done
echo "]" >> "$OUT/plan-qwen.json.tmp"; mv "$OUT/plan-qwen.json.tmp" "$OUT/plan-qwen.json"; rm -f "$OUT/.planq.json"
/usr/bin/python3 - "$OUT" "$G" <<'PY'
import json, sys
out, g = sys.argv[1:3]
plans = json.load(open(out + "/plan-qwen.json"))
GB = 1e9
L = ["# Qwen models in the pipeline planner (`mpi_scripts/plan_qwen.sh`)", "",
     "`cfsp-mpi plan --nsamples 128 --seqlen 1024 --chunk 128 --gflops %s` on the real config.json files in "
     "configs/models/ (bf16 as stored). Calibration does not run lm_head, so the stage split balances the "
     "blocks' flops; the embedding sits on rank 0 and lm_head (untied) on the last rank, and each rank's "
     "request counts them (request = stored + max(stored/4, largest FFN slice) + buffers + 1 GiB)." % g, "",
     "| model | ranks | predicted efficiency | load balance | rank 0: units / embedding GB, request GB | last rank: units / lm_head GB, request GB | other ranks: largest request GB | model GB |",
     "|---|---|---|---|---|---|---|---|"]
for p in plans:
    st = p["stages"]
    r0, rl = st[0]["memory"], st[-1]["memory"]
    mid = max(s["memory"]["request_bytes"] for s in st[1:-1])
    name = p["model"].rstrip("/").split("/")[-1]
    L.append("| %s | %d | %.3f | %.3f | %.2f / %.2f, %.2f | %.2f / %.2f, %.2f | %.2f | %.1f |" % (
        name, p["ranks"], p["predicted_efficiency"], p["load_balance"], r0["unit_bytes"] / GB, r0["embed_bytes"] / GB,
        r0["request_bytes"] / GB, rl["unit_bytes"] / GB, rl["head_bytes"] / GB, rl["request_bytes"] / GB, mid / GB,
        p["model_stored_bytes"] / GB))
L += ["", "Blocks of the last stages: " + "; ".join("%s/%d: rank %d holds units %d-%d" % (
    p["model"].rstrip("/").split("/")[-1], p["ranks"], s["rank"], s["first_unit"], s["last_unit"])
    for p in plans for s in p["stages"][-2:]), ""]
open(out + "/plan-qwen.md", "w").write("\n".join(L))
print("\n".join(L))
PY
