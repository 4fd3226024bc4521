"""A variant of a float32 Hugging Face LLaMA checkpoint for the export checks: the same weights
stored as F16 or BF16 (round to nearest even), an untied lm_head (a copy of embed_tokens) and llama3
rope scaling in config.json; tokenizer files copied. It exercises the GGUF paths the shared models
(float32, tied, no rope scaling) do not: 16-bit tensor types, output.weight, rope_freqs.weight
(mpi_scripts/llamacpp_check.sh). The rope scaling was not trained, so the perplexity is worse than
the original's; both runtimes must still agree.

    python3 tests/py/make_variant.py SRC_DIR OUT_DIR f16|bf16
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


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("f16", "bf16"):
        sys.exit(__doc__)
    src, out, dt = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    table = st_raw.tensors(src)
    arrs = {k: st_raw.to_f32(*st_raw.raw(src, k, table)) for k in table}
    if "lm_head.weight" not in arrs:
        arrs["lm_head.weight"] = arrs["model.embed_tokens.weight"].copy()
    hdr, blobs, off = {}, [], 0
    for k in sorted(arrs):
        b, d = encode(arrs[k], dt)
        hdr[k] = {"dtype": d, "shape": list(arrs[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    tmp = os.path.join(out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["tie_word_embeddings"] = False
    cfg["torch_dtype"] = "float16" if dt == "f16" else "bfloat16"
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": cfg.get("max_position_embeddings", 2048)}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    for fn in os.listdir(src):
        if fn.startswith("tokenizer") or fn in ("special_tokens_map.json", "generation_config.json"):
            shutil.copy(os.path.join(src, fn), out)
    print("%s: %s, untied lm_head, llama3 rope scaling, %d tensors" % (out, dt, len(arrs)))


if __name__ == "__main__":
    main()
