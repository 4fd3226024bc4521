"""test_qwen.py — Qwen2 / Qwen2.5 and Qwen3 checkpoints end to end (issue 16), against the NumPy
reference tests/ref/cfsp_ref.py (Qwen2: q/k/v_proj biases; Qwen3: per-head RMSNorm of q and k
before RoPE, head_dim given explicitly) on generated checkpoints of odd shapes (cfsp-mpi-mkmodel
--family qwen2|qwen3: bf16/f16/f32, tied and untied, heads x head_dim != hidden, GQA; one with
yarn rope scaling, the reference's formula written from transformers' _compute_yarn_parameters):

 1. dense logits (--dump-logits) within common.logit_tolerance, dense perplexity within 1e-4;
 2. calibration statistics (stats.h5): importance and channel sum_sq within 1e-5 relative;
 3. masks: cfsp's keep counts equal the reference's, its kept sets the reference's top-k (near
    ties allowed as in test_prune_parity); flap's bias compensation and both pruned perplexities
    (the reference on the C kept sets) within 1e-4;
 4. the HDF5 outputs: the biases / q,k norms in the file are the source tensors bit for bit, the
    sliced FFN tensors the source rows/columns, `cfsp-mpi verify` accepts every file;
 5. rank invariance: -n 2 and -n 4 give the same results.json figures, byte-identical logits
    and identical tensors in every pruned file; `prune --stats` on the saved statistics gives
    the same files again;
 6. re-loading: the HF exports of each pruned model (hf-padded: Qwen2/Qwen3ForCausalLM; hf:
    DeciLM with qkv_bias for qwen2, refused for qwen3) read back with --model give the pruned
    perplexity; GGUF exports (deci with biases, padded qwen2/qwen3) read back tensor by tensor;
 7. recover (LoRA) on pruned qwen2 and qwen3 models: losses = NumPy, pipelined = data-parallel
    bitwise, merged.h5 verified with its extras;
 8. config.json fields that cannot be honoured (sliding windows, longrope, MoE, o_proj / MLP biases)
    refused with one line naming the field.

    /usr/bin/python3 tests/py/test_qwen.py --bin build/cfsp-mpi --mkmodel build/cfsp-mpi-mkmodel \
        --shared /work/shared --workdir /tmp/qwen
"""

import json
import math
import os
import shutil

import numpy as np

from common import (Checker, compare_kept, describe_diff, find_pruned, fresh_dir, h5_datasets, load_results,
                    logit_tolerance, mkmodel, parse_args, pruned_file, ref, rel, run_cfsp, run_cmd,
                    stats_scale_error, boundary, write_tokens)

MODELS = [
    ("qwen2_tied_bf16", dict(hidden=72, ffn=100, layers=3, heads=6, kv=2, vocab=301, dtype="bf16", tie=1,
                             rope_theta=1000000, seed=31, family="qwen2")),
    ("qwen2_untied_f32", dict(hidden=64, ffn=136, layers=2, heads=4, kv=1, vocab=320, tie=0,
                              rope_theta=1000000, seed=32, family="qwen2")),
    ("qwen3_hd16_bf16", dict(hidden=48, ffn=90, layers=3, heads=4, kv=2, head_dim=16, vocab=300, dtype="bf16",
                             tie=1, rope_theta=1000000, seed=33, family="qwen3")),
    ("qwen3_untied_f16", dict(hidden=40, ffn=77, layers=2, heads=5, kv=1, head_dim=12, vocab=331, dtype="f16",
                              tie=0, seed=34, family="qwen3")),
    # yarn rope scaling (Qwen's long-context setting), patched into the generated config.json
    ("qwen2_yarn", dict(hidden=48, ffn=70, layers=2, heads=4, kv=2, vocab=300, tie=1, rope_theta=10000, seed=35,
                        family="qwen2"), {"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}}),
]
RATIOS = [0.2, 0.5]
NSAMPLES, SEQLEN, WINDOWS = 4, 64, 2
EXTRAS = {"qwen2": ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
          "qwen3": ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]}


def raw_source(mdir):
    """{HF name: float64} of the source checkpoint, exactly (bf16/f16 widened)."""
    return ref.read_model_tensors(mdir)


def run_one(args, ck, name, mdir, calib, evalf, n, extra=()):
    out = fresh_dir(os.path.join(args.workdir, "%s_n%d" % (name, n)))
    rc, log = run_cfsp(args, ["--model", mdir, "--calib-tokens", calib, "--eval-tokens", evalf, "--nsamples", NSAMPLES,
                              "--seqlen", SEQLEN, "--eval-windows", WINDOWS, "--ratios", ",".join(map(str, RATIOS)),
                              "--method", "cfsp,flap", "--save-models", 1, "--dump-logits",
                              os.path.join(out, "logits.f32"), "--output-dir", out, "--force"] + list(extra),
                       np_ranks=n)
    ck.check(rc == 0, "%s: run -n %d" % (name, n), log.strip().splitlines()[-1][:300] if rc and log.strip() else "")
    return out if rc == 0 else None


def check_reference(ck, args, name, model, fam, mdir, out, calib, evalf):
    res = load_results(out)
    ev = ref.read_tokens(evalf)
    # 1. dense logits and perplexity
    ppl, _, ntok, rl = ref.perplexity(model, ev, SEQLEN, windows=WINDOWS, return_logits=True)
    cl = np.fromfile(os.path.join(out, "logits.f32"), dtype="<f4")
    if ck.check(cl.size == rl.size, "%s: logits dump size" % name, "%d vs %d" % (cl.size, rl.size)):
        d = float(np.abs(cl.reshape(rl.shape) - rl).max())
        tol = logit_tolerance(rl)
        ck.check(d <= tol, "%s: dense logits max |C - ref| <= %.3g" % (name, tol), "%.3g (max |logit| %.2f)" % (d, float(np.abs(rl).max())))
    cppl = float(res.get("dense", {}).get("ppl", float("nan")))
    ck.check(abs(cppl - ppl) <= 1e-4 * ppl, "%s: dense ppl" % name, "C %.6f ref %.6f" % (cppl, ppl))
    # 2. statistics
    ct = ref.read_tokens(calib)
    offs = ref.calib_offsets(len(ct), NSAMPLES, SEQLEN, seed=0)
    rst = ref.collect_stats(model, ct, offs, SEQLEN)
    cst = ref.stats_from_h5(os.path.join(out, "stats.h5"))
    dimp = rel(cst.importance["angular"], rst.importance["angular"])
    ck.check(dimp <= 1e-5, "%s: angular importance within 1e-5" % name, "%.3g" % dimp)
    dsq = max(rel(cst.sum_sq[l], rst.sum_sq[l], floor=1e-12) for l in range(model.L))
    ck.check(dsq <= 1e-5, "%s: channel sum_sq within 1e-5" % name, "%.3g" % dsq)
    tie_tol = max(1e-6, 10 * stats_scale_error(cst, rst))
    src = raw_source(mdir)
    for ratio in RATIOS:
        # 3. cfsp masks against the reference's own calibration
        e = find_pruned(res, "cfsp", ratio)
        if not ck.check(e is not None, "%s: cfsp r=%g in results" % (name, ratio)):
            continue
        rr = ref.cfsp_prune(model, rst, ratio)
        f = ref.read_pruned_h5(pruned_file(out, e), model.L)
        counts = [int(x) for x in e["keep_counts"]]
        ck.check(counts == [len(k) for k in rr["kept"]], "%s: cfsp r=%g keep counts = reference" % (name, ratio),
                 "C %s ref %s" % (counts, [len(k) for k in rr["kept"]]))
        bad = []
        for l in range(model.L):
            sc = rr["scores"][l]
            top = ref.topk_desc(sc, len(f["kept"][l]))
            lo, hi = boundary(sc, top)
            scale = max(abs(lo) if math.isfinite(lo) else 0.0, abs(hi) if math.isfinite(hi) else 0.0, 1e-300)
            ok, rows = compare_kept(f["kept"][l], top, sc, lo, hi, tie_tol * scale)
            if not ok:
                bad.append("l=%d %s" % (l, describe_diff(rows)))
        ck.check(not bad, "%s: cfsp r=%g kept sets = reference top-k" % (name, ratio), "; ".join(bad[:3]))
        pm = ref.prune_model(model, f["kept"])
        p2, _, _ = ref.perplexity(pm, ev, SEQLEN, windows=WINDOWS)
        ck.check(abs(float(e["ppl"]) - p2) <= 1e-4 * p2, "%s: cfsp r=%g pruned ppl" % (name, ratio), "C %s ref %.6f" % (e["ppl"], p2))
        # 4. the file's tensors: extras bit for bit, FFN sliced from the source
        t = h5_datasets(pruned_file(out, e))
        diffs = []
        for l in range(model.L):
            for x in EXTRAS[fam]:
                key = "model/layers/%d/%s" % (l, x.replace(".", "/"))
                hf = "model.layers.%d.%s" % (l, x)
                if key not in t:
                    diffs.append("%s missing" % key)
                elif not np.array_equal(t[key].astype(np.float64), src[hf]):
                    diffs.append("%s differs" % key)
            k = f["kept"][l]
            for nm, want in (("gate", src["model.layers.%d.mlp.gate_proj.weight" % l][k]),
                             ("down", src["model.layers.%d.mlp.down_proj.weight" % l][:, k])):
                if not np.array_equal(f[nm][l], want):
                    diffs.append("l=%d %s_proj not the sliced source" % (l, nm))
        ck.check(not diffs, "%s: r=%g file holds the %s extras and sliced FFN bit for bit" % (name, ratio, fam), "; ".join(diffs[:4]))
        # flap: the C kept sets with the reference's bias compensation
        e = find_pruned(res, "flap", ratio)
        if ck.check(e is not None, "%s: flap r=%g in results" % (name, ratio)):
            f = ref.read_pruned_h5(pruned_file(out, e), model.L)
            rb = ref.flap_bias(model, rst, f["kept"])
            db = max(float(np.max(np.abs(f["bias"][l] - rb[l])) / (np.max(np.abs(rb[l])) + 1e-30)) for l in range(model.L))
            ck.check(db <= 1e-4, "%s: flap r=%g bias = reference (relative)" % (name, ratio), "%.3g" % db)
            pm = ref.prune_model(model, f["kept"], f["bias"])
            p2, _, _ = ref.perplexity(pm, ev, SEQLEN, windows=WINDOWS)
            ck.check(abs(float(e["ppl"]) - p2) <= 1e-4 * p2, "%s: flap r=%g pruned ppl" % (name, ratio), "C %s ref %.6f" % (e["ppl"], p2))
    files = sorted(os.path.join(out, x) for x in os.listdir(out) if x.endswith(".h5") and x != "stats.h5")
    bad = []
    for fn in files:
        rc, log = run_cmd([args.bin, "verify", fn])
        if rc != 0 or ": OK," not in log:
            bad.append("%s: %s" % (os.path.basename(fn), log.strip()[-160:]))
    ck.check(not bad, "%s: verify accepts all %d files" % (name, len(files)), "; ".join(bad))


def same_outputs(ck, name, a, b, what):
    ra, rb = load_results(a), load_results(b)
    fig = lambda r: (r["dense"]["ppl"], [(e["method"], e["ratio"], e["keep_counts"], e["ppl"]) for e in r["pruned"]],
                     r.get("importance"))
    ck.check(fig(ra) == fig(rb), "%s: %s: results.json figures identical" % (name, what))
    la, lb = os.path.join(a, "logits.f32"), os.path.join(b, "logits.f32")
    if os.path.exists(la) or os.path.exists(lb):
        ck.check(os.path.exists(la) and os.path.exists(lb) and open(la, "rb").read() == open(lb, "rb").read(),
                 "%s: %s: logits byte-identical" % (name, what))
    bad = []
    for e in ra["pruned"]:
        ta, tb = h5_datasets(pruned_file(a, e)), h5_datasets(pruned_file(b, e))
        if ta.keys() != tb.keys():
            bad.append("%s: datasets differ" % e["file"])
            continue
        bad += ["%s:%s" % (e["file"], k) for k in ta if not np.array_equal(ta[k], tb[k])]
    ck.check(not bad, "%s: %s: every dataset of every pruned file identical" % (name, what), "; ".join(bad[:4]))


def check_reload(ck, args, name, fam, out, evalf):
    """The HF exports of each cfsp model, read back with --model: the pruned perplexity again. The
    padded form (the model's own architecture, FFNs zero-padded to the widest block) for both
    families; the DeciLM form for qwen2 (nemotron-nas with qkv_bias), refused for qwen3 (no q/k
    norms) with a clear line. And a Qwen2 checkpoint relabelled llama (its biases then read by
    nothing) is refused by the run."""
    res = load_results(out)
    for ratio, fmt in [(r, f) for r in RATIOS for f in ("hf-padded", "hf")]:
        e = find_pruned(res, "cfsp", ratio)
        hf = os.path.join(args.workdir, "%s_%s_r%g" % (name, fmt, ratio))
        if os.path.exists(hf):
            shutil.rmtree(hf)
        rc, log = run_cmd([args.bin, "export", "--format", fmt, "--force", pruned_file(out, e), hf])
        if fmt == "hf" and fam == "qwen3":
            ck.check(rc != 0 and "hf-padded" in log and not os.path.exists(hf) and not os.path.exists(hf + ".tmp"),
                     "%s: export --format hf (DeciLM) of a qwen3 model refused, pointing to hf-padded" % name, log.strip()[-200:])
            continue
        if fmt == "hf" and rc == 0:
            cfg = json.load(open(os.path.join(hf, "config.json")))
            ck.check(cfg.get("model_type") == "nemotron-nas" and cfg.get("qkv_bias") is True and cfg.get("attention_bias") is False,
                     "%s: DeciLM r=%g config: qkv_bias true, attention_bias false (vLLM nemotron_nas: q/k/v biases, no o_proj bias)" % (name, ratio),
                     "%s %s %s" % (cfg.get("model_type"), cfg.get("qkv_bias"), cfg.get("attention_bias")))
        if not ck.check(rc == 0, "%s: export --format %s r=%g" % (name, fmt, ratio), log[-300:]):
            continue
        if fmt == "hf-padded":
            cfg = json.load(open(os.path.join(hf, "config.json")))
            want = max(int(x) for x in e["keep_counts"])
            ck.check(cfg.get("model_type") == fam and cfg.get("intermediate_size") == want and "block_configs" not in cfg,
                     "%s: hf-padded r=%g config: model_type %s, intermediate_size = widest kept %d" % (name, ratio, fam, want),
                     "%s %s" % (cfg.get("model_type"), cfg.get("intermediate_size")))
        if fam == "qwen2" and ratio == RATIOS[0] and fmt == "hf-padded":
            bad = os.path.join(args.workdir, "%s_as_llama" % name)
            if os.path.exists(bad):
                shutil.rmtree(bad)
            shutil.copytree(hf, bad)
            cfg = json.load(open(os.path.join(bad, "config.json")))
            cfg["model_type"], cfg["architectures"] = "llama", ["LlamaForCausalLM"]
            json.dump(cfg, open(os.path.join(bad, "config.json"), "w"))
            o3 = fresh_dir(os.path.join(args.workdir, "%s_as_llama_out" % name))
            rc, log = run_cfsp(args, ["--model", bad, "--calib-tokens", evalf, "--nsamples", 2, "--seqlen", SEQLEN,
                                      "--output-dir", o3, "--force"], np_ranks=2)
            ck.check(rc != 0 and "q_proj.bias" in log and "does not have" in log and not os.listdir(o3),
                     "%s: q/k/v biases under a llama config refused (exit %d), nothing written" % (name, rc), log.strip()[-200:])
        o2 = fresh_dir(os.path.join(args.workdir, "%s_reload_%s_r%g" % (name, fmt, ratio)))
        rc, log = run_cfsp(args, ["--model", hf, "--calib-tokens", evalf, "--eval-tokens", evalf, "--nsamples", 2,
                                  "--seqlen", SEQLEN, "--eval-windows", WINDOWS, "--ratios", "0.1", "--save-models", 0,
                                  "--output-dir", o2, "--force"], np_ranks=2)
        if ck.check(rc == 0, "%s: run on the HF export r=%g" % (name, ratio), log[-300:]):
            p = float(load_results(o2)["dense"]["ppl"])
            ck.check(abs(p - float(e["ppl"])) <= 1e-5 * p, "%s: %s export r=%g re-loaded: same perplexity" % (name, fmt, ratio),
                     "%.7f vs %.7f" % (p, float(e["ppl"])))
            with open(os.path.join(hf, "config.json")) as fh:
                ck.note("%s r=%g %s export: architectures %s" % (name, ratio, fmt, json.load(fh).get("architectures")))


def gguf_f64(g, name):
    a = g.array(name)
    if g.type_name(name) == "BF16":
        return ref.bf16_bits_to_f32(a).astype(np.float64)
    return a.astype(np.float64)


def unpermute(w, n_head):
    """llama.cpp's interleaved rotary rows (deci / llama) back to Hugging Face's rotate_half order."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_gguf(ck, args, name, fam, model, out):
    """GGUF exports read back by tests/py/gguf_reader.py (written from the GGUF spec): qwen2 as deci
    (per-block sizes, q/k/v biases, q/k rows and biases permuted) and as padded qwen2; qwen3 as
    padded qwen3 (q/k norms, no permutation), its per-block form refused. Every block tensor equals
    the pruned checkpoint's (padding zeros)."""
    import gguf_reader
    res = load_results(out)
    e = find_pruned(res, "cfsp", RATIOS[-1])
    h5 = pruned_file(out, e)
    f = ref.read_pruned_h5(h5, model.L)
    counts = [int(x) for x in e["keep_counts"]]
    H, KV = model.H, model.KV
    for fmt in ("gguf", "gguf-padded"):
        path = os.path.join(args.workdir, "%s_%s.gguf" % (name, fmt))
        if os.path.exists(path):
            os.remove(path)
        rc, log = run_cmd([args.bin, "export", "--format", fmt, "--force", h5, path])
        if fam == "qwen3" and fmt == "gguf":
            ck.check(rc != 0 and "gguf-padded" in log and not os.path.exists(path) and not os.path.exists(path + ".tmp"),
                     "%s: per-block qwen3 GGUF refused, pointing to gguf-padded" % name, log.strip()[-200:])
            continue
        if not ck.check(rc == 0, "%s: export --format %s" % (name, fmt), log[-300:]):
            continue
        g = gguf_reader.GGUF(path)
        arch = g.kv.get("general.architecture")
        want_arch = "deci" if fmt == "gguf" else fam
        ck.check(arch == want_arch, "%s: %s architecture %s" % (name, fmt, want_arch), str(arch))
        ff = g.kv.get("%s.feed_forward_length" % arch)
        want_ff = counts if fmt == "gguf" else max(counts)
        ffv = [int(x) for x in ff] if hasattr(ff, "__len__") else int(ff) if ff is not None else None
        ck.check(ffv == want_ff, "%s: %s feed_forward_length" % (name, fmt),
                 "%s vs %s" % (ff, want_ff))
        ck.check(g.kv.get("tokenizer.ggml.model") == "gpt2" and g.kv.get("tokenizer.ggml.pre") == "qwen2",
                 "%s: %s tokenizer gpt2 with llama.cpp's qwen2 pre-tokenizer" % (name, fmt),
                 "%s %s" % (g.kv.get("tokenizer.ggml.model"), g.kv.get("tokenizer.ggml.pre")))
        rs = model.cfg.get("rope_scaling") or {}
        if rs.get("type", rs.get("rope_type")) == "yarn":
            ck.check(g.kv.get(arch + ".rope.scaling.type") == "yarn" and abs(g.kv.get(arch + ".rope.scaling.factor", 0) - rs["factor"]) < 1e-6
                     and g.kv.get(arch + ".rope.scaling.original_context_length") == rs["original_max_position_embeddings"],
                     "%s: %s yarn rope scaling keys" % (name, fmt))
        permute = arch == "deci"
        bad = []
        for l, ly in enumerate(model.layers):
            b = "blk.%d." % l
            q = gguf_f64(g, b + "attn_q.weight")
            k = gguf_f64(g, b + "attn_k.weight")
            if permute:
                q, k = unpermute(q, H), unpermute(k, KV)
            if not (np.array_equal(q, ly["q"]) and np.array_equal(k, ly["k"])):
                bad.append("l=%d q/k weights" % l)
            if fam == "qwen2":
                for nm, hn in (("q", H), ("k", KV), ("v", None)):
                    x = gguf_f64(g, b + "attn_%s.bias" % nm)
                    if permute and hn:
                        x = unpermute(x, hn)
                    if not np.array_equal(x, ly[nm + "_bias"]):
                        bad.append("l=%d %s bias" % (l, nm))
            else:
                for nm in ("q", "k"):
                    if not np.array_equal(gguf_f64(g, b + "attn_%s_norm.weight" % nm), ly[nm + "_norm"]):
                        bad.append("l=%d %s_norm" % (l, nm))
            gate, down = gguf_f64(g, b + "ffn_gate.weight"), gguf_f64(g, b + "ffn_down.weight")
            kk = counts[l]
            width = gate.shape[0]
            if width != (kk if fmt == "gguf" else max(counts)) or not np.array_equal(gate[:kk], f["gate"][l]) or \
                    np.any(gate[kk:]) or not np.array_equal(down[:, :kk], f["down"][l]) or np.any(down[:, kk:]):
                bad.append("l=%d ffn (%d rows, kept %d)" % (l, width, kk))
        ck.check(not bad, "%s: %s block tensors = the pruned checkpoint's (%s)" % (
            name, fmt, "q/k rows and biases un-permuted" if permute else "as stored, FFN zero-padded"), "; ".join(bad[:4]))


def qwen_tokenizer(args, mdir, vocab_size):
    """A Qwen2-style tokenizer.json (tests/ref/tok_ref.py: byte-level BPE trained on TinyStories with
    the Qwen2 split regex, <|endoftext|> <|im_start|> <|im_end|>, no BOS) and tokenizer_config.json in
    the generated checkpoint, so that the GGUF exports carry a real Qwen-style vocabulary."""
    import tok_ref as R
    with open(os.path.join(args.shared, "data", "tinystories_val_head.txt"), encoding="utf-8") as fh:
        corpus = fh.read(200000)
    n_merges = vocab_size - 256 - len(R.QWEN2_SPECIALS) - 2
    vocab, merges = R.train_bytelevel(corpus, n_merges, pattern=R.QWEN2_PATTERN)
    with open(os.path.join(mdir, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(R.qwen2_json(vocab, merges), fh, ensure_ascii=False)
    tc, _ = R.qwen2_config_files(len(vocab))
    with open(os.path.join(mdir, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(tc, fh)


# config.json fields the forward pass cannot honour: one line naming the field, exit != 0
BAD_CONFIGS = [
    ("use_sliding_window", "qwen2", {"use_sliding_window": True}, "use_sliding_window"),
    ("layer_types", "qwen3", {"layer_types": ["full_attention", "sliding_attention"]}, "layer_types[1]"),
    ("longrope", "qwen2", {"rope_scaling": {"rope_type": "longrope", "factor": 4.0, "short_factor": [1.0], "long_factor": [1.0]}},
     "rope_scaling.rope_type"),
    ("yarn_no_factor", "qwen2", {"rope_scaling": {"type": "yarn", "original_max_position_embeddings": 32768}}, "rope_scaling.factor"),
    ("moe", "qwen2", {"model_type": "qwen2_moe"}, "mixture-of-experts"),
    ("qwen3_attention_bias", "qwen3", {"attention_bias": True}, "attention_bias"),
    ("llama_qkv_bias", "qwen2", {"model_type": "llama", "qkv_bias": True}, "qkv_bias"),
    ("mlp_bias", "qwen3", {"mlp_bias": True}, "mlp_bias"),
    # tensors the config's family does not read: q/k norms of a Qwen3 checkpoint under a qwen2 config
    ("qwen3_as_qwen2", "qwen3", {"model_type": "qwen2"}, "q_norm"),
]


def check_bad_configs(ck, args, mdirs, calib):
    for case, fam, patch, field in BAD_CONFIGS:
        src = mdirs.get(fam)
        if not src:
            continue
        d = os.path.join(args.workdir, "bad_" + case)
        if os.path.exists(d):
            shutil.rmtree(d)
        shutil.copytree(src, d)
        cfg = json.load(open(os.path.join(d, "config.json")))
        cfg.update(patch)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        if case != "qwen3_as_qwen2":       # a config problem: plan (config only) refuses it too
            rc, log = run_cmd([args.bin, "plan", "--model", d, "--ranks", "2"])
            err = [x for x in log.splitlines() if "error:" in x]
            ck.check(rc != 0 and len(err) == 1 and field in err[0] and "config.json" in err[0],
                     "bad config %s: plan refuses with one line naming '%s'" % (case, field), err[0][:200] if err else log[-200:])
        if case in ("use_sliding_window", "qwen3_as_qwen2"):
            out = fresh_dir(os.path.join(args.workdir, "bad_%s_out" % case))
            rc, log = run_cfsp(args, ["--model", d, "--calib-tokens", calib, "--nsamples", 2, "--seqlen", SEQLEN,
                                      "--output-dir", out], np_ranks=2)
            ck.check(rc != 0 and field in log and not os.listdir(out), "bad config %s: run -n 2 refuses, nothing written" % case,
                     log.strip()[-200:])


def check_recover(ck, args, name, fam, out, tokf):
    """LoRA recovery of a pruned Qwen model (q/k/v biases or q/k norms frozen in the blocks): the
    losses of steps 1 and 2 equal NumPy's (tests/ref/cfsp_ref.py on W + s B A from the checkpoints),
    the pipelined trainer (-n 3 stages) gives bitwise the data-parallel trainer's adapters, and the
    merged file passes verify and keeps the extras."""
    import h5py
    import test_recover as TR
    e = find_pruned(load_results(out), "cfsp", RATIOS[-1])
    h5 = pruned_file(out, e)
    base = ["--model", h5, "--train-tokens", tokf, "--seqlen", 32, "--batch", 4, "--lr", 1e-2, "--warmup", 0,
            "--min-lr-ratio", 1, "--rank", 4, "--alpha", 8, "--seed", 1]
    dirs = {}
    for key, steps, n, trn in (("s1", 1, 2, "data"), ("s2", 2, 2, "data"), ("p2", 2, 3, "pipeline")):
        d = fresh_dir(os.path.join(args.workdir, "%s_recover_%s" % (name, key)))
        rc, log = run_cfsp(args, base + ["--steps", steps, "--trainer", trn, "--output-dir", d] + (["--merge"] if key == "s2" else []),
                           np_ranks=n, sub="recover")
        if not ck.check(rc == 0, "%s: recover %s (%d steps, -n %d, %s)" % (name, key, steps, n, trn), log.strip()[-300:]):
            return
        dirs[key] = d
    cfg, t = TR.load_h5_tensors(h5)
    lg = json.load(open(os.path.join(dirs["s2"], "recover.json")))["log"]
    ad1, _, _ = TR.read_ckpt(os.path.join(dirs["s1"], "checkpoint.h5"))
    toks = ref.read_tokens(tokf)
    n1 = TR.batch_loss(ref.model_from_tensors(cfg, t), toks, lg[0]["offsets"], T=32)
    n2 = TR.batch_loss(TR.adapted_model(cfg, t, ad1), toks, lg[1]["offsets"], T=32)
    ck.check(abs(n1 - lg[0]["loss"]) / n1 < 2e-5 and abs(n2 - lg[1]["loss"]) / n2 < 2e-5,
             "%s: recover losses of steps 1 and 2 = NumPy" % name, "C %.7f %.7f NumPy %.7f %.7f" % (lg[0]["loss"], lg[1]["loss"], n1, n2))
    pa = h5py.File(os.path.join(dirs["s2"], "checkpoint.h5"), "r")["state/param"][()]
    pb = h5py.File(os.path.join(dirs["p2"], "checkpoint.h5"), "r")["state/param"][()]
    ck.check(np.array_equal(pa, pb), "%s: pipelined trainer (3 stages) = data-parallel, adapters bitwise" % name)
    merged = os.path.join(dirs["s2"], "merged.h5")
    rc, log = run_cmd([args.bin, "verify", merged])
    mt = h5_datasets(merged)
    st = h5_datasets(h5)
    keys = [k for k in st if any(k.endswith(x.replace(".", "/")) for x in EXTRAS[fam])]
    ck.check(rc == 0 and keys and all(np.array_equal(mt[k], st[k]) for k in keys),
             "%s: merged.h5 passes verify and keeps the %d %s extras" % (name, len(keys), fam), log.strip()[-200:])


def main():
    args = parse_args(__doc__)
    ck = Checker("qwen")
    mdirs = {}
    for i, entry in enumerate(MODELS):
        name, spec, patch = entry if len(entry) == 3 else entry + ({},)
        mdir = os.path.join(args.workdir, "model_" + name)
        if not ck.check(mkmodel(args, mdir, **spec), "%s: generate" % name):
            continue
        cfg = json.load(open(os.path.join(mdir, "config.json")))
        if patch:
            cfg.update(patch)
            json.dump(cfg, open(os.path.join(mdir, "config.json"), "w"), indent=1)
        ck.check(cfg.get("model_type") == spec["family"], "%s: config model_type %s" % (name, spec["family"]))
        qwen_tokenizer(args, mdir, spec["vocab"])
        model = ref.load_model(mdir)
        mdirs.setdefault(spec["family"], mdir)
        calib = os.path.join(args.workdir, name + "_calib.u32")
        evalf = os.path.join(args.workdir, name + "_eval.u32")
        write_tokens(calib, 4096, spec["vocab"], 100 + i)
        write_tokens(evalf, WINDOWS * SEQLEN + 7, spec["vocab"], 200 + i)
        outs = {}
        for n in (1, 2, 4):
            outs[n] = run_one(args, ck, name, mdir, calib, evalf, min(n, 2 * model.L))
        if outs[1]:
            check_reference(ck, args, name, model, spec["family"], mdir, outs[1], calib, evalf)
        for n in (2, 4):
            if outs[1] and outs[n]:
                same_outputs(ck, name, outs[1], outs[n], "-n 1 vs -n %d" % n)
        if outs[1]:
            o3 = fresh_dir(os.path.join(args.workdir, "%s_from_stats" % name))
            rc, log = run_cfsp(args, ["--model", mdir, "--stats", os.path.join(outs[1], "stats.h5"), "--eval-tokens", evalf,
                                      "--seqlen", SEQLEN, "--eval-windows", WINDOWS, "--ratios", ",".join(map(str, RATIOS)),
                                      "--method", "cfsp,flap", "--output-dir", o3, "--force"], np_ranks=2, sub="prune")
            if ck.check(rc == 0, "%s: prune --stats" % name, log[-300:]):
                r1, r3 = load_results(outs[1]), load_results(o3)
                ck.check([(e["method"], e["keep_counts"], e["ppl"]) for e in r1["pruned"]] ==
                         [(e["method"], e["keep_counts"], e["ppl"]) for e in r3["pruned"]],
                         "%s: prune --stats: same counts and perplexities" % name)
                bad = []
                for e in r1["pruned"]:
                    ta, tb = h5_datasets(pruned_file(outs[1], e)), h5_datasets(pruned_file(o3, e))
                    bad += [k for k in ta if k in tb and not np.array_equal(ta[k], tb[k])]
                ck.check(not bad, "%s: prune --stats: identical tensors" % name, "; ".join(bad[:4]))
            check_reload(ck, args, name, spec["family"], outs[1], evalf)
            check_gguf(ck, args, name, spec["family"], model, outs[1])
            if i in (0, 2):      # one qwen2 and one qwen3 (bf16) model
                check_recover(ck, args, name, spec["family"], outs[1], calib)
    check_bad_configs(ck, args, mdirs, calib)
    ck.finish()


if __name__ == "__main__":
    main()
