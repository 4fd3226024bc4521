"""Distribution metrics against the dense model (issue 18, --kl): for every pruned model of a sweep
(cfsp and flap, with its bias, at two ratios) results.json's vs_dense — KL(dense || pruned) per
position: mean, median, 99th percentile, max; top-1 agreement; perplexity ratio; the position count —
against a NumPy recomputation in float64 from the dense model and the pruned checkpoint's kept
channels (and flap's bias), on stories260K (real) and a generated untied model of odd shapes.

    /usr/bin/python3 tests/py/test_kl.py --bin build/cfsp-mpi --mkmodel build/cfsp-mpi-mkmodel \
        --shared /work/shared --workdir /tmp/kl

Checks:
  - the figures at -n 1, 2 and 3 are identical (the JSON numbers bit for bit);
  - KL mean / median / p99 / max within 2e-5 relative + 1e-7 of NumPy's (C computes the logits in
    float32: their error, ~1e-5 relative, moves each position's KL by about that fraction of its
    size; measured at most 1e-6 relative: the bound is 20x that), percentiles with NumPy's default
    (linear) method; ppl ratio within 1e-4 relative;
  - top-1 agreement: the C count differs from NumPy's by at most the number of positions whose
    dense or pruned top two logits lie within 1e-3 of each other (an argmax float32 may flip);
  - kl_per_window (each window's mean) within 2e-5 relative, kl_window_stderr (their standard
    error, ddof 1) within 1e-4 relative;
  - results.md carries the figures (the same values as results.json, as printed), the SVG is XML
    with a second panel (KL vs ratio) when there are figures and one panel with --kl 0;
  - --kl 0 and --eval-dense 0: vs_dense null; no scratch file remains in --kl-dir after the run;
  - --eval-score-from 13 (odd, of seqlen 32: llama.cpp's llama-perplexity scores from seqlen/2):
    the dense perplexity (nll_sum, ntokens) and every pruned model's perplexity and vs_dense figures
    over the logits at positions 13..30 of each window only, against NumPy on those positions (same
    bounds as above), identical at -n 1 and -n 2; --eval-score-from 31 (> seqlen - 2) refused at
    -n 1 and -n 2 with one line naming the option, no output;
  - --kl-dir that does not exist, and a tmpfs too small for the dense logits with --kl 1 (where
    mount is allowed; skipped saying so otherwise): exit != 0 at -n 1 and -n 2, one error line
    naming the directory, no output file; the corrected command succeeds; the same tmpfs with
    --kl auto (the default): one warning naming it, no figures, the job succeeds.
"""

import json
import math
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import numpy as np

from common import (Checker, fresh_dir, load_results, mkmodel, model_dir, parse_args, pruned_file,
                    ref, run_cfsp, token_file, write_tokens)

RATIOS = "0.3,0.55"
SEQLEN, WINDOWS = 32, 3


def base_opts(mdir, calib, evalf, out):
    return ["--model", mdir, "--calib-tokens", calib, "--eval-tokens", evalf, "--nsamples", 4,
            "--seqlen", SEQLEN, "--eval-windows", WINDOWS, "--ratios", RATIOS, "--method", "cfsp,flap",
            "--output-dir", out, "--compute", "fp32"]


def ref_figures(model, pm, tokens, P=0):
    """NumPy on the logits at positions P..SEQLEN-2 of every window (P = 0: every position that has a
    target): per-position KL(dense || pruned), agreement, ambiguous positions, NLL sums, ppl ratio."""
    _, _, _, ld = ref.perplexity(model, tokens, SEQLEN, windows=WINDOWS, return_logits=True)
    _, _, _, lp = ref.perplexity(pm, tokens, SEQLEN, windows=WINDOWS, return_logits=True)
    ld = ld[:, P:-1].reshape(-1, ld.shape[-1])
    lp = lp[:, P:-1].reshape(-1, lp.shape[-1])
    tg = np.asarray(tokens[:WINDOWS * SEQLEN], dtype=np.int64).reshape(WINDOWS, SEQLEN)[:, P + 1:].reshape(-1)
    a, b = ref.log_softmax(ld), ref.log_softmax(lp)
    kl = (np.exp(a) * (a - b)).sum(axis=1)
    top_d, top_p = ld.argmax(axis=1), lp.argmax(axis=1)
    nll_d, nll_p = float(-a[np.arange(len(tg)), tg].sum()), float(-b[np.arange(len(tg)), tg].sum())

    def margin(x):
        s = np.sort(x, axis=1)
        return s[:, -1] - s[:, -2]
    amb = int(((margin(ld) < 1e-3) | (margin(lp) < 1e-3)).sum())
    return {"kl": kl, "agree": int((top_d == top_p).sum()), "amb": amb, "n": len(kl), "nll_d": nll_d, "nll_p": nll_p,
            "ppl_ratio": math.exp((nll_p - nll_d) / len(kl))}


def check_figures(ck, tag, v, R):
    """results.json's vs_dense v against the NumPy figures R of ref_figures (the bounds of the docstring)"""
    kl = R["kl"]
    want = {"kl_mean": float(kl.mean()), "kl_median": float(np.percentile(kl, 50)),
            "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max())}
    for k, w in want.items():
        d = abs(v[k] - w)
        ck.check(d <= 2e-5 * abs(w) + 1e-7, "%s: %s" % (tag, k), "C %.9g NumPy %.9g (rel %.2g)" % (v[k], w, d / max(abs(w), 1e-30)))
    c_agree = round(v["top1_agreement"] * R["n"])
    ck.check(abs(c_agree - R["agree"]) <= R["amb"], tag + ": top-1 agreement",
             "C %d NumPy %d of %d (%d near-tied positions)" % (c_agree, R["agree"], R["n"], R["amb"]))
    d = abs(v["ppl_ratio"] - R["ppl_ratio"]) / R["ppl_ratio"]
    ck.check(d <= 1e-4, tag + ": ppl ratio", "C %.6f NumPy %.6f" % (v["ppl_ratio"], R["ppl_ratio"]))
    ck.check(0 <= v["kl_median"] <= v["kl_p99"] <= v["kl_max"], tag + ": median <= p99 <= max")
    pw = kl.reshape(WINDOWS, -1).mean(axis=1)
    d = float(np.max(np.abs(np.asarray(v["kl_per_window"]) - pw) / np.maximum(pw, 1e-30)))
    ck.check(len(v["kl_per_window"]) == WINDOWS and d <= 2e-5, tag + ": kl_per_window", "rel %.2g" % d)
    se = float(np.std(pw, ddof=1) / np.sqrt(WINDOWS))
    ck.check(abs(v["kl_window_stderr"] - se) <= 1e-4 * se + 1e-9, tag + ": kl_window_stderr",
             "C %.6g NumPy %.6g" % (v["kl_window_stderr"], se))


def check_score_from(ck, args, mdir, calib, evalf, P=13):
    """--eval-score-from P against NumPy on the positions P..SEQLEN-2 of every window"""
    model = ref.load_model(mdir)
    tokens = ref.read_tokens(evalf)
    res = {}
    for n in (1, 2):
        out = fresh_dir(os.path.join(args.workdir, "score_from_n%d" % n))
        rc, _ = run_cfsp(args, base_opts(mdir, calib, evalf, out) + ["--eval-score-from", P], np_ranks=n)
        if not ck.check(rc == 0, "--eval-score-from %d -n %d: run" % (P, n)):
            return
        res[n] = load_results(out)
    strip = lambda r: ([r["dense"][k] for k in ("ppl", "nll_sum", "ntokens")],
                       [(e["method"], e["ratio"], e["ppl"], e["vs_dense"]) for e in r["pruned"]])
    ck.check(strip(res[2]) == strip(res[1]), "--eval-score-from %d: dense and pruned figures at -n 2 identical to -n 1" % P)
    r = res[1]
    T = SEQLEN
    n_scored = WINDOWS * (T - 1 - P)
    d = r["dense"]
    ck.check(d["ntokens"] == n_scored, "--eval-score-from %d: dense ntokens = windows x (seqlen - 1 - P)" % P,
             "C %s want %d" % (d["ntokens"], n_scored))
    for e in r["pruned"]:
        tag = "--eval-score-from %d %s r=%g" % (P, e["method"], e["ratio"])
        v = e["vs_dense"]
        if not ck.check(isinstance(v, dict), tag + ": vs_dense present"):
            continue
        f = ref.read_pruned_h5(pruned_file(os.path.join(args.workdir, "score_from_n1"), e), model.L)
        R = ref_figures(model, ref.prune_model(model, f["kept"], f["bias"]), tokens, P)
        ck.check(abs(d["nll_sum"] - R["nll_d"]) <= 1e-5 * abs(R["nll_d"]), tag + ": dense NLL sum vs NumPy",
                 "C %.9g NumPy %.9g" % (d["nll_sum"], R["nll_d"]))
        ppl_p = math.exp(R["nll_p"] / R["n"])
        ck.check(v["positions"] == R["n"] == n_scored, tag + ": positions", "C %s want %d" % (v["positions"], n_scored))
        ck.check(abs(e["ppl"] - ppl_p) <= 1e-4 * ppl_p, tag + ": perplexity over the scored positions", "C %.6f NumPy %.6f" % (e["ppl"], ppl_p))
        check_figures(ck, tag, v, R)
    for n in (1, 2):
        out = os.path.join(args.workdir, "score_from_bad_n%d" % n)
        rc, outp = run_cfsp(args, base_opts(mdir, calib, evalf, out) + ["--eval-score-from", T - 1], np_ranks=n)
        errs = [l for l in outp.splitlines() if "error" in l.lower() or "eval-score-from" in l]
        ck.check(rc != 0 and len(errs) == 1 and "eval-score-from" in errs[0] and str(T - 2) in errs[0],
                 "-n %d --eval-score-from %d: refused with one line naming it and the bound" % (n, T - 1), outp[-400:])
        ck.check(not os.path.exists(out) or os.listdir(out) == [], "-n %d --eval-score-from %d: no output" % (n, T - 1))


def check_model(ck, args, label, mdir, calib, evalf):
    model = ref.load_model(mdir)
    tokens = ref.read_tokens(evalf)
    runs = {}
    for n in (1, 2, 3):
        out = fresh_dir(os.path.join(args.workdir, "%s_n%d" % (label, n)))
        kdir = fresh_dir(os.path.join(args.workdir, "%s_n%d_kl" % (label, n)))
        rc, _ = run_cfsp(args, base_opts(mdir, calib, evalf, out) + ["--kl-dir", kdir], np_ranks=n)
        if not ck.check(rc == 0, "%s -n %d: run with --kl (the default)" % (label, n)):
            return
        ck.check(os.listdir(kdir) == [], "%s -n %d: no scratch file left in --kl-dir" % (label, n), str(os.listdir(kdir)))
        runs[n] = (out, load_results(out))
    figs = {n: [(e["method"], e["ratio"], e["vs_dense"]) for e in r["pruned"]] for n, (_, r) in runs.items()}
    for n in (2, 3):
        ck.check(figs[n] == figs[1], "%s: vs_dense at -n %d identical to -n 1" % (label, n),
                 "" if figs[n] == figs[1] else "%s vs %s" % (figs[n], figs[1]))
    out, res = runs[1]
    for e in res["pruned"]:
        tag = "%s %s r=%g" % (label, e["method"], e["ratio"])
        v = e["vs_dense"]
        if not ck.check(isinstance(v, dict), tag + ": vs_dense present"):
            continue
        f = ref.read_pruned_h5(pruned_file(out, e), model.L)
        pm = ref.prune_model(model, f["kept"], f["bias"])
        R = ref_figures(model, pm, tokens)
        ck.check(v["positions"] == R["n"] == WINDOWS * (SEQLEN - 1), tag + ": positions",
                 "C %s ref %d" % (v["positions"], R["n"]))
        check_figures(ck, tag, v, R)
    # results.md and the plot
    md = open(os.path.join(out, "results.md")).read()
    for e in res["pruned"]:
        v = e["vs_dense"]
        row = "| %s | %g |" % (e["method"], e["ratio"])
        line = next((l for l in md.splitlines() if l.startswith(row)), "")
        cells = "%.4f | %.5f | %.5f | %.4f | %.4f |" % (v["ppl_ratio"], v["kl_mean"], v["kl_median"], v["kl_p99"], v["top1_agreement"])
        ck.check(cells in line, "%s: results.md row %s %g has the figures" % (label, e["method"], e["ratio"]), line)
    svg = ET.parse(os.path.join(out, "ppl_vs_ratio.svg")).getroot()
    texts = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    ck.check(any("KL" in t for t in texts), label + ": the SVG has the KL panel")
    lines = [p for p in svg.iter("{http://www.w3.org/2000/svg}polyline")]
    ck.check(len(lines) == 4, label + ": the SVG has a line per method and panel (2 x 2)", str(len(lines)))
    return model


def main():
    args = parse_args(__doc__)
    ck = Checker("kl")
    S = "stories260K"
    mdir = model_dir(args, S)
    calib = token_file(args, S, "tinystories_val_head")
    evalf = token_file(args, S, "wikitext2_validation.joined")
    check_model(ck, args, S, mdir, calib, evalf)
    check_score_from(ck, args, mdir, calib, evalf)

    # a generated untied model of odd shapes (vocabulary 301, head_dim != hidden/heads)
    gdir = os.path.join(args.workdir, "gen_odd")
    if ck.check(mkmodel(args, gdir, 40, 53, 3, 3, 1, 301, dtype="f32", head_dim=12, seed=7, tie=0),
                "generate an untied model of odd shapes"):
        toks = os.path.join(args.workdir, "gen_tokens.u32.bin")
        write_tokens(toks, 4096, 301, 3)
        check_model(ck, args, "gen_odd", gdir, toks, toks)

    # --kl 0 / --eval-dense 0: no figures; one panel
    for extra, what in ((["--kl", "0"], "--kl 0"), (["--eval-dense", "0"], "--eval-dense 0")):
        out = fresh_dir(os.path.join(args.workdir, "off_" + what.strip("-").replace(" ", "_")))
        rc, _ = run_cfsp(args, base_opts(mdir, calib, evalf, out) + extra, np_ranks=2)
        if ck.check(rc == 0, what + ": run"):
            res = load_results(out)
            ck.check(all(e["vs_dense"] is None for e in res["pruned"]), what + ": vs_dense null")
            svg = ET.parse(os.path.join(out, "ppl_vs_ratio.svg")).getroot()
            texts = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]
            ck.check(not any("KL" in t for t in texts), what + ": the SVG has one panel")

    # a --kl-dir that does not exist; a tmpfs too small for the dense logits
    need = WINDOWS * (SEQLEN - 1) * 512 * 4                      # stories260K: vocabulary 512
    cases = [("missing", os.path.join(args.workdir, "no_such_dir"), None)]
    small = os.path.join(args.workdir, "small_tmpfs")
    os.makedirs(small, exist_ok=True)
    subprocess.run(["umount", small], stderr=subprocess.DEVNULL)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % (need // 2), "tmpfs", small],
                             stderr=subprocess.PIPE).returncode == 0
    if mounted:
        cases.append(("small tmpfs with --kl 1", small, ["--kl", "1"]))
    else:
        ck.note("tmpfs cases skipped: mount -t tmpfs is not allowed here")
    for n in (1, 2):
        if mounted:          # --kl auto (the default): a warning, no figures, the job succeeds
            out = fresh_dir(os.path.join(args.workdir, "auto_small_n%d" % n))
            rc, outp = run_cfsp(args, base_opts(mdir, calib, evalf, out) + ["--kl-dir", small, "--force"], np_ranks=n)
            warn = [l for l in outp.splitlines() if "warning: --kl auto" in l]
            ok = rc == 0 and len(warn) == 1 and small in warn[0]
            ck.check(ok, "-n %d --kl auto, --kl-dir too small: one warning naming it, the job succeeds" % n, warn[0] if warn else outp[-400:])
            if ok:
                ck.check(all(e["vs_dense"] is None for e in load_results(out)["pruned"]), "-n %d --kl auto, too small: vs_dense null" % n)
        for what, kdir, extra in cases:
            out = os.path.join(args.workdir, "bad_kl_dir_n%d" % n)
            if os.path.exists(out):
                subprocess.run(["rm", "-rf", out])
            rc, outp = run_cfsp(args, base_opts(mdir, calib, evalf, out) + ["--kl-dir", kdir] + (extra or []), np_ranks=n)
            errs = [l for l in outp.splitlines() if l.startswith("cfsp-mpi: error:")]
            ck.check(rc != 0 and len(errs) == 1 and kdir in errs[0], "-n %d --kl-dir %s: refused with one line naming it" % (n, what),
                     errs[0] if errs else outp[-500:])
            left = sorted(os.listdir(out)) if os.path.isdir(out) else []
            ck.check(left == [], "-n %d --kl-dir %s: no output left" % (n, what), str(left))
            fixed = fresh_dir(os.path.join(args.workdir, "fixed_kl_dir"))
            rc, _ = run_cfsp(args, base_opts(mdir, calib, evalf, out) + ["--kl-dir", fixed, "--force"], np_ranks=n)
            ck.check(rc == 0, "-n %d --kl-dir %s: the corrected command succeeds" % (n, what))
    if mounted:
        subprocess.run(["umount", small])
    ck.finish()


if __name__ == "__main__":
    main()
