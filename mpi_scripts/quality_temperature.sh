#!/usr/bin/env bash
# quality_temperature.sh — the allocation temperature (issue 18): on both shared models, for the
# in-domain (TinyStories [0:100000]) and out-of-domain (WikiText-2 test) evaluation, ratios 0.1..0.6
# and calibration seeds SEEDS (default 0..14; the calibration offsets are random): cfsp with --a auto
# (chosen per ratio by the mean KL on SELECT held-out windows of the calibration tokens that no
# calibration sequence overlaps, with --a-margin MARGIN, default 0: the lowest value), with the
# fixed default allocation (--a 1), with the reference's temperature in the default mode (--a 0.25 =
# N*T/131072: the reference's allocation with exact channel counts) and with the reference's
# allocation itself (--alloc-mode reference --a 1, which also keeps one channel more per block than
# the budget), plus flap and wanda_sp, all on the same statistics and evaluation windows; for
# WikiText-2 also --a auto choosing on SELECT windows of WikiText-2 validation (auto_target: the
# target domain, disjoint from the test text). Writes results/quality/temperature[-TAG]/<model>-
# <evalset>-s<seed>/{auto,default,reftemp,reference[,auto_target]}/results.json, the commit and CPU
# the runs used (provenance.json: one record per invocation and its seeds, so seeds can be added
# by a later run with SEEDS="..."), and, by quality_temperature_report.py,
# results/quality/temperature[-TAG].{json,md,png}. About 4 minutes per seed on 2 cores. WINDOWS
# (default 100) evaluation windows of 256 tokens, SELECT (default 128) selection windows, FRESH
# (default "6,7,8;9,10,11,12,13,14"): groups of seeds the report also judges on their own (seeds not
# yet run when a setting or a judgement of the study was chosen). The earlier settings:
# TAG=select32-margin1 SELECT=32 MARGIN=1 SEEDS="0 1 2 3 4 5" FRESH=3,4,5.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
SHARED="${CFSP_SHARED:-$ROOT/../shared}"
TAG="${TAG:-}"
NAME="temperature${TAG:+-$TAG}"
OUT="$ROOT/results/quality/$NAME"
NP="${NP:-2}"
WINDOWS="${WINDOWS:-100}"
SELECT="${SELECT:-128}"
MARGIN="${MARGIN:-0}"
SEEDS="${SEEDS:-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14}"
FRESH="${FRESH:-6,7,8;9,10,11,12,13,14}"
NSAMPLES=128 SEQLEN=256
REFTEMP=$(/usr/bin/python3 -c "print($NSAMPLES * $SEQLEN / 131072)")
RATIOS=0.1,0.2,0.3,0.4,0.5,0.6
mkdir -p "$OUT"
/usr/bin/python3 - "$OUT/provenance.json" "$ROOT" "$SEEDS" <<'PY'
import json, os, subprocess, sys
g = lambda *a: subprocess.run(["git", "-C", sys.argv[2]] + list(a), capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
seeds = [int(x) for x in sys.argv[3].split()]
recs = []
if os.path.exists(sys.argv[1]):
    old = json.load(open(sys.argv[1]))
    recs = old if isinstance(old, list) else []
for r in recs:          # this run replaces those seeds
    r["seeds"] = [s for s in r["seeds"] if s not in seeds]
recs = [r for r in recs if r["seeds"]] + [{
    "commit": g("rev-parse", "--short", "HEAD"), "dirty": bool(g("status", "--porcelain", "--untracked-files=no")),
    "cpu": cpu, "cpu_flags": [f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))], "seeds": seeds}]
json.dump(recs, open(sys.argv[1], "w"), indent=1)
PY
dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q "install ok installed" || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null; }
for model in stories260K tinystories656K; do
  tok="$SHARED/data/tokens/$model/tinystories_val_head.u32.bin"
  for evalset in tinystories wikitext2; do
    if [ "$evalset" = tinystories ]; then ev="$tok@0:100000"; else ev="$SHARED/data/tokens/$model/wikitext2_test.joined.u32.bin"; fi
    for seed in $SEEDS; do
      d="$OUT/$model-$evalset-s$seed"
      mkdir -p "$d"
      common=(--model "$SHARED/models/$model" --eval-tokens "$ev" --eval-windows "$WINDOWS" --seqlen "$SEQLEN"
              --ratios "$RATIOS" --save-models 0 --force)
      mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" run "${common[@]}" --calib-tokens "$tok@100000:" \
        --nsamples "$NSAMPLES" --seed "$seed" --method cfsp,flap,wanda_sp --a auto --a-margin "$MARGIN" --select-windows "$SELECT" --output-dir "$d/auto"
      mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" prune "${common[@]}" --stats "$d/auto/stats.h5" \
        --method cfsp --a 1 --output-dir "$d/default"
      mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" prune "${common[@]}" --stats "$d/auto/stats.h5" \
        --method cfsp --a "$REFTEMP" --output-dir "$d/reftemp"
      mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" prune "${common[@]}" --stats "$d/auto/stats.h5" \
        --method cfsp --a 1 --alloc-mode reference --output-dir "$d/reference"
      if [ "$evalset" = wikitext2 ]; then      # auto choosing on the target domain: WikiText-2 validation (disjoint from test)
        mpirun -n "$NP" --oversubscribe "$BUILD/cfsp-mpi" prune "${common[@]}" --stats "$d/auto/stats.h5" --method cfsp --a auto \
          --select-tokens "$SHARED/data/tokens/$model/wikitext2_validation.joined.u32.bin" --a-margin "$MARGIN" --select-windows "$SELECT" \
          --output-dir "$d/auto_target"
      fi
    done
  done
done
FRESH="$FRESH" /usr/bin/python3 "$ROOT/mpi_scripts/quality_temperature_report.py" "$OUT" "$ROOT/results/quality" "$NAME"
