#!/usr/bin/env bash
# quality.sh — cfsp, wanda_sp, flap and mag_sp at ratios 0.1..0.6 on both shared models: calibrated
# on TinyStories tokens [100000:], evaluated on the disjoint tokens [0:100000] and on WikiText-2 test:
# perplexity, and against the dense model on the same positions (--kl) the mean KL divergence and
# the top-1 agreement. Writes results/quality/<model>-<evalset>/{results.json,results.md,
# ppl_vs_ratio.svg} and the combined tables of results/quality/README.md (between the
# quality-table markers; the text around them is kept). About 10 minutes on 2 cores.
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
      --nsamples 128 --seqlen 256 --ratios 0.1,0.2,0.3,0.4,0.5,0.6 --method cfsp,wanda_sp,flap,mag_sp \
      --save-models 0 --output-dir "$OUT/$model-$evalset" --force
  done
done
/usr/bin/python3 - "$OUT" "$(git -C "$ROOT" rev-parse --short HEAD)" <<'PY'
import json, os, re, subprocess, sys
out, commit = sys.argv[1], sys.argv[2]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
M = ("cfsp", "wanda_sp", "flap", "mag_sp")
lines = ["<!-- quality-table:begin (written by mpi_scripts/quality.sh) -->",
         "Calibration: 128 x 256 tokens at random offsets (seed 0) from TinyStories validation tokens [100000:].",
         "Evaluation: non-overlapping 256-token windows (at most 400) of the disjoint TinyStories tokens [0:100000],",
         "and of WikiText-2 test. Perplexity; KL(dense || pruned) per token (nats) and top-1 agreement with the",
         "dense model on the same positions. Lower is better (top-1: higher); the best pruned method per row in bold.",
         "Commit %s, %s." % (commit, cpu), ""]
for d in sorted(os.listdir(out)):
    p = os.path.join(out, d, "results.json")
    if not os.path.isdir(os.path.join(out, d)) or not os.path.exists(p):
        continue
    r = json.load(open(p))
    lines += ["### %s (dense perplexity %.3f)" % (d, r["dense"]["ppl"]), "",
              "| ratio | " + " | ".join("%s ppl" % m for m in M) + " | " + " | ".join("%s KL / top-1" % m for m in M) + " |",
              "|---|" + "---|" * (2 * len(M))]
    for ra in sorted({e["ratio"] for e in r["pruned"]}):
        row = {e["method"]: e for e in r["pruned"] if e["ratio"] == ra}
        bp = min(row[m]["ppl"] for m in M)
        bk = min(row[m]["vs_dense"]["kl_mean"] for m in M)
        cells = [("**%.3f**" if row[m]["ppl"] == bp else "%.3f") % row[m]["ppl"] for m in M]
        cells += [("**%.4f** / %.3f" if row[m]["vs_dense"]["kl_mean"] == bk else "%.4f / %.3f") %
                  (row[m]["vs_dense"]["kl_mean"], row[m]["vs_dense"]["top1_agreement"]) for m in M]
        lines.append("| %.1f | %s |" % (ra, " | ".join(cells)))
    lines.append("")
lines.append("<!-- quality-table:end -->")
readme = os.path.join(out, "README.md")
text = open(readme).read() if os.path.exists(readme) else "# Pruning quality on the shared models\n\n<!-- quality-table:begin -->\n<!-- quality-table:end -->\n"
if "<!-- quality-table:begin" not in text:
    text = "# Pruning quality on the shared models\n\n<!-- quality-table:begin -->\n<!-- quality-table:end -->\n"
text = re.sub(r"<!-- quality-table:begin.*?<!-- quality-table:end -->", lambda m: "\n".join(lines), text, flags=re.S)
open(readme, "w").write(text)
print("\n".join(lines))
PY
