#!/usr/bin/python3
"""Independent check of a checkpoint written by cfsp-mpi-mkmodel.

Reads DIR/config.json and the safetensors files with nothing but json, struct and
numpy (no safetensors, no torch) and checks: the config fields; the index (if any)
against the shard files; each file's header (length multiple of 8, space padding,
__metadata__, offsets contiguous from 0 and ending at the end of the file, byte
counts matching dtype x shape); that the tensor set and shapes are exactly those
the config implies; and that decoded values are sane (finite, mean/std near the
generator's: N(0,1) embeddings, 1 + 0.1 N(0,1) norms, N(0, 1/fan_in) linears).

With --ref-f32 REFDIR (a float32 model of the same shape and seed) it also checks
that every bf16/f16 value is exactly the round-to-nearest-even image of the f32 one.

usage: check_safetensors.py DIR [--ref-f32 REFDIR] [--sample N]
Exit 0 when all checks pass, 1 otherwise (with one line per failure).
"""
import json
import os
import re
import struct
import sys

import numpy as np

DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2)}
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


def expected_tensors(cfg):
    """name -> (shape, kind) implied by config.json."""
    d, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    h, k = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", d // h)
    v = cfg["vocab_size"]
    if "block_configs" in cfg:
        ffn = [b["ffn"]["intermediate_size"] for b in cfg["block_configs"]]
    else:
        ffn = [cfg["intermediate_size"]] * n_layers
    t = {"model.embed_tokens.weight": ((v, d), "embed"), "model.norm.weight": ((d,), "norm")}
    for layer in range(n_layers):
        p, m = f"model.layers.{layer}.", ffn[layer]
        t[p + "input_layernorm.weight"] = ((d,), "norm")
        t[p + "post_attention_layernorm.weight"] = ((d,), "norm")
        t[p + "self_attn.q_proj.weight"] = ((h * hd, d), "linear")
        t[p + "self_attn.k_proj.weight"] = ((k * hd, d), "linear")
        t[p + "self_attn.v_proj.weight"] = ((k * hd, d), "linear")
        t[p + "self_attn.o_proj.weight"] = ((d, h * hd), "linear")
        t[p + "mlp.gate_proj.weight"] = ((m, d), "linear")
        t[p + "mlp.up_proj.weight"] = ((m, d), "linear")
        t[p + "mlp.down_proj.weight"] = ((d, m), "linear")
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = ((v, d), "linear")
    return t


def check_config(cfg):
    ints = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
            "bos_token_id", "eos_token_id"]
    for key in ints:
        check(isinstance(cfg.get(key), int) and cfg[key] > 0, f"config.{key} = {cfg.get(key)!r}")
    check(cfg.get("architectures") == ["LlamaForCausalLM"], "config.architectures")
    check(cfg.get("model_type") == "llama", "config.model_type")
    check(cfg.get("max_position_embeddings") == 4096, "config.max_position_embeddings")
    check((cfg.get("bos_token_id"), cfg.get("eos_token_id")) == (1, 2), "config bos/eos ids")
    for key in ("rms_norm_eps", "rope_theta"):
        check(isinstance(cfg.get(key), float) and cfg[key] > 0, f"config.{key} = {cfg.get(key)!r}")
    check(isinstance(cfg.get("tie_word_embeddings"), bool), "config.tie_word_embeddings")
    check(cfg.get("torch_dtype") in ("float32", "float16", "bfloat16"), "config.torch_dtype")
    h, k = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    check(h % k == 0, "num_key_value_heads divides num_attention_heads")
    rs = cfg.get("rope_scaling", "missing")
    if rs is not None:
        check(isinstance(rs, dict) and rs.get("rope_type") == "llama3"
              and isinstance(rs.get("factor"), float) and rs["factor"] > 0
              and rs.get("low_freq_factor") == 1.0 and rs.get("high_freq_factor") == 4.0
              and rs.get("original_max_position_embeddings") == 8192,
              f"config.rope_scaling = {rs!r}")
    if "block_configs" in cfg:
        bc = cfg["block_configs"]
        ok = check(isinstance(bc, list) and len(bc) == cfg["num_hidden_layers"],
                   "block_configs has one entry per layer")
        if ok:
            for b in bc:
                check(b["attention"]["n_heads_in_group"] == h // k, "block_configs n_heads_in_group")
                check(isinstance(b["ffn"]["intermediate_size"], int)
                      and b["ffn"]["intermediate_size"] > 0, "block_configs intermediate_size")
            check(cfg["intermediate_size"] == max(b["ffn"]["intermediate_size"] for b in bc),
                  "intermediate_size == max of block_configs")


def read_header(path):
    """(header dict without __metadata__, metadata, data start, file size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if not check(8 + n <= size, f"{path}: header length {n} beyond file size {size}"):
            return {}, {}, 0, size
        raw = f.read(n)
    check(n % 8 == 0, f"{path}: header length {n} not a multiple of 8")
    text = raw.decode("utf-8")
    body = text.rstrip(" ")
    check(body.startswith("{") and body.endswith("}"), f"{path}: header is not padded JSON object")
    hdr = json.loads(body)
    meta = hdr.pop("__metadata__", None)
    return hdr, meta, 8 + n, size


def check_layout(path, hdr, data_start, size, dtype_name):
    """Offsets contiguous from 0 to the end of the file, byte counts right."""
    pos = 0
    for name, e in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        check(e["dtype"] == dtype_name, f"{path}: {name} dtype {e['dtype']} != {dtype_name}")
        nbytes = int(np.prod(e["shape"], dtype=np.int64)) * DTYPES[e["dtype"]][1]
        check(b == pos, f"{path}: {name} begins at {b}, expected {pos} (gap/overlap)")
        check(end - b == nbytes, f"{path}: {name} spans {end - b} bytes, shape needs {nbytes}")
        pos = end
    check(data_start + pos == size, f"{path}: data ends at {data_start + pos}, file size {size}")


def load_values(path, entry, data_start, limit):
    """Up to `limit` leading values of a tensor decoded to float32 (limit None: all)."""
    count = int(np.prod(entry["shape"], dtype=np.int64))
    if limit is not None:
        count = min(count, limit)
    kind, isz = DTYPES[entry["dtype"]]
    off = data_start + entry["data_offsets"][0]
    if kind == "float32":
        return np.fromfile(path, dtype="<f4", count=count, offset=off)
    bits = np.fromfile(path, dtype="<u2", count=count, offset=off)
    if kind == "float16":
        return bits.view("<f2").astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def check_values(name, x, shape, kind):
    if not check(np.all(np.isfinite(x)), f"{name}: non-finite values"):
        return
    n = x.size
    if kind == "norm":
        mu, sigma = 1.0, 0.1
    elif kind == "embed":
        mu, sigma = 0.0, 1.0
    else:
        mu, sigma = 0.0, 1.0 / np.sqrt(shape[1])
    x = x.astype(np.float64)
    mean, std = x.mean(), x.std()
    # 6-sigma bands of the sample mean and std, plus slack for 16-bit rounding
    check(abs(mean - mu) <= 6 * sigma / np.sqrt(n) + 0.004 * abs(mu),
          f"{name}: mean {mean:.5g}, expected {mu} +- {6 * sigma / np.sqrt(n):.3g}")
    check(abs(std / sigma - 1) <= 6 / np.sqrt(2 * n) + 0.01,
          f"{name}: std {std:.5g}, expected {sigma:.5g} (rel tol {6 / np.sqrt(2 * n) + 0.01:.3g})")
    check(np.abs(x - mu).max() <= 6 * sigma, f"{name}: value {np.abs(x - mu).max():.3g} from mean")
    if kind == "norm":
        check(np.count_nonzero(x != 1.0) > n // 2, f"{name}: norm weights trivially 1")


def rne_bf16(f32):
    u = f32.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def compare_with_f32(name, x_path, x_entry, x_start, ref_path, ref_entry, ref_start, limit):
    ref = load_values(ref_path, ref_entry, ref_start, limit)
    count = ref.size
    off = x_start + x_entry["data_offsets"][0]
    bits = np.fromfile(x_path, dtype="<u2", count=count, offset=off)
    if x_entry["dtype"] == "BF16":
        want = rne_bf16(ref)
    else:
        want = ref.astype(np.float16).view(np.uint16)
    bad = np.count_nonzero(bits != want)
    check(bad == 0, f"{name}: {bad} of {count} values are not the RNE image of the f32 model")
    subnormal = 0
    if x_entry["dtype"] == "F16":
        subnormal = np.count_nonzero(((want & 0x7C00) == 0) & ((want & 0x3FF) != 0))
    return count, int(subnormal)


def open_model(d):
    """{name: (path, entry, data_start)}, the list of files, and index total (or None)."""
    index_path = os.path.join(d, "model.safetensors.index.json")
    single = os.path.join(d, "model.safetensors")
    total = None
    if os.path.exists(index_path):
        check(not os.path.exists(single), "both model.safetensors and an index present")
        with open(index_path) as f:
            index = json.load(f)
        total = index["metadata"]["total_size"]
        wmap = index["weight_map"]
        files = sorted(set(wmap.values()))
        nfiles = len(files)
        for i, fn in enumerate(files):
            check(fn == f"model-{i + 1:05d}-of-{nfiles:05d}.safetensors", f"shard name {fn}")
    else:
        wmap = None
        files = ["model.safetensors"]
    tensors, layouts = {}, []
    for fn in files:
        path = os.path.join(d, fn)
        hdr, meta, start, size = read_header(path)
        check(meta == {"format": "pt"}, f"{fn}: __metadata__ = {meta!r}")
        if wmap is not None:
            mapped = {k for k, v in wmap.items() if v == fn}
            check(mapped == set(hdr), f"{fn}: weight_map disagrees with the header")
        for name, e in hdr.items():
            check(name not in tensors, f"{name} stored twice")
            tensors[name] = (path, e, start, size)
        layouts.append((path, hdr, start, size))
    return tensors, layouts, files, total


def main(argv):
    args = argv[1:]
    ref_dir, limit = None, 1 << 22
    if "--ref-f32" in args:
        i = args.index("--ref-f32")
        ref_dir = args[i + 1]
        del args[i:i + 2]
    if "--sample" in args:
        i = args.index("--sample")
        limit = int(args[i + 1]) or None
        del args[i:i + 2]
    if len(args) != 1:
        print(__doc__)
        return 2
    d = args[0]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    check_config(cfg)
    dtype_name = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[cfg["torch_dtype"]]
    tensors, layouts, files, total = open_model(d)
    for path, hdr, start, size in layouts:
        check_layout(path, hdr, start, size, dtype_name)
    data_bytes = sum(e["data_offsets"][1] - e["data_offsets"][0] for _, e, _, _ in tensors.values())
    if total is not None:
        check(total == data_bytes, f"index total_size {total} != data bytes {data_bytes}")
    leftovers = [f for f in os.listdir(d) if f.endswith(".tmp")
                 or (re.match(r"model.*\.safetensors$", f) and f not in files)]
    check(not leftovers, f"stray files {leftovers}")

    want = expected_tensors(cfg)
    check(set(tensors) == set(want), f"tensor set differs: missing {sorted(set(want) - set(tensors))[:5]}, "
          f"extra {sorted(set(tensors) - set(want))[:5]}")
    heads = {}
    for name in sorted(set(tensors) & set(want)):
        path, e, start, _ = tensors[name]
        shape, kind = want[name]
        if not check(tuple(e["shape"]) == shape, f"{name}: shape {e['shape']} != {list(shape)}"):
            continue
        x = load_values(path, e, start, limit)
        check_values(name, x, shape, kind)
        key = x[:64].tobytes()
        check(key not in heads, f"{name}: same leading values as {heads.get(key)}")
        heads[key] = name

    compared = subnormal = 0
    if ref_dir is not None and dtype_name != "F32":
        ref, _, _, _ = open_model(ref_dir)
        for name in sorted(set(tensors) & set(ref)):
            path, e, start, _ = tensors[name]
            rpath, re_, rstart, _ = ref[name]
            c, s = compare_with_f32(name, path, e, start, rpath, re_, rstart, limit)
            compared += c
            subnormal += s
        check(set(ref) == set(tensors), "reference model has a different tensor set")

    print(f"{d}: {len(tensors)} tensors in {len(files)} file(s), {data_bytes} data bytes, "
          f"dtype {dtype_name}"
          + (f", {compared} values == RNE(f32)" if compared else "")
          + (f" ({subnormal} of them f16 subnormals)" if compared and dtype_name == "F16" else "")
          + (": OK" if not failures else f": {len(failures)} FAILURES"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
