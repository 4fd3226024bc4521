"""bench_bf16_report.py RAW OUT MODEL... — the figures of bench_bf16.sh from its raw files
(RAW/gemm-<m>.json, RAW/job-<m>-<compute>-n<P>.json, RAW/machine.txt): writes OUT/bf16.json,
OUT/bf16.md and OUT/bf16.png (matplotlib; skipped with a note when it is missing).

Formulas (one run, the same inputs):
  useful calibration FLOPs F = N x sum over blocks of [T x 2 (D Q + 2 D KV + Q D + 3 D m) + 4 H hd T (T+1)/2]
  calibration GFLOP/s = F / calibration_seconds (results.json timings, -n 1)
  fraction of the bf16 limit = calibration GFLOP/s (bf16) / block GFLOP/s of the bare oneDNN bf16
      primitive (gemm-bench "block_gflops_onednn_bf16": block FLOPs / sum of median times per shape)
  job speed-up = total_seconds (fp32, -n 1) / total_seconds (bf16, -n 1): calibration, scores,
      selection, slicing and writing of 3 pruned checkpoints (no evaluation)
  pipeline efficiency = calibration_seconds (bf16, -n 1) / (2 x calibration_seconds (bf16, -n 2))
  peak RSS per rank = the largest vmhwm_bytes of the job's ranks
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_flops import useful_flops  # noqa: E402

NAMES = {"7b": "7B-shape slice (2 blocks)", "70b": "70B-shape slice (4 blocks)"}


def main():
    raw, out, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    machine = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(raw, "machine.txt")) if "=" in l)
    rows = []
    for m in models:
        g = json.load(open(os.path.join(raw, "gemm-%s.json" % m)))
        job = {k: json.load(open(os.path.join(raw, "job-%s-%s.json" % (m, k)))) for k in ("fp32-n1", "bf16-n1", "bf16-n2")}
        F = useful_flops(job["bf16-n1"])
        c32, c16, c16_2 = (job[k]["timings"]["calibration_seconds"] for k in ("fp32-n1", "bf16-n1", "bf16-n2"))
        t32, t16 = job["fp32-n1"]["timings"]["total_seconds"], job["bf16-n1"]["timings"]["total_seconds"]
        onednn = (g.get("block_gflops_onednn_bf16") or [None])[0]
        r = {"model": m, "name": NAMES.get(m, m), "useful_calibration_gflop": F / 1e9,
             "calibration": {"nsamples": job["bf16-n1"]["calibration"]["nsamples"], "seqlen": job["bf16-n1"]["calibration"]["seqlen"],
                             "chunk": job["bf16-n1"]["options"]["chunk"]},
             "compute_bf16": job["bf16-n1"]["compute"], "onednn": g.get("onednn"),
             "sgemm_block_gflops": g["block_gflops_fp32"][0], "onednn_bf16_block_gflops": onednn,
             "cfsp_bf16_block_gflops": (g.get("block_gflops_cfsp_bf16") or [None])[0],
             "calibration_seconds": {"fp32_n1": c32, "bf16_n1": c16, "bf16_n2": c16_2},
             "calibration_gflops": {"fp32_n1": F / c32 / 1e9, "bf16_n1": F / c16 / 1e9},
             "job_seconds": {"fp32_n1": t32, "bf16_n1": t16},
             "job_speedup_bf16_vs_fp32": t32 / t16,
             "pipeline_efficiency_bf16_n2": c16 / (2 * c16_2),
             "peak_rss_bytes": {k: max(s["vmhwm_bytes"] for s in job[k]["stages"]) for k in job},
             "sweep_seconds": {k: job[k]["timings"]["sweep_seconds_excluding_eval_and_output"] for k in job}}
        r["fraction_of_onednn_bf16"] = r["calibration_gflops"]["bf16_n1"] / onednn if onednn else None
        r["fraction_of_sgemm_fp32"] = r["calibration_gflops"]["fp32_n1"] / r["sgemm_block_gflops"]
        rows.append(r)
    native = all(r["compute_bf16"].get("native_bf16") for r in rows)
    amx = "amx_bf16" in machine.get("flags", "")
    speed_goal = 3.0 if amx else 1.7
    doc = {"tool": "mpi_scripts/bench_bf16.sh", "machine": machine, "native_bf16": native, "models": rows,
           "goals": {"fraction_of_onednn_bf16": 0.85, "job_speedup": speed_goal, "pipeline_efficiency_n2": 0.85,
                     "peak_rss": "bf16 <= fp32"}}
    json.dump(doc, open(os.path.join(out, "bf16.json"), "w"), indent=1)

    def f(v, fmt="%.3f"):
        return "n/a" if v is None else fmt % v
    L = ["# bf16 compute (issue 14)", "",
         "Written by `mpi_scripts/bench_bf16.sh` (report `bench_bf16_report.py`) at commit %s%s, %s." % (
             machine.get("git_commit", "?")[:10], " (+%s changed files)" % machine["git_dirty_files"]
             if machine.get("git_dirty_files", "0") != "0" else "", machine.get("date", "?")),
         "CPU: %s, flags of interest: %s; %s cores, load %s at the start, %s at the end." % (
             machine.get("model_name", "?"), machine.get("flags", "").strip() or "none", machine.get("nproc", "?"),
             machine.get("loadavg_start", "?"), machine.get("loadavg_end", "?")),
         "bf16 mode of this run: %s." % rows[0]["compute_bf16"].get("reason", "?") if rows else "", ""]
    if not native:
        L += ["**This CPU has no native bf16 dot products** (no AMX-BF16, no AVX512-BF16): oneDNN %s has no bf16 matmul "
              "here, so `--compute bf16` is emulated (bf16-rounded operands, oneDNN f32 products) and `auto` picks fp32. "
              "The goals below are for CPUs with native bf16; the figures of this run show the emulation's cost, "
              "not the bf16 speed. Rerun this script on an AMX or AVX512-BF16 machine for those." % (
                  rows[0]["onednn"].get("isa", "?") if rows and rows[0].get("onednn") else "?"), ""]
    L += ["| figure | goal | " + " | ".join(r["name"] for r in rows) + " |", "|---|---|" + "---|" * len(rows)]
    L.append("| block GFLOP/s: fp32 sgemm / bare oneDNN bf16 / cfsp-mpi bf16 (gemm-bench, M = chunk) | | " + " | ".join(
        "%.1f / %s / %s" % (r["sgemm_block_gflops"], f(r["onednn_bf16_block_gflops"], "%.1f"), f(r["cfsp_bf16_block_gflops"], "%.1f"))
        for r in rows) + " |")
    L.append("| calibration GFLOP/s, -n 1: fp32 / bf16 | | " + " | ".join(
        "%.1f / %.1f" % (r["calibration_gflops"]["fp32_n1"], r["calibration_gflops"]["bf16_n1"]) for r in rows) + " |")
    L.append("| calibration bf16 / oneDNN bf16 limit | >= 0.85 | " + " | ".join(
        f(r["fraction_of_onednn_bf16"]) if r["fraction_of_onednn_bf16"] is not None else "n/a (no oneDNN bf16 matmul)" for r in rows) + " |")
    L.append("| calibration fp32 / sgemm limit | (issue 4: >= 0.85) | " + " | ".join(f(r["fraction_of_sgemm_fp32"]) for r in rows) + " |")
    L.append("| whole job -n 1 (s): fp32 / bf16 | | " + " | ".join(
        "%.1f / %.1f" % (r["job_seconds"]["fp32_n1"], r["job_seconds"]["bf16_n1"]) for r in rows) + " |")
    L.append("| job speed-up bf16 vs fp32 | >= %.1fx (%s) | " % (speed_goal, "AMX" if amx else "AVX512-BF16") + " | ".join(
        "%.2fx" % r["job_speedup_bf16_vs_fp32"] for r in rows) + " |")
    L.append("| -n 2 pipeline efficiency, bf16 | >= 0.85 | " + " | ".join(f(r["pipeline_efficiency_bf16_n2"]) for r in rows) + " |")
    L.append("| peak RSS per rank -n 1 (GB): fp32 / bf16 | bf16 <= fp32 | " + " | ".join(
        "%.3f / %.3f" % (r["peak_rss_bytes"]["fp32-n1"] / 1e9, r["peak_rss_bytes"]["bf16-n1"] / 1e9) for r in rows) + " |")
    loads = [(k[len("load_before_"):], v) for k, v in machine.items() if k.startswith("load_before_")]
    if loads:
        L += ["", "Load average (1 min) and the busiest processes before each job (the machine is shared: a job that "
              "ran beside other work is slower, and its figures with it): " + "; ".join("%s: %s" % kv for kv in loads) + "."]
    L += ["", "Jobs: N x T calibration tokens, chunk %s, `--ratios 0.2,0.4,0.6 --eval-dense 0 --eval-pruned 0`, pruned files "
          "written (then deleted). Raw files: `raw-bf16/`." % (rows[0]["calibration"]["chunk"] if rows else "?")]
    plot = "bf16.png"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        labels = ["sgemm fp32", "oneDNN bf16", "cfsp bf16\nproduct", "calib fp32", "calib bf16"]
        for i, r in enumerate(rows):
            v = [r["sgemm_block_gflops"], r["onednn_bf16_block_gflops"] or 0, r["cfsp_bf16_block_gflops"] or 0,
                 r["calibration_gflops"]["fp32_n1"], r["calibration_gflops"]["bf16_n1"]]
            ax[0].bar([x + 0.4 * i for x in range(5)], v, 0.4, label=r["name"])
        ax[0].set_xticks([x + 0.2 for x in range(5)]); ax[0].set_xticklabels(labels, fontsize=7)
        ax[0].set_ylabel("GFLOP/s, one core"); ax[0].set_title("products and calibration (-n 1)"); ax[0].legend(fontsize=7)
        ax[1].bar(range(len(rows)), [r["job_speedup_bf16_vs_fp32"] for r in rows], 0.5)
        ax[1].axhline(speed_goal, color="r", ls="--", label="goal %.1fx (native bf16)" % speed_goal)
        ax[1].set_xticks(range(len(rows))); ax[1].set_xticklabels([r["name"] for r in rows], fontsize=7)
        ax[1].set_ylabel("fp32 time / bf16 time"); ax[1].set_title("whole job speed-up"); ax[1].legend(fontsize=7)
        fig.suptitle("%s (%s)" % (machine.get("model_name", "?"), "native bf16" if native else "bf16 emulated"), fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, plot), dpi=100)
        L += ["", "![bf16 figures](%s)" % plot]
    except ImportError:
        L += ["", "(no plot: python3-matplotlib is not installed)"]
    open(os.path.join(out, "bf16.md"), "w").write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
