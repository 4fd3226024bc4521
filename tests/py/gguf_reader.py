"""A GGUF v3 reader in NumPy, written from the GGUF specification (ggml docs/gguf.md), independent
of cfsp-mpi's writer: it parses the whole file strictly and refuses anything the spec does not allow.

    g = GGUF(path)
    g.kv["general.architecture"]   -> str / int / float / bool / list (arrays as Python lists,
                                      numeric arrays as NumPy arrays)
    g.kv_type["deci.block_count"]  -> the GGUF value type name ("UINT32", "ARRAY[INT32]", ...)
    g.tensors["blk.0.attn_q.weight"] -> TensorInfo(name, ne (innermost first), ggml type, offset)
    g.array(name)                  -> NumPy array in row-major order, shape = reversed(ne)
                                      (F32 as float32, F16 as float16, BF16 as raw uint16 bits)

File layout (all little-endian):
    magic "GGUF" | version u32 (=3) | tensor_count u64 | kv_count u64
    kv_count x { key: string | value_type u32 | value }       string = u64 length + UTF-8 bytes
        value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte, 0/1),
                     8 string, 9 array (elem type u32, count u64, elements), 10 u64, 11 i64, 12 f64
    tensor_count x { name: string | n_dims u32 | ne[n_dims] u64 | ggml type u32 | offset u64 }
    padding to ALIGNMENT (general.alignment, u32, default 32)
    tensor data: each tensor at data_start + offset, offsets multiples of ALIGNMENT
"""

import struct
from collections import namedtuple

import numpy as np

VT = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
      7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64"}
SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 10: "<u8",
          11: "<i8", 12: "<f8"}
# ggml types this reader decodes (element size in bytes, NumPy dtype of the stored elements)
GGML = {0: ("F32", 4, "<f4"), 1: ("F16", 2, "<f2"), 30: ("BF16", 2, "<u2")}

TensorInfo = namedtuple("TensorInfo", "name ne type offset")


class GGUFError(Exception):
    pass


class GGUF:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        self.kv = {}
        self.kv_type = {}
        self.kv_order = []
        self.tensors = {}
        self.tensor_order = []
        if self._take(4) != b"GGUF":
            raise GGUFError("bad magic")
        self.version = self._u32()
        if self.version != 3:
            raise GGUFError("version %d, expected 3" % self.version)
        n_tensors = self._u64()
        n_kv = self._u64()
        for _ in range(n_kv):
            key = self._string()
            if key in self.kv:
                raise GGUFError("duplicate key %s" % key)
            t = self._u32()
            val, tname = self._value(t)
            self.kv[key] = val
            self.kv_type[key] = tname
            self.kv_order.append(key)
        self.alignment = 32
        if "general.alignment" in self.kv:
            if self.kv_type["general.alignment"] != "UINT32":
                raise GGUFError("general.alignment must be UINT32")
            self.alignment = int(self.kv["general.alignment"])
            if self.alignment == 0 or self.alignment & (self.alignment - 1):
                raise GGUFError("alignment %d is not a power of two" % self.alignment)
        for _ in range(n_tensors):
            name = self._string()
            if name in self.tensors:
                raise GGUFError("duplicate tensor %s" % name)
            nd = self._u32()
            if not 1 <= nd <= 4:
                raise GGUFError("%s: %d dimensions" % (name, nd))
            ne = tuple(self._u64() for _ in range(nd))
            ty = self._u32()
            off = self._u64()
            if ty not in GGML:
                raise GGUFError("%s: ggml type %d not handled by this reader" % (name, ty))
            if off % self.alignment:
                raise GGUFError("%s: offset %d not aligned to %d" % (name, off, self.alignment))
            self.tensors[name] = TensorInfo(name, ne, ty, off)
            self.tensor_order.append(name)
        self.header_end = self.pos
        self.data_start = -(-self.pos // self.alignment) * self.alignment
        if any(self.buf[self.pos:self.data_start]):
            raise GGUFError("non-zero padding before the data section")
        # every tensor inside the file, no two overlapping
        spans = []
        for name in self.tensor_order:
            ti = self.tensors[name]
            n = self.nbytes(ti)
            a = self.data_start + ti.offset
            if a + n > len(self.buf):
                raise GGUFError("%s: data beyond the end of the file" % name)
            spans.append((a, a + n, name))
        spans.sort()
        for (a0, e0, n0), (a1, e1, n1) in zip(spans, spans[1:]):
            if a1 < e0:
                raise GGUFError("tensors %s and %s overlap" % (n0, n1))
        self.spans = spans

    # -- primitives --------------------------------------------------------------------------
    def _take(self, n):
        if self.pos + n > len(self.buf):
            raise GGUFError("truncated file at byte %d" % self.pos)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def _u32(self):
        return struct.unpack("<I", self._take(4))[0]

    def _u64(self):
        return struct.unpack("<Q", self._take(8))[0]

    def _string(self):
        n = self._u64()
        return self._take(n).decode("utf-8")

    def _value(self, t):
        if t in SCALAR:
            dt = np.dtype(SCALAR[t])
            v = np.frombuffer(self._take(dt.itemsize), dtype=dt)[0]
            return v.item(), VT[t]
        if t == 7:
            b = self._take(1)[0]
            if b not in (0, 1):
                raise GGUFError("bool value %d" % b)
            return bool(b), "BOOL"
        if t == 8:
            return self._string(), "STRING"
        if t == 9:
            et = self._u32()
            n = self._u64()
            if et in SCALAR:
                dt = np.dtype(SCALAR[et])
                return np.frombuffer(self._take(dt.itemsize * n), dtype=dt).copy(), "ARRAY[%s]" % VT[et]
            if et == 8:
                return [self._take(self._u64()) for _ in range(n)], "ARRAY[STRING]"
            if et == 7:
                return [bool(x) for x in self._take(n)], "ARRAY[BOOL]"
            raise GGUFError("array of type %d" % et)
        raise GGUFError("value type %d" % t)

    # -- tensors -----------------------------------------------------------------------------
    def nbytes(self, ti):
        n = 1
        for d in ti.ne:
            n *= d
        return n * GGML[ti.type][1]

    def type_name(self, name):
        return GGML[self.tensors[name].type][0]

    def array(self, name):
        ti = self.tensors[name]
        a = self.data_start + ti.offset
        dt = np.dtype(GGML[ti.type][2])
        n = self.nbytes(ti) // dt.itemsize
        x = np.frombuffer(self.buf, dtype=dt, count=n, offset=a)
        return x.reshape(tuple(reversed(ti.ne)))

    def check_padding(self):
        """the bytes between tensors (and after the last one) are zero and every tensor is
        followed by padding to the alignment: returns a list of problems."""
        bad = []
        prev_end = self.data_start
        for a, e, name in self.spans:
            if any(self.buf[prev_end:a]):
                bad.append("non-zero bytes before %s" % name)
            prev_end = e
        end_pad = -(-prev_end // self.alignment) * self.alignment
        if len(self.buf) != end_pad:
            bad.append("file ends at %d, expected %d (last tensor padded)" % (len(self.buf), end_pad))
        elif any(self.buf[prev_end:end_pad]):
            bad.append("non-zero padding after the last tensor")
        return bad
