#!/usr/bin/python3
"""quality_temperature_report.py RAW OUT [NAME] — the tables of mpi_scripts/quality_temperature.sh.

RAW/<model>-<evalset>-s<seed>/{auto,default,reftemp,reference}/results.json -> OUT/NAME.{json,md,png}
(NAME: temperature unless given).

Per model, evaluation set and ratio, over the seeds: the mean KL(dense || pruned) per token of cfsp
with --a auto, with the fixed default allocation (a = 1), with the reference's temperature in the
default mode (reftemp: the reference's allocation with exact channel counts) and with the reference's
allocation itself (reference: its threshold rule keeps one channel more per block than the budget),
and of flap and wanda_sp (same statistics, same windows), the perplexities, the FFN fraction kept, and
the temperatures auto chose. The criterion of issue 18: auto is never worse than the better of the
fixed allocations on the evaluation set by more than the noise, judged twice: against the better of
default and reftemp (the same budget as auto), and against the better of default and reference (as
the issue words it; reference keeps more channels). Per seed s: d_s = KL(auto) - min(KL(fixed))
(the better one picked on the evaluation set itself, an oracle); its noise from the windows: the
paired per-window differences auto - best give SE_s = sd(d_w) / sqrt(W). A row passes when
mean_s d_s <= 2 sqrt(sum_s SE_s^2) / S (two standard errors of the mean over the S seeds).
That per-seed oracle changes its pick from seed to seed after seeing the evaluation set, and its noise
counts only the windows, not the spread between seeds.

The second judgement ("vs the better fixed allocation") asks the user's question: is --a auto worse
than the better of the fixed settings a user could have passed instead? The better fixed allocation is
the one of default and reftemp with the lower mean KL over the seeds of the group (on the evaluation
set); d_s = KL(auto) - KL(that one) per seed, and the noise is two standard errors of mean_s d_s, the
larger of the window estimate above and the seeds' own sd(d_s) / sqrt(S), which also counts how the
calibration sample moves both. A row passes when mean_s d_s <= that noise.

The pass counts are given over all seeds and, for each group of FRESH (environment: groups separated
by ';', seeds by ','; default "6,7,8;9,10,11,12,13,14"), over that group alone, and over the seeds in
no group: the first group names the seeds that had not been run when the study's settings (selection
windows, --a-margin) were chosen, the next ones seeds not yet run when a later judgement (the one vs
the better fixed allocation) was defined, so each is an independent check. "Combined": the in-domain rows with auto choosing on calibration text, the
WikiText-2 rows with auto_target."""
import glob
import json
import math
import os
import re
import subprocess
import sys

raw, out = sys.argv[1], sys.argv[2]
name = sys.argv[3] if len(sys.argv) > 3 else "temperature"
units = {}
for d in sorted(glob.glob(os.path.join(raw, "*-s[0-9]*"))):
    m = re.match(r"(.+)-(tinystories|wikitext2)-s(\d+)$", os.path.basename(d))
    if not m:
        continue
    runs = {}
    for k in ("auto", "default", "reftemp", "reference"):
        p = os.path.join(d, k, "results.json")
        if os.path.exists(p):
            runs[k] = json.load(open(p))
    p = os.path.join(d, "auto_target", "results.json")
    if os.path.exists(p):
        runs["auto_target"] = json.load(open(p))
    if all(k in runs for k in ("auto", "default", "reftemp", "reference")):
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


rows, npass, npass_b, ntot = [], 0, 0, 0
VARIANTS = ("auto", "default", "reftemp", "reference", "flap", "wanda_sp")


def unresolved(e):
    """the --a auto record says its leader's nearest rival was within one standard error"""
    return bool((e["a_auto"].get("nearest_rival") or {}).get("within_one_stderr"))


def choices(r):
    """the chosen a per seed, the leader in brackets where it differs, ~ where unresolved"""
    return " ".join(("%g" % a if l is None or l == a else "%g [%g]" % (a, l)) + ("~" if u else "")
                    for a, l, u in zip(r["chosen_a"], r["lowest_a"], r["unresolved"]))


def pair(e, who, k):
    """(KL(who) - KL(k), the standard error of that difference from the paired per-window differences)"""
    wa, wb = e[who]["vs_dense"]["kl_per_window"], e[k]["vs_dense"]["kl_per_window"]
    dw = [x - y for x, y in zip(wa, wb)]
    return e[who]["vs_dense"]["kl_mean"] - e[k]["vs_dense"]["kl_mean"], sd(dw) / math.sqrt(len(dw))


def judge(e, fixed, who="auto"):
    """(regret, its standard error) of `who` against the better of `fixed` on this seed"""
    return pair(e, who, min(fixed, key=lambda k: e[k]["vs_dense"]["kl_mean"]))


def windows_noise(se):
    """two standard errors of a mean over seeds from each seed's window standard error"""
    return 2 * math.sqrt(sum(x * x for x in se)) / len(se)


def policy(r, who, idx, fixed=("default", "reftemp")):
    """judgement against the better fixed allocation over the seeds idx: (best, mean regret, noise, passes,
    passes with the windows' noise alone)"""
    best = min(fixed, key=lambda k: mean([r["kl"][k][i] for i in idx]))
    d = [r["paired"][who][best]["diff"][i] for i in idx]
    nw = windows_noise([r["paired"][who][best]["se"][i] for i in idx])
    noise = max(nw, 2 * sd(d) / math.sqrt(len(d)))
    return best, mean(d), noise, mean(d) <= noise, mean(d) <= nw


for (model, evalset), seeds in sorted(units.items()):
    ratios = sorted({e["ratio"] for e in seeds[min(seeds)]["auto"]["pruned"]})
    for ra in ratios:
        rec = {"model": model, "evalset": evalset, "ratio": ra, "seeds": sorted(seeds)}
        kl = {k: [] for k in VARIANTS}
        ppl = {k: [] for k in kl}
        kept = {k: [] for k in kl}
        da, sa, db, sb, chosen = [], [], [], [], []
        dt, st_, chosen_t, klt, lead_t, unres_t = [], [], [], [], [], []
        has_t = all("auto_target" in seeds[s] for s in seeds)
        paired = {w: {k: {"diff": [], "se": []} for k in ("default", "reftemp", "reference")}
                  for w in (("auto", "auto_target") if has_t else ("auto",))}
        for s in sorted(seeds):
            R = seeds[s]
            e = {k: entry(R[k], "cfsp", ra) for k in ("auto", "default", "reftemp", "reference")}
            e.update({"flap": entry(R["auto"], "flap", ra), "wanda_sp": entry(R["auto"], "wanda_sp", ra)})
            for k in kl:
                kl[k].append(e[k]["vs_dense"]["kl_mean"])
                ppl[k].append(e[k]["ppl"])
                kept[k].append(e[k]["ffn_kept_fraction"])
            x, y = judge(e, ("default", "reftemp"))
            da.append(x); sa.append(y)
            x, y = judge(e, ("default", "reference"))
            db.append(x); sb.append(y)
            chosen.append(e["auto"]["a"])
            if has_t:
                e["auto_target"] = entry(R["auto_target"], "cfsp", ra)
            for w in paired:
                for k in paired[w]:
                    x, y = pair(e, w, k)
                    paired[w][k]["diff"].append(x)
                    paired[w][k]["se"].append(y)
            if has_t:
                x, y = judge(e, ("default", "reftemp"), "auto_target")
                dt.append(x); st_.append(y)
                chosen_t.append(e["auto_target"]["a"])
                lead_t.append(e["auto_target"]["a_auto"].get("lowest"))
                unres_t.append(unresolved(e["auto_target"]))
                klt.append(e["auto_target"]["vs_dense"]["kl_mean"])
        na, nb = windows_noise(sa), windows_noise(sb)
        lead = [entry(seeds[s]["auto"], "cfsp", ra)["a_auto"].get("lowest") for s in sorted(seeds)]
        unres = [unresolved(entry(seeds[s]["auto"], "cfsp", ra)) for s in sorted(seeds)]
        rec.update({"kl": kl, "ppl": ppl, "ffn_kept": kept, "chosen_a": chosen, "lowest_a": lead, "unresolved": unres,
                    "same_budget": {"regret": da, "regret_se": sa, "regret_mean": mean(da), "noise": na, "passes": mean(da) <= na},
                    "vs_reference_mode": {"regret": db, "regret_se": sb, "regret_mean": mean(db), "noise": nb, "passes": mean(db) <= nb},
                    "paired": paired,
                    "windows": len(seeds[min(seeds)]["auto"]["pruned"][0]["vs_dense"]["kl_per_window"]),
                    "select_windows": seeds[min(seeds)]["auto"]["selection"]["windows"],
                    "margin": entry(seeds[min(seeds)]["auto"], "cfsp", ra)["a_auto"].get("margin", 0)})
        if has_t:
            nt = windows_noise(st_)
            rec["auto_target"] = {"kl": klt, "chosen_a": chosen_t, "lowest_a": lead_t, "unresolved": unres_t, "regret": dt, "regret_se": st_, "regret_mean": mean(dt),
                                  "noise": nt, "passes": mean(dt) <= nt}
        allidx = list(range(len(rec["seeds"])))
        for w in paired:
            b, m, n, ok, _ = policy(rec, w, allidx)
            (rec["auto_target"] if w == "auto_target" else rec)["vs_better_fixed"] = {
                "better_fixed": b, "regret_mean": m, "noise": n, "passes": ok}
        npass += rec["same_budget"]["passes"]
        npass_b += rec["vs_reference_mode"]["passes"]
        ntot += 1
        rows.append(rec)

def passes(j, idx):
    """does judgement j (a row's same_budget, vs_reference_mode or auto_target) pass on the seeds idx"""
    d = [j["regret"][i] for i in idx]
    se = [j["regret_se"][i] for i in idx]
    return mean(d) <= windows_noise(se)


fresh_groups = [[int(x) for x in g.split(",") if x.strip()] for g in os.environ.get("FRESH", "6,7,8;9,10,11,12,13,14").split(";")]
all_seeds = rows[0]["seeds"]
groups = [("all seeds " + ",".join(map(str, all_seeds)), all_seeds)]
design = [s for s in all_seeds if not any(s in g for g in fresh_groups)]
fresh_here = [[s for s in all_seeds if s in g] for g in fresh_groups]
if design and any(fresh_here):
    groups.append(("seeds " + ",".join(map(str, design)) + " (run before any setting was chosen)", design))
    for k, g in enumerate(fresh_here):
        if g:
            groups.append(("fresh seeds " + ",".join(map(str, g)) + " (run after %s)" % (
                "the settings were chosen" if k == 0 else "the judgement vs the better fixed allocation was defined"), g))
summary = []
for label, ss in groups:
    ok = {"same_budget": 0, "vs_reference_mode": 0, "auto_target": 0, "combined": 0,
          "fixed_same_budget": 0, "fixed_auto_target": 0, "fixed_combined": 0, "fixed_combined_windows_noise": 0}
    nt = nc = 0
    for r in rows:
        idx = [r["seeds"].index(x) for x in ss]
        ok["same_budget"] += passes(r["same_budget"], idx)
        ok["vs_reference_mode"] += passes(r["vs_reference_mode"], idx)
        fa, faw = policy(r, "auto", idx)[3:]
        ok["fixed_same_budget"] += fa
        if "auto_target" in r:
            nt += 1
            t = passes(r["auto_target"], idx)
            ok["auto_target"] += t
            ok["combined"] += t
            ft, ftw = policy(r, "auto_target", idx)[3:]
            ok["fixed_auto_target"] += ft
            ok["fixed_combined"] += ft
            ok["fixed_combined_windows_noise"] += ftw
        else:
            ok["combined"] += passes(r["same_budget"], idx)
            ok["fixed_combined"] += fa
            ok["fixed_combined_windows_noise"] += faw
        nc += 1
    summary.append({"seeds": ss, "label": label, "rows": nc, "rows_wikitext2": nt, "passes": ok})

prov = os.path.join(raw, "provenance.json")
if os.path.exists(prov):
    pv = json.load(open(prov))
    pv = pv if isinstance(pv, list) else [pv]
    one = lambda r: r["commit"] + (" with uncommitted changes" if r.get("dirty") else "") + (
        " (seeds %s)" % ",".join(map(str, r["seeds"])) if "seeds" in r and len(pv) > 1 else "")
    commit = ", ".join(one(r) for r in pv)
    cpu = ", ".join(sorted({r["cpu"] for r in pv}))
    flags = " ".join(f for f in pv[-1].get("cpu_flags", []) if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"))
else:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    commit, flags = "?", ""
json.dump({"commit": commit, "cpu": cpu, "cpu_flags": flags, "passes_same_budget": npass, "passes_vs_reference_mode": npass_b,
           "rows_total": ntot, "summary": summary, "rows": rows},
          open(os.path.join(out, name + ".json"), "w"), indent=1)

ex = rows[0]


def fixed_cell(v):
    return "%+.4f (%.4f) vs %s%s" % (v["regret_mean"], v["noise"], v["better_fixed"], "" if v["passes"] else " **no**")


L = ["# Allocation temperature: --a auto against the fixed allocations", "",
     "Written by `mpi_scripts/quality_temperature.sh` (runs at commit %s, %s; %s). Calibration 128 x 256 tokens of" % (commit, cpu, flags),
     "TinyStories [100000:] at random offsets, seeds %s; evaluation %d windows of 256 tokens of TinyStories" % (
         ",".join(str(s) for s in ex["seeds"]), ex["windows"]),
     "[0:100000] (in-domain) or WikiText-2 test (out-of-domain). `auto`: cfsp with `--a auto` (grid 0, 0.25, 0.5,",
     "1, 2, 4, 8; the reference's effective value is 0.25 at N*T = 32768), chosen per ratio on %d held-out" % ex["select_windows"],
     "windows of the calibration tokens (TinyStories: in-domain for the first evaluation set only) by the mean",
     "KL with `--a-margin %g` (0: the lowest value; z > 0: the smallest temperature within z paired standard" % ex["margin"],
     "errors of the lowest);",
     "`default`: `--a 1`; `reftemp`: `--a 0.25`, the reference's temperature with exact counts; `reference`:",
     "`--alloc-mode reference --a 1`, whose threshold rule keeps one channel more per block than the budget (the",
     "FFN fraction kept is in the last column). Cells: mean KL(dense || pruned) per token over the seeds (sd).", "",
     "Two judgements of issue 18's goal (auto never worse than the better of the fixed allocations on the",
     "evaluation set by more than the noise). **Per-seed oracle**: regret = KL(auto) - min(KL of the fixed",
     "allocations) per seed, the better fixed one picked per seed on the evaluation set itself; noise = 2 x the",
     "standard error of the mean regret from the windows alone (each seed's from the paired per-window",
     "differences). Against the better of default and reftemp (the same budget): **%d of %d rows pass**;" % (npass, ntot),
     "against the better of default and reference (reference keeps more channels): **%d of %d**; WikiText-2" % (npass_b, ntot),
     "rows with auto choosing on WikiText-2 validation (`auto_target`), same budget: **%d of %d**." % (
         sum(r["auto_target"]["passes"] for r in rows if "auto_target" in r), sum("auto_target" in r for r in rows)),
     "**Vs the better fixed allocation** (the user's choice: `--a auto` or one fixed setting for every seed):",
     "the one of default and reftemp with the lower mean KL over the seeds; regret = KL(auto) - KL(that one) per",
     "seed; noise = 2 x the larger of the windows' standard error of the mean regret and the seeds' own,",
     "sd(regret) / sqrt(seeds). Same budget: **%d of %d rows**; `auto_target`: **%d of %d**." % (
         sum(r["vs_better_fixed"]["passes"] for r in rows), ntot,
         sum(r["auto_target"]["vs_better_fixed"]["passes"] for r in rows if "auto_target" in r), sum("auto_target" in r for r in rows)), "",
     "Rows passing, by seed set (fresh: seeds not yet run when this study's settings — %d selection windows," % ex["select_windows"],
     "`--a-margin %g` — were chosen, or when the judgement vs the better fixed allocation was defined (after the" % ex["margin"],
     "first nine seeds' results): their independent checks; combined = in-domain rows choosing on calibration",
     "text + WikiText-2 rows choosing on WikiText-2 validation; the better fixed allocation is picked on each",
     "seed set's own mean):", "",
     "| seeds | oracle: same budget | oracle: vs reference mode | oracle: auto_target | oracle: combined | vs better fixed: same budget | vs better fixed: auto_target | vs better fixed: combined | the same, windows' noise alone |",
     "|---|---|---|---|---|---|---|---|---|"]
for g in summary:
    q = g["passes"]
    L.append("| %s | %d / %d | %d / %d | %d / %d | %d / %d | %d / %d | %d / %d | %d / %d | %d / %d |" % (
        g["label"], q["same_budget"], g["rows"], q["vs_reference_mode"], g["rows"],
        q["auto_target"], g["rows_wikitext2"], q["combined"], g["rows"],
        q["fixed_same_budget"], g["rows"], q["fixed_auto_target"], g["rows_wikitext2"], q["fixed_combined"], g["rows"], q["fixed_combined_windows_noise"], g["rows"]))
miss = [r for r in rows if not (r["auto_target"] if "auto_target" in r else r["same_budget"])["passes"]]
if miss:
    L += ["", "Combined rows the per-seed oracle fails (over all seeds), with the oracle regret per seed:"]
    for r in miss:
        j = r["auto_target"] if "auto_target" in r else r["same_budget"]
        L.append("- %s, %s, %s, ratio %.1f: %s" % (r["model"], r["evalset"], "auto_target" if "auto_target" in r else "auto", r["ratio"],
                                                 ", ".join("seed %d %+.4f (SE %.4f)" % (sd_, x, y) for sd_, x, y in zip(r["seeds"], j["regret"], j["regret_se"]))))
L += ["", "Per row below: auto's chosen a per seed, and in brackets where it differs the leader (the lowest value",
      "on the selection windows, the choice of `--a-margin 0`); `~` after an a: its nearest rival was within one",
      "standard error on the selection windows (the windows did not resolve the choice).", ""]
for (model, evalset) in sorted(units):
    L += ["## %s, %s" % (model, evalset), "",
          "| ratio | auto | default | reftemp | reference | flap | wanda_sp | oracle regret, same budget (noise) | oracle regret vs reference (noise) | regret vs better fixed (noise) | auto's a per seed | FFN kept auto / reference |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if (r["model"], r["evalset"]) != (model, evalset):
            continue
        cell = lambda k: "%.4f (%.4f)" % (mean(r["kl"][k]), sd(r["kl"][k]))
        jd = lambda j: "%+.4f (%.4f)%s" % (r[j]["regret_mean"], r[j]["noise"], "" if r[j]["passes"] else " **no**")
        L.append("| %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.4f / %.4f |" % (
            r["ratio"], cell("auto"), cell("default"), cell("reftemp"), cell("reference"), cell("flap"), cell("wanda_sp"),
            jd("same_budget"), jd("vs_reference_mode"), fixed_cell(r["vs_better_fixed"]),
            choices(r),
            mean(r["ffn_kept"]["auto"]), mean(r["ffn_kept"]["reference"])))
    tr = [r for r in rows if (r["model"], r["evalset"]) == (model, evalset) and "auto_target" in r]
    if tr:
        L += ["", "`auto_target`: `--a auto` choosing on %d windows of WikiText-2 validation (the target domain; the" % tr[0]["select_windows"],
              "evaluation is WikiText-2 test), same statistics:", "",
              "| ratio | auto_target | oracle regret, same budget (noise) | regret vs better fixed (noise) | its a per seed |", "|---|---|---|---|---|"]
        for r in tr:
            t = r["auto_target"]
            L.append("| %.1f | %.4f (%.4f) | %+.4f (%.4f)%s | %s | %s |" % (r["ratio"], mean(t["kl"]), sd(t["kl"]), t["regret_mean"], t["noise"],
                                                                 "" if t["passes"] else " **no**", fixed_cell(t["vs_better_fixed"]), choices(t)))
    L += ["", "| ratio | ppl auto | ppl default | ppl reftemp | ppl reference | ppl flap | ppl wanda_sp |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if (r["model"], r["evalset"]) == (model, evalset):
            L.append("| %.1f | %s |" % (r["ratio"], " | ".join("%.3f" % mean(r["ppl"][k]) for k in VARIANTS)))
    L.append("")
open(os.path.join(out, name + ".md"), "w").write("\n".join(L) + "\n")
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
    for k, c in (("auto", "k"), ("default", "#1f77b4"), ("reftemp", "#17becf"), ("reference", "#ff7f0e"), ("flap", "#2ca02c"), ("wanda_sp", "#d62728")):
        ax.errorbar(x, [mean(r["kl"][k]) for r in rr], yerr=[sd(r["kl"][k]) for r in rr], label=k, color=c,
                    lw=2 if k == "auto" else 1, capsize=2)
    ax.set_title("%s, %s" % (model, evalset), fontsize=9)
    ax.set_xlabel("ratio")
    ax.set_ylabel("mean KL(dense || pruned)")
axes[0][0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out, name + ".png"), dpi=110)
print("wrote", os.path.join(out, name + ".png"))
