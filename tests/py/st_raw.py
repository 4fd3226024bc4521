"""Raw (bit-level) access to safetensors tensors, independent of cfsp-mpi and of cfsp_ref's
float conversion: returns numpy arrays of the stored bits (uint16 for F16/BF16, uint32 for F32)."""
import json
import os
import struct

import numpy as np

RAW = {"F32": "<u4", "F16": "<u2", "BF16": "<u2"}


def tensors(model_dir):
    """{name: (dtype, shape, path, absolute_offset, nbytes)} over all shards."""
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    out = {}
    for fn in files:
        p = os.path.join(model_dir, fn)
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
        for k, v in hdr.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            out[k] = (v["dtype"], tuple(v["shape"]), p, 8 + n + b, e - b)
    return out


def raw(model_dir, name, table=None):
    t = (table or tensors(model_dir))[name]
    dt, shape, p, off, nb = t
    a = np.fromfile(p, dtype=RAW[dt], count=nb // np.dtype(RAW[dt]).itemsize, offset=off)
    return dt, a.reshape(shape)


def to_f32(dt, bits):
    if dt == "F32":
        return bits.view("<f4")
    if dt == "BF16":
        return (bits.astype("<u4") << 16).view("<f4")
    return bits.view("<f2").astype("<f4")
