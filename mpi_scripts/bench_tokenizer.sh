#!/usr/bin/env bash
# bench_tokenizer.sh — tokenizer throughput on one core (issue 6): the checkpoints' own tokenizers
# (src/tok) over the shared WikiText-2 and TinyStories texts, through tests/tok_tool (no MPI):
# one checked run (ids must equal ../shared/data/tokens), then REPS timed runs of the whole file,
# wall-clock and thread CPU time. Writes results/tokenizer/tokenizer.json and README.md.
#   REPS=7 mpi_scripts/bench_tokenizer.sh            (CFSP_BUILD_DIR selects the build, as setup.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
SHARED="${CFSP_SHARED:-$ROOT/../shared}"
OUT="$ROOT/results/tokenizer"
REPS="${REPS:-7}"
mkdir -p "$OUT"
TOOL="$BUILD/tests/tok_tool"
[ -x "$TOOL" ] || { echo "bench_tokenizer: $TOOL missing (tests not built?)"; exit 1; }
RAW="$(mktemp)"
trap 'rm -f "$RAW"' EXIT
for model in tinystories656K stories260K; do
  for text in wikitext2_test.joined wikitext2_validation.joined tinystories_val_head; do
    echo "bench_tokenizer: $model / $text"
    line=$(taskset -c 0 "$TOOL" bench "$SHARED/models/$model" "$SHARED/data/$text.txt" "$REPS" \
           "$SHARED/data/tokens/$model/$text.u32.bin" 2>&1) || { echo "$line"; exit 1; }
    printf '%s\t%s\t%s\n' "$model" "$text" "$line" >>"$RAW"
  done
done
/usr/bin/python3 - "$RAW" "$OUT" "$REPS" <<'PY'
import datetime, json, os, platform, statistics, sys
raw, out, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
load = open("/proc/loadavg").read().split()[:3]
rows = []
for line in open(raw):
    model, text, js = line.rstrip("\n").split("\t", 2)
    d = json.loads(js)
    walls = [r["wall_s"] for r in d["runs"]]
    cpus = [r["cpu_s"] for r in d["runs"]]
    mb = d["bytes"] / 1e6
    rows.append({"model": model, "text": text, "tokenizer": d["tokenizer"], "bytes": d["bytes"], "tokens": d["tokens"],
                 "ids_equal_shared": bool(d["equal"] == 1), "load_s": d["load_s"], "runs": d["runs"],
                 "wall_best_s": min(walls), "wall_median_s": statistics.median(walls), "cpu_best_s": min(cpus),
                 "mb_per_s_wall_best": mb / min(walls), "mb_per_s_wall_median": mb / statistics.median(walls),
                 "mb_per_s_cpu": mb / min(cpus)})
doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu, "loadavg_1_5_15": load,
       "repetitions": reps, "pinned_core": 0, "goal_mb_per_s": 5.0, "rows": rows}
json.dump(doc, open(os.path.join(out, "tokenizer.json"), "w"), indent=2)
L = ["# Tokenizer throughput (one core)", "",
     "The checkpoints' own tokenizers in C (`src/tok`), whole file in one call, measured by",
     "`mpi_scripts/bench_tokenizer.sh` (`tests/tok_tool bench`, pinned to core 0): one run checked against",
     "`../shared/data/tokens` (ids equal: yes), then %d timed runs. MB = 10^6 bytes of UTF-8 text." % reps,
     "Wall-clock and the thread's CPU time are both given: the CPU time is what one core does; wall-clock",
     "equals it on an idle machine and is larger when other processes share the cores.", "",
     "Run %s on %s, load average %s (1/5/15 min)." % (doc["date"], cpu, " / ".join(load)), "",
     "| model | tokenizer | text | MB | tokens | ids equal | MB/s (CPU) | MB/s (wall, best) | MB/s (wall, median) |",
     "|---|---|---|---:|---:|:-:|---:|---:|---:|"]
for r in rows:
    L.append("| %s | %s | %s | %.2f | %d | %s | %.1f | %.1f | %.1f |" % (
        r["model"], r["tokenizer"], r["text"], r["bytes"] / 1e6, r["tokens"], "yes" if r["ids_equal_shared"] else "**NO**",
        r["mb_per_s_cpu"], r["mb_per_s_wall_best"], r["mb_per_s_wall_median"]))
goal = [r for r in rows if r["model"] == "tinystories656K" and r["text"].startswith("wikitext2")]
L += ["", "Goal (issue 6): >= 5 MB/s of WikiText-2 text per core with the 2048-token BPE (tinystories656K's",
      "tokenizer.json): %s MB/s CPU, %s MB/s wall (best)." % (
          " and ".join("%.1f" % r["mb_per_s_cpu"] for r in goal), " and ".join("%.1f" % r["mb_per_s_wall_best"] for r in goal)),
      "", "How: hash tables for the vocabulary and merge ranks (no cJSON lookups after loading); the HF merge loop",
      "(a (rank, position) heap) and the sentencepiece one (a (score, position) heap) run on independent",
      "chunks of the text — a boundary whose byte pair occurs in no vocabulary entry is never crossed by a",
      "merge, so cutting there gives identical ids while keeping each heap tiny."]
open(os.path.join(out, "README.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L[-14 - len(rows):-8]))
PY
