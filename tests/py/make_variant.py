"""A variant of a float32 Hugging Face LLaMA checkpoint for the export checks; tokenizer files copied.

f16, bf16: the same weights stored as F16 or BF16 (round to nearest even), an untied lm_head (a copy
of embed_tokens) and llama3 rope scaling in config.json. It exercises the GGUF paths the shared
models (float32, tied, no rope scaling) do not: 16-bit tensor types, output.weight, rope_freqs.weight
(mpi_scripts/llamacpp_check.sh). The rope scaling was not trained, so the perplexity is worse than
the original's; both runtimes must still agree.

qwen2, qwen3: the same model as a Qwen2ForCausalLM / Qwen3ForCausalLM checkpoint. Every source
tensor is kept bit for bit (dtype, tie_word_embeddings, lm_head or not as in the source); added:
qwen2 model.layers.N.self_attn.{q,k,v}_proj.bias (each right after its weight), N(0,1) * 0.05;
qwen3 model.layers.N.self_attn.{q,k}_norm.weight [head_dim] (after o_proj), 1 + N(0,1) * 0.05;
drawn from numpy's default_rng(SEED) layer by layer in that order, stored in the dtype of q_proj.
config.json: model_type and architectures of the family, the llama-only keys (mlp_bias,
pretraining_tp) dropped, use_sliding_window false, max_window_layers = layers, attention_dropout
0.0; qwen2: no attention_bias, sliding_window 4096, head_dim only when it is not hidden/heads;
qwen3: head_dim always, attention_bias false, sliding_window null. The added tensors were not
trained, so the perplexity is a little worse than the original's; both runtimes must still agree.

    python3 tests/py/make_variant.py SRC_DIR OUT_DIR f16|bf16
    python3 tests/py/make_variant.py SRC_DIR OUT_DIR qwen2|qwen3 [--seed S]     (S: default 0)
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_raw  # noqa: E402


def encode(a, dt):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dt == "f16":
        return a.astype("<f2").tobytes(), "F16"
    u = a.view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes(), "BF16"


def write_safetensors(out, items):
    """items: [(name, safetensors dtype, shape, bytes)] in file order -> OUT/model.safetensors"""
    hdr, off = {}, 0
    for k, d, shape, b in items:
        hdr[k] = {"dtype": d, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    tmp = os.path.join(out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for item in items:
            f.write(item[3])
    os.replace(tmp, os.path.join(out, "model.safetensors"))


def copy_tokenizer(src, out):
    for fn in os.listdir(src):
        if fn.startswith("tokenizer") or fn in ("special_tokens_map.json", "generation_config.json"):
            shutil.copy(os.path.join(src, fn), out)


def encode_as(a, st_dtype):
    """float32 values -> bytes of safetensors dtype F32, F16 or BF16"""
    if st_dtype == "F32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    return encode(a, "f16" if st_dtype == "F16" else "bf16")[0]


def make_qwen(src, out, family, seed):
    cfg = json.load(open(os.path.join(src, "config.json")))
    if cfg.get("model_type") != "llama":
        sys.exit("make_variant.py: %s: model_type is %r, not llama" % (src, cfg.get("model_type")))
    d, h, kv, layers = (cfg[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                         "num_hidden_layers"))
    hd = cfg.get("head_dim") or d // h
    os.makedirs(out, exist_ok=True)
    table = st_raw.tensors(src)
    order = sorted(table, key=lambda k: (table[k][2], table[k][3]))     # file order: shard, offset
    rng = np.random.default_rng(seed)
    added = {}
    for l in range(layers):                                             # the draws, in a fixed order
        a = "model.layers.%d.self_attn." % l
        if family == "qwen2":
            for x, n in (("q", h * hd), ("k", kv * hd), ("v", kv * hd)):
                added[a + x + "_proj.weight"] = [(a + x + "_proj.bias", rng.standard_normal(n) * 0.05)]
        else:
            added[a + "o_proj.weight"] = [(a + x + "_norm.weight", 1.0 + rng.standard_normal(hd) * 0.05)
                                          for x in ("q", "k")]
    missing = sorted(set(added) - set(table))
    if missing:
        sys.exit("make_variant.py: %s: no tensor %s" % (src, missing[0]))
    new_dt = table["model.layers.0.self_attn.q_proj.weight"][0]
    items = []
    for k in order:
        dt, shape, p, o, nb = table[k]
        with open(p, "rb") as f:
            f.seek(o)
            items.append((k, dt, shape, f.read(nb)))
        for name, v in added.get(k, []):
            items.append((name, new_dt, v.shape, encode_as(v, new_dt)))
    write_safetensors(out, items)
    for k in ("mlp_bias", "pretraining_tp", "attention_bias", "head_dim"):
        cfg.pop(k, None)
    cfg["architectures"] = ["Qwen2ForCausalLM" if family == "qwen2" else "Qwen3ForCausalLM"]
    cfg["model_type"] = family
    if family == "qwen3" or h * hd != d:
        cfg["head_dim"] = hd
    if family == "qwen3":
        cfg["attention_bias"] = False
    cfg["use_sliding_window"] = False
    cfg["sliding_window"] = 4096 if family == "qwen2" else None
    cfg["max_window_layers"] = layers
    cfg["attention_dropout"] = 0.0
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    copy_tokenizer(src, out)
    print("%s: %s, %s kept, %d tensors (%d added, seed %d)" % (out, family, new_dt, len(items),
                                                               len(items) - len(order), seed))


def main():
    argv = sys.argv[1:]
    if len(argv) >= 3 and argv[2] in ("qwen2", "qwen3"):
        seed = 0
        if len(argv) == 5 and argv[3] == "--seed" and argv[4].isdigit():
            seed = int(argv[4])
        elif len(argv) != 3:
            sys.exit(__doc__)
        return make_qwen(argv[0], argv[1], argv[2], seed)
    if len(sys.argv) != 4 or sys.argv[3] not in ("f16", "bf16"):
        sys.exit(__doc__)
    src, out, dt = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    table = st_raw.tensors(src)
    arrs = {k: st_raw.to_f32(*st_raw.raw(src, k, table)) for k in table}
    if "lm_head.weight" not in arrs:
        arrs["lm_head.weight"] = arrs["model.embed_tokens.weight"].copy()
    items = []
    for k in sorted(arrs):
        b, d = encode(arrs[k], dt)
        items.append((k, d, arrs[k].shape, b))
    write_safetensors(out, items)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["tie_word_embeddings"] = False
    cfg["torch_dtype"] = "float16" if dt == "f16" else "bfloat16"
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": cfg.get("max_position_embeddings", 2048)}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    copy_tokenizer(src, out)
    print("%s: %s, untied lm_head, llama3 rope scaling, %d tensors" % (out, dt, len(arrs)))


if __name__ == "__main__":
    main()
