"""Baseline parity on both shared models: wanda_sp, flap (with its bias compensation) and mag_sp
kept sets, flap down_proj biases, sliced weights and pruned perplexities of cfsp-mpi against the
NumPy reference (conventions: tests/ref/cfsp_ref.py, baseline section).

    /usr/bin/python3 tests/py/test_baselines.py --bin build/cfsp-mpi --shared /work/shared \
        --workdir /tmp/baselines [--np 2]

As in test_prune_parity, every selection is checked against the reference fed with the C
stats.h5 (logic) and with the reference's own calibration (indep). wanda_sp and flap use one
global threshold on per-layer standardised scores z, so their kept sets are compared over all
layers at once, with near ties allowed within an absolute tolerance in z units: 1e-6 (logic) or
10 x the observed relative error of the statistics x max|score|/std (indep).
"""

import math
import os

import numpy as np

from common import (Checker, compare_kept, describe_diff, find_pruned, fresh_dir, load_results,
                    model_dir, parse_args, pruned_file, ratios_arg, ref, run_cfsp, stats_scale_error,
                    sum_error, token_file, boundary)

RATIOS = [0.2, 0.5]
NSAMPLES, SEQLEN, EVAL_WINDOWS = 8, 128, 2
METHODS = ["wanda_sp", "flap", "mag_sp"]


def flat(per_layer_idx, sizes):
    """Per-layer channel indices -> indices into the concatenation of all layers."""
    off = np.cumsum([0] + list(sizes[:-1]))
    return np.concatenate([np.asarray(k, dtype=np.int64) + o for k, o in zip(per_layer_idx, off)])


def main():
    args = parse_args(__doc__)
    ck = Checker("baselines")
    for name in ("stories260K", "tinystories656K"):
        mdir = model_dir(args, name)
        model = ref.load_model(mdir)
        sizes = ref.ffn_sizes(model)
        calib = token_file(args, name, "wikitext2_validation.joined")
        evalf = token_file(args, name, "tinystories_val_head")
        out = fresh_dir(os.path.join(args.workdir, "baselines_" + name))
        rc, _ = run_cfsp(args, ["--model", mdir, "--calib-tokens", calib, "--eval-tokens", evalf,
                                "--nsamples", NSAMPLES, "--seqlen", SEQLEN, "--seed", 0,
                                "--eval-windows", EVAL_WINDOWS, "--ratios", ratios_arg(RATIOS),
                                "--method", ",".join(["cfsp"] + METHODS), "--save-models", 1,
                                "--output-dir", out, "--force"], np_ranks=min(args.np, model.L))
        if not ck.check(rc == 0, "%s: cfsp-mpi run (cfsp + baselines)" % name):
            continue
        res = load_results(out)
        cst = ref.stats_from_h5(os.path.join(out, "stats.h5"))
        offs = ref.calib_offsets(len(ref.read_tokens(calib)), NSAMPLES, SEQLEN, seed=0)
        rst = ref.collect_stats(model, ref.read_tokens(calib), offs, SEQLEN)
        a_err = stats_scale_error(cst, rst)
        s_err = sum_error(cst, rst)
        ck.note("statistics: A_j rel diff %.3g, channel-sum error %.3g" % (a_err, s_err))
        eval_tokens = ref.read_tokens(evalf)
        for method in METHODS:
            for p in RATIOS:
                label = "%s %s p=%g" % (name, method, p)
                e = find_pruned(res, method, p)
                if not ck.check(e is not None, label + ": results.json entry"):
                    continue
                try:
                    f = ref.read_pruned_h5(pruned_file(out, e), model.L)
                except Exception as ex:  # noqa: BLE001
                    ck.check(False, label + ": read pruned file", str(ex))
                    continue
                counts = [int(x) for x in e.get("keep_counts", [])]
                ck.check(counts == [len(k) for k in f["kept"]] and
                         all(np.all(np.diff(k) > 0) and (len(k) == 0 or (k[0] >= 0 and k[-1] < m))
                             for k, m in zip(f["kept"], sizes)),
                         label + ": keep_counts = kept_channels lengths, ascending, in range", "%s" % counts)
                wd = 0.0
                for l, ly in enumerate(model.layers):
                    k = f["kept"][l]
                    for got, want in ((f["gate"][l], ly["gate"][k]), (f["up"][l], ly["up"][k]),
                                      (f["down"][l], ly["down"][:, k])):
                        wd = max(wd, float(np.max(np.abs(got - want))) if got.shape == want.shape and got.size
                                 else (0.0 if got.shape == want.shape else math.inf))
                ck.check(wd == 0.0, label + ": file weights = sliced originals", "max |diff| %g" % wd)

                for kind, st in (("logic", cst), ("indep", rst)):
                    rr = ref.baseline_prune(model, st, method, p)
                    if method == "mag_sp":
                        # per layer, uniform: exact counts; sets vs top-k of the column norms
                        ok_all, rows_all = True, []
                        for l in range(model.L):
                            sc = rr["scores"][l]
                            lo, hi = boundary(sc, rr["kept"][l])
                            ok, rows = compare_kept(f["kept"][l], rr["kept"][l], sc, lo, hi, 1e-6 * max(abs(lo), abs(hi)))
                            ok_all &= ok and len(f["kept"][l]) == len(rr["kept"][l])
                            rows_all += rows
                        ck.check(ok_all, label + ": kept sets (%s, uniform round(m*(1-p)))" % kind,
                                 "%d differing; ref counts %s%s" % (len(rows_all), [len(k) for k in rr["kept"]],
                                                                   ("; " + describe_diff(rows_all)) if rows_all else ""))
                    else:
                        z = np.concatenate([ref.standardize(s) for s in rr["scores"]])
                        rk = flat(rr["kept"], sizes)
                        lo, hi = boundary(z, rk)
                        if kind == "logic":
                            tol = 1e-6
                        else:
                            tol = max(1e-6, 10 * a_err * max(float(np.max(np.abs(s)) / np.std(s)) for s in rr["scores"]))
                        ok, rows = compare_kept(flat(f["kept"], sizes), rk, z, lo, hi, tol)
                        total_ok = sum(counts) == len(rk)
                        ck.check(ok and total_ok, label + ": kept sets, global threshold (%s, tie tol %.2g z)" % (kind, tol),
                                 "total kept C %d ref %d; %d differing%s" % (
                                     sum(counts), len(rk), len(rows), ("; " + describe_diff(rows)) if rows else ""))
                    if method == "flap":
                        # bias on the C kept set, from this statistic's mean input
                        worst = 0.0
                        ok = True
                        for l, ly in enumerate(model.layers):
                            rem = np.setdiff1d(np.arange(sizes[l]), f["kept"][l])
                            want = ly["down"][:, rem] @ st.mean_x(l)[rem]
                            got = f["bias"][l]
                            if got is None or got.shape != want.shape:
                                ok = False
                                continue
                            scale = np.abs(ly["down"][:, rem]) @ np.abs(st.mean_x(l)[rem]) + 1e-30
                            tol = 1e-5 * scale
                            if kind == "indep":
                                rms = np.sqrt(st.sum_sq[l][rem] / st.ntokens)
                                tol = tol + 10 * s_err * (np.abs(ly["down"][:, rem]) @ rms)
                            worst = max(worst, float(np.max(np.abs(got - want) / (tol / 1e-5))))
                            ok &= bool(np.all(np.abs(got - want) <= tol))
                        ck.check(ok, label + ": down_proj bias (%s)" % kind,
                                 "worst |diff| / scale %.3g (bound 1e-5)" % worst)
                if method != "flap":
                    ck.check(all(b is None for b in f["bias"]), label + ": no down_proj bias in the file")
                # perplexity of the pruned model: C kept set, reference bias from the C statistics
                bias = ref.flap_bias(model, cst, f["kept"]) if method == "flap" else None
                ppl, _, _ = ref.perplexity(ref.prune_model(model, f["kept"], bias), eval_tokens, SEQLEN,
                                           windows=EVAL_WINDOWS)
                cppl = float(e.get("ppl") if e.get("ppl") is not None else "nan")
                ck.check(abs(cppl - ppl) <= 1e-4 * ppl, label + ": pruned ppl within 1e-4 relative",
                         "C %.6f ref %.6f (dense %.4f)" % (cppl, ppl, float(res.get("dense", {}).get("ppl", "nan"))))
    ck.finish()


if __name__ == "__main__":
    main()
