"""cfsp-mpi's distribution metrics (--kl) against llama.cpp's `llama-perplexity --kl-divergence`, for
the real-runtime check of issue 18 (mpi_scripts/llamacpp_check.sh --kl; not part of ctest: it needs
a llama.cpp build).

llama.cpp (tools/perplexity/perplexity.cpp, kl_divergence()): the dense GGUF's run with
--kl-divergence-base FILE stores, per scored position, the dense log-probabilities (quantized to
16 bits per word, with the row's maximum and log-sum-exp); a pruned GGUF's run with --kl-divergence
reads them back and reports, over the same positions (the second half of every window, BOS first),
the mean KL(base || model) per token, its median and percentiles (sorted values, linear
interpolation), the maximum, the fraction of positions whose top token is the base's ("Same top
p"), PPL(Q), and PPL(base) with the ratio PPL(Q)/PPL(base). Its PPL(base) is not the dense model's
perplexity: the base file stores each position's log-probabilities from max_logit - 16 up (a logit
further below is stored as that floor; log_softmax() of the base writer), so a target the dense model
puts more than 16 nats below its top word counts with a smaller NLL. This script recomputes PPL(base)
from the base file itself to show that (and how many targets sit at the floor), and compares
cfsp-mpi's perplexity ratio with PPL(Q) over the dense perplexity of llama.cpp's own ordinary run
(the base writer's "Final estimate", the same windows and positions).

cfsp-mpi computes the same figures itself (results.json vs_dense of every pruned entry) when it
evaluates exactly those windows (llama.cpp's token ids, BOS first: tests/py/llama_ppl_compare.py's
windows.u32.bin) with --eval-score-from n_ctx/2 --kl 1. This script reads both, checks that the
pruned models cfsp-mpi evaluated are the ones exported (every dataset of the two HDF5 files equal,
bit for bit) and that both counted the same positions, and writes the figures side by side.

  python3 tests/py/llama_kl_compare.py --results RUN/results.json --exported DIR_OF_EXPORTED_H5
      --base-log DENSE_BASE_RUN.log --base-file dense.kld --case cfsp:LOG [--case flap:LOG ...] --json out.json
"""
import argparse
import json
import os
import re
import sys

import h5py
import numpy as np

FIGS = [("kl_mean", r"Mean\s+KLD:\s+([-0-9.eE+]+)"), ("kl_median", r"Median\s+KLD:\s+([-0-9.eE+]+)"),
        ("kl_p99", r"99\.0%\s+KLD:\s+([-0-9.eE+]+)"), ("kl_max", r"Maximum KLD:\s+([-0-9.eE+]+)"),
        ("top1_agreement", r"Same top p:\s+([-0-9.eE+]+)"), ("ppl", r"Mean PPL\(Q\)\s+:\s+([-0-9.eE+]+)"),
        ("ppl_base", r"Mean PPL\(base\)\s+:\s+([-0-9.eE+]+)"),
        ("ppl_ratio_own_base", r"Mean PPL\(Q\)/PPL\(base\)\s+:\s+([-0-9.eE+]+)")]
COMPARED = ("kl_mean", "kl_median", "kl_p99", "kl_max", "top1_agreement", "ppl", "ppl_ratio")


def base_file_ppl(path):
    """PPL(base) as llama.cpp's --kl-divergence computes it from its base file (perplexity.cpp:
    "_logits_", n_ctx u32, n_vocab i32, n_chunk i32, the tokens i32 [n_chunk * n_ctx], then per
    window the n_ctx - 1 - n_ctx/2 scored positions, each 2*((n_vocab+1)/2) + 4 uint16: the floats
    scale and min_log_prob, then one uint16 per word; log p = scale * q + min_log_prob), and the
    number of scored targets stored at the floor (q = 0)"""
    raw = open(path, "rb").read()
    if raw[:8] != b"_logits_":
        sys.exit("%s: not a llama.cpp log-probability file" % path)
    n_ctx, n_vocab, n_chunk = np.frombuffer(raw, "<u4", 1, 8)[0], *np.frombuffer(raw, "<i4", 2, 12)
    toks = np.frombuffer(raw, "<i4", n_chunk * n_ctx, 20).reshape(n_chunk, n_ctx)
    first = n_ctx // 2
    npos, nv = n_ctx - 1 - first, 2 * ((n_vocab + 1) // 2) + 4
    off = 20 + 4 * n_chunk * n_ctx
    if len(raw) != off + 2 * n_chunk * npos * nv:
        sys.exit("%s: %d bytes, expected %d" % (path, len(raw), off + 2 * n_chunk * npos * nv))
    q = np.frombuffer(raw, "<u2", n_chunk * npos * nv, off).reshape(n_chunk * npos, nv)
    hdr = np.frombuffer(q[:, :4].tobytes(), "<f4").reshape(-1, 2)
    tgt = toks[:, first + 1:].reshape(-1)
    qt = q[np.arange(len(tgt)), 4 + tgt].astype(np.float64)
    # llama.cpp sums float32 NLLs in double
    nll = -(hdr[:, 0].astype(np.float32) * qt.astype(np.float32) + hdr[:, 1])
    return float(np.exp(nll.astype(np.float64).mean())), int((qt == 0).sum()), int(len(tgt))


def llama_figures(log):
    text = open(log, errors="replace").read()
    out = {}
    for k, pat in FIGS:
        m = re.search(pat, text)
        if not m:
            sys.exit("%s: no '%s' line (llama-perplexity --kl-divergence output cut short?)" % (log, k))
        out[k] = float(m.group(1)) / (100.0 if k == "top1_agreement" else 1.0)   # llama.cpp prints a percentage
    # llama.cpp prints one row per window, numbered from 1
    chunks = re.findall(r"^\s*(\d+)\s+[0-9.]+\s+", text, re.M)
    out["windows"] = int(chunks[-1]) if chunks else None
    return out


def same_datasets(a, b):
    """every dataset of HDF5 files a and b: the same names, shapes, dtypes and bytes"""
    def items(f):
        d = {}
        f.visititems(lambda n, o: d.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
        return d
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        da, db = items(fa), items(fb)
        if sorted(da) != sorted(db):
            return False, "dataset names differ"
        for n in da:
            x, y = da[n][()], db[n][()]
            if x.dtype != y.dtype or x.shape != y.shape or np.asarray(x).tobytes() != np.asarray(y).tobytes():
                return False, "dataset %s differs" % n
        return True, "%d datasets equal" % len(da)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, help="results.json of the cfsp-mpi run on llama.cpp's windows")
    ap.add_argument("--exported", required=True, help="directory of the HDF5 files that were exported to GGUF")
    ap.add_argument("--base-log", required=True, help="the dense run with --kl-divergence-base (its Final estimate: PPL)")
    ap.add_argument("--base-file", required=True, help="the base file it wrote")
    ap.add_argument("--case", action="append", required=True, help="METHOD:LOG (llama-perplexity --kl-divergence output)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    res = json.load(open(a.results))
    run_dir = os.path.dirname(os.path.abspath(a.results))
    opts = res.get("options", {})
    T, P = opts.get("seqlen"), opts.get("eval_score_from")
    nwin = res["dense"].get("windows")
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", open(a.base_log, errors="replace").read())
    if not m:
        sys.exit("%s: no 'Final estimate: PPL' line" % a.base_log)
    dense_llama = float(m.group(1))
    pb, floor, npos = base_file_ppl(a.base_file)
    out = {"n_ctx": T, "eval_score_from": P, "windows": nwin, "dense_ppl_llama_cpp": dense_llama, "dense_ppl_cfsp_mpi": res["dense"]["ppl"],
           "ppl_base_from_base_file": pb, "targets_at_the_floor": floor, "scored_positions": npos, "cases": []}
    print("dense PPL: llama.cpp %.4f (its ordinary run, 4 decimals) cfsp-mpi %.4f; PPL(base) recomputed from the base file %.6f "
          "(%d of %d targets at the floor max_logit - 16)" % (dense_llama, res["dense"]["ppl"], pb, floor, npos))
    for c in a.case:
        method, log = c.split(":", 1)
        e = next((x for x in res["pruned"] if x["method"] == method), None)
        if e is None or not e.get("vs_dense"):
            sys.exit("%s: no %s entry with vs_dense" % (a.results, method))
        mine = os.path.join(run_dir, os.path.basename(e["file"]))
        theirs = os.path.join(a.exported, os.path.basename(e["file"]))
        same, why = same_datasets(mine, theirs)
        ll = llama_figures(log)
        v = e["vs_dense"]
        lc = {k: ll[k] for k in COMPARED if k in ll}
        lc["ppl_ratio"] = ll["ppl"] / dense_llama            # PPL(Q) over llama.cpp's own dense perplexity
        mine_f = {k: v[k] for k in COMPARED if k in v}
        mine_f["ppl"] = e["ppl"]
        row = {"method": method, "ratio": e["ratio"], "same_weights_as_exported": same, "weights_check": why,
               "positions": v["positions"], "llama_cpp_windows": ll["windows"], "llama_cpp": lc, "cfsp_mpi": mine_f,
               "llama_cpp_ppl_base": ll["ppl_base"], "llama_cpp_ppl_ratio_own_base": ll["ppl_ratio_own_base"]}
        row["rel_diff"] = {k: abs(lc[k] - mine_f[k]) / max(abs(mine_f[k]), 1e-30) for k in COMPARED if k != "top1_agreement"}
        row["top1_abs_diff"] = abs(row["llama_cpp"]["top1_agreement"] - row["cfsp_mpi"]["top1_agreement"])
        out["cases"].append(row)
        print("%s r=%g: KL mean llama.cpp %.6f cfsp-mpi %.6f (rel %.2e); median %.6f / %.6f; p99 %.6f / %.6f; "
              "top-1 %.4f / %.4f; PPL %.4f / %.4f; ratio %.6f / %.6f (llama.cpp's own base: %.6f); weights %s" % (
                  method, e["ratio"], ll["kl_mean"], v["kl_mean"], row["rel_diff"]["kl_mean"], ll["kl_median"], v["kl_median"],
                  ll["kl_p99"], v["kl_p99"], ll["top1_agreement"], v["top1_agreement"], ll["ppl"], e["ppl"], lc["ppl_ratio"], v["ppl_ratio"],
                  ll["ppl_ratio_own_base"], why))
    json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
