"""test_mixed_dtypes.py — checkpoints whose tensors mix stored dtypes (issue 17: many Hugging Face
checkpoints keep norms or embeddings in F32 beside BF16 matrices; pruned files of such a model used
to fail `cfsp-mpi verify`, the datasets being created in another tensor's dtype).

Variants of stories260K (tied, LLaMA) and of a generated untied Qwen2 checkpoint (q/k/v biases):
every tensor kind (embedding, input/post-attention/final norms, q, k, v, o, gate, up, down, lm_head,
the q/k/v biases) is stored as F32, F16 or BF16 by a Latin square over three variants, so that every
kind is tried in every dtype and neighbours differ. For each variant, at -n 1 and -n 2:
  1. dense logits against the NumPy reference (which reads every dtype exactly);
  2. the pruned files (cfsp and flap, 0.3): `cfsp-mpi verify` accepts them; every dataset has its
     source tensor's dtype (the "dtype" attribute and the HDF5 type), sliced rows/columns bit for
     bit; -n 1 and -n 2 give identical datasets;
  3. export: GGUF (each tensor in its dtype, norms F32) read back and HF re-loaded with --model give
     the pruned perplexity again.

    /usr/bin/python3 tests/py/test_mixed_dtypes.py --bin build/cfsp-mpi --mkmodel build/cfsp-mpi-mkmodel \
        --shared /work/shared --workdir /tmp/mixed
"""

import json
import os
import shutil

import numpy as np

import make_variant as MV
import st_raw
from common import (Checker, find_pruned, fresh_dir, h5_datasets, load_results, logit_tolerance, mkmodel,
                    model_dir, parse_args, pruned_file, ref, run_cfsp, run_cmd, token_file)

DTYPES = ["F32", "F16", "BF16"]
KINDS = ["embed_tokens", "input_layernorm", "post_attention_layernorm", "model.norm", "q_proj.weight", "k_proj.weight",
         "v_proj.weight", "o_proj.weight", "gate_proj", "up_proj", "down_proj", "lm_head", "proj.bias"]
SEQLEN, WINDOWS = 64, 2


def kind_of(name):
    for i, k in enumerate(KINDS):
        if k in name:
            return i
    raise ValueError(name)


def make_mixed(src, out, r):
    """src's tensors with kind i stored as DTYPES[(i + r) % 3]; returns {name: dtype}"""
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    table = st_raw.tensors(src)
    cfg = json.load(open(os.path.join(src, "config.json")))
    items, dts = [], {}
    for k in sorted(table):
        if k == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue          # tied: the head is embed_tokens (a second copy in another dtype would differ)
        a = st_raw.to_f32(*st_raw.raw(src, k, table))
        d = DTYPES[(kind_of(k) + r) % 3]
        items.append((k, d, a.shape, MV.encode_as(a, d)))
        dts[k] = d
    MV.write_safetensors(out, items)
    cfg["torch_dtype"] = "bfloat16"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    MV.copy_tokenizer(src, out)
    return dts


def h5_stored(path):
    """{dataset: (the HDF5 type's size, IEEE half or not, the 'dtype' attribute)} of a pruned file"""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and "dtype" in obj.attrs:
                ty = obj.id.get_type()
                a = obj.attrs["dtype"]
                out[name] = (ty.get_size(), ty.get_size() == 2 and ty.get_ebias() == 15, a.decode() if isinstance(a, bytes) else str(a))
        f.visititems(visit)
    return out


def dtype_of(stored):
    size, half, attr = stored
    got = {4: "F32"}.get(size, "F16" if half else "BF16")
    return got if got == attr else "%s (attribute %s)" % (got, attr)


def check_variant(ck, args, name, mdir, dts, tokf):
    model = ref.load_model(mdir)
    outs = {}
    for n in (1, 2):
        out = fresh_dir(os.path.join(args.workdir, "%s_n%d" % (name, n)))
        rc, log = run_cfsp(args, ["--model", mdir, "--calib-tokens", tokf, "--eval-tokens", tokf + "@0:4000", "--nsamples", 4,
                                  "--seqlen", SEQLEN, "--eval-windows", WINDOWS, "--ratios", 0.3, "--method", "cfsp,flap",
                                  "--dump-logits", os.path.join(out, "logits.f32"), "--output-dir", out, "--force"], np_ranks=n)
        if ck.check(rc == 0, "%s: run -n %d" % (name, n), log.strip()[-300:]):
            outs[n] = out
    if 1 not in outs:
        return
    toks = ref.read_tokens(tokf)[:4000]
    _, _, _, rl = ref.perplexity(model, toks, SEQLEN, windows=WINDOWS, return_logits=True)
    cl = np.fromfile(os.path.join(outs[1], "logits.f32"), dtype="<f4").reshape(rl.shape)
    d, tol = float(np.abs(cl - rl).max()), logit_tolerance(rl)
    ck.check(d <= tol, "%s: dense logits vs NumPy <= %.3g" % (name, tol), "%.3g" % d)
    res = load_results(outs[1])
    src = ref.read_model_tensors(mdir)
    for e in res["pruned"]:
        path = pruned_file(outs[1], e)
        rc, log = run_cmd([args.bin, "verify", path])
        ck.check(rc == 0 and ": OK," in log, "%s %s: verify" % (name, e["method"]), log.strip()[-200:])
        t = h5_datasets(path)
        stored = h5_stored(path)
        bad = []
        for k, want in dts.items():
            key = k.replace(".", "/")
            if key not in stored:
                bad.append("%s missing" % key)
            elif dtype_of(stored[key]) != want:
                bad.append("%s stored %s, source %s" % (key, dtype_of(stored[key]), want))
        ck.check(not bad, "%s %s: every dataset in its source tensor's dtype" % (name, e["method"]), "; ".join(bad[:4]))
        f = ref.read_pruned_h5(path, model.L)
        sl = []
        for l in range(model.L):
            k = f["kept"][l]
            for nm, want in (("gate", src["model.layers.%d.mlp.gate_proj.weight" % l][k]),
                             ("up", src["model.layers.%d.mlp.up_proj.weight" % l][k]),
                             ("down", src["model.layers.%d.mlp.down_proj.weight" % l][:, k])):
                if not np.array_equal(f[nm][l], want):
                    sl.append("l=%d %s" % (l, nm))
        ck.check(not sl, "%s %s: sliced FFN = source bit for bit" % (name, e["method"]), "; ".join(sl[:4]))
        if 2 in outs:
            t2 = h5_datasets(pruned_file(outs[2], e))
            diff = [k for k in t if k not in t2 or not np.array_equal(t[k], t2[k])]
            ck.check(not diff, "%s %s: -n 1 and -n 2 datasets identical" % (name, e["method"]), "; ".join(diff[:4]))
    # exports of the cfsp model
    e = find_pruned(res, "cfsp", 0.3)
    path = pruned_file(outs[1], e)
    import gguf_reader
    g_path = os.path.join(args.workdir, name + ".gguf")
    rc, log = run_cmd([args.bin, "export", "--format", "gguf", "--force", path, g_path])
    if ck.check(rc == 0, "%s: export gguf" % name, log[-300:]):
        g = gguf_reader.GGUF(g_path)
        want = {"model.embed_tokens.weight": "token_embd.weight", "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
                "model.layers.0.self_attn.o_proj.weight": "blk.0.attn_output.weight", "lm_head.weight": "output.weight"}
        bad = ["%s %s vs %s" % (gn, g.type_name(gn), dts[hf]) for hf, gn in want.items() if hf in dts and gn in g.tensors and g.type_name(gn) != dts[hf]]
        bad += ["%s not F32" % gn for gn in g.tensors if gn.endswith("norm.weight") and g.type_name(gn) != "F32"]
        ck.check(not bad, "%s: GGUF tensors in their stored dtype, norms F32" % name, "; ".join(bad))
    fmt = "hf-padded" if "qwen" in name else "hf"
    hf = os.path.join(args.workdir, name + "_hf")
    if os.path.exists(hf):
        shutil.rmtree(hf)
    rc, log = run_cmd([args.bin, "export", "--format", fmt, "--force", path, hf])
    if ck.check(rc == 0, "%s: export %s" % (name, fmt), log[-300:]):
        o2 = fresh_dir(os.path.join(args.workdir, name + "_reload"))
        rc, log = run_cfsp(args, ["--model", hf, "--calib-tokens", tokf, "--eval-tokens", tokf + "@0:4000", "--nsamples", 2,
                                  "--seqlen", SEQLEN, "--eval-windows", WINDOWS, "--output-dir", o2, "--force"], np_ranks=2)
        if ck.check(rc == 0, "%s: run on the %s export" % (name, fmt), log.strip()[-300:]):
            p = float(load_results(o2)["dense"]["ppl"])
            ck.check(abs(p - float(e["ppl"])) <= 1e-5 * p, "%s: %s export re-loaded: the pruned perplexity" % (name, fmt),
                     "%.7f vs %.7f" % (p, float(e["ppl"])))


def main():
    args = parse_args(__doc__)
    ck = Checker("mixed dtypes")
    bases = [("stories260K", model_dir(args, "stories260K"), token_file(args, "stories260K"))]
    q = os.path.join(args.workdir, "base_qwen2")
    if ck.check(mkmodel(args, q, 48, 100, 3, 6, 2, 512, seed=41, tie=0, family="qwen2"), "generated an untied qwen2 model"):
        shutil.copy(os.path.join(model_dir(args, "stories260K"), "tokenizer.model"), q)   # 512 pieces: for the GGUF export
        bases.append(("qwen2", q, token_file(args, "stories260K")))
    for base, src, tokf in bases:
        for r in range(3):
            name = "%s_mix%d" % (base, r)
            d = os.path.join(args.workdir, name)
            dts = make_mixed(src, d, r)
            ck.note("%s: %s" % (name, ", ".join("%s %s" % (k, DTYPES[(i + r) % 3]) for i, k in enumerate(KINDS))))
            check_variant(ck, args, name, d, dts, tokf)
    ck.finish()


if __name__ == "__main__":
    main()
