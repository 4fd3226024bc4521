"""Automatic allocation temperature (issue 18, --a auto) against NumPy, on stories260K:

  - the candidates: --a-grid, the default mode's 1 and the reference's effective value
    N*T/131072 (its a = 1 in the default mode's units), ascending, each once;
  - the selection windows taken from the calibration tokens: NumPy recomputes the calibration
    offsets (Python's random), the seqlen-grid windows no calibration sequence overlaps, and the even
    spread of --select-windows of them; results.json's offsets must be those;
  - per candidate, the per-block counts: the NumPy allocation + selection (cfsp_ref.cfsp_prune) fed
    with the C statistics file, and the value: the mean KL(dense || pruned) (or the perplexity,
    --a-select ppl) of that pruned model on the selection windows, computed in float64, within
    2e-5 relative; a candidate with the counts of an earlier one records that (and its value);
  - the leader ("lowest"): NumPy's argmin (ties to the smaller temperature), or a candidate whose
    NumPy value is within 1e-5 relative of the minimum (float32 may order a near-tie differently);
  - per candidate, the paired per-window difference from the leader (per-window mean KL, or mean NLL
    per token for ppl) and its standard error sd / sqrt(windows), against NumPy's;
  - the choice (--a-margin z, default 0): the leader, or with z > 0 the smallest temperature whose
    NumPy paired difference is at most z standard errors (a decision within the tolerance of the
    values may go either way; z = 1e9 gives the smallest candidate); the leader's nearest rival (other
    counts, fewest standard errors behind) = NumPy's; the pruned entry keeps the choice's counts,
    records "a", and the checkpoint's options say that a (a_auto true);
  - -n 1 and -n 2 give identical records; "a": "auto" in a --config run file works as on the command
    line; --select-tokens FILE@A:B gives windows 0, T, 2T... of the slice (prune --stats with it and
    --a-margin 1 and 1e9 checked like the runs);
  - refused with one line, exit != 0: --a auto without cfsp among the methods; prune --stats --a
    auto without --select-tokens (then with it: succeeds).

    /usr/bin/python3 tests/py/test_a_auto.py --bin build/cfsp-mpi --shared /work/shared --workdir /tmp/aa
"""

import json
import math
import os
import shutil

import numpy as np

from common import (Checker, fresh_dir, load_results, model_dir, parse_args, pruned_file, ref,
                    run_cfsp, token_file)

N, T, K = 16, 64, 6
RATIOS = [0.2, 0.45]
GRID = [0, 0.5, 1, 3]


def opts(mdir, calib, evalf, out, extra=()):
    return ["--model", mdir, "--calib-tokens", calib, "--eval-tokens", evalf, "--nsamples", N, "--seqlen", T,
            "--eval-windows", 4, "--ratios", ",".join(str(r) for r in RATIOS), "--a", "auto",
            "--a-grid", ",".join(str(g) for g in GRID), "--select-windows", K, "--output-dir", out,
            "--compute", "fp32"] + list(extra)


def selection_windows(ntok, seed=0):
    offs = ref.calib_offsets(ntok, N, T, seed=seed)
    free = [w * T for w in range(ntok // T) if not any(o < w * T + T and o + T > w * T for o in offs)]
    n = min(len(free), K)
    return [free[i * len(free) // n] for i in range(n)]


def window_logits(model, toks, offsets):
    return np.concatenate([ref.forward(model, toks[o:o + T])[:-1] for o in offsets])


def window_targets(toks, offsets):
    return np.concatenate([toks[o + 1:o + T] for o in offsets])


def main():
    args = parse_args(__doc__)
    ck = Checker("a_auto")
    S = "stories260K"
    mdir = model_dir(args, S)
    calib = token_file(args, S, "tinystories_val_head")
    evalf = token_file(args, S, "wikitext2_validation.joined")
    model = ref.load_model(mdir)
    ctoks = ref.read_tokens(calib)

    res = {}
    for n in (1, 2):
        out = fresh_dir(os.path.join(args.workdir, "auto_n%d" % n))
        rc, _ = run_cfsp(args, opts(mdir, calib, evalf, out), np_ranks=n)
        if not ck.check(rc == 0, "-n %d: run --a auto" % n):
            ck.finish()
        res[n] = (out, load_results(out))
    def untimed(d):
        if isinstance(d, dict):
            return {k: untimed(v) for k, v in d.items() if "seconds" not in k}
        if isinstance(d, (list, tuple)):
            return [untimed(v) for v in d]
        return d
    rec = {n: untimed((r["selection"], [(e["method"], e["ratio"], e.get("a"), e.get("a_auto")) for e in r["pruned"]]))
           for n, (_, r) in res.items()}
    ck.check(rec[1] == rec[2], "-n 1 and -n 2: identical selection records")
    out, r = res[1]

    # candidates and selection windows
    st = ref.stats_from_h5(os.path.join(out, "stats.h5"))
    want_c = sorted(set(GRID + [1.0, N * T / 131072.0]))
    sel = r["selection"]
    want_w = selection_windows(len(ctoks))
    ck.check(sel["offsets"] == want_w and sel["windows"] == len(want_w) and sel["source"] == "calibration",
             "selection windows = NumPy's gaps of the calibration sequences", "C %s NumPy %s" % (sel["offsets"], want_w))
    ck.check(all(not (o < w + T and o + T > w) for w in sel["offsets"] for o in ref.calib_offsets(len(ctoks), N, T)),
             "no selection window overlaps a calibration sequence")
    stoks = ctoks
    dense_lp_sel = [ref.log_softmax(ref.forward(model, stoks[o:o + T])[:-1]) for o in want_w]

    def np_windows(pm, metric, toks, wins, dense_lp):
        """per selection window: mean KL(dense || pruned), or mean NLL per token (ppl)"""
        out = []
        for i, o in enumerate(wins):
            b = ref.log_softmax(ref.forward(pm, toks[o:o + T])[:-1])
            if metric == "ppl":
                tg = toks[o + 1:o + T]
                out.append(-float(b[np.arange(len(tg)), tg].mean()))
            else:
                ld = dense_lp[i]
                out.append(float((np.exp(ld) * (ld - b)).sum(axis=1).mean()))
        return np.array(out)

    def check_choice(tag, e, metric, toks=None, wins=None, dense_lp=None, margin=0.0):
        toks = stoks if toks is None else toks
        wins = want_w if wins is None else wins
        dense_lp = dense_lp_sel if dense_lp is None else dense_lp
        info = e.get("a_auto")
        if not ck.check(isinstance(info, dict), tag + ": a_auto recorded"):
            return
        cands = [c["a"] for c in info["candidates"]]
        ck.check(cands == want_c, tag + ": candidates", "C %s want %s" % (cands, want_c))
        ck.check(info.get("margin") == margin, tag + ": margin %g recorded" % margin, str(info.get("margin")))
        npv, npw = [], []
        for c in info["candidates"]:
            nr = ref.cfsp_prune(model, st, e["ratio"], a=c["a"])
            counts = [len(k) for k in nr["kept"]]
            ck.check(c["keep_counts"] == counts, "%s a=%g: per-block counts = NumPy's" % (tag, c["a"]),
                     "C %s NumPy %s" % (c["keep_counts"], counts))
            w = np_windows(ref.prune_model(model, nr["kept"]), metric, toks, wins, dense_lp)
            v = math.exp(float(w.mean())) if metric == "ppl" else float(w.mean())
            npv.append(v)
            npw.append(w)
            d = abs(c["value"] - v) / abs(v)
            ck.check(d <= 2e-5, "%s a=%g: %s on the selection windows" % (tag, c["a"], metric),
                     "C %.9g NumPy %.9g (rel %.2g)" % (c["value"], v, d))
            if "same_counts_as_a" in c:
                k = cands.index(c["same_counts_as_a"])
                ck.check(info["candidates"][k]["keep_counts"] == c["keep_counts"] and info["candidates"][k]["value"] == c["value"],
                         "%s a=%g: same counts as a=%g, same value" % (tag, c["a"], c["same_counts_as_a"]))
        best = min(npv)
        win = cands[npv.index(best)]
        lowest = info.get("lowest")
        if not ck.check(lowest in cands, tag + ": the leader recorded", str(lowest)):
            return
        li = cands.index(lowest)
        ck.check(lowest == win or abs(npv[li] - best) <= 1e-5 * abs(best), tag + ": the leader is NumPy's argmin",
                 "C a=%g NumPy a=%g (NumPy values %s)" % (lowest, win, ["%.6f" % x for x in npv]))
        # the paired differences from the leader, and the rule
        scale = float(np.abs(npw[li]).mean())
        tol = 1e-6 if metric == "ppl" else 4e-5 * scale + 1e-9
        dm, dse = [], []
        for k, c in enumerate(info["candidates"]):
            dd = npw[k] - npw[li]
            m, se = float(dd.mean()), float(dd.std(ddof=1) / math.sqrt(len(dd))) if len(dd) > 1 else 0.0
            dm.append(m)
            dse.append(se)
            ok = abs(c["diff_vs_lowest"] - m) <= tol and abs(c["diff_stderr"] - se) <= tol
            ck.check(ok, "%s a=%g: paired difference from the leader and its standard error = NumPy's" % (tag, c["a"]),
                     "C %.3g (%.3g) NumPy %.3g (%.3g)" % (c["diff_vs_lowest"], c["diff_stderr"], m, se))
        chosen = info["chosen"]
        ci = cands.index(chosen)
        passes_loose = lambda k: k == li or (margin > 0 and dm[k] <= margin * dse[k] + tol * (1 + margin))
        fails_tight = lambda k: k != li and not (margin > 0 and dm[k] <= margin * dse[k] - tol * (1 + margin))
        want = next(k for k in range(len(cands)) if k == li or (margin > 0 and dm[k] <= margin * dse[k]))
        ck.check(passes_loose(ci) and all(fails_tight(k) for k in range(ci)),
                 tag + ": the choice is the smallest a within %g standard errors of the leader (NumPy's rule)" % margin,
                 "C a=%g NumPy a=%g (differences %s)" % (chosen, cands[want], ["%.2g/%.2g" % (x, y) for x, y in zip(dm, dse)]))
        if margin == 0:
            ck.check(chosen == lowest, tag + ": margin 0: the choice is the leader")
        # the leader's nearest rival (other counts), by the paired difference in standard errors
        zs = {k: (dm[k] / dse[k] if dse[k] > 0 else (math.inf if dm[k] > 0 else 0.0))
              for k, c in enumerate(info["candidates"]) if c["keep_counts"] != info["candidates"][li]["keep_counts"]}
        rv = info.get("nearest_rival")
        if zs:
            zmin = min(zs.values())
            ok = isinstance(rv, dict) and rv.get("a") in cands and cands.index(rv["a"]) in zs and \
                abs(zs[cands.index(rv["a"])] - zmin) <= 1e-3 * max(1.0, abs(zmin)) and rv.get("within_one_stderr") == (rv["diff_vs_lowest"] <= rv["diff_stderr"])
            ck.check(ok, tag + ": the nearest rival = NumPy's (smallest difference in standard errors)",
                     "C %s NumPy a=%g z=%.3g" % (rv, cands[min(zs, key=zs.get)], zmin))
        else:
            ck.check(rv is None, tag + ": every candidate has the leader's counts: no rival recorded", str(rv))
        ck.check(e.get("a") == chosen, tag + ": the entry records a = the choice")
        ck.check(e["keep_counts"] == info["candidates"][ci]["keep_counts"],
                 tag + ": the pruned model has the choice's counts")
        return cands[want], cands[li]

    for e in r["pruned"]:
        check_choice("kl r=%g" % e["ratio"], e, "kl")
        f = pruned_file(out, e)
        import h5py
        with h5py.File(f, "r") as h:
            raw = h.attrs.get("options")
            o = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)) if raw is not None else {}
        ck.check(o.get("a") == e["a"] and o.get("a_auto") is True, "r=%g: the checkpoint's options record the a it was cut with" % e["ratio"],
                 "options a=%s a_auto=%s" % (o.get("a"), o.get("a_auto")))

    # --a-select ppl, from a run file ("a": "auto")
    out = fresh_dir(os.path.join(args.workdir, "auto_ppl"))
    cfg = os.path.join(args.workdir, "auto_run.json")
    with open(cfg, "w") as fh:
        json.dump({"a": "auto", "a-select": "ppl"}, fh)
    o2 = [x for x in opts(mdir, calib, evalf, out) if x != "auto"]
    i = o2.index("--a")
    o2 = o2[:i] + o2[i + 1:] + ["--config", cfg]
    rc, _ = run_cfsp(args, o2, np_ranks=2)
    if ck.check(rc == 0, "run file {\"a\": \"auto\", \"a-select\": \"ppl\"} -n 2"):
        r2 = load_results(out)
        ck.check(r2["selection"]["metric"] == "ppl", "a-select ppl recorded")
        for e in r2["pruned"]:
            check_choice("ppl r=%g" % e["ratio"], e, "ppl")

    # --select-tokens FILE@A:B
    out = fresh_dir(os.path.join(args.workdir, "auto_sel"))
    rc, _ = run_cfsp(args, opts(mdir, calib, evalf, out, ["--select-tokens", evalf + "@1000:1300", "--select-windows", 8]), np_ranks=2)
    if ck.check(rc == 0, "--select-tokens FILE@1000:1300"):
        s3 = load_results(out)["selection"]
        ck.check(s3["source"] == "--select-tokens" and s3["offsets"] == [0, 64, 128, 192], "its windows: 0, 64, 128, 192 of the slice",
                 str(s3))

    # --a-margin 1 and 1e9 (the smallest candidate), prune --stats on 10 windows of a slice
    etoks = ref.read_tokens(evalf)[2000:2000 + 10 * T]
    swins = [i * T for i in range(10)]
    dense_lp_e = [ref.log_softmax(ref.forward(model, etoks[o:o + T])[:-1]) for o in swins]
    for margin in (1, 1e9):
        out = fresh_dir(os.path.join(args.workdir, "auto_margin_%g" % margin))
        po = ["--stats", os.path.join(res[1][0], "stats.h5"), "--model", mdir, "--eval-tokens", evalf, "--seqlen", T,
              "--eval-windows", 2, "--ratios", ",".join(str(x) for x in RATIOS), "--a", "auto", "--a-grid", ",".join(str(g) for g in GRID),
              "--select-tokens", evalf + "@2000:%d" % (2000 + 10 * T), "--select-windows", 10, "--a-margin", margin, "--output-dir", out]
        rc, _ = run_cfsp(args, po, np_ranks=2, sub="prune")
        if not ck.check(rc == 0, "prune --stats --a-margin %g -n 2" % margin):
            continue
        for e in load_results(out)["pruned"]:
            got = check_choice("margin %g r=%g" % (margin, e["ratio"]), e, "kl", etoks, swins, dense_lp_e, margin)
            if got and margin == 1:
                ck.check(e["a"] <= e["a_auto"]["lowest"], "margin 1 r=%g: the choice is the leader or a smaller temperature" % e["ratio"])
            if got and margin == 1e9:
                ck.check(e["a"] == min(want_c), "margin 1e9 r=%g: the choice is the smallest candidate" % e["ratio"])

    # refusals
    for n in (1, 2):
        out = os.path.join(args.workdir, "bad_flap_n%d" % n)
        shutil.rmtree(out, ignore_errors=True)
        rc, outp = run_cfsp(args, opts(mdir, calib, evalf, out, ["--method", "flap"]), np_ranks=n)
        errs = [l for l in outp.splitlines() if l.startswith("cfsp-mpi: error:")]
        ck.check(rc != 0 and len(errs) == 1 and "only the cfsp method" in errs[0], "-n %d: --a auto --method flap refused" % n,
                 errs[0] if errs else outp[-300:])
        ck.check(not os.path.exists(out), "-n %d: --a auto --method flap: no output directory" % n)
        out = os.path.join(args.workdir, "bad_prune_n%d" % n)
        shutil.rmtree(out, ignore_errors=True)
        po = ["--stats", os.path.join(res[1][0], "stats.h5"), "--model", mdir, "--eval-tokens", evalf, "--seqlen", T,
              "--eval-windows", 2, "--ratios", "0.3", "--a", "auto", "--output-dir", out]
        rc, outp = run_cfsp(args, po, np_ranks=n, sub="prune")
        errs = [l for l in outp.splitlines() if l.startswith("cfsp-mpi: error:")]
        ck.check(rc != 0 and len(errs) == 1 and "--select-tokens" in errs[0], "-n %d: prune --stats --a auto without --select-tokens refused" % n,
                 errs[0] if errs else outp[-300:])
        rc, _ = run_cfsp(args, po + ["--select-tokens", calib + "@0:1024"], np_ranks=n, sub="prune")
        ck.check(rc == 0, "-n %d: the same with --select-tokens succeeds" % n)
    ck.finish()


if __name__ == "__main__":
    main()
