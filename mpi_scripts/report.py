#!/usr/bin/python3
"""report.py — one PNG page from a cfsp-mpi run: OUTDIR/results.json -> OUTDIR/report.png.

    mpi_scripts/report.py OUTDIR [--output FILE.png]

Panels: perplexity against pruning ratio per method (dense at ratio 0); per-rank calibration time
split into compute and waiting for the previous stage (results.json "stages":
calib_compute_seconds, calib_wait_seconds; a `prune --stats` run has no calibration and shows the
time of each pruned model instead); per-rank memory (stored weight bytes mapped, peak RSS); and,
per method, the FFN channels kept in every block for each ratio against the dense sizes (a run
without ratios shows the block importances instead). Prints one line per figure written.
Debian /usr/bin/python3 with python3-matplotlib (no display needed).
"""
import argparse
import json
import math
import os
import sys

METHOD_COLORS = {"cfsp": "#1f77b4", "wanda_sp": "#d62728", "flap": "#2ca02c", "mag_sp": "#9467bd"}


def fail(msg):
    sys.stderr.write("report.py: error: %s\n" % msg)
    sys.exit(1)


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    try:
        with open(path) as f:
            r = json.load(f)
    except OSError as e:
        fail("%s: %s (results.json exists only when the run succeeded)" % (path, e.strerror))
    except ValueError as e:
        fail("%s: not valid JSON: %s" % (path, e))
    if not isinstance(r, dict) or not str(r.get("format", "")).startswith("cfsp-mpi-results/"):
        fail("%s: not a cfsp-mpi results file (format %r)" % (path, r.get("format") if isinstance(r, dict) else None))
    return r, path


def methods_in(pruned):
    seen = []
    for p in pruned:
        if p.get("method") not in seen:
            seen.append(p.get("method"))
    return seen


def ppl_panel(ax, r):
    pruned = r.get("pruned", [])
    dense = (r.get("dense") or {}).get("ppl")
    for m in methods_in(pruned):
        pts = sorted((p["ratio"], p["ppl"]) for p in pruned if p.get("method") == m and isinstance(p.get("ppl"), (int, float)))
        if dense:
            pts = [(0.0, dense)] + pts
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=METHOD_COLORS.get(m), label=m)
            x, y = pts[-1]
            ax.annotate("%.4g" % y, (x, y), textcoords="offset points", xytext=(4, 0), fontsize=7)
    if dense:
        ax.axhline(dense, color="gray", ls=":", lw=1)
        ax.annotate("dense %.4g" % dense, (0, dense), textcoords="offset points", xytext=(2, 4), fontsize=7, color="gray")
    if not pruned and not dense:
        ax.text(0.5, 0.5, "no evaluation in this run", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_yscale("log")
        if methods_in(pruned):
            ax.legend(fontsize=8)
    ax.set_xlabel("pruning ratio (FFN channels removed)")
    ax.set_ylabel("perplexity (log)")
    ax.set_title("perplexity vs ratio")
    ax.grid(True, which="both", alpha=0.3)


def stage_panel(ax, r):
    stages = r.get("stages", [])
    ranks = [s["rank"] for s in stages]
    comp = [s.get("calib_compute_seconds", 0) or 0 for s in stages]
    wait = [s.get("calib_wait_seconds", 0) or 0 for s in stages]
    if stages and sum(comp) + sum(wait) > 0:
        ax.bar(ranks, comp, color="#1f77b4", label="compute")
        ax.bar(ranks, wait, bottom=comp, color="#ff7f0e", label="wait for previous stage")
        for s, c, w in zip(stages, comp, wait):
            ax.annotate("%d-%d" % (s["first_block"], s["last_block"]), (s["rank"], c + w), ha="center",
                        textcoords="offset points", xytext=(0, 2), fontsize=7)
        cal = r.get("calibration", {})
        ax.set_title("calibration per stage: %.3g s, %.4g tokens/s" % (cal.get("seconds", 0), cal.get("tokens_per_second", 0)))
        ax.set_xlabel("rank (labels: blocks)")
        ax.set_ylabel("seconds")
        ax.set_xticks(ranks)
        ax.legend(fontsize=8)
        return
    # prune --stats: no forward pass for statistics; the time of each pruned model instead
    pruned = r.get("pruned", [])
    if not pruned:
        ax.text(0.5, 0.5, "no calibration and no pruning in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("time")
        return
    labels = ["%s %g" % (p["method"], p["ratio"]) for p in pruned]
    bottom = [0.0] * len(pruned)
    for key, color in (("select_seconds", "#8c564b"), ("write_seconds", "#e377c2"), ("eval_seconds", "#17becf")):
        v = [p.get(key, 0) or 0 for p in pruned]
        ax.bar(range(len(pruned)), v, bottom=bottom, color=color, label=key.replace("_seconds", ""))
        bottom = [b + x for b, x in zip(bottom, v)]
    ax.set_xticks(range(len(pruned)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title("time per pruned model (statistics from %s)" % os.path.basename(r.get("calibration", {}).get("stats_file", "file")))
    ax.legend(fontsize=8)


def memory_panel(ax, r):
    stages = r.get("stages", [])
    if not stages:
        ax.set_axis_off()
        return
    ranks = [s["rank"] for s in stages]
    w = [s.get("weight_bytes_expected", 0) / 1e6 for s in stages]
    h = [s.get("vmhwm_bytes", 0) / 1e6 for s in stages]
    ax.bar([x - 0.2 for x in ranks], w, width=0.4, color="#7f7f7f", label="stored weights mapped")
    ax.bar([x + 0.2 for x in ranks], h, width=0.4, color="#bcbd22", label="peak RSS (VmHWM)")
    ax.set_xticks(ranks)
    ax.set_xlabel("rank")
    ax.set_ylabel("MB")
    ax.set_title("memory per rank")
    ax.legend(fontsize=8)


def blocks_panels(fig, gs_row, r):
    pruned = r.get("pruned", [])
    sizes = (r.get("model") or {}).get("intermediate_sizes") or []
    ms = methods_in(pruned)
    if not ms:
        ax = fig.add_subplot(gs_row)
        imp = r.get("importance") or {}
        for name, v in imp.items():
            if v:
                top = max(abs(x) for x in v) or 1.0
                ax.plot(range(len(v)), [x / top for x in v], "o-", label=name)
        ax.set_xlabel("block")
        ax.set_ylabel("importance / max")
        ax.set_title("block importances (no pruning ratios in this run)")
        if imp:
            ax.legend(fontsize=8)
        return
    import matplotlib
    import matplotlib.ticker
    ratios = sorted({p["ratio"] for p in pruned})
    cmap = matplotlib.colormaps["viridis"] if hasattr(matplotlib, "colormaps") else matplotlib.cm.get_cmap("viridis")
    n = len(ms)
    sub = gs_row.subgridspec(1, n)
    for i, m in enumerate(ms):
        ax = fig.add_subplot(sub[0, i])
        if sizes:
            ax.plot(range(len(sizes)), sizes, "k--", lw=1, label="dense")
        for p in pruned:
            if p.get("method") != m:
                continue
            k = ratios.index(p["ratio"])
            c = cmap(k / max(1, len(ratios) - 1) * 0.85)
            ax.plot(range(len(p.get("keep_counts", []))), p.get("keep_counts", []), ".-", color=c, lw=1,
                    label="r=%g (%.0f%% kept)" % (p["ratio"], 100 * p.get("ffn_kept_fraction", float("nan"))))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title("%s: FFN channels kept per block" % m, fontsize=9)
        ax.set_xlabel("block")
        if i == 0:
            ax.set_ylabel("channels")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
        ax.grid(True, alpha=0.3)


def main():
    ap = argparse.ArgumentParser(description="PNG report of a cfsp-mpi run")
    ap.add_argument("outdir", help="the run's --output-dir (or its results.json)")
    ap.add_argument("--output", help="PNG path (default OUTDIR/report.png)")
    a = ap.parse_args()
    r, path = load(a.outdir)
    out = a.output or os.path.join(os.path.dirname(os.path.abspath(path)), "report.png")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is missing: apt-get install python3-matplotlib (and run with /usr/bin/python3)")

    model = r.get("model") or {}
    cal = r.get("calibration") or {}
    t = r.get("timings") or {}
    opts = r.get("options") or {}
    fig = plt.figure(figsize=(16, 10))
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 1], hspace=0.45, wspace=0.28)
    ppl_panel(fig.add_subplot(gs[0, 0]), r)
    stage_panel(fig.add_subplot(gs[0, 1]), r)
    memory_panel(fig.add_subplot(gs[0, 2]), r)
    blocks_panels(fig, gs[1, :], r)
    src = "statistics %s" % cal["stats_file"] if "stats_file" in cal else "calibration %s x %s tokens" % (cal.get("nsamples"), cal.get("seqlen"))
    fig.suptitle("cfsp-mpi: %s — %d blocks, %.4g params, %s ranks, %s; global %s, local %s, alloc %s; total %.1f s"
                 % (model.get("path", "?"), model.get("num_layers", 0), model.get("params", float("nan")), r.get("nranks"),
                    src, opts.get("global_metric", "?"), opts.get("local_metric", "?"), opts.get("alloc_mode", "?"),
                    t.get("total_seconds", float("nan"))), fontsize=10)
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, out)
    best = [p for p in r.get("pruned", []) if isinstance(p.get("ppl"), (int, float)) and math.isfinite(p["ppl"])]
    print("report.py: %s (%d pruned models, %s ranks)" % (out, len(best), r.get("nranks")))


if __name__ == "__main__":
    main()
