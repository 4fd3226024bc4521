"""cfsp-mpi's perplexity computed the way llama.cpp's llama-perplexity computes it, for the
real-runtime check of `cfsp-mpi export --format gguf` (README "Exporting"; not part of ctest: it
needs a llama.cpp build).

llama-perplexity (tools/perplexity/perplexity.cpp, perplexity()): tokenizes the whole text with
BOS (common_tokenize(ctx, text, true)), cuts n_chunk = n_tokens / n_ctx windows of n_ctx tokens,
replaces the first token of every window by BOS (when the vocabulary adds BOS), and scores only
the second half: the logits at positions first = n_ctx/2 .. n_ctx-2 against the tokens at
first+1 .. n_ctx-1 (n_ctx - 1 - first per window); PPL = exp(sum NLL / count).

This script takes llama.cpp's own token ids (llama-tokenize --ids, same tokenizer and text),
builds exactly those windows as a uint32 token file, lets cfsp-mpi evaluate them (the HF export of
the same pruned model, non-overlapping windows of seqlen = n_ctx, --dump-logits: cfsp-mpi's own
float32 logits) and scores the same positions in float64. It also reports cfsp-mpi's own
all-positions NLL recomputed from the dumped logits against its results.json (a check of the
script), and how llama.cpp's ids compare with a reference tokenization (the shared .u32.bin).
With --h5 FILE instead of --model (flap: its down_proj bias has no HF form, see README), the
logits come from the NumPy reference tests/ref/cfsp_ref.py (float64) on the HDF5 weights.

  python3 tests/py/llama_ppl_compare.py --bin build/cfsp-mpi --model OUT_HF --ids ids.txt
      --ctx 256 --bos 1 --workdir /tmp/cmp [--llama-log perplexity.log] [--ref-tokens X.u32.bin]
      [--json out.json]
"""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np


def log_softmax_nll(logits, targets):
    """-log softmax(logits)[target] per row, float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return lse - x[np.arange(len(targets)), targets]


def load_h5_reference(path):
    """the pruned model of a cfsp-mpi HDF5 file as a cfsp_ref.Model (float64 weights, flap bias)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ref"))
    global cfsp_ref
    import cfsp_ref  # noqa: F401
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common
    cfg, t = common.h5_model_tensors(path)
    return cfsp_ref.model_from_tensors(cfg, t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", help="the HF export (cfsp-mpi export --format hf)")
    ap.add_argument("--h5", help="instead of --model: a pruned HDF5 file evaluated by tests/ref/cfsp_ref.py")
    ap.add_argument("--ids", required=True, help="llama-tokenize --ids output for the text")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--bos", type=int, default=1, help="BOS id written at the start of every window (-1: none)")
    ap.add_argument("--chunks", type=int, default=-1, help="at most this many windows (llama-perplexity --chunks)")
    ap.add_argument("--slice", type=int, default=200, help="windows per cfsp-mpi run (bounds the logits dump)")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--llama-log", help="llama-perplexity output: compare its running and final PPL")
    ap.add_argument("--ref-tokens", help="a reference tokenization of the same text (uint32 file)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OPENBLAS_NUM_THREADS="1")

    if bool(a.model) == bool(a.h5):
        sys.exit("give --model (cfsp-mpi) or --h5 (NumPy reference)")
    ref_model = load_h5_reference(a.h5) if a.h5 else None
    ids = np.array(json.loads(open(a.ids).read().strip().splitlines()[-1]), dtype=np.int64)
    T = a.ctx
    n_chunk = len(ids) // T if a.chunks < 0 else min(a.chunks, len(ids) // T)
    win = ids[:n_chunk * T].reshape(n_chunk, T).copy()
    targets = win.copy()                       # scoring uses the original tokens (BOS only in the input)
    if a.bos >= 0:
        win[:, 0] = a.bos
    tokfile = os.path.join(a.workdir, "windows.u32.bin")
    win.astype("<u4").tofile(tokfile)
    first = T // 2
    nll_half, count, nll_all = 0.0, 0, 0.0
    running = []
    V = None
    for w0 in range(0, n_chunk, a.slice):
        w1 = min(n_chunk, w0 + a.slice)
        if ref_model is not None:
            for w in range(w0, w1):
                lg = cfsp_ref.forward(ref_model, win[w])
                nll_all += log_softmax_nll(lg[:T - 1], win[w, 1:]).sum()
                h = log_softmax_nll(lg[first:T - 1], targets[w, first + 1:T])
                nll_half += h.sum()
                count += len(h)
                running.append(float(np.exp(nll_half / count)))
            V = ref_model.V
            continue
        out = os.path.join(a.workdir, "run_%d" % w0)
        dump = os.path.join(a.workdir, "logits_%d.f32" % w0)
        cmd = [a.mpiexec, "--oversubscribe", "-n", str(a.np), a.bin, "--model", a.model, "--calib-tokens", tokfile,
               "--nsamples", "1", "--seqlen", str(T), "--eval-tokens", "%s@%d:%d" % (tokfile, w0 * T, w1 * T),
               "--output-dir", out, "--save-stats", "0", "--dump-logits", dump, "--force"]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        if p.returncode != 0:
            sys.exit("cfsp-mpi failed:\n" + p.stdout.decode()[-3000:])
        res = json.load(open(os.path.join(out, "results.json")))
        lg = np.fromfile(dump, dtype="<f4")
        V = lg.size // ((w1 - w0) * T)
        lg = lg.reshape(w1 - w0, T, V)
        all_w = 0.0
        for k in range(w1 - w0):
            w = w0 + k
            nll = log_softmax_nll(lg[k, :T - 1], win[w, 1:])          # cfsp-mpi's own convention (input ids)
            all_w += nll.sum()
            h = log_softmax_nll(lg[k, first:T - 1], targets[w, first + 1:T])
            nll_half += h.sum()
            count += len(h)
            running.append(float(np.exp(nll_half / count)))
        nll_all += all_w
        rel = abs(all_w - res["dense"]["nll_sum"]) / abs(res["dense"]["nll_sum"])
        if rel > 1e-6:
            sys.exit("script check failed: dumped logits give NLL %.10g, cfsp-mpi results.json %.10g" % (all_w, res["dense"]["nll_sum"]))
        os.remove(dump)
    ppl = float(np.exp(nll_half / count))
    out = {"n_ctx": T, "chunks": n_chunk, "scored_tokens": count, "nll_sum": nll_half, "ppl": ppl, "vocab": V,
           "llama_cpp_tokens": int(len(ids)), "cfsp_all_positions_ppl": float(np.exp(nll_all / (n_chunk * (T - 1))))}
    print("cfsp-mpi, llama-perplexity's windows: %d chunks of %d, %d scored tokens, PPL = %.4f" % (n_chunk, T, count, ppl))
    if a.llama_log:
        text = open(a.llama_log, errors="replace").read()
        m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
        chunks = [float(x) for x in re.findall(r"\[(?:\d+)\]([0-9.]+),", text)]
        lp = None
        if m:
            lp, err = float(m.group(1)), m.group(2)
            out["llama_cpp_ppl"] = lp
            out["llama_cpp_ppl_stderr"] = float(err)
            out["llama_cpp_ppl_from"] = "final estimate line"
        elif len(chunks) == n_chunk:
            # llama-perplexity's log is written by a logging thread, and its last lines are sometimes
            # lost at exit; the running PPL after the last window is the same figure (exp(nll / count))
            lp, err = chunks[-1], "?"
            out["llama_cpp_ppl"] = lp
            out["llama_cpp_ppl_from"] = "running PPL after the last window (the final log line was lost)"
        if lp is not None:
            out["rel_diff"] = abs(lp - ppl) / ppl
            print("llama.cpp llama-perplexity: PPL = %.4f +/- %s (%s); relative difference %.3e" % (lp, err, out["llama_cpp_ppl_from"], out["rel_diff"]))
        else:
            sys.exit("%s: no final PPL and %d of %d running values" % (a.llama_log, len(chunks), n_chunk))
        if chunks:
            n = min(len(chunks), len(running))
            d = [abs(chunks[i] - running[i]) / running[i] for i in range(n)]
            out["running_ppl_max_rel_diff"] = max(d)
            out["running_ppl_compared"] = n
            print("running PPL after each of %d chunks: max relative difference %.3e (llama.cpp prints 4 decimals)" % (n, max(d)))
    if a.ref_tokens:
        ref = np.fromfile(a.ref_tokens, dtype="<u4").astype(np.int64)
        n = min(len(ref), len(ids))
        diff = np.nonzero(ref[:n] != ids[:n])[0]
        out["ref_tokens"] = int(len(ref))
        out["first_token_difference"] = int(diff[0]) if len(diff) else (None if len(ref) == len(ids) else n)
        out["tokens_equal"] = bool(len(ref) == len(ids) and not len(diff))
        print("llama.cpp's tokens vs %s: %d vs %d ids, %s" % (os.path.basename(a.ref_tokens), len(ids), len(ref),
              "identical" if out["tokens_equal"] else "first difference at %s" % out["first_token_difference"]))
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
