"""bench_phases_report.py RAW OUT TAG "MODEL..." — the table of bench_phases.sh from its raw files
(RAW/machine.txt, RAW/results-<m>.json, RAW/wall.txt, RAW/dd-<m>.txt, RAW/profile.txt): writes
OUT/phases-TAG.json, OUT/phases-TAG.md and OUT/phases-TAG.png (matplotlib; skipped with a note when
it is missing).

Phases, all from the job's results.json (-n 1, so every figure is the one rank's wall time):
  setup        timings.setup_seconds (config, mapping the shards, plan of the stages)
  calibration  timings.calibration_seconds (the forward pass with its statistics hooks)
  score        timings.score_seconds (fine scores of every block, all methods)
  select       sum of pruned[].selection_seconds (allocation, top-k, broadcast of the kept sets)
  slice        sum of pruned[].slice_seconds (the pruned copies of the FFN weights)
  write        sum of pruned[].write_seconds (HDF5 output of every pruned model)
  evaluate     timings.dense_eval_seconds + sum of pruned[].eval_seconds
  other        timings.total_seconds - the phases above (results, commit, frees)
A phase's share is its seconds / total_seconds. The matrix-product phases are calibration and
evaluate; the others are the "non-product" phases of issue 14, whose goal is < 5% each. Inside
calibration, the profile (perf, a shorter 7B calibration) gives the share of the samples outside the
BLAS/oneDNN kernels. The disk line is dd oflag=direct of the first output's size right after the
job: write GB/s against it says whether writing is bound by the disk.
"""
import json
import os
import re
import sys

NAMES = {"7b": "7B-shape slice (2 blocks)", "70b": "70B-shape slice (4 blocks)"}
PHASES = ["setup", "calibration", "score", "select", "slice", "write", "evaluate", "other"]
PRODUCT = {"calibration", "evaluate"}
# symbols of the matrix-product libraries in a perf report (OpenBLAS kernels and copies, oneDNN jit)
PRODUCT_SYM = re.compile(r"sgemm|dgemm|gemm_|_kernel_|itcopy|oncopy|otcopy|incopy|dnnl|brg|jit|\[unknown\]", re.I)


def phases_of(r):
    t, pr = r["timings"], r["pruned"]
    s = {"setup": t["setup_seconds"], "calibration": t["calibration_seconds"], "score": t["score_seconds"],
         "select": sum(p["selection_seconds"] for p in pr), "slice": sum(p["slice_seconds"] for p in pr),
         "write": sum(p["write_seconds"] for p in pr),
         "evaluate": t["dense_eval_seconds"] + sum(p.get("eval_seconds") or 0 for p in pr)}
    s["other"] = t["total_seconds"] - sum(s.values())
    return s


def dd_rate(path):
    if not os.path.exists(path):
        return None
    m = re.search(r"([0-9.]+) s, ([0-9.]+) ([kMG]?B)/s", open(path).read())
    if not m:
        return None
    return float(m.group(2)) * {"kB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1}[m.group(3)]


def percent_lines(path):
    """(percent, rest of the line) of every line of a perf report that starts with a percentage"""
    if not os.path.exists(path):
        return []
    rows = []
    for line in open(path):
        m = re.match(r"\s*([0-9.]+)%\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def profile_dso(path):
    """shares by shared object: the product libraries (OpenBLAS, oneDNN and its JIT-generated kernels)
    against the rest"""
    rows = percent_lines(path)
    if not rows:
        return None
    prod = sum(p for p, d in rows if re.search(r"openblas|dnnl|\[JIT\]", d))
    return {"dsos": [{"percent": p, "dso": d} for p, d in rows], "product_percent": prod,
            "non_product_percent": sum(p for p, _ in rows) - prod}


def profile(path):
    rows = percent_lines(path)
    if not rows:
        return None
    prod = sum(p for p, s in rows if PRODUCT_SYM.search(s))
    return {"top": [{"percent": p, "symbol": s} for p, s in rows[:15]], "listed_percent": sum(p for p, _ in rows),
            "product_percent": prod, "non_product_percent": sum(p for p, _ in rows) - prod}


def main():
    raw, out, tag, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
    machine = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(raw, "machine.txt")) if "=" in l)
    wall = dict(l.split() for l in open(os.path.join(raw, "wall.txt")))
    rows = []
    for m in models:
        r = json.load(open(os.path.join(raw, "results-%s.json" % m)))
        s = phases_of(r)
        total = r["timings"]["total_seconds"]
        wb = sum(p["write_bytes"] for p in r["pruned"])
        row = {"model": m, "name": NAMES.get(m, m), "compute": r["compute"],
               "calibration": {"nsamples": r["calibration"]["nsamples"], "seqlen": r["calibration"]["seqlen"]},
               "ratios": [p["ratio"] for p in r["pruned"]], "methods": sorted({p["method"] for p in r["pruned"]}),
               "seconds": s, "share": {k: v / total for k, v in s.items()}, "total_seconds": total,
               "wall_seconds_with_mpirun": float(wall[m]), "write_bytes": wb,
               "write_gbps": wb / s["write"] / 1e9 if s["write"] > 0 else None,
               "disk_direct_gbps": (dd_rate(os.path.join(raw, "dd-%s.txt" % m)) or 0) / 1e9 or None,
               "peak_rss_bytes": max(st["vmhwm_bytes"] for st in r["stages"]),
               "slice_seconds_per_ratio": [p["slice_seconds"] for p in r["pruned"]]}
        row["largest_non_product_share"] = max((row["share"][k], k) for k in PHASES if k not in PRODUCT and k != "write")
        rows.append(row)
    prof = profile(os.path.join(raw, "profile.txt"))
    pdso = profile_dso(os.path.join(raw, "profile-dso.txt"))
    if prof and pdso:          # the shares by library: JIT-generated oneDNN kernels have no symbols
        prof["product_percent"], prof["non_product_percent"] = pdso["product_percent"], pdso["non_product_percent"]
        prof["by_dso"] = pdso["dsos"]
    doc = {"tool": "mpi_scripts/bench_phases.sh", "tag": tag, "machine": machine, "models": rows, "profile_7b_calibration": prof,
           "goal": "every non-product phase (setup, score, select, slice, other) < 5% of the job; write judged against the disk"}
    json.dump(doc, open(os.path.join(out, "phases-%s.json" % tag), "w"), indent=1)

    L = ["# Where a one-core pruning job spends its time (%s)" % tag, "",
         "`mpi_scripts/bench_phases.sh` (%s), %s, %s cores, commit %s%s, %s." % (
             "PHASES_TAG=%s" % tag, machine.get("cpu_model", "?"), machine.get("nproc", "?"), machine.get("git_commit", "?")[:10],
             " + %s uncommitted files" % machine["git_dirty_files"] if machine.get("git_dirty_files", "0") != "0" else "",
             machine.get("date", "?")),
         "Extra arguments: `%s`. Load average %s at the start, %s at the end." % (
             machine.get("extra_args") or "(none)", machine.get("loadavg_start", "?"), machine.get("loadavg_end", "?")),
         "bf16 flags of the CPU: %s." % (", ".join(f for f in machine.get("cpu_flags", "").split() if "bf16" in f) or "none"), ""]
    L.append("| phase | " + " | ".join("%s s | %%" % r["name"] for r in rows) + " |")
    L.append("|---|" + "---:|---:|" * len(rows))
    for k in PHASES:
        L.append("| %s%s | " % (k, "" if k in PRODUCT else " *") + " | ".join("%.3f | %.1f" % (r["seconds"][k], 100 * r["share"][k]) for r in rows) + " |")
    L.append("| **job (total_seconds)** | " + " | ".join("%.2f | 100" % r["total_seconds"] for r in rows) + " |")
    L += ["", "`*` non-product phases. Calibration N x T: %s; ratios %s, methods %s; compute %s." % (
        ", ".join("%s %dx%d" % (r["model"], r["calibration"]["nsamples"], r["calibration"]["seqlen"]) for r in rows),
        ",".join("%g" % x for x in rows[0]["ratios"]), ",".join(rows[0]["methods"]),
        ", ".join("%s %s (%s)" % (r["model"], r["compute"]["mode"], r["compute"].get("onednn_impl", "")) for r in rows)), ""]
    for r in rows:
        sh, k = r["largest_non_product_share"]
        L.append("- %s: largest non-product phase besides write: %s %.1f%% (goal < 5%%: %s). Write %.2f GB at %s GB/s; "
                 "the disk (dd oflag=direct, same size) %s GB/s. Peak RSS %.2f GB." % (
                     r["name"], k, 100 * sh, "met" if sh < 0.05 else "NOT met", r["write_bytes"] / 1e9,
                     "%.2f" % r["write_gbps"] if r["write_gbps"] else "-",
                     "%.2f" % r["disk_direct_gbps"] if r["disk_direct_gbps"] else "-", r["peak_rss_bytes"] / 1e9))
        sl = r["slice_seconds_per_ratio"]
        first_note = (" — the first ratio's copies are the job's first use of that much new memory (the page faults and the "
                      "kernel's zeroing of fresh pages are in its time)") if len(sl) > 1 and sl[0] > 2 * max(sl[1:]) else ""
        L.append("  Slicing per ratio (in order): %s s%s." % (", ".join("%.2f" % x for x in sl), first_note))
    if prof:
        L += ["", "Profile of a 7B calibration (1 x 512, perf, self time): %.1f%% of the samples in the product libraries "
              "(OpenBLAS, oneDNN and its JIT kernels), %.1f%% elsewhere (norms, RoPE, softmax, statistics hooks, conversions, "
              "the kernel). %s Top symbols:" % (
                  prof["product_percent"], prof["non_product_percent"],
                  ("By library: " + ", ".join("%s %.1f%%" % (d["dso"], d["percent"]) for d in prof["by_dso"][:5]) + ".") if prof.get("by_dso") else ""), ""]
        L += ["| % | symbol |", "|---:|---|"] + ["| %.1f | `%s` |" % (t["percent"], t["symbol"]) for t in prof["top"][:10]]
    open(os.path.join(out, "phases-%s.md" % tag), "w").write("\n".join(L) + "\n")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_phases_report: matplotlib missing, no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.8 * len(rows)))
    left = [0.0] * len(rows)
    for k in PHASES:
        v = [100 * r["share"][k] for r in rows]
        ax.barh([r["name"] for r in rows], v, left=left, label=k)
        left = [a + b for a, b in zip(left, v)]
    ax.set_xlabel("%% of the job (-n 1, %s)" % tag)
    ax.legend(ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.set_title(machine.get("cpu_model", ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "phases-%s.png" % tag), dpi=110)


if __name__ == "__main__":
    main()
