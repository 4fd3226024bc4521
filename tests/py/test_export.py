"""`cfsp-mpi export` (issue 9): GGUF (llama.cpp `deci`) and Hugging Face Nemotron-NAS / DeciLM
exports of pruned checkpoints and of unpruned models (ratio 0).

Every GGUF file is parsed by tests/py/gguf_reader.py (written from the GGUF spec, not from the C
writer): every key is checked against the HDF5 input / source checkpoint and its own reading of
the tokenizer files (a Python protobuf reader for sentencepiece tokenizer.model; tokenizer.json
with the merge-rank scores), every tensor against the HDF5 datasets (q/k rows un-permuted from
llama.cpp's interleaved rotary order back to Hugging Face's rotate_half order), bit for bit.
HF exports: config.json / block_configs, shard sizes, the index, every tensor bit for bit, the
tokenizer files byte for byte, and cfsp-mpi's perplexity of the export equal to the pruned
model's perplexity in the original run (results.json pruned[i].nll_sum; dense for ratio 0).
Models: stories260K (sentencepiece) and tinystories656K (tokenizer.json BPE) pruned by cfsp at
0.3 (plus flap: GGUF carries its down_proj bias as ffn_down.bias, HF refuses it), generated bf16 /
f16 models (llama3 rope -> rope_freqs, untied head, per-block sizes), a byte-level tokenizer.json
(GGUF model gpt2 with merges), and bad inputs (not HDF5, missing dataset, wrong format, existing
output, bad options, broken tokenizer)."""
import json
import math
import os
import re
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import common as C  # noqa: E402
import st_raw  # noqa: E402
from gguf_reader import GGUF  # noqa: E402
import hf_runtimes  # noqa: E402

GGML_NAME = {"F32": "F32", "F16": "F16", "BF16": "BF16"}
TOK_NORMAL, TOK_UNKNOWN, TOK_CONTROL, TOK_USER, TOK_UNUSED, TOK_BYTE = 1, 2, 3, 4, 5, 6


# ------------------------------------------------------------------------------------------------
# the expected model: HDF5 file or safetensors directory, as raw bits
# ------------------------------------------------------------------------------------------------

def h5_dtype_bits(ds):
    """(dtype name, stored bits) of an HDF5 dataset written by cfsp-mpi (F32 / F16 / BF16)."""
    t = ds.id.get_type()
    size = t.get_size()
    if size == 4:
        return "F32", ds[()].astype("<f4").view("<u4")
    f = ds.astype("f4")[()]
    ebits = t.get_fields()[2]   # (spos, epos, esize, mpos, msize)
    u = f.view("<u4")
    if ebits == 8:
        return "BF16", (u >> 16).astype("<u2")
    return "F16", f.astype("<f2").view("<u2")


class H5Model:
    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            a = f.attrs
            s = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
            self.cfg = json.loads(s(a["config"]))
            self.method = s(a["method"])
            self.ratio = float(a["ratio"])
            self.options = json.loads(s(a["options"]))
            L = self.cfg["num_hidden_layers"]
            self.ffn = [int(f["model/layers/%d/mlp/gate_proj/weight" % l].shape[0]) for l in range(L)]
            self.bias = {l: f["model/layers/%d/mlp/down_proj/bias" % l][()].astype("<f4")
                         for l in range(L) if "down_proj" in f["model/layers/%d/mlp" % l] and
                         "bias" in f["model/layers/%d/mlp/down_proj" % l]}

    def tensor(self, hf_name):
        with h5py.File(self.path, "r") as f:
            return h5_dtype_bits(f["/" + hf_name.replace(".", "/")])


class DirModel:
    def __init__(self, d):
        self.path = d
        self.cfg = json.load(open(os.path.join(d, "config.json")))
        self.table = st_raw.tensors(d)
        L = self.cfg["num_hidden_layers"]
        bc = self.cfg.get("block_configs")
        self.ffn = [bc[l]["ffn"]["intermediate_size"] for l in range(L)] if bc else [self.cfg["intermediate_size"]] * L
        self.bias = {}
        self.method, self.ratio = "none", 0.0

    def tensor(self, hf_name):
        return st_raw.raw(self.path, hf_name, self.table)


def hf_names(cfg, bias_layers=()):
    L = cfg["num_hidden_layers"]
    n = ["model.embed_tokens.weight", "model.norm.weight"]
    for l in range(L):
        for s in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                  "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            n.append("model.layers.%d.%s.weight" % (l, s))
    if not cfg.get("tie_word_embeddings", False):
        n.append("lm_head.weight")
    return n


def to_f32(dt, bits):
    return st_raw.to_f32(dt, bits)


# ------------------------------------------------------------------------------------------------
# the expected tokenizer, read here independently of the C code
# ------------------------------------------------------------------------------------------------

def pb_varint(b, i):
    x, s = 0, 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return x, i


def pb_fields(b):
    i = 0
    while i < len(b):
        key, i = pb_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = pb_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = pb_varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield f, wt, v


def expected_vocab(src_dir, cfg):
    """dict with tokens (bytes), scores (or None), types, model, ids and flags, as llama.cpp's
    converter (and our documented choice of scores for tokenizer.json BPE) defines them."""
    V = cfg["vocab_size"]
    e = {"bos": None, "eos": None, "unk": None, "pad": None, "add_bos": None, "add_eos": None,
         "add_space_prefix": None, "merges": None}
    spm = os.path.join(src_dir, "tokenizer.model")
    tj = os.path.join(src_dir, "tokenizer.json")
    tcfg_p = os.path.join(src_dir, "tokenizer_config.json")
    tcfg = json.load(open(tcfg_p)) if os.path.exists(tcfg_p) else None
    added = []
    if os.path.exists(spm):
        buf = open(spm, "rb").read()
        toks, scores, types = [], [], []
        unk = 0
        e["add_space_prefix"] = True
        for f, wt, v in pb_fields(buf):
            if f == 1 and wt == 2:
                piece, score, ty = b"", 0.0, 1
                for g, gw, gv in pb_fields(v):
                    if g == 1:
                        piece = bytes(gv)
                    elif g == 2:
                        score = struct.unpack("<f", gv)[0]
                    elif g == 3:
                        ty = gv
                toks.append(piece)
                scores.append(score)
                types.append(ty)
            elif f == 2 and wt == 2:
                for g, gw, gv in pb_fields(v):
                    if g == 40 and gw == 0:
                        unk = gv
            elif f == 3 and wt == 2:
                for g, gw, gv in pb_fields(v):
                    if g == 3 and gw == 0:
                        e["add_space_prefix"] = bool(gv)
        e["model"] = "llama"
        e["unk"] = unk
    else:
        t = json.load(open(tj))
        m = t["model"]
        n = max(list(m["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]) + 1
        toks = [None] * n
        types = [0] * n
        for s, i in m["vocab"].items():
            toks[i] = s.encode()
            types[i] = TOK_BYTE if (len(s) == 6 and s.startswith("<0x") and s.endswith(">")) else TOK_NORMAL
        for a in t.get("added_tokens", []):
            toks[a["id"]] = a["content"].encode()
            types[a["id"]] = TOK_CONTROL if a.get("special") else TOK_USER
        added = t.get("added_tokens", [])
        unk_s = m.get("unk_token")
        if unk_s is not None:
            for i, s in enumerate(toks):
                if s == unk_s.encode():
                    types[i] = TOK_UNKNOWN
                    e["unk"] = i
                    break
        def pairs(x):
            return (x.split(" ", 1) if isinstance(x, str) else x)
        byte_level = "ByteLevel" in json.dumps(t.get("pre_tokenizer")) or "ByteLevel" in json.dumps(t.get("decoder"))
        llama = m.get("byte_fallback") or "\u2581" in json.dumps(t.get("normalizer"), ensure_ascii=False) or \
            "Metaspace" in json.dumps(t.get("pre_tokenizer")) or "ByteFallback" in json.dumps(t.get("decoder"))
        if llama:
            e["model"] = "llama"
            scores = [(-1e9 if types[i] == TOK_NORMAL and len(toks[i].decode()) > 1 else 0.0) if toks[i] is not None else 0.0
                      for i in range(n)]
            idx = {}
            for i, s in enumerate(toks):
                if s is not None and s not in idx:
                    idx[s] = i
            for r, mg in enumerate(m.get("merges", [])):
                a, b = pairs(mg)
                i = idx.get((a + b).encode())
                if i is not None and types[i] == TOK_NORMAL and scores[i] == -1e9:
                    scores[i] = -(r + 1.0)
        else:
            assert byte_level
            e["model"] = "gpt2"
            scores = None
            e["merges"] = [(mg if isinstance(mg, str) else " ".join(p.replace(" ", "\u0120") for p in mg)).encode()
                           for mg in m.get("merges", [])]
    # pad to the model's vocab as the converter does
    for i in range(len(toks), V):
        toks.append(None)
        types.append(0)
        if scores is not None:
            scores.append(0.0)
    for i in range(V):
        if toks[i] is None:
            toks[i] = ("[PAD%d]" % i).encode()
            types[i] = TOK_UNUSED
            if scores is not None:
                scores[i] = -10000.0
    e["tokens"], e["scores"], e["types"] = toks, scores, types
    for k in ("bos", "eos", "unk", "pad"):
        c = tcfg.get(k + "_token") if tcfg else None
        if isinstance(c, dict):
            c = c.get("content")
        if c is not None:
            for a in added:
                if a["content"] == c:
                    e[k] = a["id"]
                    break
        if e[k] is None and isinstance(cfg.get(k + "_token_id"), int):
            e[k] = cfg[k + "_token_id"]
    if tcfg:
        for k in ("bos", "eos"):
            if isinstance(tcfg.get("add_%s_token" % k), bool):
                e["add_" + k] = tcfg["add_%s_token" % k]
    return e


# ------------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------------

def unpermute(w, n_head):
    """llama.cpp's interleaved rotary rows back to Hugging Face's rotate_half order (the inverse of
    convert_hf_to_gguf.py's permute: reshape(n_head, 2, hd/2, cols).swapaxes(1, 2))."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_factors(cfg):
    rs = cfg["rope_scaling"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    base = np.float32(cfg.get("rope_theta", 10000.0))
    freqs = (np.float32(1.0) / base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))).astype(np.float32)
    factor, lo, hi = rs.get("factor", 8.0), rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / lo, old / hi
    out = []
    for fr in freqs:
        wl = 2 * math.pi / float(fr)
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            sm = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - sm) / factor + sm))
    return np.array(out, dtype=np.float32)


def check_gguf(ck, label, path, model, src_dir, alignment=32):
    cfg = model.cfg
    L, D, H, K = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or D // H
    try:
        g = GGUF(path)
    except Exception as ex:  # noqa: BLE001
        ck.check(False, "%s: GGUF parses" % label, str(ex))
        return None
    # the key set the source predicts: general/cfsp/deci keys always, the tokenizer keys its files
    # give; add_bos_token may also come from a TemplateProcessing post-processor (not predicted)
    e = expected_vocab(src_dir, cfg)
    keys = {"general.architecture", "general.type", "general.name", "general.alignment", "general.file_type",
            "cfsp.method", "cfsp.ratio", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type"}
    keys |= {"deci." + k for k in ("block_count", "context_length", "embedding_length", "feed_forward_length",
                                   "attention.head_count", "attention.head_count_kv", "attention.key_length",
                                   "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.dimension_count",
                                   "rope.freq_base", "vocab_size")}
    keys |= {"tokenizer.ggml.scores"} if e["scores"] is not None else set()
    keys |= {"tokenizer.ggml.merges"} if e["merges"] is not None else set()
    for k, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id"),
                   ("add_bos", "add_bos_token"), ("add_eos", "add_eos_token"), ("add_space_prefix", "add_space_prefix")):
        if e[k] is not None:
            keys.add("tokenizer.ggml." + key)
    maybe = {"tokenizer.ggml.add_bos_token"} if e["add_bos"] is None else set()
    ok = keys <= set(g.kv) <= keys | maybe
    ck.check(ok, "%s: GGUF v3 parses, %d keys = the %d the source predicts%s" %
             (label, len(g.kv), len(keys), " (+ add_bos_token)" if set(g.kv) - keys else ""),
             "" if ok else "extra %s missing %s" % (sorted(set(g.kv) - keys - maybe), sorted(keys - set(g.kv))))
    ck.check(g.alignment == alignment and not g.check_padding(), "%s: alignment %d, zero padding, file ends padded" % (label, alignment),
             "; ".join(g.check_padding()))
    kv, ty = g.kv, g.kv_type
    want = {
        "general.architecture": ("STRING", "deci"),
        "general.alignment": ("UINT32", alignment),
        "deci.block_count": ("UINT32", L),
        "deci.context_length": ("UINT32", cfg.get("max_position_embeddings", 4096)),
        "deci.embedding_length": ("UINT32", D),
        "deci.attention.key_length": ("UINT32", hd),
        "deci.attention.value_length": ("UINT32", hd),
        "deci.rope.dimension_count": ("UINT32", hd),
        "deci.vocab_size": ("UINT32", cfg["vocab_size"]),
        "deci.rope.freq_base": ("FLOAT32", float(np.float32(cfg.get("rope_theta", 10000.0)))),
        "deci.attention.layer_norm_rms_epsilon": ("FLOAT32", float(np.float32(cfg.get("rms_norm_eps", 1e-6)))),
        "cfsp.method": ("STRING", model.method),
        "cfsp.ratio": ("FLOAT32", float(np.float32(model.ratio))),
    }
    bad = [k for k, (t, v) in want.items() if ty.get(k) != t or kv.get(k) != v]
    ck.check(not bad, "%s: scalar keys (architecture deci, sizes, rope base, rms eps)" % label,
             ", ".join("%s=%r (%s)" % (k, kv.get(k), ty.get(k)) for k in bad))
    arrs = {"deci.feed_forward_length": model.ffn, "deci.attention.head_count": [H] * L, "deci.attention.head_count_kv": [K] * L}
    bad = [k for k, v in arrs.items() if ty.get(k) != "ARRAY[INT32]" or list(kv.get(k, [])) != list(v)]
    ck.check(not bad, "%s: per-layer INT32 arrays feed_forward_length %s, head_count, head_count_kv" % (label, model.ffn),
             ", ".join("%s=%r" % (k, kv.get(k)) for k in bad))
    # tokenizer
    tk = kv.get("tokenizer.ggml.tokens")
    ok = ty.get("tokenizer.ggml.model") == "STRING" and kv.get("tokenizer.ggml.model") == e["model"] and \
        ty.get("tokenizer.ggml.tokens") == "ARRAY[STRING]" and tk == e["tokens"] and \
        ty.get("tokenizer.ggml.token_type") == "ARRAY[INT32]" and list(kv["tokenizer.ggml.token_type"]) == e["types"]
    if e["scores"] is not None:
        ok &= ty.get("tokenizer.ggml.scores") == "ARRAY[FLOAT32]" and np.array_equal(kv["tokenizer.ggml.scores"], np.array(e["scores"], dtype=np.float32))
    else:
        ok &= "tokenizer.ggml.scores" not in kv
    if e["merges"] is not None:
        ok &= kv.get("tokenizer.ggml.merges") == e["merges"]
    ck.check(ok, "%s: tokenizer %s: %d tokens, scores, types%s" % (label, e["model"], len(e["tokens"]), ", merges" if e["merges"] else ""))
    bad = []
    for k, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id")):
        full = "tokenizer.ggml." + key
        if e[k] is None:
            if full in kv:
                bad.append("%s present" % full)
        elif ty.get(full) != "UINT32" or kv.get(full) != e[k]:
            bad.append("%s=%r want %r" % (full, kv.get(full), e[k]))
    for k in ("add_bos", "add_eos", "add_space_prefix"):
        full = "tokenizer.ggml.%s%s" % (k, "" if k == "add_space_prefix" else "_token")
        if e[k] is None:
            if full in kv and k != "add_bos":
                bad.append("%s present" % full)
        elif ty.get(full) != "BOOL" or kv.get(full) != e[k]:
            bad.append("%s=%r want %r" % (full, kv.get(full), e[k]))
    ck.check(not bad, "%s: special token ids and flags %s" % (label, {k: e[k] for k in ("bos", "eos", "unk", "pad", "add_bos", "add_eos")}), "; ".join(bad))
    # tensors
    names = hf_names(cfg)
    gmap = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    sub = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down"}
    for n in names:
        if n.startswith("model.layers."):
            l = int(n.split(".")[2])
            rest = ".".join(n.split(".")[3:-1])
            gmap[n] = "blk.%d.%s.weight" % (l, sub[rest])
    expect_names = set(gmap[n] for n in names)
    for l in model.bias:
        expect_names.add("blk.%d.ffn_down.bias" % l)
    rope = cfg.get("rope_scaling") and (cfg["rope_scaling"].get("rope_type") or cfg["rope_scaling"].get("type")) == "llama3"
    if rope:
        expect_names.add("rope_freqs.weight")
    ck.check(set(g.tensors) == expect_names, "%s: tensor set (%d; output.weight %s)" % (label, len(expect_names), "absent: tied" if cfg.get("tie_word_embeddings") else "present"),
             "extra %s missing %s" % (sorted(set(g.tensors) - expect_names)[:5], sorted(expect_names - set(g.tensors))[:5]))
    nbad, worst = 0, []
    for n in names:
        gn = gmap[n]
        if gn not in g.tensors:
            continue
        dt, want_bits = model.tensor(n)
        a = g.array(gn)
        one_d = want_bits.ndim == 1
        if one_d:
            ok = g.type_name(gn) == "F32" and tuple(g.tensors[gn].ne) == (want_bits.shape[0],) and \
                np.array_equal(a.view("<u4"), to_f32(dt, want_bits).view("<u4"))
        else:
            got = a.view("<u4" if dt == "F32" else "<u2")
            ok = g.type_name(gn) == GGML_NAME[dt] and tuple(g.tensors[gn].ne) == (want_bits.shape[1], want_bits.shape[0])
            if ok and gn.endswith("attn_q.weight"):
                got = unpermute(got, H)
            elif ok and gn.endswith("attn_k.weight"):
                got = unpermute(got, K)
            ok = ok and np.array_equal(got, want_bits)
        if not ok:
            nbad += 1
            worst.append(gn)
    for l, b in model.bias.items():
        gn = "blk.%d.ffn_down.bias" % l
        if gn not in g.tensors or g.type_name(gn) != "F32" or not np.array_equal(g.array(gn), b):
            nbad += 1
            worst.append(gn)
    if rope and "rope_freqs.weight" in g.tensors:
        rf = g.array("rope_freqs.weight")
        want_rf = llama3_factors(cfg)
        if rf.shape != want_rf.shape or not np.allclose(rf, want_rf, rtol=1e-6, atol=0):
            nbad += 1
            worst.append("rope_freqs.weight %s vs %s" % (rf[:4], want_rf[:4]))
    ck.check(nbad == 0, "%s: every tensor bit for bit (dtype kept, norms F32, q/k un-permuted = HF rows%s%s)" %
             (label, ", ffn_down.bias" if model.bias else "", ", rope_freqs = llama3 factors" if rope else ""), ", ".join(worst[:6]))
    # a q/k permutation sanity check: the GGUF q rows are NOT the HF rows (unless hd == 2)
    if hd > 2:
        dt, q = model.tensor("model.layers.0.self_attn.q_proj.weight")
        raw = g.array("blk.0.attn_q.weight").view("<u4" if dt == "F32" else "<u2")
        ck.check(not np.array_equal(raw, q), "%s: attn_q is stored permuted (interleaved rotary pairs)" % label)
    return g


def check_hf(ck, label, outdir, model, src_dir, shard_bytes):
    cfg_p = os.path.join(outdir, "config.json")
    if not ck.check(os.path.exists(cfg_p), "%s: HF export written" % label):
        return
    cfg = json.load(open(cfg_p))
    src = model.cfg
    L, H, K = src["num_hidden_layers"], src["num_attention_heads"], src.get("num_key_value_heads", src["num_attention_heads"])
    bc = cfg.get("block_configs", [])
    ok = cfg.get("architectures") == ["DeciLMForCausalLM"] and cfg.get("model_type") == "nemotron-nas" and len(bc) == L
    # every size a multiple of 256: ffn_mult alone, giving the size by the Nemotron-NAS rule; else
    # intermediate_size alone (tests/py/test_hf_runtimes.py checks the runtimes' rules in detail)
    mult = all(m > 0 and m % 256 == 0 for m in model.ffn)

    def ffn_ok(f, m):
        if mult:
            n = int(2 * round(f.get("ffn_mult", 0), 6) * src["hidden_size"] / 3)
            return "intermediate_size" not in f and (n if n % 256 == 0 else n + 256 - n % 256) == m
        return "ffn_mult" not in f and f.get("intermediate_size") == m
    ok = ok and all(ffn_ok(b["ffn"], model.ffn[l]) and b["ffn"]["no_op"] is False and b["ffn"]["replace_with_linear"] is False and
                    b["attention"]["n_heads_in_group"] == H // K and b["attention"]["no_op"] is False and
                    b["attention"]["replace_with_linear"] is False for l, b in enumerate(bc))
    keep = {k: v for k, v in src.items() if k not in ("architectures", "model_type", "intermediate_sizes", "block_configs")}
    ok = ok and all(cfg.get(k) == v for k, v in keep.items()) and "intermediate_sizes" not in cfg
    ck.check(ok, "%s: config.json DeciLMForCausalLM / nemotron-nas, block_configs %s, other fields kept" % (label, [b["ffn"].get("intermediate_size", b["ffn"].get("ffn_mult")) for b in bc]))
    idx = json.load(open(os.path.join(outdir, "model.safetensors.index.json")))
    files = sorted(set(idx["weight_map"].values()))
    sizes = [os.path.getsize(os.path.join(outdir, f)) for f in files]
    names = hf_names(src)
    total = 0
    table = st_raw.tensors(outdir)
    biggest = max(np.prod(model.tensor(n)[1].shape) * (4 if model.tensor(n)[0] == "F32" else 2) for n in names)
    ok = sorted(idx["weight_map"]) == sorted(names) and set(table) == set(names)
    ok = ok and all(s <= max(shard_bytes, biggest + 4096) for s in sizes)
    if len(files) > 1:
        ok = ok and all(f == "model-%05d-of-%05d.safetensors" % (i + 1, len(files)) for i, f in enumerate(files))
    ck.check(ok, "%s: %d safetensors files of at most %d bytes (%s), index names every tensor" % (label, len(files), shard_bytes, sizes))
    bad = []
    for n in names:
        dt, want = model.tensor(n)
        gdt, got = st_raw.raw(outdir, n, table)
        total += got.nbytes
        if gdt != dt or not np.array_equal(got, want):
            bad.append(n)
    ck.check(not bad and idx["metadata"]["total_size"] == total, "%s: every tensor bit for bit in its stored dtype; total_size %d" % (label, total), ", ".join(bad[:5]))
    copied = [f for f in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
              if os.path.exists(os.path.join(src_dir, f))]
    ok = all(open(os.path.join(src_dir, f), "rb").read() == open(os.path.join(outdir, f), "rb").read() for f in copied if os.path.exists(os.path.join(outdir, f)))
    ok = ok and all(os.path.exists(os.path.join(outdir, f)) for f in copied)
    ck.check(ok, "%s: tokenizer files copied byte for byte %s" % (label, copied))


def export(args, fmt, out, *rest, expect_fail=False):
    cmd = [args.bin, "export", "--format", fmt] + [str(r) for r in rest] + [out]
    rc, text = C.run_cmd(cmd, timeout=300)
    if expect_fail:
        return rc, text
    return rc == 0, text


def eval_nll(args, model_dir, eval_opts, outdir):
    """cfsp-mpi's perplexity of model_dir (a dense run without ratios) -> (nll_sum, ntokens)."""
    C.fresh_dir(outdir)
    rc, _ = C.run_cfsp(args, ["--model", model_dir, "--output-dir", outdir, "--save-stats", "0"] + eval_opts, sub="run")
    if rc != 0:
        return None, None
    r = C.load_results(outdir)
    return r["dense"]["nll_sum"], r["dense"]["ntokens"]


def same_nll(ck, label, got, want):
    if got is None:
        return ck.check(False, label, "evaluation failed")
    rel = abs(got - want) / abs(want)
    return ck.check(rel <= 1e-5, label, "nll %.10g vs %.10g, rel %.2e%s" % (got, want, rel, " (bitwise equal)" if got == want else ""))


def one_error_line(text):
    lines = [l for l in text.strip().splitlines() if "error" in l]
    return len(lines) == 1, lines[0] if lines else text.strip()[-200:]


# ------------------------------------------------------------------------------------------------

def model_case(ck, args, name, methods, work, shard):
    src = C.model_dir(args, name)
    calib = C.token_file(args, name)
    ev = C.token_file(args, name, "wikitext2_test.joined")
    run = os.path.join(work, name + "_run")
    eval_opts = ["--calib-tokens", calib, "--nsamples", "8", "--seqlen", "128", "--eval-tokens", ev, "--eval-windows", "16"]
    C.fresh_dir(run)
    rc, _ = C.run_cfsp(args, ["--model", src, "--output-dir", run, "--ratios", "0.3", "--method", ",".join(methods)] + eval_opts)
    if not ck.check(rc == 0, "%s: pruning run (%s at 0.3)" % (name, ",".join(methods))):
        return
    res = C.load_results(run)
    for method in methods:
        e = C.find_pruned(res, method, 0.3)
        h5 = C.pruned_file(run, e)
        m = H5Model(h5)
        label = "%s %s r0.3" % (name, method)
        gg = os.path.join(work, "%s_%s.gguf" % (name, method))
        ok, _ = export(args, "gguf", gg, h5)
        if ck.check(ok, "%s: export --format gguf (source checkpoint from the file's options)" % label):
            check_gguf(ck, label, gg, m, src)
        hf = os.path.join(work, "%s_%s_hf" % (name, method))
        if m.bias:
            rc, text = export(args, "hf", hf, h5, expect_fail=True)
            one, line = one_error_line(text)
            ck.check(rc != 0 and one and "bias" in line and not os.path.exists(hf) and not [f for f in os.listdir(work) if f.startswith(os.path.basename(hf) + ".tmp")],
                     "%s: HF export refused (down_proj bias), one line, nothing left" % label, line)
            continue
        ok, _ = export(args, "hf", hf, h5, "--shard-size", shard)
        if ck.check(ok, "%s: export --format hf --shard-size %d" % (label, shard)):
            check_hf(ck, label, hf, m, src, shard)
            nll, nt = eval_nll(args, hf, eval_opts, os.path.join(work, "%s_%s_eval" % (name, method)))
            same_nll(ck, "%s: cfsp-mpi perplexity of the HF export = the pruned model's in the run (%d tokens)" % (label, e.get("ntokens", nt) or 0), nll, e["nll_sum"])
            # the HF export is itself a source: its ratio-0 GGUF equals the GGUF of the HDF5 file
            gg2 = os.path.join(work, "%s_%s_via_hf.gguf" % (name, method))
            ok, _ = export(args, "gguf", gg2, "--model", hf)
            if ck.check(ok, "%s: export --format gguf --model <HF export>" % label):
                a, b = GGUF(gg), GGUF(gg2)
                same = set(a.tensors) == set(b.tensors) and all(np.array_equal(a.array(t), b.array(t)) for t in a.tensors)
                same &= all(np.array_equal(np.asarray(a.kv[k]), np.asarray(b.kv[k])) if not isinstance(a.kv[k], list) else a.kv[k] == b.kv[k]
                            for k in a.kv if not k.startswith(("general.name", "cfsp.")))
                ck.check(same, "%s: GGUF via the HF export = GGUF of the HDF5 file (every tensor and key)" % label)
    # ratio 0: the unpruned model straight from safetensors
    dm = DirModel(src)
    gg = os.path.join(work, "%s_r0.gguf" % name)
    ok, text = export(args, "gguf", gg, "--model", src)
    if ck.check(ok, "%s r0: export --format gguf --model SRC" % name):
        check_gguf(ck, name + " r0", gg, dm, src)
        # llama.cpp aborts on a character that is no token when the vocabulary has no <0xXX> byte
        # tokens (found with llama-tokenize on tinystories656K, mpi_scripts/llamacpp_check.sh): the
        # export says so, naming the single-character tokens it has
        g = GGUF(gg)
        toks = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in g.kv["tokenizer.ggml.tokens"]]
        nbyte = sum(1 for t in toks if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t))
        nchar = sum(1 for t, ty in zip(toks, g.kv["tokenizer.ggml.token_type"]) if len(t) == 1 and ty == 1)
        warned = re.search(r"no <0xXX> byte tokens: llama\.cpp aborts .* one of the (\d+) single-character tokens", text)
        ck.check(bool(warned) == (nbyte == 0) and (not warned or int(warned.group(1)) == nchar),
                 "%s r0: %d byte tokens; warning about llama.cpp's byte fallback %s" % (name, nbyte, "given (%d single characters)" % nchar if warned else "not given"),
                 text.strip()[-300:])
    hf = os.path.join(work, "%s_r0_hf" % name)
    ok, _ = export(args, "hf", hf, "--model", src, "--shard-size", shard)
    if ck.check(ok, "%s r0: export --format hf --model SRC" % name):
        check_hf(ck, name + " r0", hf, dm, src, shard)
        nll, _ = eval_nll(args, hf, eval_opts, os.path.join(work, name + "_r0_eval"))
        same_nll(ck, "%s r0: cfsp-mpi perplexity of the HF export = the dense model's in the run" % name, nll, res["dense"]["nll_sum"])


def dtype_case(ck, args, work, dtype, tie, llama3):
    """a generated model in bf16 / f16 (llama3 rope, untied head, per-block FFN sizes, GQA 8/2)."""
    name = "gen_%s" % dtype
    src = os.path.join(work, name)
    if not ck.check(C.mkmodel(args, src, 64, 0, 3, 8, 2, 512, dtype=dtype, seed=7, tie=1 if tie else 0,
                              rope_llama3=8.0 if llama3 else None, ffn_per_layer=[96, 128, 80]),
                    "%s: generated model (%s, tie=%d, llama3 rope=%d)" % (name, dtype, tie, llama3)):
        return
    shutil.copy(os.path.join(C.model_dir(args, "stories260K"), "tokenizer.model"), src)
    run = os.path.join(work, name + "_run")
    tok = C.token_file(args, "stories260K")
    eval_opts = ["--calib-tokens", tok, "--nsamples", "4", "--seqlen", "64", "--eval-tokens", tok + "@100000:120000", "--eval-windows", "8"]
    C.fresh_dir(run)
    rc, _ = C.run_cfsp(args, ["--model", src, "--output-dir", run, "--ratios", "0.3"] + eval_opts)
    if not ck.check(rc == 0, "%s: pruning run" % name):
        return
    res = C.load_results(run)
    e = C.find_pruned(res, "cfsp", 0.3)
    h5 = C.pruned_file(run, e)
    m = H5Model(h5)
    gg = os.path.join(work, name + ".gguf")
    ok, _ = export(args, "gguf", gg, h5, "--model", src, "--alignment", "64")
    if ck.check(ok, "%s: export --format gguf --alignment 64" % name):
        g = check_gguf(ck, name, gg, m, src, alignment=64)
        if g is not None:
            ft = {"F32": 0, "F16": 1, "BF16": 32}[m.tensor("model.layers.0.mlp.up_proj.weight")[0]]
            ck.check(g.kv.get("general.file_type") == ft, "%s: general.file_type %d" % (name, ft))
    hf = os.path.join(work, name + "_hf")
    ok, _ = export(args, "hf", hf, h5, "--model", src, "--shard-size", "40KiB")
    if ck.check(ok, "%s: export --format hf --shard-size 40KiB" % name):
        check_hf(ck, name, hf, m, src, 40 * 1024)
        nll, _ = eval_nll(args, hf, eval_opts, os.path.join(work, name + "_eval"))
        same_nll(ck, "%s: cfsp-mpi perplexity of the HF export = the pruned model's in the run" % name, nll, e["nll_sum"])


def gpt2_case(ck, args, work):
    """a byte-level BPE tokenizer.json -> tokenizer.ggml.model gpt2 with merges."""
    src = os.path.join(work, "bytelevel")
    if os.path.exists(src):
        shutil.rmtree(src)
    shutil.copytree(C.model_dir(args, "stories260K"), src)
    os.remove(os.path.join(src, "tokenizer.model"))
    chars = [chr(c) for c in range(33, 127)] + ["\u0120"]
    vocab = {c: i for i, c in enumerate(chars)}
    merges = []
    for a, b in [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("a", "n"), ("\u0120", "a")]:
        merges.append([a, b] if len(merges) % 2 else "%s %s" % (a, b))
        vocab.setdefault(a + b, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    tj = {"version": "1.0", "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "special": True}],
          "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
          "post_processor": None, "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": False}}
    json.dump(tj, open(os.path.join(src, "tokenizer.json"), "w"))
    gg = os.path.join(work, "bytelevel.gguf")
    ok, _ = export(args, "gguf", gg, "--model", src)
    if ck.check(ok, "byte-level tokenizer.json: export --format gguf"):
        g = check_gguf(ck, "byte-level", gg, DirModel(src), src)
        if g is not None:
            ck.check(g.kv.get("tokenizer.ggml.pre") == "gpt-2" and len(g.kv.get("tokenizer.ggml.merges", [])) == 5,
                     "byte-level: tokenizer.ggml.pre gpt-2, 5 merges (pairs with spaces written as U+0120)")


def bad_cases(ck, args, work):
    s260 = C.model_dir(args, "stories260K")
    run = os.path.join(work, "stories260K_run")
    h5 = os.path.join(run, "cfsp_r0.3.h5")
    if not os.path.exists(h5):
        ck.check(False, "bad inputs: need the stories260K run")
        return

    def expect(label, fmt, out, rest, needle):
        rc, text = export(args, fmt, out, *rest, expect_fail=True)
        one, line = one_error_line(text)
        left = os.path.exists(out) and not out.endswith("exists")
        ck.check(rc != 0 and one and needle in line and not left, "bad input: %s -> one-line error" % label, line)

    notes = os.path.join(work, "not_h5.h5")
    open(notes, "w").write("this is not an HDF5 file\n" * 10)
    expect("not an HDF5 file", "gguf", os.path.join(work, "x1.gguf"), [notes], "not an HDF5 file")
    expect("no such input", "hf", os.path.join(work, "x2"), [os.path.join(work, "nope.h5")], "no such file")
    miss = os.path.join(work, "missing_ds.h5")
    shutil.copy(h5, miss)
    with h5py.File(miss, "a") as f:
        del f["model/layers/2/mlp/up_proj/weight"]
    expect("missing dataset", "gguf", os.path.join(work, "x3.gguf"), [miss], "'/model/layers/2/mlp/up_proj/weight' is missing")
    expect("missing dataset (hf)", "hf", os.path.join(work, "x3hf"), [miss], "is missing")
    shp = os.path.join(work, "bad_shape.h5")
    shutil.copy(h5, shp)
    with h5py.File(shp, "a") as f:
        d = f["model/layers/1/self_attn/k_proj/weight"][()]
        del f["model/layers/1/self_attn/k_proj/weight"]
        f["model/layers/1/self_attn/k_proj/weight"] = d[:-1]
    expect("dataset of the wrong shape", "gguf", os.path.join(work, "x4.gguf"), [shp], "has shape")
    fmt = os.path.join(work, "bad_format.h5")
    shutil.copy(h5, fmt)
    with h5py.File(fmt, "a") as f:
        f.attrs["format"] = "something-else/9"
    expect("wrong format attribute", "gguf", os.path.join(work, "x5.gguf"), [fmt], "attribute 'format'")
    stats = os.path.join(run, "stats.h5")
    expect("a statistics file, not a model", "gguf", os.path.join(work, "x6.gguf"), [stats], "attribute 'format'")
    exists = os.path.join(work, "exists.gguf")
    open(exists, "w").write("keep me")
    rc, text = export(args, "gguf", exists, h5, expect_fail=True)
    ck.check(rc != 0 and "use --force" in text and open(exists).read() == "keep me", "existing output kept without --force", one_error_line(text)[1])
    ok, _ = export(args, "gguf", exists, h5, "--force")
    ck.check(ok and GGUF(exists).kv["general.architecture"] == "deci", "--force replaces the output")
    hfx = os.path.join(work, "exists_hf")
    os.makedirs(hfx, exist_ok=True)
    open(os.path.join(hfx, "notes.txt"), "w").write("mine")
    rc, text = export(args, "hf", hfx, h5, "--force", expect_fail=True)
    ck.check(rc != 0 and os.path.exists(os.path.join(hfx, "notes.txt")) and not [f for f in os.listdir(work) if f.startswith("exists_hf.tmp")],
             "hf --force refuses to replace a directory holding other files", one_error_line(text)[1])
    os.remove(os.path.join(hfx, "notes.txt"))
    ok1, _ = export(args, "hf", hfx, h5, "--force")
    ok2, _ = export(args, "hf", hfx, h5, "--force", "--shard-size", "100KB")
    ck.check(ok1 and ok2 and len([f for f in os.listdir(hfx) if f.endswith(".safetensors")]) > 1 and
             not [f for f in os.listdir(hfx) if f == "model.safetensors"], "hf --force replaces a previous export (no stale shard)")
    expect("unknown format", "onnx", os.path.join(work, "x7"), [h5], "--format = 'onnx': expected hf, gguf, hf-padded, gguf-padded or hf-llama")
    expect("alignment not a power of two", "gguf", os.path.join(work, "x8.gguf"), [h5, "--alignment", "48"], "power of two")
    expect("bad shard size", "hf", os.path.join(work, "x9"), [h5, "--shard-size", "12parsecs"], "--shard-size")
    expect("one path without --model", "gguf", os.path.join(work, "x10.gguf"), [], "--model DIR")
    notok = os.path.join(work, "no_tokenizer")
    if os.path.exists(notok):
        shutil.rmtree(notok)
    os.makedirs(notok)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(s260, f), notok)
    expect("source without tokenizer files (gguf)", "gguf", os.path.join(work, "x11.gguf"), ["--model", notok], "no tokenizer.model or tokenizer.json")
    badtok = os.path.join(work, "bad_tokenizer")
    if os.path.exists(badtok):
        shutil.rmtree(badtok)
    shutil.copytree(notok, badtok)
    tm = open(os.path.join(s260, "tokenizer.model"), "rb").read()
    open(os.path.join(badtok, "tokenizer.model"), "wb").write(tm[:len(tm) // 2 + 3])
    expect("truncated tokenizer.model", "gguf", os.path.join(work, "x12.gguf"), ["--model", badtok], "exceeds")
    open(os.path.join(badtok, "tokenizer.model"), "wb").write(b"\x0a\xff\xff\xff\xff\x0f" + tm)
    expect("tokenizer.model with an oversized length", "gguf", os.path.join(work, "x13.gguf"), ["--model", badtok], "tokenizer.model")
    os.remove(os.path.join(badtok, "tokenizer.model"))
    json.dump({"model": {"type": "Unigram", "vocab": []}}, open(os.path.join(badtok, "tokenizer.json"), "w"))
    expect("tokenizer.json of an unsupported model type", "gguf", os.path.join(work, "x14.gguf"), ["--model", badtok], "only BPE")
    # under mpiexec -n 2: rank 0 exports, the other rank waits; one message on failure
    rc, text = C.run_cmd([args.mpiexec, "--oversubscribe", "-n", "2", args.bin, "export", "--format", "gguf", h5, os.path.join(work, "np2.gguf")])
    ck.check(rc == 0 and GGUF(os.path.join(work, "np2.gguf")).tensors, "export under mpiexec -n 2 (rank 0 writes)")
    rc, text = C.run_cmd([args.mpiexec, "--oversubscribe", "-n", "2", args.bin, "export", "--format", "gguf", notes, os.path.join(work, "np2b.gguf")])
    ck.check(rc != 0 and text.count("not an HDF5 file") == 1, "bad input under mpiexec -n 2: one message, exit != 0")


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("test_export")
    work = C.fresh_dir(args.workdir)
    model_case(ck, args, "stories260K", ["cfsp", "flap"], work, 200000)
    model_case(ck, args, "tinystories656K", ["cfsp"], work, 1000000)
    dtype_case(ck, args, work, "bf16", tie=False, llama3=True)
    dtype_case(ck, args, work, "f16", tie=True, llama3=False)
    gpt2_case(ck, args, work)
    bad_cases(ck, args, work)
    # issue 17: the HF export as vLLM / sglang / TensorRT-LLM / mlx-lm / NVIDIA's code read it
    hf_runtimes.run(ck, args, os.path.join(work, "hf_runtimes"))
    ck.finish()


if __name__ == "__main__":
    main()
