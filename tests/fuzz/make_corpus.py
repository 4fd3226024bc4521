#!/usr/bin/env python3
"""make_corpus.py — (re)generate the committed seed corpora under tests/fuzz/corpus/<harness>/.

Real inputs from ../shared/models (safetensors headers, config.json) and from checkpoints written
by cfsp-mpi-mkmodel (bf16/f16, sharded, block_configs, llama3 rope), plus hand-made edge cases
(empty tensors, 4-d shapes, shape products and offsets next to 2^64). Each corpus stays < 100 KB.

usage: make_corpus.py --shared ../shared [--mkmodel build/cfsp-mpi-mkmodel]"""
import argparse, json, os, shutil, struct, subprocess, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def st_input(data_size, header):
    """fuzz_safetensors input: 8-byte LE data size, then the header JSON text"""
    if isinstance(header, (dict, list)):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", data_size) + header


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return b[8:8 + n], len(b) - 8 - n


def tok_input(vocab, suffix, nsamples, seqlen, random, ids):
    s = suffix.encode()
    return (struct.pack("<H", vocab - 1) + bytes([len(s)]) + s + bytes([nsamples, seqlen - 1, random])
            + b"".join(struct.pack("<I", i) for i in ids))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared"))
    ap.add_argument("--mkmodel")
    a = ap.parse_args()
    out = {h: {} for h in ("fuzz_safetensors", "fuzz_config", "fuzz_index", "fuzz_tokens")}
    models = os.path.join(a.shared, "models")
    for m in ("stories260K", "tinystories656K"):
        hdr, ds = read_st(os.path.join(models, m, "model.safetensors"))
        out["fuzz_safetensors"][f"real_{m}"] = st_input(ds, hdr)
        out["fuzz_config"][f"real_{m}"] = open(os.path.join(models, m, "config.json"), "rb").read()
    # real Qwen configs (issue 16): qwen2 with q/k/v biases and sliding-window fields, qwen3 with head_dim
    here = os.path.dirname(os.path.abspath(__file__))
    for m in ("qwen2.5-72b", "qwen3-32b"):
        out["fuzz_config"][f"real_{m}"] = open(os.path.join(here, "..", "..", "configs", "models", m, "config.json"), "rb").read()

    tmp = tempfile.mkdtemp()
    try:
        if a.mkmodel:
            runs = {
                "gen_bf16_sharded_llama3": ["--hidden", "16", "--ffn", "24", "--layers", "2", "--heads", "4",
                                            "--kv-heads", "2", "--vocab", "32", "--dtype", "bf16",
                                            "--shard-bytes", "3000", "--rope-llama3", "8"],
                "gen_f16_block_configs": ["--hidden", "16", "--ffn", "24", "--layers", "3", "--heads", "2",
                                          "--kv-heads", "1", "--head-dim", "6", "--vocab", "40", "--dtype", "f16",
                                          "--ffn-per-layer", "8,16,24", "--tie", "1"],
            }
            for name, args in runs.items():
                d = os.path.join(tmp, name)
                subprocess.run([a.mkmodel, "--out", d] + args, check=True, stdout=subprocess.DEVNULL)
                out["fuzz_config"][name] = open(os.path.join(d, "config.json"), "rb").read()
                idx = os.path.join(d, "model.safetensors.index.json")
                if os.path.exists(idx):
                    out["fuzz_index"][name] = open(idx, "rb").read()
                    shard = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))[0]
                else:
                    shard = "model.safetensors"
                hdr, ds = read_st(os.path.join(d, shard))
                out["fuzz_safetensors"][name] = st_input(ds, hdr)
    finally:
        shutil.rmtree(tmp)

    S = out["fuzz_safetensors"]
    S["edge_empty_and_4d"] = st_input(64, {
        "__metadata__": {"format": "pt"},
        "e": {"dtype": "F32", "shape": [0, 7], "data_offsets": [0, 0]},
        "s": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]},
        "x": {"dtype": "F16", "shape": [1, 2, 3, 4], "data_offsets": [2, 50]},
        "y": {"dtype": "F32", "shape": [3], "data_offsets": [52, 64]}})
    S["edge_overflow_shape"] = st_input(2**63, '{"t":{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,0]}}')
    S["edge_overflow_bytes"] = st_input(2**63, '{"t":{"dtype":"F32","shape":[4294967296,1073741824],"data_offsets":[0,0]}}')
    S["edge_offsets_2_64"] = st_input(2**63, '{"t":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]}}')
    S["edge_overlap_past_empty"] = st_input(200, {
        "a": {"dtype": "F32", "shape": [25], "data_offsets": [0, 100]},
        "b": {"dtype": "F32", "shape": [0], "data_offsets": [10, 10]},
        "c": {"dtype": "F32", "shape": [5], "data_offsets": [50, 70]}})

    C = out["fuzz_config"]
    base = json.loads(C["real_stories260K"])
    v = dict(base, num_key_value_heads=3, bos_token_id=99999, head_dim=None, rms_norm_eps=0)
    C["edge_bad_values"] = json.dumps(v).encode()

    I = out["fuzz_index"]
    I["edge_plain"] = json.dumps({"metadata": {}, "weight_map": {"a": "x.safetensors", "b": "y.safetensors",
                                                                 "c": "x.safetensors"}}).encode()
    I["edge_bad_name"] = json.dumps({"weight_map": {"a": "../x.safetensors", "b": ".."}}).encode()

    T = out["fuzz_tokens"]
    ids = struct.unpack("<64I", open(os.path.join(a.shared, "data", "tokens", "stories260K",
                                                   "tinystories_val_head.u32.bin"), "rb").read()[:256])
    T["real_stories260K_random"] = tok_input(512, "", 4, 16, 1, ids)
    T["real_stories260K_slice"] = tok_input(512, "8:40", 3, 8, 0, ids)
    T["edge_open_slice"] = tok_input(512, "60:", 1, 2, 1, ids)
    T["edge_bad_slice"] = tok_input(512, "-1:x", 1, 2, 0, ids)
    T["edge_vocab_small"] = tok_input(3, "", 1, 1, 1, [0, 1, 2, 3])

    for h, files in out.items():
        d = os.path.join(HERE, "corpus", h)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        for name, data in files.items():
            open(os.path.join(d, name), "wb").write(data)
        total = sum(len(x) for x in files.values())
        assert total < 100_000, (h, total)
        print(f"{h}: {len(files)} files, {total} bytes")


if __name__ == "__main__":
    main()
