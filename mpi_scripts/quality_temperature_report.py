#!/usr/bin/python3
"""quality_temperature_report.py RAW OUT — the tables of mpi_scripts/quality_temperature.sh.

RAW/<model>-<evalset>-s<seed>/{auto,default,reference}/results.json -> OUT/temperature.{json,md,png}.

Per model, evaluation set and ratio, over the seeds: the mean KL(dense || pruned) per token of cfsp
with --a auto, with the fixed default allocation (a = 1) and with the reference's allocation, and of
flap and wanda_sp (same statistics, same windows), the perplexities, and the temperatures auto chose.
The criterion of issue 18: auto is never worse than the better of the two fixed allocations on the
evaluation set by more than the noise. Measured per seed s: d_s = KL(auto) - min(KL(default),
KL(reference)) (the better one chosen on the evaluation set itself, an oracle), and its noise from
the windows: the paired per-window differences auto - best give a standard error SE_s =
sd(d_w) / sqrt(W). A row passes when mean_s d_s <= 2 sqrt(sum_s SE_s^2) / S (two standard errors of
the mean over the S seeds)."""
import glob
import json
import math
import os
import re
import subprocess
import sys

raw, out = sys.argv[1], sys.argv[2]
units = {}
for d in sorted(glob.glob(os.path.join(raw, "*-s[0-9]*"))):
    m = re.match(r"(.+)-(tinystories|wikitext2)-s(\d+)$", os.path.basename(d))
    if not m:
        continue
    runs = {}
    for k in ("auto", "default", "reference"):
        p = os.path.join(d, k, "results.json")
        if os.path.exists(p):
            runs[k] = json.load(open(p))
    if len(runs) == 3:
        units.setdefault((m.group(1), m.group(2)), {})[int(m.group(3))] = runs
if not units:
    sys.exit("quality_temperature_report.py: no complete run under %s" % raw)


def entry(r, method, ratio):
    return next(e for e in r["pruned"] if e["method"] == method and abs(e["ratio"] - ratio) < 1e-9)


def mean(v):
    return sum(v) / len(v)


def sd(v):
    if len(v) < 2:
        return 0.0
    m = mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


rows, npass, ntot = [], 0, 0
for (model, evalset), seeds in sorted(units.items()):
    ratios = sorted({e["ratio"] for e in seeds[min(seeds)]["auto"]["pruned"]})
    for ra in ratios:
        rec = {"model": model, "evalset": evalset, "ratio": ra, "seeds": sorted(seeds)}
        kl = {k: [] for k in ("auto", "default", "reference", "flap", "wanda_sp")}
        ppl = {k: [] for k in kl}
        d, se, chosen = [], [], []
        for s in sorted(seeds):
            R = seeds[s]
            e = {"auto": entry(R["auto"], "cfsp", ra), "default": entry(R["default"], "cfsp", ra),
                 "reference": entry(R["reference"], "cfsp", ra), "flap": entry(R["auto"], "flap", ra),
                 "wanda_sp": entry(R["auto"], "wanda_sp", ra)}
            for k in kl:
                kl[k].append(e[k]["vs_dense"]["kl_mean"])
                ppl[k].append(e[k]["ppl"])
            best = min(("default", "reference"), key=lambda k: e[k]["vs_dense"]["kl_mean"])
            wa, wb = e["auto"]["vs_dense"]["kl_per_window"], e[best]["vs_dense"]["kl_per_window"]
            dw = [x - y for x, y in zip(wa, wb)]
            d.append(e["auto"]["vs_dense"]["kl_mean"] - e[best]["vs_dense"]["kl_mean"])
            se.append(sd(dw) / math.sqrt(len(dw)))
            chosen.append(e["auto"]["a"])
        noise = 2 * math.sqrt(sum(x * x for x in se)) / len(se)
        rec.update({"kl": kl, "ppl": ppl, "regret": d, "regret_se": se, "regret_mean": mean(d), "noise": noise,
                    "passes": mean(d) <= noise, "chosen_a": chosen,
                    "windows": len(seeds[min(seeds)]["auto"]["pruned"][0]["vs_dense"]["kl_per_window"])})
        npass += rec["passes"]
        ntot += 1
        rows.append(rec)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
try:
    commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "?"
json.dump({"commit": commit, "cpu": cpu, "passes": npass, "rows_total": ntot, "rows": rows},
          open(os.path.join(out, "temperature.json"), "w"), indent=1)

L = ["# Allocation temperature: --a auto against the fixed allocations", "",
     "Written by `mpi_scripts/quality_temperature.sh` (commit %s, %s). Calibration 128 x 256 tokens of" % (commit, cpu),
     "TinyStories [100000:] at random offsets, seeds %s; evaluation %d windows of 256 tokens of TinyStories" % (
         ",".join(str(s) for s in rows[0]["seeds"]), rows[0]["windows"]),
     "[0:100000] (in-domain) or WikiText-2 test (out-of-domain). `auto`: cfsp with `--a auto` (grid 0, 0.25, 0.5,",
     "1, 2, 4, 8 and the reference's effective value 0.25 at N*T = 32768), chosen per ratio by the mean KL on 16",
     "held-out windows of the calibration tokens; `default`: `--a 1`; `reference`: `--alloc-mode reference --a 1`.",
     "Cells: mean KL(dense || pruned) per token over the seeds (sd); perplexity below it in the ppl table.", "",
     "Criterion (issue 18): regret = KL(auto) - min(KL(default), KL(reference)) per seed, the better fixed one",
     "picked on the evaluation set itself; noise = 2 x the standard error of the mean regret over the seeds, each",
     "seed's from the paired per-window differences. **%d of %d rows pass.**" % (npass, ntot), ""]
for (model, evalset) in sorted(units):
    L += ["## %s, %s" % (model, evalset), "",
          "| ratio | auto | default | reference | flap | wanda_sp | regret (noise) | passes | auto's a per seed |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if (r["model"], r["evalset"]) != (model, evalset):
            continue
        cell = lambda k: "%.4f (%.4f)" % (mean(r["kl"][k]), sd(r["kl"][k]))
        L.append("| %.1f | %s | %s | %s | %s | %s | %+.4f (%.4f) | %s | %s |" % (
            r["ratio"], cell("auto"), cell("default"), cell("reference"), cell("flap"), cell("wanda_sp"),
            r["regret_mean"], r["noise"], "yes" if r["passes"] else "**no**", " ".join("%g" % a for a in r["chosen_a"])))
    L += ["", "| ratio | ppl auto | ppl default | ppl reference | ppl flap | ppl wanda_sp |", "|---|---|---|---|---|---|"]
    for r in rows:
        if (r["model"], r["evalset"]) == (model, evalset):
            L.append("| %.1f | %s |" % (r["ratio"], " | ".join("%.3f" % mean(r["ppl"][k]) for k in ("auto", "default", "reference", "flap", "wanda_sp"))))
    L.append("")
open(os.path.join(out, "temperature.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
keys = sorted(units)
fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
for ax, (model, evalset) in zip(axes[0], keys):
    rr = [r for r in rows if (r["model"], r["evalset"]) == (model, evalset)]
    x = [r["ratio"] for r in rr]
    for k, c in (("auto", "k"), ("default", "#1f77b4"), ("reference", "#ff7f0e"), ("flap", "#2ca02c"), ("wanda_sp", "#d62728")):
        ax.errorbar(x, [mean(r["kl"][k]) for r in rr], yerr=[sd(r["kl"][k]) for r in rr], label=k, color=c,
                    lw=2 if k == "auto" else 1, capsize=2)
    ax.set_title("%s, %s" % (model, evalset), fontsize=9)
    ax.set_xlabel("ratio")
    ax.set_ylabel("mean KL(dense || pruned)")
axes[0][0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out, "temperature.png"), dpi=110)
print("wrote", os.path.join(out, "temperature.png"))
