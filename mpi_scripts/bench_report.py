#!/usr/bin/python3
"""bench_report.py OUT — the figures of issue 4 from the raw material mpi_scripts/bench.sh left in
OUT/raw (runs.jsonl, one results.json per cfsp-mpi job, one JSON per cfsp-mpi-gemm-bench run,
machine.txt, profiles). Writes OUT/bench.json, OUT/README.md and OUT/bench.png + OUT/bench.svg.

Formulas
  useful FLOPs of a calibration pass = N * sum_l [ T * 2*(D*Q + 2*D*KV + Q*D + 3*D*m_l)
                                                  + sum_{t<T} 2*2*H*hd*(t+1) ]     (causal half only)
  T(run)  = max(timings.calibration_seconds, max_r stages[r].calib_seconds)      (the last stage ends last)
  1  GEMM fraction   = FLOPs / T(-n 1) / sgemm block GFLOP/s (gemm-bench, -n 1, M = tokens per micro-batch)
     CPU variant     = FLOPs / (user+sys CPU seconds of the job) / sgemm GFLOP per CPU second  (-n 1 only;
                       insensitive to other load on a shared machine; the CPU time includes setup)
  2  efficiency(P)   = T(-n 1) / (P * T(-n P))
  3  memory          = stages[r].vmhwm_bytes vs 1.25 * stages[r].weight_bytes_expected + 1e9
  4  output          = (pruned.write_bytes / pruned.write_seconds) / (dd bytes / dd conv=fdatasync seconds)
  5  sweep cost      = (calibration_seconds + sweep_seconds_excluding_eval_and_output) at 5 ratios / same at 1
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_flops import useful_flops  # noqa: E402

OUT = sys.argv[1]
RAW = os.path.join(OUT, "raw")
GB = 1e9


def load(tag):
    p = os.path.join(RAW, tag + ".json")
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None


runs = [json.loads(l) for l in open(os.path.join(RAW, "runs.jsonl")) if l.strip()]
meta = {r["tag"]: r for r in runs}
machine = {}
for line in open(os.path.join(RAW, "machine.txt")):
    if "=" in line:
        k, v = line.rstrip("\n").split("=", 1)
        machine[k] = v
ncores = int(machine.get("nproc", "2") or 2)


def own_bytes(s):
    """stored bytes of the rank's own tensors: weight_bytes_expected (named weight_bytes_read in
    results written between the stage-unit refactor and issue 13)"""
    return s["weight_bytes_expected"] if "weight_bytes_expected" in s else s["weight_bytes_read"]


def stage_span(s):
    if "first_unit" in s:
        return "u%d-%d (b%d-%d)" % (s["first_unit"], s["last_unit"], s["first_block"], s["last_block"])
    return "b%d-%d" % (s["first_block"], s["last_block"])


def calib_T(res):
    return max([res["timings"]["calibration_seconds"]] + [s["calib_seconds"] for s in res["stages"]])


def cpu_seconds(tag):
    t = meta.get(tag, {}).get("time_real_user_sys", "")
    try:
        real, user, sys_ = (float(x) for x in t.split())
        return real, user + sys_
    except ValueError:
        return None, None


def gemm(tag):
    g = load(tag)
    if not g:
        return None
    return g


def fmt(x, f="%.3f"):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f % x


MODEL_ORDER = ["stories260K", "tinystories656K", "7b", "70b"]
MODEL_NAME = {"7b": "7B-shape slice", "70b": "70B-shape slice", "stories260K": "stories260K", "tinystories656K": "tinystories656K"}
calib = [r for r in runs if r["kind"] == "cfsp" and r["tag"].startswith("calib-") and r["rc"] == 0]
models = [m for m in MODEL_ORDER if any(r["model"] == m for r in calib)]

# ---------------------------------------------------------------- figure 1 and 2
fig1, fig2 = [], []
for m in models:
    chunks = sorted({r["chunk"] for r in calib if r["model"] == m})
    for c in chunks:
        rs = {r["np"]: r for r in calib if r["model"] == m and r["chunk"] == c}
        r1 = load(rs[1]["tag"]) if 1 in rs else None
        tokens = c if c else (r1 or load(next(iter(rs.values()))["tag"]))["calibration"]["seqlen"]
        g1 = gemm("gemm-%s-m%d-n1" % (m, tokens))
        g2 = gemm("gemm-%s-m%d-n2" % (m, tokens))
        T1 = calib_T(r1) if r1 else None
        for P in sorted(rs):
            res = load(rs[P]["tag"])
            if not res:
                continue
            F, TP = useful_flops(res), calib_T(res)
            achieved = F / TP / 1e9
            e = {"model": m, "chunk": c, "tokens_per_microbatch": tokens, "np": P, "tag": rs[P]["tag"],
                 "nsamples": res["calibration"]["nsamples"], "seqlen": res["calibration"]["seqlen"],
                 "useful_gflop": F / 1e9, "calibration_seconds": TP, "achieved_gflops": achieved,
                 "ffn_slice": res.get("options", {}).get("ffn_slice"),
                 "stages": [dict({k: s[k] for k in ("rank", "calib_compute_seconds", "calib_wait_seconds", "calib_seconds")}, span=stage_span(s)) for s in res["stages"]],
                 "loadavg_before": rs[P].get("loadavg_before"), "loadavg_after": rs[P].get("loadavg_after")}
            if P == 1 and g1:
                e["sgemm_gflops"] = g1["block_gflops_fp32"][0]
                e["gemm_fraction"] = achieved / e["sgemm_gflops"]
                if "block_gflops_bf16_panels" in g1:
                    e["sgemm_bf16_panel_gflops"] = g1["block_gflops_bf16_panels"][0]
                real, cpu = cpu_seconds(rs[P]["tag"])
                if cpu and "block_gflops_fp32_per_cpu_second" in g1:
                    e["cpu_seconds"] = cpu
                    e["sgemm_gflops_per_cpu_second"] = g1["block_gflops_fp32_per_cpu_second"][0]
                    e["gemm_fraction_cpu"] = F / cpu / 1e9 / e["sgemm_gflops_per_cpu_second"]
            elif P > 1 and g2:
                used = min(P, ncores)
                per_core = sum(g2["block_gflops_fp32"]) / len(g2["block_gflops_fp32"])
                e["sgemm_gflops_per_core_busy"] = g2["block_gflops_fp32"]
                e["gemm_fraction_machine"] = achieved / (used * per_core)
            fig1.append(e)
            if T1 and P > 1:
                nmb = res["calibration"]["nsamples"] * (res["calibration"]["seqlen"] // tokens)
                comp = [s["calib_compute_seconds"] for s in res["stages"]]
                fig2.append({"model": m, "chunk": c, "tokens_per_microbatch": tokens, "np": P, "T1": T1, "TP": TP,
                             "efficiency": T1 / (P * TP), "microbatches": nmb,
                             "schedule_bound": nmb / (nmb + P - 1),
                             "stage_balance": (sum(comp) / len(comp)) / max(comp) if max(comp) > 0 else None,
                             "oversubscribed": P > ncores,
                             "compute_seconds": comp, "wait_seconds": [s["calib_wait_seconds"] for s in res["stages"]],
                             "sgemm_gflops_both_cores_same_moment": g2["block_gflops_fp32"] if g2 else None,
                             "sgemm_gflops_one_core": g1["block_gflops_fp32"][0] if g1 else None,
                             # how much of a core each rank could get while both were busy (1 = second core free)
                             "core_availability": (sum(g2["block_gflops_fp32"]) / len(g2["block_gflops_fp32"]) / g1["block_gflops_fp32"][0]) if g1 and g2 else None})

# ---------------------------------------------------------------- figure 3
fig3 = []
for r in runs:
    if r["kind"] != "cfsp" or r["rc"] != 0:
        continue
    res = load(r["tag"])
    if not res:
        continue
    for s in res["stages"]:
        own = own_bytes(s)
        limit = 1.25 * own + GB
        fig3.append({"tag": r["tag"], "model": r["model"], "np": r["np"], "nsamples": r["nsamples"], "seqlen": r["seqlen"],
                     "chunk": r["chunk"], "job": r["args"], "rank": s["rank"], "blocks": stage_span(s),
                     "own_bytes": own, "vmhwm_bytes": s["vmhwm_bytes"], "limit_bytes": limit, "vmhwm_over_limit": s["vmhwm_bytes"] / limit,
                     "excess_over_own_bytes": s["vmhwm_bytes"] - own})

# ---------------------------------------------------------------- figure 4
fig4 = []
for r in runs:
    if r["kind"] != "dd":
        continue
    jt = r["tag"][3:]
    res = load(jt)
    if not res or not res.get("pruned"):
        continue
    p = res["pruned"][0]
    h5 = p["write_bytes"] / p["write_seconds"]
    dd = r["bytes"] / r["dd_fdatasync_seconds"]
    dd_ns = r["bytes"] / r["dd_nosync_seconds"]
    dd_di = r["bytes"] / r["dd_direct_seconds"] if r.get("dd_direct_seconds") else None
    fig4.append({"tag": jt, "model": meta[jt]["model"], "np": meta[jt]["np"], "write_io": p.get("write_io", "mpiio"),
                 "write_io_fallback_ranks": p.get("write_io_fallback_ranks", 0), "write_bytes": p["write_bytes"],
                 "write_seconds": p["write_seconds"], "hdf5_bytes_per_second": h5,
                 "dd_bytes": r["bytes"], "dd_fdatasync_seconds": r["dd_fdatasync_seconds"], "dd_fdatasync_bytes_per_second": dd,
                 "dd_nosync_seconds": r["dd_nosync_seconds"], "dd_nosync_bytes_per_second": dd_ns,
                 "dd_direct_seconds": r.get("dd_direct_seconds"), "dd_direct_bytes_per_second": dd_di,
                 "ratio": h5 / dd, "ratio_vs_page_cache_dd": h5 / dd_ns, "ratio_vs_direct_dd": h5 / dd_di if dd_di else None})

# ---------------------------------------------------------------- figure 5
fig5 = []
for r5 in runs:
    if r5["kind"] != "cfsp" or not r5["tag"].startswith("sweep5-") or r5["rc"] != 0:
        continue
    r = next((x for x in runs if x["kind"] == "cfsp" and x["rc"] == 0 and x["model"] == r5["model"] and x["np"] == r5["np"]
              and x["chunk"] == 0 and x["tag"].startswith(("calib-", "sweep1-")) and "--ratios" in x["args"]), None)
    if not r:
        continue
    a, b = load(r["tag"]), load(r5["tag"])
    if not a or not b:
        continue
    c1, s1 = a["timings"]["calibration_seconds"], a["timings"]["sweep_seconds_excluding_eval_and_output"]
    c5, s5 = b["timings"]["calibration_seconds"], b["timings"]["sweep_seconds_excluding_eval_and_output"]
    fig5.append({"model": r["model"], "np": r["np"], "tag_1": r["tag"], "tag_5": r5["tag"], "calib_1": c1, "sweep_1": s1, "calib_5": c5, "sweep_5": s5,
                 "cost_ratio": (c5 + s5) / (c1 + s1),
                 "cost_ratio_same_calibration": (c1 + s5) / (c1 + s1),
                 "extra_ratio_seconds": (s5 - s1) / 4})

# ---------------------------------------------------------------- goals
goals = []


def goal(figure, model, setting, value, target, ok, note=""):
    goals.append({"figure": figure, "model": model, "setting": setting, "value": value, "goal": target,
                  "met": None if value is None else bool(ok), "note": note})


for m in ("7b", "70b"):
    e = next((x for x in fig1 if x["model"] == m and x["np"] == 1 and x["chunk"] == 0), None)
    if e:
        v = e.get("gemm_fraction")
        goal("1 GEMM fraction", m, "-n 1, %d x %d, chunk %d" % (e["nsamples"], e["seqlen"], e["tokens_per_microbatch"]),
             v, ">= 0.85", v is not None and v >= 0.85,
             "CPU-time variant %s; %.1f of %.1f GFLOP/s" % (fmt(e.get("gemm_fraction_cpu")), e["achieved_gflops"], e.get("sgemm_gflops", float("nan"))))
for e in fig2:
    if e["np"] == 2:
        # with fewer micro-batches than the goal allows (fill/drain bound M/(M+P-1) < 0.85) the row
        # shows how close the run comes to that bound; the goal rows are the chunked runs
        capped = e["schedule_bound"] < 0.85
        goal("2 pipeline efficiency", e["model"], "-n 2, chunk %d (%d micro-batches)" % (e["tokens_per_microbatch"], e["microbatches"]),
             e["efficiency"], ">= 0.85" if not capped else ">= 0.9 x bound %.3f" % e["schedule_bound"],
             e["efficiency"] >= 0.85 if not capped else e["efficiency"] >= 0.9 * e["schedule_bound"],
             ("schedule bound %.3f; " % e["schedule_bound"] if not capped else
              "whole sequences: fill/drain caps it at %.3f, %.0f%% of it reached; " % (e["schedule_bound"], 100 * e["efficiency"] / e["schedule_bound"]))
             + "core availability %s" % fmt(e["core_availability"], "%.2f"))
for tag_prefix, what in (("mem-calib-70b", "calibration only"), ("mem-job-70b", "calibrate + prune 0.2 + write")):
    rows = [x for x in fig3 if x["tag"].startswith(tag_prefix)]
    if rows:
        worst = max(rows, key=lambda x: x["vmhwm_over_limit"])
        goal("3 peak memory", "70b", "-n %d, %d x %d, %s (worst rank %d)" % (worst["np"], worst["nsamples"], worst["seqlen"], what, worst["rank"]),
             worst["vmhwm_bytes"] / GB, "<= %.2f GB" % (worst["limit_bytes"] / GB), worst["vmhwm_over_limit"] <= 1.0,
             "own %.2f GB; peak/limit %.3f" % (worst["own_bytes"] / GB, worst["vmhwm_over_limit"]))
if not any(g["figure"].startswith("3") for g in goals):
    rows = [x for x in fig3 if x["model"] == "7b" and x["tag"].startswith("calib-")]
    if rows:
        worst = max(rows, key=lambda x: x["vmhwm_over_limit"])
        goal("3 peak memory", "7b", "%s rank %d (70B slice not run)" % (worst["tag"], worst["rank"]), worst["vmhwm_bytes"] / GB,
             "<= %.2f GB" % (worst["limit_bytes"] / GB), worst["vmhwm_over_limit"] <= 1.0, "proxy only; the goal is on the 70B slice")
for e in fig4:
    if e["tag"].endswith("-mpiio"):
        continue        # the H5Dwrite comparison run: in the figure-4 table, not a goal row
    direct = (", dd O_DIRECT %.0f MB/s" % (e["dd_direct_bytes_per_second"] / 1e6)) if e["dd_direct_bytes_per_second"] else ""
    goal("4 output bandwidth", e["model"], "-n %d, %.2f GB, --write-io %s" % (e["np"], e["write_bytes"] / GB, e["write_io"]), e["ratio"], ">= 0.8",
         e["ratio"] >= 0.8, "HDF5 %.0f MB/s vs dd fdatasync %.0f MB/s (dd page cache %.0f MB/s%s)" % (
             e["hdf5_bytes_per_second"] / 1e6, e["dd_fdatasync_bytes_per_second"] / 1e6, e["dd_nosync_bytes_per_second"] / 1e6, direct))
for e in fig5:
    goal("5 sweep cost", e["model"], "-n %d, 5 ratios vs 1" % e["np"], e["cost_ratio"], "<= 1.2x", e["cost_ratio"] <= 1.2,
         "sweep %.2f s vs %.2f s; calibration %.1f s / %.1f s" % (e["sweep_5"], e["sweep_1"], e["calib_5"], e["calib_1"]))

# ---------------------------------------------------------------- extra: OpenBLAS dispatch
gd = load("gemm-7b-default-core-m512-n1")
gu = load("gemm-7b-m512-n1")
openblas = {"default_core": machine.get("openblas_default_core"), "used_core": machine.get("openblas_used_core"),
            "OPENBLAS_CORETYPE": machine.get("openblas_coretype_env"),
            "sgemm_7b_block_gflops_default_core": gd["block_gflops_fp32"][0] if gd else None,
            "sgemm_7b_block_gflops_used_core": gu["block_gflops_fp32"][0] if gu else None}

profiles = {}
for c in (0, 128):
    p = os.path.join(RAW, "profile-7b-c%d.txt" % c)
    if os.path.exists(p):
        profiles["7b_chunk%d" % c] = [l.rstrip() for l in open(p) if l.strip()]

bench = {"format": "cfsp-mpi-bench/1", "machine": machine, "openblas": openblas, "goals": goals,
         "gemm_fraction": fig1, "pipeline_efficiency": fig2, "memory": fig3, "output_bandwidth": fig4, "sweep_cost": fig5,
         "profiles": profiles, "runs": runs}
json.dump(bench, open(os.path.join(OUT, "bench.json"), "w"), indent=1)

# ---------------------------------------------------------------- README.md
L = []
L.append("# Benchmark (issue 4)")
L.append("")
L.append("Produced by `mpi_scripts/bench.sh`%s on %s. Raw material: `raw/` (every results.json, gemm-bench JSON, log, "
         "`runs.jsonl` with wall/CPU time and load average per job); all figures: `bench.json`." %
         (" (BENCH_QUICK=1)" if machine.get("quick") == "1" else "", machine.get("date", "?")))
L.append("")
L.append("Machine: %s, %s cores (%s), %.1f GB RAM (%.1f GB available at start); load average at start %s, at end %s "
         "(the machine is shared: every ratio below is taken within this one run). OpenBLAS (%s): runtime dispatch picks "
         "core **%s**; this run used **%s**%s. Source measured: %s %s. Bench wall time %s s." % (
             machine.get("model_name"), machine.get("nproc"), machine.get("hypervisor") or "bare metal",
             int(machine.get("mem_total_kb", 0)) / 1e6, int(machine.get("mem_available_kb", 0)) / 1e6,
             machine.get("loadavg_start"), machine.get("loadavg_end"), os.path.basename(machine.get("openblas_library", "")),
             machine.get("openblas_default_core"), machine.get("openblas_used_core"),
             " (OPENBLAS_CORETYPE=%s)" % machine["openblas_coretype_env"] if machine.get("openblas_coretype_env") else "",
             machine.get("source"), machine.get("measured_commit", machine.get("git_commit", ""))[:12], machine.get("bench_seconds")))
L.append("")
L.append("## Goals")
L.append("")
L.append("| figure | model | setting | measured | goal | met | note |")
L.append("|---|---|---|---|---|---|---|")
for g in goals:
    v = g["value"]
    vs = fmt(v, "%.2f GB") if g["figure"].startswith("3") else (fmt(v, "%.2fx") if g["figure"].startswith("5") else fmt(v))
    L.append("| %s | %s | %s | **%s** | %s | %s | %s |" % (g["figure"], MODEL_NAME.get(g["model"], g["model"]), g["setting"], vs, g["goal"],
                                                         {True: "yes", False: "**no**", None: "n/a"}[g["met"]], g["note"]))
L.append("")
if openblas["sgemm_7b_block_gflops_default_core"]:
    L.append("OpenBLAS dispatch: on the 7B block shapes (M = 512, 1 thread) sgemm reaches %.1f GFLOP/s with OpenBLAS's own choice "
             "(%s) and %.1f GFLOP/s with %s. Every job of this run used the latter (set in the environment by bench.sh); a plain "
             "`mpirun cfsp-mpi` on this machine gets the former." % (openblas["sgemm_7b_block_gflops_default_core"], openblas["default_core"],
                                                                    openblas["sgemm_7b_block_gflops_used_core"] or float("nan"), openblas["used_core"]))
    L.append("")

L.append("## 1. Fraction of the GEMM limit")
L.append("")
L.append("Useful FLOPs (projections + FFN + causal half of attention) / calibration wall time / cfsp-mpi-gemm-bench "
         "block GFLOP/s (cblas_sgemm RowMajor NoTrans Trans, M = tokens per micro-batch, the model's q,k,v,o,gate,up,down "
         "shapes, 1 thread, median of %s). At -n P > 1 the reference is min(P, cores) x the per-core figure measured with both "
         "cores busy. CPU variant: FLOPs / (user+sys CPU s of the whole job) / sgemm GFLOP per CPU s (-n 1 only)." % "the repetitions")
L.append("")
L.append("| model | N x T | chunk | P | GFLOP | calib s | GFLOP/s | sgemm GFLOP/s | fraction | fraction (CPU) | sgemm bf16-panel GFLOP/s | compute / wait s per rank |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for e in fig1:
    ref = e.get("sgemm_gflops") or (e.get("sgemm_gflops_per_core_busy") and "%s per core" % ", ".join("%.1f" % x for x in e["sgemm_gflops_per_core_busy"]))
    fr = e.get("gemm_fraction", e.get("gemm_fraction_machine"))
    L.append("| %s | %d x %d | %d | %d | %.0f | %.2f | %.1f | %s | %s | %s | %s | %s |" % (
        MODEL_NAME[e["model"]], e["nsamples"], e["seqlen"], e["tokens_per_microbatch"], e["np"], e["useful_gflop"], e["calibration_seconds"],
        e["achieved_gflops"], ref if isinstance(ref, str) else fmt(ref, "%.1f"), fmt(fr), fmt(e.get("gemm_fraction_cpu")),
        fmt(e.get("sgemm_bf16_panel_gflops"), "%.1f"),
        "; ".join("%.1f / %.1f" % (s["calib_compute_seconds"], s["calib_wait_seconds"]) for s in e["stages"])))
L.append("")
L.append("## 2. Pipeline efficiency")
L.append("")
L.append("T(-n 1) / (P x T(-n P)), one BLAS thread per rank. Schedule bound = micro-batches / (micro-batches + P - 1) "
         "(fill and drain of a balanced pipeline); stage balance = mean / max stage compute time. P above the core count "
         "(%d) is oversubscribed and cannot reach 1." % ncores)
L.append("")
L.append("Core availability = mean per-core sgemm GFLOP/s with both cores busy (gemm-bench -n 2) / the -n 1 figure: "
         "1.0 when the second core is really free; the efficiency cannot exceed it much.")
L.append("")
L.append("| model | chunk | P | T(1) s | T(P) s | efficiency | schedule bound | stage balance | compute s per rank | wait s per rank | sgemm GFLOP/s, both cores busy (1 core alone) | core availability |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for e in fig2:
    L.append("| %s | %d | %d%s | %.2f | %.2f | **%.3f** | %.3f | %s | %s | %s | %s (%s) | %s |" % (
        MODEL_NAME[e["model"]], e["tokens_per_microbatch"], e["np"], " (oversubscribed)" if e["oversubscribed"] else "", e["T1"], e["TP"],
        e["efficiency"], e["schedule_bound"], fmt(e["stage_balance"]), ", ".join("%.1f" % x for x in e["compute_seconds"]),
        ", ".join("%.1f" % x for x in e["wait_seconds"]),
        ", ".join("%.1f" % x for x in e["sgemm_gflops_both_cores_same_moment"] or []), fmt(e["sgemm_gflops_one_core"], "%.1f"),
        fmt(e["core_availability"], "%.2f")))
L.append("")
L.append("## 3. Peak memory per rank")
L.append("")
L.append("VmHWM of every rank against its own stored bytes (blocks + embeddings/head it owns); limit = 1.25 x own + 1 GB (1e9). "
         "VmHWM counts the resident pages of the mapped safetensors (file-backed) plus heap.")
L.append("")
L.append("| job | P | N x T | rank | stage | own GB | VmHWM GB | limit GB | VmHWM / limit | VmHWM - own GB |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
for e in fig3:
    if e["model"] in ("7b", "70b"):
        L.append("| %s | %d | %d x %d | %d | %s | %.2f | %.2f | %.2f | %.3f | %.2f |" % (
            e["tag"], e["np"], e["nsamples"], e["seqlen"], e["rank"], e["blocks"], e["own_bytes"] / GB, e["vmhwm_bytes"] / GB,
            e["limit_bytes"] / GB, e["vmhwm_over_limit"], e["excess_over_own_bytes"] / GB))
L.append("")
L.append("## 4. Output bandwidth")
L.append("")
L.append("HDF5 bytes written / write time (results.json pruned[0]: cfsp-mpi's timer, H5Fcreate .. H5Fclose and the "
         "fsync of the file) against `dd if=/dev/zero bs=16M conv=fdatasync` of the same size, run right after (the goal). "
         "For reference: the same dd without fdatasync (page cache only) and with oflag=direct (the device without the page "
         "cache, the path of --write-io direct). The `-mpiio` job writes through H5Dwrite (MPI-IO, the page cache), the "
         "writer before --write-io direct, measured in the same run.")
L.append("")
L.append("| job | P | write path | bytes | write s | HDF5 MB/s | dd fdatasync MB/s | ratio | dd page-cache MB/s | dd O_DIRECT MB/s | ratio vs dd O_DIRECT |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|")
for e in fig4:
    di = e["dd_direct_bytes_per_second"]
    L.append("| %s | %d | %s | %.2f GB | %.2f | %.0f | %.0f | **%.2f** | %.0f | %s | %s |" % (
        e["tag"], e["np"], e["write_io"], e["write_bytes"] / GB, e["write_seconds"], e["hdf5_bytes_per_second"] / 1e6,
        e["dd_fdatasync_bytes_per_second"] / 1e6, e["ratio"], e["dd_nosync_bytes_per_second"] / 1e6,
        "%.0f" % (di / 1e6) if di else "-", "%.2f" % e["ratio_vs_direct_dd"] if di else "-"))
L.append("")
L.append("## 5. Sweep cost")
L.append("")
L.append("calibration + sweep (scores, allocation, selection, slicing; no evaluation, --save-models 0) at 5 ratios "
         "(0.1..0.5) over the same at 1 ratio (0.3: the -n 2 calibration job), two separate jobs. The second ratio column uses the 1-ratio job's "
         "calibration time for both, removing run-to-run noise of the calibration.")
L.append("")
L.append("| model | P | calib s (1 / 5) | sweep s (1 / 5) | cost ratio | ratio, same calibration | s per extra ratio |")
L.append("|---|---|---|---|---|---|---|")
for e in fig5:
    L.append("| %s | %d | %.2f / %.2f | %.3f / %.3f | **%.3f** | %.3f | %.3f |" % (
        MODEL_NAME[e["model"]], e["np"], e["calib_1"], e["calib_5"], e["sweep_1"], e["sweep_5"], e["cost_ratio"],
        e["cost_ratio_same_calibration"], e["extra_ratio_seconds"]))
L.append("")
if profiles:
    L.append("## Profile")
    L.append("")
    L.append("`perf record -e cpu-clock` (hardware counters are not available in this VM) of `cfsp-mpi` -n 1 on the 7B slice, "
             "2 x 512, self time by symbol (top lines):")
    L.append("")
    for k, lines in profiles.items():
        L.append("%s:" % k)
        L.append("```")
        L += lines[:14]
        L.append("```")
    L.append("")
notes = os.path.join(OUT, "NOTES.md")
if os.path.exists(notes):
    L.append(open(notes).read().rstrip())
    L.append("")
open(os.path.join(OUT, "README.md"), "w").write("\n".join(L) + "\n")

# ---------------------------------------------------------------- plot
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 2, figsize=(12, 8.5))
    a = ax[0][0]
    e1 = [e for e in fig1 if e["np"] == 1 and "gemm_fraction" in e]
    labels = ["%s\nchunk %d" % (MODEL_NAME[e["model"]], e["tokens_per_microbatch"]) for e in e1]
    x = range(len(e1))
    a.bar([i - 0.2 for i in x], [e["gemm_fraction"] for e in e1], 0.4, label="wall time")
    a.bar([i + 0.2 for i in x], [e.get("gemm_fraction_cpu", 0) for e in e1], 0.4, label="CPU time")
    a.axhline(0.85, color="r", ls="--", label="goal 0.85")
    a.set_xticks(list(x)); a.set_xticklabels(labels, fontsize=7)
    a.set_ylabel("fraction of sgemm GFLOP/s"); a.set_title("1. calibration vs GEMM limit (-n 1)"); a.legend(fontsize=7)
    a = ax[0][1]
    for key in sorted({(e["model"], e["tokens_per_microbatch"]) for e in fig2}, key=lambda k: (MODEL_ORDER.index(k[0]), k[1])):
        es = sorted([e for e in fig2 if (e["model"], e["tokens_per_microbatch"]) == key], key=lambda e: e["np"])
        a.plot([1] + [e["np"] for e in es], [1.0] + [e["efficiency"] for e in es], "o-", label="%s, chunk %d" % (MODEL_NAME[key[0]], key[1]))
    a.axhline(0.85, color="r", ls="--", label="goal 0.85 (-n 2)")
    a.axvline(ncores, color="gray", ls=":", label="cores")
    a.set_xlabel("ranks P"); a.set_ylabel("T(1) / (P T(P))"); a.set_title("2. pipeline efficiency"); a.legend(fontsize=7)
    a = ax[1][0]
    e3 = [e for e in fig3 if e["model"] in ("70b", "7b") and (e["tag"].startswith("mem-") or e["model"] == "7b" and e["tag"].startswith("calib-"))]
    if not any(e["model"] == "70b" for e in e3):
        pass
    else:
        e3 = [e for e in e3 if e["model"] == "70b"]
    x = range(len(e3))
    a.bar([i - 0.2 for i in x], [e["vmhwm_bytes"] / GB for e in e3], 0.4, label="VmHWM")
    a.bar([i + 0.2 for i in x], [e["own_bytes"] / GB for e in e3], 0.4, label="own stored bytes")
    a.scatter(list(x), [e["limit_bytes"] / GB for e in e3], color="r", marker="_", s=400, label="limit 1.25 own + 1 GB", zorder=3)
    a.set_xticks(list(x)); a.set_xticklabels(["%s\nr%d" % (e["tag"].replace("-70b", "").replace("-7b", ""), e["rank"]) for e in e3], fontsize=6)
    a.set_ylabel("GB"); a.set_title("3. peak memory per rank"); a.legend(fontsize=7)
    a = ax[1][1]
    x = range(len(fig4))
    a.bar([i - 0.3 for i in x], [e["hdf5_bytes_per_second"] / 1e6 for e in fig4], 0.2, label="HDF5 write")
    a.bar([i - 0.1 for i in x], [e["dd_fdatasync_bytes_per_second"] / 1e6 for e in fig4], 0.2, label="dd conv=fdatasync")
    a.bar([i + 0.1 for i in x], [e["dd_nosync_bytes_per_second"] / 1e6 for e in fig4], 0.2, label="dd (page cache)")
    a.bar([i + 0.3 for i in x], [(e["dd_direct_bytes_per_second"] or 0) / 1e6 for e in fig4], 0.2, label="dd oflag=direct")
    a.set_xticks(list(x)); a.set_xticklabels([e["tag"] for e in fig4], fontsize=7)
    a.set_ylabel("MB/s"); a.set_title("4. output bandwidth"); a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "bench.png"), dpi=110)
    fig.savefig(os.path.join(OUT, "bench.svg"))
except Exception as ex:  # the figures are in README.md and bench.json either way
    print("bench_report: no plot (%s)" % ex, file=sys.stderr)

print("\n".join(L[:12 + len(goals)]))
