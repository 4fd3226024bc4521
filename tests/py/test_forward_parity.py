"""Forward parity: the dense logits cfsp-mpi dumps (--dump-logits) against the NumPy reference,
on both shared models and on generated checkpoints (GQA 8/1, head_dim != hidden/heads, FFN not a
multiple of 128, one layer, untied + llama3 RoPE, bf16, f16, sharded).

    /usr/bin/python3 tests/py/test_forward_parity.py --bin build/cfsp-mpi \
        --mkmodel build/cfsp-mpi-mkmodel --shared /work/shared --workdir /tmp/fwd [--np 2]

Bound: max |C - ref| <= 1e-4 absolute on the shared fp32 models (their logits reach |z| ~ 23, so
that is ~4e-6 relative: ample for a float32 forward over 2-5 blocks). Generated models have
weights of arbitrary scale, so there the bound is 1e-4 * max(1, max|ref logit| / 10), i.e. the
same 1e-5 relative bound once logits exceed 10 (see common.logit_tolerance). The
reference loads bf16/f16 files exactly (bf16 bits shifted into an fp32, f16 widened), so for those
models it already runs on the rounded weights and the same bound applies.
"""

import json
import os
import struct

import numpy as np

from common import (Checker, SHARED_MODELS, fresh_dir, load_results, logit_tolerance, mkmodel,
                    model_dir, parse_args, ref, run_cfsp, token_file, write_tokens)

# name, generator arguments, seqlen, windows
GENERATED = [
    ("gqa8x1_tied", dict(hidden=64, ffn=160, layers=2, heads=8, kv=1, vocab=256, tie=1, seed=11), 64, 2),
    ("headdim16", dict(hidden=48, ffn=100, layers=2, heads=4, kv=2, head_dim=16, vocab=300, seed=12), 64, 2),
    ("ffn200_untied", dict(hidden=64, ffn=200, layers=3, heads=4, kv=4, vocab=256, tie=0, seed=13), 64, 2),
    ("one_layer", dict(hidden=32, ffn=72, layers=1, heads=4, kv=2, vocab=128, seed=14), 64, 2),
    ("llama3_rope", dict(hidden=64, ffn=96, layers=2, heads=4, kv=2, vocab=256, tie=0, rope_theta=500000,
                         rope_llama3=8, seed=15), 128, 1),
    ("bf16", dict(hidden=64, ffn=136, layers=2, heads=8, kv=4, vocab=256, dtype="bf16", seed=16), 64, 2),
    ("f16", dict(hidden=64, ffn=136, layers=2, heads=8, kv=4, vocab=256, dtype="f16", seed=17), 64, 2),
    ("block_configs", dict(hidden=64, ffn=0, ffn_per_layer=[72, 200, 130], layers=3, heads=4, kv=2, vocab=256,
                           seed=19), 64, 2),
    ("sharded", dict(hidden=64, ffn=136, layers=3, heads=8, kv=2, vocab=256, shard_bytes=40000, seed=18), 64, 2),
]


def st_dtypes(d):
    """Set of safetensors dtypes stored in a model directory."""
    out = set()
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            with open(os.path.join(d, f), "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                h = json.loads(fh.read(n))
            out |= {v["dtype"] for k, v in h.items() if k != "__metadata__"}
    return out


def check_generated(ck, name, d, spec, model):
    """The generator produced what was asked (so the parity below covers that feature)."""
    ok = (model.D == spec["hidden"] and model.L == spec["layers"] and model.H == spec["heads"] and
          model.KV == spec["kv"] and model.V == spec["vocab"] and
          ref.ffn_sizes(model) == (spec.get("ffn_per_layer") or [spec["ffn"]] * spec["layers"]) and
          model.hd == spec.get("head_dim", spec["hidden"] // spec["heads"]))
    want_dt = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[spec.get("dtype", "f32")]
    ok &= st_dtypes(d) == {want_dt}
    if "shard_bytes" in spec:
        ok &= os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    if spec.get("tie") is not None:
        ok &= bool(model.cfg.get("tie_word_embeddings")) == bool(spec["tie"])
        ok &= np.array_equal(model.lm_head, model.embed) == bool(spec["tie"])
    if "rope_llama3" in spec:
        rs = model.cfg.get("rope_scaling") or {}
        ok &= rs.get("rope_type", rs.get("type")) == "llama3" and float(rs.get("factor", 0)) == float(spec["rope_llama3"])
    ck.check(ok, "%s: generated checkpoint has the requested shape/dtype/layout" % name,
             "D=%d L=%d H=%d KV=%d hd=%d ffn=%s dtypes=%s tie_word_embeddings=%s" % (
                 model.D, model.L, model.H, model.KV, model.hd, ref.ffn_sizes(model), sorted(st_dtypes(d)),
                 model.cfg.get("tie_word_embeddings")))
    if "rope_llama3" in spec:
        # the scaling must matter at this length, or the parity would not test it
        plain = model.copy()
        plain.inv_freq = model.theta ** (-(np.arange(0, model.hd, 2, dtype=np.float64) / model.hd))
        toks = np.arange(128) % model.V
        dd = float(np.max(np.abs(ref.forward(plain, toks) - ref.forward(model, toks))))
        ck.check(dd > 1e-2, "%s: llama3 scaling changes the reference logits" % name, "by up to %.3g" % dd)


def parity(ck, args, name, mdir, tokens_path, T, W, model, strict):
    out = fresh_dir(os.path.join(args.workdir, "fwd_" + name))
    dump = os.path.join(out, "logits.f32")
    nranks = max(1, min(args.np, model.L))   # never more pipeline stages than blocks
    rc, _ = run_cfsp(args, ["--model", mdir, "--calib-tokens", tokens_path, "--eval-tokens", tokens_path,
                            "--nsamples", 2, "--seqlen", T, "--eval-windows", W, "--dump-logits", dump,
                            "--output-dir", out, "--force", "--save-models", 0], np_ranks=nranks)
    if not ck.check(rc == 0 and os.path.exists(dump), "%s: cfsp-mpi run (np=%d)" % (name, nranks)):
        return
    tokens = ref.read_tokens(tokens_path)
    ppl, nll, ntok, rl = ref.perplexity(model, tokens, T, windows=W, return_logits=True)
    cl = np.fromfile(dump, dtype="<f4")
    if not ck.check(cl.size == rl.size, "%s: dump size" % name, "%d floats, expected %d = %dx%dx%d" % (
            cl.size, rl.size, W, T, model.V)):
        return
    cl = cl.reshape(rl.shape).astype(np.float64)
    diff = np.abs(cl - rl)
    worst = float(diff.max())
    w, t, v = np.unravel_index(int(diff.argmax()), diff.shape)
    tol = 1e-4 if strict else logit_tolerance(rl)
    ck.check(worst <= tol, "%s: logits max |C - ref| <= %.3g" % (name, tol),
             "%.3g at window %d pos %d token %d (ref %.5f, C %.5f; max |logit| %.2f)" % (
                 worst, w, t, v, rl[w, t, v], cl[w, t, v], float(np.abs(rl).max())))
    res = load_results(out)
    d = res.get("dense", {})
    cppl = float(d.get("ppl", float("nan")))
    ck.check(abs(cppl - ppl) <= 1e-4 * ppl and int(d.get("ntokens", -1)) == ntok,
             "%s: dense ppl" % name, "C %.6f ref %.6f rel %.2g, ntokens %s/%d" % (
                 cppl, ppl, abs(cppl - ppl) / ppl, d.get("ntokens"), ntok))


def main():
    args = parse_args(__doc__)
    ck = Checker("forward parity")
    for name in SHARED_MODELS:
        model = ref.load_model(model_dir(args, name))
        parity(ck, args, name, model_dir(args, name), token_file(args, name), 128, 2, model, strict=True)
    if not args.mkmodel:
        ck.check(False, "generated models: --mkmodel not given")
        ck.finish()
    for name, spec, T, W in GENERATED:
        d = os.path.join(args.workdir, "gen_" + name)
        spec = dict(spec)
        if not ck.check(mkmodel(args, d, **spec), "%s: cfsp-mpi-mkmodel" % name):
            continue
        model = ref.load_model(d)
        check_generated(ck, name, d, spec, model)
        toks = write_tokens(os.path.join(args.workdir, "tok_%s.u32.bin" % name), T * (W + 2) + 7,
                            model.V, spec["seed"])
        parity(ck, args, name, d, toks, T, W, model, strict=False)
    ck.finish()


if __name__ == "__main__":
    main()
