"""bf16 compute (--compute bf16) against the NumPy reference with bf16-rounded operands
(cfsp_ref.set_products("bf16"): both operands of every matrix product rounded to bfloat16, round to
nearest even, the products exact), and the --compute choice.

    /usr/bin/python3 tests/py/test_bf16.py --bin build/cfsp-mpi --mkmodel build/cfsp-mpi-mkmodel \
        --shared /work/shared --workdir /tmp/bf16 [--np 2]

Why the bounds look like this. A value that lies within float32 rounding of a bfloat16 rounding
boundary rounds one way in cfsp-mpi and the other way in the float64 reference; each such flip moves
an operand by one bf16 step (2^-8 relative) and, through later blocks, the logits of a deep model by
as much as the bf16 rounding itself (measured on stories260K: a 2e-7 relative jitter of the
reference's operands moves its logits by a mean 0.02, about the distance from the fp32 logits).
So elementwise parity is tested where no block lies behind the flips: on one-block generated
checkpoints (logits) and on block 0 of the shared models (its statistics). There the distance of
cfsp-mpi from the bf16 reference must be under 1/20 (logits) or 1/10 (statistics) of the distance
(relative L1 of the channel norms) from the same reference computed with the wrong arithmetic: fp32 products, weights not rounded,
attention products not rounded (negative controls; each is computed here, so the bound is relative
to what getting it wrong would look like). Deeper results are compared as whole-model figures.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import common as C  # noqa: E402
from common import ref  # noqa: E402

T, W = 128, 4


def with_products(mode, fn):
    old = ref.PRODUCTS
    ref.set_products(mode)
    try:
        return fn()
    finally:
        ref.set_products(old)


def wrong_variants(fn):
    """fn() evaluated with three wrong arithmetics: {name: result}"""
    out = {"fp32 products": with_products("fp32", fn)}
    exact_mm, rnd = ref.mm, ref.bf16_round
    try:
        ref.set_products("bf16")
        ref.mm = lambda a, b: rnd(a) @ b
        out["weights not rounded"] = fn()
        orig_attn = ref.attention

        def attn_exact(model, ly, x, cos, sin):   # projections rounded, QK^T and PV not
            ref.mm = lambda a, b: a @ b if a.ndim == 3 else rnd(a) @ rnd(b)
            try:
                return orig_attn(model, ly, x, cos, sin)
            finally:
                ref.mm = exact_mm
        ref.mm = exact_mm
        ref.attention = attn_exact
        try:
            out["attention products not rounded"] = fn()
        finally:
            ref.attention = orig_attn
    finally:
        ref.mm = exact_mm
        ref.set_products("fp32")
    return out


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def logits_parity(ck, args, name, mdir, tok, chunk):
    model = ref.load_model(mdir)
    out = C.fresh_dir(os.path.join(args.workdir, "fwd_" + name))
    dump = os.path.join(out, "logits.f32")
    rc, log = C.run_cfsp(args, ["--model", mdir, "--calib-tokens", tok, "--eval-tokens", tok, "--nsamples", 2,
                                "--seqlen", T, "--chunk", chunk, "--eval-windows", W, "--dump-logits", dump,
                                "--output-dir", out, "--force", "--save-models", 0, "--compute", "bf16"])
    if not ck.check(rc == 0 and os.path.exists(dump), "%s: cfsp-mpi --compute bf16 runs" % name):
        return
    res = C.load_results(out)
    ck.check(res.get("compute", {}).get("mode") == "bf16" and res.get("options", {}).get("compute") == "bf16",
             "%s: results.json records compute bf16" % name, str(res.get("compute")))
    tokens = ref.read_tokens(tok)
    ppl, _, ntok, r16 = with_products("bf16", lambda: ref.perplexity(model, tokens, T, windows=W, return_logits=True))
    c16 = np.fromfile(dump, dtype="<f4")
    if not ck.check(c16.size == r16.size, "%s: dump size" % name):
        return
    c16 = c16.reshape(r16.shape).astype(np.float64)
    d_c = float(np.mean(np.abs(c16 - r16)))
    wrong = wrong_variants(lambda: ref.perplexity(model, tokens, T, windows=W, return_logits=True)[3])
    for what, v in wrong.items():
        d_w = float(np.mean(np.abs(v - r16)))
        ck.check(d_c <= d_w / 20, "%s: logits nearer the bf16 reference than 1/20 of '%s'" % (name, what),
                 "mean |C - ref| %.3g, with %s %.3g (ratio %.3g)" % (d_c, what, d_w, d_c / d_w))
    cppl = float(res.get("dense", {}).get("ppl", float("nan")))
    ck.check(abs(cppl - ppl) <= 1e-4 * ppl and int(res["dense"]["ntokens"]) == ntok,
             "%s: dense ppl within 1e-4 relative of the bf16 reference" % name,
             "C %.6f, bf16 ref %.6f" % (cppl, ppl))


def block0_stats(ck, args, name):
    """statistics of block 0 of a shared model (nothing behind them to amplify rounding flips)"""
    mdir = C.model_dir(args, name)
    model = ref.load_model(mdir)
    calib = C.token_file(args, name, "wikitext2_validation.joined")
    out = C.fresh_dir(os.path.join(args.workdir, "stats_" + name))
    ns = 4
    rc, _ = C.run_cfsp(args, ["--model", mdir, "--calib-tokens", calib, "--nsamples", ns, "--seqlen", T,
                              "--eval-dense", 0, "--save-models", 0, "--output-dir", out, "--force",
                              "--compute", "bf16"], np_ranks=min(args.np, model.L))
    if not ck.check(rc == 0, "%s: bf16 calibration runs" % name):
        return
    cst = ref.stats_from_h5(os.path.join(out, "stats.h5"))
    toks = ref.read_tokens(calib)
    offs = ref.calib_offsets(len(toks), ns, T, seed=0)

    class Block0(Exception):
        pass

    def stats():   # block 0 only: stop the reference forward after it
        st = {"imp": 0.0, "sq": None}

        def hook(l, h_in, h_out, a):
            st["imp"] += float(ref.token_distances(h_in, h_out)["angular"].sum())
            st["sq"] = (a * a).sum(axis=0) if st["sq"] is None else st["sq"] + (a * a).sum(axis=0)
            raise Block0()
        for off in offs:
            try:
                ref.forward(model, toks[off:off + T], hook=hook, logits=False)
            except Block0:
                pass
        return st
    r = with_products("bf16", stats)
    c = {"imp": float(cst.importance["angular"][0]), "sq": np.asarray(cst.sum_sq[0], dtype=np.float64)}

    def dist(a, b):   # the channel norms' relative L1 distance
        return float(np.sum(np.abs(a["sq"] - b["sq"])) / np.sum(np.abs(b["sq"])))
    dc = dist(c, r)
    # the angular distance of a block barely moves with the products' rounding (by ~1e-6 to 1e-4
    # relative): a sanity bound, not a discriminating one
    ck.check(abs(c["imp"] - r["imp"]) <= 1e-5 * abs(r["imp"]), "%s: block-0 importance within 1e-5 of the bf16 reference" % name,
             "C %.10g ref %.10g" % (c["imp"], r["imp"]))
    for what, v in wrong_variants(stats).items():
        dw = dist(v, r)
        ck.check(dc <= dw / 10, "%s: block-0 channel norms nearer the bf16 reference than 1/10 of '%s'" % (name, what),
                 "sum_sq relative L1 %.3g vs %.3g (ratio %.3g)" % (dc, dw, dc / dw))


def compute_choice(ck, args, gen_bf16, tok):
    flags = cpu_flags()
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    for mdir, stored in ((C.model_dir(args, "stories260K"), "F32"), (gen_bf16, "BF16")):
        for req in ("auto", "bf16", "fp32"):
            out = C.fresh_dir(os.path.join(args.workdir, "choice_%s_%s" % (stored, req)))
            rc, log = C.run_cfsp(args, ["--model", mdir, "--calib-tokens", tok if stored == "BF16" else
                                        C.token_file(args, "stories260K"), "--nsamples", 1, "--seqlen", 32,
                                        "--eval-dense", 0, "--save-models", 0, "--save-stats", 0,
                                        "--output-dir", out, "--force", "--compute", req], np_ranks=1)
            if not ck.check(rc == 0, "--compute %s on a %s checkpoint runs" % (req, stored)):
                continue
            cp = C.load_results(out).get("compute", {})
            want = {"fp32": "fp32", "bf16": "bf16"}.get(req) or ("bf16" if native and stored == "BF16" else "fp32")
            ck.check(cp.get("mode") == want and cp.get("requested") == req,
                     "--compute %s, %s checkpoint, CPU %s native bf16: mode %s" % (
                         req, stored, "with" if native else "without", want), str(cp))
            warned = "warning: --compute bf16 on a CPU without native bf16" in log
            if req == "bf16":
                ck.check(warned == (not native), "--compute bf16 warns exactly when the CPU lacks native bf16",
                         "warned %s, flags amx_bf16 %s avx512_bf16 %s" % (warned, "amx_bf16" in flags, "avx512_bf16" in flags))
            ck.check(bool(cp.get("cpu_amx_bf16")) == ("amx_bf16" in flags) and
                     bool(cp.get("cpu_avx512_bf16")) == ("avx512_bf16" in flags),
                     "results.json CPU flags agree with /proc/cpuinfo (%s, %s)" % (stored, req), str(cp))
    rc, log = C.run_cfsp(args, ["--model", gen_bf16, "--calib-tokens", tok, "--compute", "bf8"], np_ranks=1)
    lines = [x for x in log.splitlines() if "cfsp-mpi" in x and "compute" in x]
    ck.check(rc != 0 and lines and "auto" in lines[0] and "bf16" in lines[0],
             "--compute bf8 is refused with one line naming the choices", lines[0] if lines else log[-200:])


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("bf16")
    tok = C.write_tokens(os.path.join(args.workdir, "tok256.u32.bin"), 8000, 256, 5)
    gens = [  # name, generator arguments, --chunk
        ("one_block_bf16_gqa", dict(hidden=96, ffn=200, layers=1, heads=6, kv=2, vocab=256, dtype="bf16", seed=21), T),
        ("one_block_f16_hd24", dict(hidden=72, ffn=136, layers=1, heads=4, kv=2, vocab=256, dtype="f16",
                                    head_dim=24, seed=22), 32),
        ("one_block_f32_tied", dict(hidden=64, ffn=130, layers=1, heads=4, kv=4, vocab=256, dtype="f32", tie=1,
                                    seed=23), 64),
    ]
    paths = {}
    for name, spec, chunk in gens:
        d = os.path.join(args.workdir, name)
        s = dict(spec)
        ok = C.mkmodel(args, d, s.pop("hidden"), s.pop("ffn"), s.pop("layers"), s.pop("heads"), s.pop("kv"),
                       s.pop("vocab"), **s)
        if ck.check(ok, "%s: generated" % name):
            paths[name] = d
            logits_parity(ck, args, name, d, tok, chunk)
    for name in C.SHARED_MODELS:
        block0_stats(ck, args, name)
    if "one_block_bf16_gqa" in paths:
        compute_choice(ck, args, paths["one_block_bf16_gqa"], tok)
    ck.finish()


if __name__ == "__main__":
    main()
