"""CFSP pruning parity on both shared models: calibration offsets, coarse importance, channel
statistics (stats.h5), then for every configuration (alloc mode x align x local metric, plus
other global metrics and a/b/c exponents) and three ratios: keep fractions, keep_counts and the
kept_channels of the pruned HDF5 files, the sliced weights in those files and the pruned ppl.

    /usr/bin/python3 tests/py/test_prune_parity.py --bin build/cfsp-mpi --shared /work/shared \
        --workdir /tmp/prune [--np 2] [--full]

Two references are compared with the C selections:
  logic  - the reference allocation/scores/selection fed with the C program's own stats.h5
           (isolates the pruning logic; differences allowed only at scores within 1e-6 relative
           of the selection boundary, counts only where the count formula sits within 1e-9 of a
           rounding discontinuity);
  indep  - the reference's own float64 calibration pass (end to end; the near-tie tolerance is
           max(1e-6, 10 x the observed relative difference of A_j), the count tolerance 1e-5*m).
The C kept set of each layer is compared with the reference's top-k at the C count k; the count
itself is compared separately. One configuration, calibration, runs with `run`; the others use
`prune --stats` on its stats.h5 (a failing `prune` is a failed configuration).

keep_fraction in results.json is, for cfsp, the allocation keep_l of alloc_keep_fraction (not
keep_counts/m, which differs by the rounding to whole and aligned channels). Its tolerance is the
first-order propagation of the input difference through the allocation: J[l,i] = d log keep_l /
d log I_i by central differences of the reference's allocate (keep_sensitivity);
  logic: the same doubles in, the same formula: rounding only, as if every I_i were off by
         (L + 2) ulps (the mean's summation order):  sum_i |J[l,i]| (L+2) eps + 8 eps;
  indep: the measured relative difference d_i of the C importances from the reference's:
         2 sum_i |J[l,i]| d_i + the logic tolerance (2: room for the second-order terms).
"""

import math
import os

import numpy as np

from common import (Checker, compare_kept, describe_diff, fresh_dir, load_results, model_dir,
                    parse_args, pruned_file, ratios_arg, ref, rel, run_cfsp, stats_scale_error,
                    sum_error, token_file, find_pruned, boundary)

RATIOS = [0.2, 0.35, 0.55]
NSAMPLES, SEQLEN, EVAL_WINDOWS = 8, 128, 1
ALIGNS = {"stories260K": [8], "tinystories656K": [128]}
ALIGNED_METRICS = ["three_w_one_wa", "wanda_base", "mag_base", "three_w_one_wa_rownorm"]
BASE = dict(mode="default", align=0, local="three_w_one_wa", glob="angular", a=1.0, b=1.0, c=1.0)


def configs(model_name, full):
    out = []
    for mode in ("default", "reference"):
        for align in [0] + ALIGNS[model_name] + ([16] if full and 16 not in ALIGNS[model_name] else []):
            for metric in (ref.LOCAL_METRICS if (align == 0 or full) else ALIGNED_METRICS):
                out.append(dict(BASE, mode=mode, align=align, local=metric))
    out += [dict(BASE, glob="cosine"), dict(BASE, glob="mse", mode="reference"),
            dict(BASE, glob="mae", align=ALIGNS[model_name][0]),
            dict(BASE, local="one_wa", a=2.0, b=0.5, c=2.0),
            dict(BASE, local="three_w_one_wa_rownorm", mode="reference", a=0.5, b=2.0, c=0.5)]
    return out


def cfg_label(c):
    s = "%s/align%d/%s/%s" % (c["mode"], c["align"], c["local"], c["glob"])
    if (c["a"], c["b"], c["c"]) != (1.0, 1.0, 1.0):
        s += "/a%g,b%g,c%g" % (c["a"], c["b"], c["c"])
    return s


def cfg_opts(c):
    """Options of one configuration. align 0 (off) is expressed by omitting --align (default 1 = no
    rounding); an explicit `--align 1` is checked once on its own (see main)."""
    out = ["--method", "cfsp", "--local-metric", c["local"], "--global-metric", c["glob"],
           "--alloc-mode", c["mode"], "--a", c["a"], "--b", c["b"], "--c", c["c"]]
    return out + (["--align", c["align"]] if c["align"] else [])   # align 0 in this file = off = the default 1


def count_near_boundary(m, r, align, mode, eps):
    """Is the channel-count formula within eps (in channels) of one of its discontinuities?"""
    if mode == "default":
        v = m * r / align if align else m * r
        frac = v - math.floor(v)
        return abs(frac - 0.5) * (align or 1) <= eps
    v = (m * r + align / 2.0) / align if align else m * r
    frac = v - math.floor(v)
    return min(frac, 1 - frac) * (align or 1) <= eps


def keep_sensitivity(imp, ratio, mode, a, ntokens, h=1e-7):
    """J[l, i] = d log keep_l / d log I_i of the reference allocation at the importances imp, by
    central differences (relative step h on I_i)."""
    imp = np.asarray(imp, dtype=np.float64)
    L = len(imp)
    k0 = ref.allocate(imp, ratio, mode, a, ntokens)[0]
    J = np.zeros((L, L))
    for i in range(L):
        up, dn = imp.copy(), imp.copy()
        up[i] *= 1 + h
        dn[i] *= 1 - h
        J[:, i] = (ref.allocate(up, ratio, mode, a, ntokens)[0] - ref.allocate(dn, ratio, mode, a, ntokens)[0]) / (2 * h * k0)
    return J


def maxabs(a, b):
    """max |a - b|; inf when the shapes differ, 0 for empty arrays."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return math.inf
    return float(np.max(np.abs(a - b))) if a.size else 0.0


class Worst:
    """Collects, for one configuration, the worst figure and the failures of each check kind."""

    def __init__(self):
        self.val = {}
        self.bad = {}
        self.notes = []

    def add(self, kind, value, ok, msg=""):
        self.val[kind] = max(self.val.get(kind, 0.0), value)
        self.bad.setdefault(kind, [])
        if not ok:
            self.bad[kind].append(msg)


def check_config(ck, W, model, c, cst, rst, tie_tol, res, outdir, evalf):
    sizes = ref.ffn_sizes(model)
    eval_tokens = ref.read_tokens(evalf)
    for ratio in RATIOS:
        e = find_pruned(res, "cfsp", ratio)
        if e is None:
            W.add("entries", 1, False, "no cfsp entry for ratio %g" % ratio)
            continue
        logic = ref.cfsp_prune(model, cst, ratio, c["glob"], c["local"], c["mode"], c["align"], c["a"], c["b"], c["c"])
        indep = ref.cfsp_prune(model, rst, ratio, c["glob"], c["local"], c["mode"], c["align"], c["a"], c["b"], c["c"])
        kf = np.asarray(e.get("keep_fraction", []), dtype=np.float64)
        counts = [int(x) for x in e.get("keep_counts", [])]
        if len(kf) != model.L or len(counts) != model.L:
            W.add("entries", 1, False, "r=%g: keep_fraction/keep_counts length" % ratio)
            continue
        # keep fractions: the allocation keep_l, tolerances from its sensitivity (see the docstring)
        imp_c, imp_r = cst.importance[c["glob"]], rst.importance[c["glob"]]
        J = keep_sensitivity(imp_c, ratio, c["mode"], c["a"], cst.ntokens)
        eps = np.finfo(np.float64).eps
        tol_logic = np.abs(J).sum(axis=1) * (model.L + 2) * eps + 8 * eps
        tol_ind = 2 * np.abs(J) @ (np.abs(imp_c - imp_r) / np.abs(imp_r)) + tol_logic
        for kind, rr, tol in (("logic", logic, tol_logic), ("indep", indep, tol_ind)):
            d = np.abs(kf - rr["keep_fraction"]) / rr["keep_fraction"]
            W.add("keep_fraction (%s), relative difference / its tolerance" % kind, float(np.max(d / tol)), bool(np.all(d <= tol)),
                  "r=%g C %s ref %s, rel %s, tolerance %s" % (ratio, np.round(kf, 10), np.round(rr["keep_fraction"], 10),
                                                            np.array2string(d, precision=2), np.array2string(tol, precision=2)))
        # the pruned file
        path = pruned_file(outdir, e)
        try:
            f = ref.read_pruned_h5(path, model.L)
        except Exception as ex:  # noqa: BLE001
            W.add("pruned file", 1, False, "r=%g: cannot read %s: %s" % (ratio, path, ex))
            continue
        for l in range(model.L):
            ck_ = f["kept"][l]
            ok = (len(ck_) == counts[l] and np.all(np.diff(ck_) > 0) and
                  (len(ck_) == 0 or (ck_[0] >= 0 and ck_[-1] < sizes[l])))
            W.add("kept_channels well formed", 0, ok, "r=%g l=%d: %d channels, count %d" % (ratio, l, len(ck_), counts[l]))
            ly = model.layers[l]
            wd = max(maxabs(f["gate"][l], ly["gate"][ck_]), maxabs(f["up"][l], ly["up"][ck_]),
                     maxabs(f["down"][l], ly["down"][:, ck_]))
            W.add("file weights = sliced originals (max abs)", wd, wd == 0.0, "r=%g l=%d diff %g" % (ratio, l, wd))
            # counts and sets vs both references
            for kind, rr, tol_rel, eps in (("logic", logic, 1e-6, 1e-9 * sizes[l]),
                                           ("indep", indep, tie_tol, 1e-5 * sizes[l])):
                rk = len(rr["kept"][l])
                near = count_near_boundary(sizes[l], rr["keep_fraction"][l], c["align"], c["mode"], eps)
                W.add("keep_counts (%s)" % kind, abs(counts[l] - rk), counts[l] == rk or near,
                      "r=%g l=%d C %d ref %d" % (ratio, l, counts[l], rk))
                if counts[l] != rk:
                    W.notes.append("r=%g l=%d %s: count C %d ref %d, m*r=%.9f at a rounding boundary%s" % (
                        ratio, l, kind, counts[l], rk, sizes[l] * rr["keep_fraction"][l], "" if near else " (NOT near)"))
                sc = rr["scores"][l]
                top = ref.topk_desc(sc, len(ck_))
                lo, hi = boundary(sc, top)
                scale = max(abs(lo) if math.isfinite(lo) else 0.0, abs(hi) if math.isfinite(hi) else 0.0, 1e-300)
                ok, rows = compare_kept(ck_, top, sc, lo, hi, tol_rel * scale)
                W.add("kept sets vs ref top-k (%s), channels differing" % kind, len(rows), ok,
                      "r=%g l=%d: %s" % (ratio, l, describe_diff(rows)))
                if rows and ok:
                    W.notes.append("r=%g l=%d %s: near-tie differences: %s" % (ratio, l, kind, describe_diff(rows)))
        # pruned perplexity on the C kept set
        if e.get("ppl") is not None:
            pm = ref.prune_model(model, f["kept"])
            ppl, _, _ = ref.perplexity(pm, eval_tokens, SEQLEN, windows=EVAL_WINDOWS)
            d = abs(float(e["ppl"]) - ppl) / ppl
            W.add("pruned ppl (rel)", d, d <= 1e-4, "r=%g C %.6f ref %.6f" % (ratio, float(e["ppl"]), ppl))
        else:
            W.notes.append("r=%g: no ppl in results (not evaluated)" % ratio)


def report(ck, label, W):
    for kind in W.val:
        bad = W.bad.get(kind, [])
        ck.check(not bad, "%s: %s" % (label, kind), "worst %.3g%s" % (W.val[kind], ("; " + " | ".join(bad[:3])) if bad else ""))
    for n in W.notes[:12]:
        ck.note(n)


def main():
    args = parse_args(__doc__)
    ck = Checker("prune parity")
    for name in ("stories260K", "tinystories656K"):
        mdir = model_dir(args, name)
        model = ref.load_model(mdir)
        nranks = min(args.np, model.L)
        calib = token_file(args, name, "wikitext2_validation.joined")
        evalf = token_file(args, name, "tinystories_val_head")
        common_opts = ["--model", mdir, "--calib-tokens", calib, "--eval-tokens", evalf, "--nsamples", NSAMPLES,
                       "--seqlen", SEQLEN, "--seed", 0, "--eval-windows", EVAL_WINDOWS, "--ratios", ratios_arg(RATIOS),
                       "--save-models", 1, "--force"]
        base = fresh_dir(os.path.join(args.workdir, "prune_%s_base" % name))
        rc, _ = run_cfsp(args, common_opts + cfg_opts(BASE) + ["--output-dir", base], np_ranks=nranks)
        if not ck.check(rc == 0, "%s: calibration run" % name):
            continue
        res = load_results(base)
        # calibration offsets, importance, statistics
        calib_toks = ref.read_tokens(calib)
        offs = ref.calib_offsets(len(calib_toks), NSAMPLES, SEQLEN, seed=0)
        coffs = [int(x) for x in res.get("calibration", {}).get("offsets", [])]
        ck.check(coffs == offs, "%s: calibration offsets" % name, "C %s ref %s" % (coffs[:4], offs[:4]))
        rst = ref.collect_stats(model, calib_toks, offs, SEQLEN)
        try:
            cst = ref.stats_from_h5(os.path.join(base, "stats.h5"))
        except Exception as ex:  # noqa: BLE001
            ck.check(False, "%s: read stats.h5" % name, str(ex))
            continue
        ck.check(cst.nsamples == NSAMPLES and cst.seqlen == SEQLEN and cst.ntokens == NSAMPLES * SEQLEN and
                 len(cst.sum_sq) == model.L, "%s: stats.h5 attributes" % name,
                 "nsamples %d seqlen %d ntokens %d layers %d" % (cst.nsamples, cst.seqlen, cst.ntokens, len(cst.sum_sq)))
        for k in ref.GLOBAL_METRICS:
            cj = np.asarray(res.get("importance", {}).get(k, []), dtype=np.float64)
            d1 = rel(cj, rst.importance[k]) if cj.shape == rst.importance[k].shape else math.inf
            d2 = rel(cst.importance[k], rst.importance[k])
            ck.check(max(d1, d2) <= 1e-5, "%s: importance %s within 1e-5 relative (results.json, stats.h5)" % (name, k),
                     "worst %.3g; ref %s" % (max(d1, d2), np.array2string(rst.importance[k], precision=6)))
        dsq = max(rel(cst.sum_sq[l], rst.sum_sq[l], floor=1e-12) for l in range(model.L))
        ck.check(dsq <= 1e-5, "%s: channel sum_sq within 1e-5 relative" % name, "worst %.3g" % dsq)
        ds = sum_error(cst, rst)
        ck.check(ds <= 1e-5, "%s: channel sum, |diff| / sqrt(ntokens*sum_sq) <= 1e-5" % name, "worst %.3g" % ds)
        # docs/CONTRACTS.md: --align 1 means no rounding; --align 0 is a bad option (issue 5)
        if name == "stories260K":
            out0 = fresh_dir(os.path.join(args.workdir, "prune_%s_align1_explicit" % name))
            rc0, log0 = run_cfsp(args, common_opts + cfg_opts(BASE) + ["--align", 1, "--output-dir", out0],
                                 np_ranks=nranks)
            same = rc0 == 0 and [e.get("keep_counts") for e in load_results(out0).get("pruned", [])] == \
                [e.get("keep_counts") for e in res.get("pruned", [])]
            ck.check(same, "contract: explicit --align 1 equals no alignment",
                     "" if rc0 == 0 else log0.strip().splitlines()[0][:200] if log0.strip() else "exit %d" % rc0)
        tie_tol = max(1e-6, 10 * stats_scale_error(cst, rst))
        ck.note("near-tie tolerance for the independent comparison: %.3g relative" % tie_tol)

        for c in configs(name, args.full):
            label = "%s %s" % (name, cfg_label(c))
            if c == BASE:
                out, cres = base, res
            else:
                out = fresh_dir(os.path.join(args.workdir, "prune_%s_%s" % (name, cfg_label(c).replace("/", "_"))))
                rc, log = run_cfsp(args, ["--stats", os.path.join(base, "stats.h5")] + common_opts + cfg_opts(c) +
                                   ["--output-dir", out], np_ranks=nranks, sub="prune")
                if not ck.check(rc == 0, label + ": cfsp-mpi prune --stats", log.strip()[-300:] if rc else ""):
                    continue
                cres = load_results(out)
            W = Worst()
            check_config(ck, W, model, c, cst, rst, tie_tol, cres, out, evalf)
            report(ck, label, W)
    ck.finish()


if __name__ == "__main__":
    main()
