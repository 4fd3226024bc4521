#!/usr/bin/env bash
# bench_kl.sh — what the distribution metrics (--kl, issue 18) cost: the evaluation time of a pruned
# model with --kl 1 against --kl 0 (and of the dense evaluation, which records the reference), on
# generated one-block checkpoints with real vocabulary heads — Llama-2's (D 4096, V 32000) and
# Llama-3's (D 4096, V 128256), bf16 — one rank, one thread, REPEATS jobs each (default 3), medians.
# Writes results/bench/kl.json and kl.md (the CPU model and flags, the commit, every time).
#   mpi_scripts/bench_kl.sh            (BK_DIR scratch, default /tmp/cfsp-bench-kl; REPEATS)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s); BENCH_NAME=bench_kl
source "$ROOT/mpi_scripts/bench_common.sh"
DIR="${BK_DIR:-/tmp/cfsp-bench-kl}"; REPEATS="${REPEATS:-3}"
OUT="$ROOT/results/bench"; RAW="$DIR/raw"
mkdir -p "$DIR" "$RAW" "$OUT"
bench_build worktree "$DIR/build" "$DIR"
bench_machine worktree > "$RAW/machine.txt"
for v in 32000 128256; do
  m="$DIR/head-v$v"
  [ -f "$m/config.json" ] || "$BUILD/cfsp-mpi-mkmodel" --out "$m" --hidden 4096 --ffn 11008 --layers 1 --heads 32 \
      --kv-heads 8 --vocab "$v" --dtype bf16 --force > "$RAW/mkmodel-$v.log" 2>&1 || die "mkmodel $v"
  /usr/bin/python3 -c "import numpy as np; np.random.default_rng(1).integers(0, $v, 8192).astype('<u4').tofile('$DIR/tok-v$v.u32.bin')"
  for rep in $(seq 1 "$REPEATS"); do
    for kl in 0 1; do
      o="$DIR/out-v$v-kl$kl-$rep"; rm -rf "$o"
      say "V=$v --kl $kl repeat $rep"
      mpirun -n 1 --bind-to none "$BUILD/cfsp-mpi" run --model "$m" --calib-tokens "$DIR/tok-v$v.u32.bin" \
        --eval-tokens "$DIR/tok-v$v.u32.bin" --nsamples 2 --seqlen 256 --eval-windows 8 --ratios 0.3 \
        --compute fp32 --save-models 0 --save-stats 0 --kl "$kl" --kl-dir "$DIR" --output-dir "$o" > "$RAW/run-v$v-kl$kl-$rep.log" 2>&1 \
        || die "run V=$v kl=$kl (see $RAW/run-v$v-kl$kl-$rep.log)"
    done
  done
done
/usr/bin/python3 - "$DIR" "$OUT" "$REPEATS" <<'PY'
import json, os, statistics, sys
d, out, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
mach = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(d, "raw", "machine.txt")) if "=" in l)
rows = []
for v in (32000, 128256):
    t = {0: {"dense": [], "pruned": []}, 1: {"dense": [], "pruned": []}}
    for kl in (0, 1):
        for rep in range(1, reps + 1):
            r = json.load(open(os.path.join(d, "out-v%d-kl%d-%d" % (v, kl, rep), "results.json")))
            t[kl]["dense"].append(r["dense"]["seconds"])
            t[kl]["pruned"].append(r["pruned"][0]["eval_seconds"])
            pos = r["pruned"][0]["vs_dense"]["positions"] if kl else None
    med = {kl: {k: statistics.median(x) for k, x in t[kl].items()} for kl in t}
    rows.append({"vocab": v, "hidden": 4096, "positions": 8 * 255, "scratch_bytes": 8 * 255 * v * 4, "seconds": t, "median": med,
                 "pruned_eval_ratio": med[1]["pruned"] / med[0]["pruned"], "dense_eval_ratio": med[1]["dense"] / med[0]["dense"]})
doc = {"machine": {k: mach.get(k) for k in ("cpu_model", "hypervisor", "nproc", "git_commit", "date", "loadavg_start")},
       "cpu_flags_bf16": [f for f in mach.get("cpu_flags", "").split() if "bf16" in f or "amx" in f or f == "avx512f" or f == "avx2"],
       "repeats": reps, "rows": rows}
json.dump(doc, open(os.path.join(out, "kl.json"), "w"), indent=1)
L = ["# Cost of the distribution metrics (--kl)", "",
     "`mpi_scripts/bench_kl.sh`: one rank, one thread, a generated one-block bf16 checkpoint (D 4096, FFN 11008,",
     "32/8 heads) with the vocabulary head of Llama-2 (32000) or Llama-3 (128256); 8 evaluation windows of 256 tokens",
     "(2040 positions), `--compute fp32`; the median of %d jobs each with `--kl 0` and `--kl 1`." % reps,
     "CPU: %s (%s), flags %s; commit %s; %s." % (mach.get("cpu_model"), mach.get("hypervisor") or "bare metal",
                                                  " ".join(doc["cpu_flags_bf16"]), (mach.get("git_commit") or "")[:10], mach.get("date")), "",
     "| vocab | scratch file | dense eval s (kl 0 / kl 1) | pruned eval s (kl 0 / kl 1) | pruned eval ratio | dense eval ratio |",
     "|---|---|---|---|---|---|"]
for r in rows:
    m = r["median"]
    L.append("| %d | %.2f GB | %.2f / %.2f | %.2f / %.2f | %.3f | %.3f |" % (r["vocab"], r["scratch_bytes"] / 1e9, m[0]["dense"], m[1]["dense"],
                                                                   m[0]["pruned"], m[1]["pruned"], r["pruned_eval_ratio"], r["dense_eval_ratio"]))
L += ["", "The ratio is the evaluation time with the KL figures over the time without them (1.0 = free): the dense pass",
      "writes each position's logits to the scratch file, each pruned pass reads them back and takes one more",
      "exp over the vocabulary per position, against the lm_head product's 2 x D x V flops per position."]
open(os.path.join(out, "kl.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
