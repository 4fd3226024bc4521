#!/usr/bin/python3
"""recovery_report.py — the report of mpi_scripts/recovery.sh: from the pruning run's results.json
and the recover.json of every `cfsp-mpi recover` run, write OUT/recovery.json (all figures),
OUT/README.md (the table and which plan wins) and OUT/loss.svg (training loss against step, mean
over seeds per plan, moving average; thin lines: single seeds). No matplotlib: the SVG is written
by hand.

Variants: a subdirectory of OUT holding its own recovery.json (e.g. OUT/rank16, written by
`RANK=16 RESULTS=OUT/rank16 mpi_scripts/recovery.sh`) is another budget of the same experiment.
OUT/README.md ends with a section between the recovery-variants markers, written from
OUT/recovery.json and every OUT/*/recovery.json: one paragraph per variant and a summary over all
budgets. The full report writes it too; `recovery_report.py --variants-only OUT` rewrites only
that section (recovery.sh calls it on the parent directory after a variant run)."""
import argparse
import json
import math
import os
import re
import statistics
import time

VBEGIN = "<!-- recovery-variants:begin (written by mpi_scripts/recovery_report.py from recovery.json and */recovery.json) -->"
VEND = "<!-- recovery-variants:end -->"


def load(p):
    with open(p) as f:
        return json.load(f)


def smooth(v, k):
    out = []
    for i in range(len(v)):
        w = v[max(0, i - k + 1):i + 1]
        out.append(sum(w) / len(w))
    return out


def svg_plot(series, title, xlabel, ylabel):
    W, H, ml, mr, mt, mb = 820, 420, 70, 240, 40, 50
    xs = [x for s in series for x in s["x"]]
    ys = [y for s in series for y in s["y"]]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.1
    y0, y1 = y0 - pad, y1 + pad
    px = lambda x: ml + (x - x0) / ((x1 - x0) or 1) * (W - ml - mr)
    py = lambda y: mt + (y1 - y) / ((y1 - y0) or 1) * (H - mt - mb)
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="14">%s</text>' % (ml, title)]
    for i in range(6):
        yv = y0 + (y1 - y0) * i / 5
        o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (ml, W - mr, py(yv), py(yv)))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%.3f</text>' % (ml - 6, py(yv) + 4, yv))
    for i in range(6):
        xv = x0 + (x1 - x0) * i / 5
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (px(xv), H - mb + 18, round(xv)))
    o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>' % (ml, mt, W - ml - mr, H - mt - mb))
    o.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % ((ml + W - mr) / 2, H - 10, xlabel))
    o.append('<text x="16" y="%.1f" transform="rotate(-90 16 %.1f)" text-anchor="middle">%s</text>' % ((mt + H - mb) / 2, (mt + H - mb) / 2, ylabel))
    ly = mt + 10
    for s in series:
        pts = " ".join("%.1f,%.1f" % (px(x), py(y)) for x, y in zip(s["x"], s["y"]))
        o.append('<polyline fill="none" stroke="%s" stroke-width="%s" stroke-opacity="%s" points="%s"/>' % (
            s["color"], s.get("width", 2), s.get("opacity", 1), pts))
        if s.get("label"):
            o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (W - mr + 10, W - mr + 30, ly, ly, s["color"]))
            o.append('<text x="%d" y="%d">%s</text>' % (W - mr + 36, ly + 4, s["label"]))
            ly += 18
    o.append("</svg>")
    return "\n".join(o) + "\n"


def budget(res):
    """the figures of one recovery.json that the comparison across budgets needs (None: not both plans)"""
    sm = res["summary"]
    if "uniform" not in sm or "adaptive" not in sm or not res["paired"]:
        return None
    u, ad = sm["uniform"], sm["adaptive"]
    d = [x["adaptive_minus_uniform"] for x in res["paired"]]
    return {"rank": max(u["block_ranks"]), "u": u, "ad": ad, "diffs": d, "mean_diff": statistics.mean(d),
            "fewer": 1.0 - ad["lora_params"] / u["lora_params"], "pruned_ppl": res["pruned_ppl"],
            "dense_ppl": res["dense_ppl"], "eval_tokens": res["eval_tokens"], "blocks": len(u["block_ranks"]),
            "hparams": {k: v for k, v in res["runs"][0]["hparams"].items() if k != "seed"},
            "keep_counts": res["pruning"]["keep_counts"], "ratio": res["pruning"]["ratio"],
            "alpha": res["runs"][0].get("alpha")}   # recorded since the variants section (None before)


def variants_section(out):
    """the README section comparing OUT/recovery.json with every OUT/*/recovery.json"""
    base = budget(load(os.path.join(out, "recovery.json")))
    rows = [(None, base)] if base else []
    for v in os.listdir(out):
        if os.path.isfile(os.path.join(out, v, "recovery.json")):
            b = budget(load(os.path.join(out, v, "recovery.json")))
            if b:
                rows.append((v, b))
    rows.sort(key=lambda r: (r[1]["rank"], r[0] or ""))
    md = [VBEGIN]
    for v, b in rows:
        if v is None:
            continue
        same = []
        if base and b["keep_counts"] == base["keep_counts"] and b["ratio"] == base["ratio"]:
            same.append("pruned model")
        if base and b["eval_tokens"] == base["eval_tokens"]:
            same.append("evaluation windows")
        differ = sorted(k for k in set(b["hparams"]) | set(base["hparams"] if base else {})
                        if base and b["hparams"].get(k) != base["hparams"].get(k))
        if base and not differ:
            same.append("training data and optimizer settings")
        text = "Same %s as above" % ", ".join(same) if same else "Compared with the report above"
        dl = ["%s (%s, above %s)" % (k, b["hparams"].get(k), base["hparams"].get(k)) for k in differ]
        if base and b["eval_tokens"] != base["eval_tokens"]:
            dl.append("evaluation (%d tokens, above %d)" % (b["eval_tokens"], base["eval_tokens"]))
        if dl:
            text += "; different %s" % ", ".join(dl)
        alpha = " ALPHA=%g" % b["alpha"] if b["alpha"] is not None and b["alpha"] != 2 * b["rank"] else ""
        md += ["", "## Variant: uniform rank %d (`RANK=%d%s RESULTS=%s mpi_scripts/recovery.sh`)" % (
                   b["rank"], b["rank"], alpha, os.path.join(out, v)), "",
               "%s. Uniform rank %d (%d LoRA parameters) against the adaptive plan %s (%d): held-out perplexity "
               "%.4f ± %.4f (uniform) against %.4f ± %.4f (adaptive), adaptive - uniform = %+.4f on average "
               "(per seed %s). Details: [%s/README.md](%s/README.md)." % (
                   text, b["rank"], b["u"]["lora_params"], b["ad"]["block_ranks"], b["ad"]["lora_params"],
                   b["u"]["ppl_after_mean"], b["u"]["ppl_after_sd"], b["ad"]["ppl_after_mean"], b["ad"]["ppl_after_sd"],
                   b["mean_diff"], ", ".join("%+.4f" % x for x in b["diffs"]), v, v)]
    if len(rows) > 1:
        alld = [x for _, b in rows for x in b["diffs"]]
        if all(x > 0 for x in alld):
            head = "At every budget the importance-adaptive plan is worse than the uniform plan in every seed"
        elif all(x < 0 for x in alld):
            head = "At every budget the importance-adaptive plan is better than the uniform plan in every seed"
        else:
            head = "The sign of adaptive - uniform differs between seeds or budgets"
        per = ", ".join("%+.3f ppl (%+.2f %%) at rank %d" % (b["mean_diff"], 100 * b["mean_diff"] / b["u"]["ppl_after_mean"], b["rank"])
                        for _, b in rows)
        rec = ", ".join("rank %d: %.2f -> %.2f (dense %.2f)" % (b["rank"], b["pruned_ppl"], b["u"]["ppl_after_mean"], b["dense_ppl"])
                        for _, b in rows)
        fewer = ", ".join("%.1f %% (rank %d)" % (100 * b["fewer"], b["rank"]) for _, b in rows)
        steps = sorted({b["hparams"].get("steps") for _, b in rows})
        md += ["", "**Summary** (written from the recovery.json files above). %s: adaptive - uniform = %s. LoRA "
               "recovery, pruned -> uniform plan: %s. The adaptive plans have %s fewer adapter parameters (whole "
               "ranks per block can only come within one rank of one block of the budget), and the importances that "
               "give a block more pruning budget (it keeps more channels) also give it more adapter rank, so the "
               "hardest-pruned blocks get the least adapter capacity. Small model (%d blocks, %s steps); not "
               "evidence about large models." % (
                   head, per, rec, fewer, rows[0][1]["blocks"], "/".join(str(x) for x in steps))]
    md.append(VEND)
    return "\n".join(md)


def write_variants(out):
    """replace (or append) the variants section of OUT/README.md"""
    path = os.path.join(out, "README.md")
    text = open(path).read()
    sec = variants_section(out)
    if VBEGIN.split(" (")[0] in text:
        text = re.sub(r"<!-- recovery-variants:begin.*?<!-- recovery-variants:end -->", lambda m: sec, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + sec + "\n"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prune", help="the output directory of the pruning run")
    ap.add_argument("--out")
    ap.add_argument("--variants-only", metavar="OUT", help="only rewrite the variants section of OUT/README.md")
    ap.add_argument("runs", nargs="*", help="output directories of cfsp-mpi recover")
    a = ap.parse_args()
    if a.variants_only:
        write_variants(a.variants_only)
        return
    if not a.prune or not a.out or not a.runs:
        ap.error("--prune, --out and at least one run directory are required (or --variants-only OUT)")
    pr = load(os.path.join(a.prune, "results.json"))
    pruned = [p for p in pr["pruned"] if p["method"] == "cfsp"][0]
    runs = []
    for d in a.runs:
        r = load(os.path.join(d, "recover.json"))
        losses = [e["loss"] for e in r["log"]]
        runs.append({
            "dir": d, "plan": r["plan"]["plan"], "seed": r["hparams"]["seed"],
            "block_ranks": r["plan"]["block_ranks"], "importance_share": r["plan"]["importance_share"],
            "lora_params": r["plan"]["lora_params"], "lora_params_uniform": r["plan"]["lora_params_uniform"],
            "ppl_before": r["eval_before"]["ppl"], "ppl_after": r["eval_after"]["ppl"],
            "eval_tokens": r["eval_after"]["ntokens"],
            "train_loss_last10": sum(losses[-10:]) / len(losses[-10:]),
            "loss": losses, "train_seconds": r["timings"]["train_seconds"], "nranks": r["nranks"],
            "hparams": r["hparams"], "alpha": r["plan"]["alpha"], "alpha_scales": r["plan"]["alpha_scales"],
        })
    plans = sorted({r["plan"] for r in runs}, key=lambda p: p != "uniform")
    summ = {}
    for p in plans:
        v = [r["ppl_after"] for r in runs if r["plan"] == p]
        summ[p] = {"ppl_after_mean": statistics.mean(v), "ppl_after_sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                   "ppl_after": v, "lora_params": [r["lora_params"] for r in runs if r["plan"] == p][0],
                   "block_ranks": [r["block_ranks"] for r in runs if r["plan"] == p][0],
                   "train_loss_last10_mean": statistics.mean([r["train_loss_last10"] for r in runs if r["plan"] == p])}
    paired = []
    seeds = sorted({r["seed"] for r in runs})
    for s in seeds:
        u = [r for r in runs if r["seed"] == s and r["plan"] == "uniform"]
        ad = [r for r in runs if r["seed"] == s and r["plan"] == "adaptive"]
        if u and ad:
            paired.append({"seed": s, "uniform": u[0]["ppl_after"], "adaptive": ad[0]["ppl_after"],
                           "adaptive_minus_uniform": ad[0]["ppl_after"] - u[0]["ppl_after"]})
    verdict = ""
    if "uniform" in summ and "adaptive" in summ and paired:
        d = [x["adaptive_minus_uniform"] for x in paired]
        md = statistics.mean(d)
        sd = statistics.stdev(d) if len(d) > 1 else float("nan")
        wins = sum(1 for x in d if x < 0)
        winner = "adaptive" if md < 0 else "uniform"
        clear = len(d) > 1 and abs(md) > 2 * sd / math.sqrt(len(d))
        verdict = ("%s plan has the lower held-out perplexity on average (adaptive - uniform = %+.4f, sd of the "
                   "paired difference %.4f over %d seeds; adaptive lower in %d of %d seeds); %s" % (
                       winner.capitalize(), md, sd, len(d), wins, len(d),
                       "the difference is larger than twice its standard error" if clear else
                       "the difference is within the seed-to-seed noise: no clear winner"))
    res = {
        "format": "cfsp-mpi-recovery-experiment/1",
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "model": pr["model"].get("_name_or_path", "stories260K") if isinstance(pr.get("model"), dict) else "stories260K",
        "pruning": {"method": "cfsp", "ratio": pruned["ratio"], "keep_counts": pruned["keep_counts"],
                    "calibration": {"nsamples": pr["calibration"]["nsamples"], "seqlen": pr["calibration"]["seqlen"]},
                    "importance_angular": pr["importance"]["angular"]},
        "dense_ppl": pr["dense"]["ppl"], "pruned_ppl": pruned["ppl"], "eval_tokens": pr["dense"]["ntokens"],
        "summary": summ, "paired": paired, "verdict": verdict,
        "runs": [{k: v for k, v in r.items() if k != "loss"} for r in runs],
        "loss_curves": {("%s_s%s" % (r["plan"], r["seed"])): r["loss"] for r in runs},
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "recovery.json.tmp"), "w") as f:
        json.dump(res, f, indent=1)
    os.replace(os.path.join(a.out, "recovery.json.tmp"), os.path.join(a.out, "recovery.json"))

    colors = {"uniform": "#1f77b4", "adaptive": "#d62728"}
    series = []
    for r in runs:
        series.append({"x": list(range(1, len(r["loss"]) + 1)), "y": smooth(r["loss"], 10), "color": colors.get(r["plan"], "#555"),
                       "width": 1, "opacity": 0.3})
    for p in plans:
        ls = [r["loss"] for r in runs if r["plan"] == p]
        n = min(len(x) for x in ls)
        mean = [sum(x[i] for x in ls) / len(ls) for i in range(n)]
        series.append({"x": list(range(1, n + 1)), "y": smooth(mean, 10), "color": colors.get(p, "#555"), "width": 2.5,
                       "label": "%s (ranks %s)" % (p, summ[p]["block_ranks"])})
    with open(os.path.join(a.out, "loss.svg.tmp"), "w") as f:
        f.write(svg_plot(series, "LoRA recovery of stories260K pruned at %.1f (cfsp): training loss, moving average of 10" % pruned["ratio"],
                         "step", "cross-entropy (nats)"))
    os.replace(os.path.join(a.out, "loss.svg.tmp"), os.path.join(a.out, "loss.svg"))

    h = runs[0]["hparams"]
    r0 = load(os.path.join(runs[0]["dir"], "recover.json"))["plan"]
    md = ["# LoRA recovery of a CFSP-pruned model (issue 7)", "",
          "Generated by `mpi_scripts/recovery.sh` (%s UTC, %d MPI ranks)." % (res["date_utc"], runs[0]["nranks"]), "",
          "- Model: stories260K, pruned with cfsp at ratio %.1f (FFN channels kept per block %s), calibrated on "
          "TinyStories tokens [0, 100000) (%d x %d)." % (pruned["ratio"], pruned["keep_counts"], res["pruning"]["calibration"]["nsamples"],
                                                        res["pruning"]["calibration"]["seqlen"]),
          "- Recovery: `cfsp-mpi recover`, LoRA on q,k,v,o,gate,up,down, %d steps x %d windows of %d tokens from TinyStories "
          "tokens [100000, 300000), AdamW lr %g (warm-up %d, cosine to %g x), clip %g, alpha/r = %g%s." % (
              h["steps"], h["batch"], h["seqlen"], h["lr"], h["warmup"], h["min_lr_ratio"], h["clip"], r0["alpha"] / r0["r"],
              " in every block" if r0["alpha_scales"] else " for rank r (alpha fixed: alpha/r_l per block)"),
          "- Held-out evaluation: TinyStories tokens [300000, 393013), the first %d non-overlapping windows of 256 tokens "
          "(%d predicted tokens); disjoint from training and calibration." % (res["eval_tokens"] // 255, res["eval_tokens"]),
          "- Uniform plan: rank %d in every block." % r0["r"] + " Adaptive plan: rank proportional to the block's share of the sigmoid-smoothed "
          "angular importances (the scores of the CFSP allocation), same total LoRA parameters up to less than one block-rank "
          "(largest remainder; the adaptive plan has slightly fewer).", "",
          "| model | LoRA params | block ranks | held-out ppl (mean ± sd over seeds) | per seed |",
          "|---|---|---|---|---|",
          "| dense | – | – | %.4f | |" % res["dense_ppl"],
          "| pruned 0.4, no recovery | – | – | %.4f | |" % res["pruned_ppl"]]
    for p in plans:
        s = summ[p]
        md.append("| pruned + LoRA, %s | %d | %s | %.4f ± %.4f | %s |" % (p, s["lora_params"], s["block_ranks"], s["ppl_after_mean"],
                                                                         s["ppl_after_sd"], ", ".join("%.4f" % v for v in s["ppl_after"])))
    md += ["", "Paired by seed (the same training batches and adapter initialisation seed for both plans):", "",
           "| seed | uniform | adaptive | adaptive - uniform |", "|---|---|---|---|"]
    for x in paired:
        md.append("| %s | %.4f | %.4f | %+.4f |" % (x["seed"], x["uniform"], x["adaptive"], x["adaptive_minus_uniform"]))
    if "adaptive" in summ:
        kc = pruned["keep_counts"]
        md += ["", "Per block: FFN channels kept by the pruning %s; angular importance %s; adaptive LoRA ranks %s. The "
               "importance that gives a block more pruning budget (it keeps more channels) also gives it more adapter "
               "rank, so the blocks pruned hardest get the fewest adapter parameters." % (
                   kc, [round(x, 1) for x in pr["importance"]["angular"]], summ["adaptive"]["block_ranks"])]
    md += ["", "**Result:** " + verdict + ".", "",
           "Mean training loss over the last 10 steps: " + ", ".join("%s %.4f" % (p, summ[p]["train_loss_last10_mean"]) for p in plans) + ".",
           "", "![training loss](loss.svg)", ""]
    with open(os.path.join(a.out, "README.md.tmp"), "w") as f:
        f.write("\n".join(md))
    os.replace(os.path.join(a.out, "README.md.tmp"), os.path.join(a.out, "README.md"))
    if any(os.path.isfile(os.path.join(a.out, d, "recovery.json")) for d in os.listdir(a.out)):
        write_variants(a.out)
    print(verdict)


if __name__ == "__main__":
    main()
