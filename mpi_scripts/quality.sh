#!/usr/bin/env bash
# quality.sh — perplexity of cfsp, wanda_sp, flap and mag_sp at ratios 0.1..0.5 on both shared
# models: calibrated on TinyStories tokens [100000:], evaluated on the disjoint tokens [0:100000]
# and on WikiText-2 test. Writes results/quality/<model>/{results.json,results.md,ppl_vs_ratio.svg}
# and the combined table results/quality/README.md. About 5-10 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
SHARED="${CFSP_SHARED:-$ROOT/../shared}"
OUT="$ROOT/results/quality"
NP="${NP:-2}"
mkdir -p "$OUT"
for model in stories260K tinystories656K; do
  tok="$SHARED/data/tokens/$model/tinystories_val_head.u32.bin"
  for evalset in tinystories wikitext2; do
    if [ "$evalset" = tinystories ]; then ev="$tok@0:100000"; else ev="$SHARED/data/tokens/$model/wikitext2_test.joined.u32.bin"; fi
    mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" --model "$SHARED/models/$model" \
      --calib-tokens "$tok@100000:" --eval-tokens "$ev" --eval-windows 400 \
      --nsamples 128 --seqlen 256 --ratios 0.1,0.2,0.3,0.4,0.5 --method cfsp,wanda_sp,flap,mag_sp \
      --save-models 0 --output-dir "$OUT/$model-$evalset" --force
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
lines = ["# Pruning quality on the shared models", "",
         "Calibration: 128 x 256 tokens at random offsets (seed 0) from TinyStories validation tokens [100000:].",
         "Evaluation: non-overlapping 256-token windows (at most 400) of the disjoint TinyStories tokens [0:100000],",
         "and of WikiText-2 test. Perplexity; lower is better; best pruned method per row in bold.", ""]
for d in sorted(os.listdir(out)):
    p = os.path.join(out, d, "results.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))
    lines += ["## %s (dense %.3f)" % (d, r["dense"]["ppl"]), "", "| ratio | cfsp | wanda_sp | flap | mag_sp |", "|---|---|---|---|---|"]
    ratios = sorted({e["ratio"] for e in r["pruned"]})
    for ra in ratios:
        row = {e["method"]: e["ppl"] for e in r["pruned"] if e["ratio"] == ra}
        best = min(row.values())
        cells = [("**%.3f**" if row[m] == best else "%.3f") % row[m] for m in ("cfsp", "wanda_sp", "flap", "mag_sp")]
        lines.append("| %.1f | %s |" % (ra, " | ".join(cells)))
    lines.append("")
open(os.path.join(out, "README.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
