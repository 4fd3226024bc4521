#!/usr/bin/env python3
"""make_h5_corpus.py — (re)generate the seed corpora of the HDF5 harnesses, tests/fuzz/corpus/fuzz_stats/
and tests/fuzz/corpus/fuzz_h5ckpt/.

Their inputs are edit programs, not HDF5 files: byte 0 picks a template (a valid stats.h5 written by
stats_h5_write, or a valid pruned checkpoint laid out as model_h5_write does, built inside the
harness), byte 1 how it is read, then edits, each an opcode byte and fixed argument bytes (the
layouts are in the header comments of fuzz_stats.c and fuzz_h5ckpt.c; the constants below mirror
them). The seeds: every template family with no edit (must be accepted), every way of reading, and
each edit at least once, in a form the oracle accepts and in forms it rejects, plus the inputs that
found the bugs fixed in src/ (regress_*). Standard library only; each corpus is a few KB.

usage: make_h5_corpus.py [--out tests/fuzz/corpus]"""
import argparse, os, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u16(v): return struct.pack("<H", v & 0xffff)
def u32(v): return struct.pack("<I", v & 0xffffffff)
def u64(v): return struct.pack("<Q", v & 0xffffffffffffffff)
def f64(x): return struct.pack("<d", x)


# ---- fuzz_stats ----
# template byte: bit 0 two blocks, bits 1-3 channel pattern, bits 4-5 values, bit 6 format /1, bit 7 3 x 16 tokens
# datasets: 0..3 /importance/{angular,cosine,mse,mae}; 4 + 2 l /channels/l/sum_sq; 5 + 2 l /channels/l/sum
S_VALUE, S_CKSUM, S_COUNT, S_STRING, S_REMOVE, S_RESHAPE, S_RETYPE, S_EXTRA = range(8)
ROOT = 10                       # the CKSUM target past the dataset slots (NDS = 4 + 2 * 3): the root
NSAMPLES, SEQLEN, NTOKENS, NUM_LAYERS = range(4)
FORMAT, FINGERPRINT, COMPUTE = range(3)


def s_value(ds, idx, sel, raw=0, fix=0): return bytes([S_VALUE, ds]) + u16(idx) + bytes([sel]) + u64(raw) + bytes([fix])
def s_cksum(target, mode, raw=0): return bytes([S_CKSUM, target, mode]) + u64(raw)
def s_count(which, mode, sel, raw=0, fix=0): return bytes([S_COUNT, which, mode, sel]) + u64(raw) + bytes([fix])
def s_string(which, mode, sel, lit=None):
    if lit is not None:
        return bytes([S_STRING, which, mode, 0xc0 | len(lit)]) + lit
    return bytes([S_STRING, which, mode, sel])
def s_remove(ds, mode, other=0): return bytes([S_REMOVE, ds, mode, other])
def s_reshape(ds, code, nd, seed=1, fl=0): return bytes([S_RESHAPE, ds, code, nd, seed, fl])
def s_retype(ds, ty, fl=0): return bytes([S_RETYPE, ds, ty, fl])
def s_extra(w, kind): return bytes([S_EXTRA, w, kind])


def stats_seeds():
    out = {}
    for v in (0x00, 0x01, 0x13, 0x25, 0x3a, 0x41, 0x83, 0xc7, 0xe1, 0x9d):
        out["valid_t%02x" % v] = bytes([v, 0])
    out["side_one_block_more"] = bytes([0x00, 1])
    out["side_one_block_fewer"] = bytes([0x01, 1 | 8])
    out["side_channel_more"] = bytes([0x03, 2])
    out["side_channel_fewer"] = bytes([0x05, 3])
    out["side_other_fingerprint"] = bytes([0x01, 4])
    t = bytes([0x83, 0])                      # 2 blocks, 3 x 16 tokens, /2
    out["value_nan"] = t + s_value(0, 0, 1)
    out["value_above_bound"] = t + s_value(1, 1, 13, fix=1)
    out["value_at_bound_fixed"] = t + s_value(0, 1, 12, fix=1)          # accepted
    out["value_negative_sum_sq_fixed"] = t + s_value(4, 2, 7, fix=1)
    out["value_negative_zero_fixed"] = t + s_value(6, 0, 4, fix=1)      # accepted
    out["value_raw_fixed"] = t + s_value(7, 1, 0, raw=0x3ff0000000000001, fix=1)
    out["value_unfixed"] = t + s_value(5, 0, 8)                          # checksum mismatch
    out["value_v1_unfixed"] = bytes([0xc3, 0]) + s_value(5, 0, 8)        # /1: accepted
    out["cksum_root_flip"] = t + s_cksum(ROOT, 10, 5)
    out["cksum_delete"] = t + s_cksum(2, 4)
    out["cksum_double"] = t + s_cksum(3, 2, 7)
    out["cksum_string_array_null"] = t + s_cksum(4, 3) + s_cksum(5, 5) + s_cksum(6, 8)
    out["cksum_recompute"] = t + s_value(9, 3, 8) + s_cksum(9, 11)      # accepted
    out["count_zero_samples"] = t + s_count(NSAMPLES, 0, 3, fix=1)
    out["count_consistent"] = t + s_count(NSAMPLES, 0, 14) + s_count(NTOKENS, 0, 11, fix=1)   # 6 x 16, accepted
    out["count_ntokens_off"] = t + s_count(NTOKENS, 0, 1, fix=1)
    out["count_seqlen_double"] = t + s_count(SEQLEN, 2, 0, raw=16)
    out["count_layers_deleted"] = t + s_count(NUM_LAYERS, 4, 0)
    out["count_huge_u64"] = t + s_count(NSAMPLES, 1, 9, fix=1)
    # an i8 seqlen (16), then a big-endian u16 nsamples written from native bytes (3 reads as 768): rejected
    out["count_i8_u16"] = t + s_count(SEQLEN, 6, 0, raw=16, fix=1) + s_count(NSAMPLES, 7, 0, raw=3, fix=1)
    out["string_format_v1"] = t + s_string(FORMAT, 0, 1)                # accepted, unchecked
    out["string_format_v3"] = t + s_string(FORMAT, 0, 2)
    out["string_format_vlen"] = t + s_string(FORMAT, 2, 0)              # accepted
    out["string_format_unterminated"] = t + s_string(FORMAT, 1, 0)      # accepted
    out["string_format_64"] = t + s_string(FORMAT, 0, 9)
    out["string_fingerprint_upper"] = t + s_string(FINGERPRINT, 0, 6)
    out["string_fingerprint_ascii_vlen"] = t + s_string(FINGERPRINT, 3, 5)   # accepted
    out["string_fingerprint_array"] = t + s_string(FINGERPRINT, 6, 5)
    out["string_literal"] = t + s_string(FORMAT, 0, 0, lit=b"cfsp-mpi-stats/2\x00junk")   # accepted
    out["string_compute_int"] = t + s_string(COMPUTE, 5, 0)              # accepted
    out["remove_dataset"] = t + s_remove(6, 0)
    out["remove_group"] = t + s_remove(4, 1)
    out["remove_group_in_place"] = t + s_remove(1, 2)
    out["remove_dangling_link"] = t + s_remove(3, 3)
    out["remove_soft_alias"] = t + s_remove(2, 4, 3)
    out["remove_hard_alias_then_value"] = t + s_remove(4, 5, 6) + s_value(6, 0, 8, fix=1)
    out["reshape_one_more"] = t + s_reshape(4, 3, 0, fl=1)
    out["reshape_2d_same_count"] = t + s_reshape(5, 5, 1, fl=1)       # [1, n]: accepted (the count is what is read)
    out["reshape_scalar"] = t + s_reshape(0, 0, 3, fl=1)
    out["reshape_2_31_chunked"] = t + s_reshape(6, 14, 0, fl=3)
    # a consistent third block for a reader with one block more: accepted
    out["reshape_extra_block"] = (bytes([0x83, 1]) + b"".join(s_reshape(g, 6, 0, fl=1) for g in range(4)) +
                                  s_reshape(8, 2, 0, fl=1) + s_reshape(9, 2, 0, fl=1) + s_count(NUM_LAYERS, 0, 12, fix=1))
    out["retype_f32_fixed"] = t + s_retype(4, 0, 1)
    out["retype_f64be_fixed"] = t + s_retype(0, 1, 1)                  # accepted
    out["retype_int_string_compound"] = t + s_retype(1, 2) + s_retype(5, 6) + s_retype(7, 7)
    out["retype_f16_bf16_enum"] = t + s_retype(2, 5, 1) + s_retype(3, 9, 3) + s_retype(8, 8)
    out["extra_all"] = t + s_extra(3, 0) + s_extra(5, 1) + s_extra(1, 2) + s_extra(2, 3)   # accepted
    return out


# ---- fuzz_h5ckpt ----
# template byte: bits 0-1 family (llama, qwen2, qwen3, llama MHA), 2-3 dtype (f32, f16, bf16, mixed), bit 4 tied,
# bit 5 down_proj.bias, bit 6 format /1, bit 7 two blocks
# reading byte: bits 0-1 padding, 2-3 panels, bit 4 twice, bit 5 reverse first, bit 6 --model, bits 6+7 verify
# slots: block l kind k = 16 l + k (layout.h's ckpt_kind order), 32 embed, 33 norm, 34 lm_head, 35-37 /cfsp/*
C_ELEM, C_CKSUM, C_REMOVE, C_RESHAPE, C_RETYPE, C_STRING, C_CONFIG, C_RATIO, C_NUMT, C_RESIZE, C_EXTRA, C_FIXALL = range(12)
LN1, LN2, Q, K, V, O, GATE, UP, DOWN, KEPT, BIAS, QB, KB, VB, QN, KN = range(16)
EMBED, NORM, HEAD = 32, 33, 34
def slot(l, k): return 16 * l + k
def c_elem(sl, idx, raw, fl=0): return bytes([C_ELEM, sl]) + u16(idx) + u32(raw) + bytes([fl])
def c_cksum(sl, mode, raw=0): return bytes([C_CKSUM, sl, mode]) + u64(raw)
def c_remove(sl, mode, other=0): return bytes([C_REMOVE, sl, mode, other])
def c_reshape(sl, nd, c0, c1, fl=0, seed=1): return bytes([C_RESHAPE, sl, nd, c0, c1, fl, seed])
def c_retype(sl, ty, fl=0): return bytes([C_RETYPE, sl, ty, fl])
def c_string(which, mode, sel, lit=None):
    if lit is not None:
        return bytes([C_STRING, which, mode, 0xc0 | len(lit)]) + lit
    return bytes([C_STRING, which, mode, sel])
def c_config(key, kind, sel, l=0): return bytes([C_CONFIG, key, kind, sel, l])
def c_ratio(mode, raw=0): return bytes([C_RATIO, mode]) + u64(raw)
def c_numt(mode, raw=0): return bytes([C_NUMT, mode]) + u64(raw)
def c_resize(l, code, fl, seed=7): return bytes([C_RESIZE, l, code, fl, seed])
def c_extra(w, kind): return bytes([C_EXTRA, w, kind])
FORMAT_, METHOD_, OPTIONS_, CONFIG_ = range(4)
K_LAYERS, K_HIDDEN, K_FFN, K_SIZES, K_HEADS, K_KV, K_HEAD_DIM, K_VOCAB, K_TIE, K_TYPE = range(10)


def ckpt_seeds():
    out = {}
    for v in (0x00, 0x80, 0x81, 0x82, 0x83, 0x86, 0x89, 0x9c, 0xa4, 0xb1, 0xc8, 0xff, 0x5e):
        out["valid_t%02x" % v] = bytes([v, 0])
    t = 0x80                                   # llama, 2 blocks [3, 6], f32, /2
    for m, name in ((0x01, "pad_widest"), (0x02, "pad_wider"), (0x03, "pad_empty"), (0x04, "half_panels"),
                    (0x08, "third_panels"), (0x0c, "three_rows"), (0x30, "twice_reverse"), (0x40, "model_given"),
                    (0xc0, "verify"), (0xf5, "all_reading")):
        out["read_" + name] = bytes([t, m])
    b = bytes([t, 0xc0])                       # --model given, verified
    out["elem_unfixed"] = bytes([t, 0x30]) + c_elem(slot(0, GATE), 1, 0x3f800000)
    out["elem_fixed"] = b + c_elem(slot(1, DOWN), 9, 0x40000000, 1)                       # accepted, verify ok
    out["elem_kept_unfixed"] = b + c_elem(slot(0, KEPT), 0, 77)                          # open ok, verify fails
    out["elem_v1_unfixed"] = bytes([0xc0, 0x04]) + c_elem(slot(0, Q), 3, 0x12345678)      # /1: read unverified
    out["cksum_flip"] = b + c_cksum(slot(0, UP), 10, 3)
    out["cksum_delete"] = b + c_cksum(EMBED, 4)
    out["cksum_double_array_null"] = b + c_cksum(NORM, 2) + c_cksum(HEAD, 5) + c_cksum(slot(1, LN1), 8)
    out["cksum_recompute"] = b + c_elem(slot(1, O), 2, 0x1, 0) + c_cksum(slot(1, O), 11)   # accepted
    out["remove_dataset"] = b + c_remove(slot(0, Q), 0)
    out["remove_group"] = b + c_remove(slot(1, GATE), 6)                                 # the block's mlp group
    out["remove_group_in_place"] = b + c_remove(NORM, 2)
    out["remove_dangling_link"] = b + c_remove(slot(0, O), 3)
    out["remove_soft_alias_same_shape"] = bytes([t, 0x00]) + c_remove(slot(0, K), 4, slot(0, V))   # accepted
    out["remove_hard_alias"] = b + c_remove(slot(1, LN2), 5, slot(1, LN1))
    out["reshape_gate_rows"] = b + c_reshape(slot(0, GATE), 4, 3, 0, 1)                  # one row more
    out["reshape_rank3"] = b + c_reshape(slot(0, UP), 3, 0, 0, 1)
    out["reshape_add_bias"] = b + c_reshape(slot(1, BIAS), 4, 0, 0, 1) + c_numt(10)        # accepted, verify ok
    out["reshape_huge_chunked"] = bytes([t, 0x40]) + c_reshape(EMBED, 2, 14, 0, 1)
    out["retype_f16_fixed"] = b + c_retype(slot(0, LN1), 1, 1)                            # accepted (mixed dtypes)
    out["retype_bf16_other_bias"] = b + c_retype(slot(1, LN2), 10, 1)
    out["retype_int_string_compound"] = b + c_retype(EMBED, 5, 1) + c_retype(NORM, 8, 1) + c_retype(HEAD, 9, 1)
    out["retype_array_opaque_f64"] = b + c_retype(slot(0, Q), 14, 1) + c_retype(slot(0, K), 15, 1) + c_retype(slot(0, V), 4, 1)
    out["string_format_v1"] = b + c_string(FORMAT_, 0, 1)                                  # accepted, unverified
    out["string_format_v3_vlen"] = b + c_string(FORMAT_, 2, 2)
    out["string_format_prefix"] = b + c_string(FORMAT_, 1, 5)
    out["string_method_long"] = b + c_string(METHOD_, 0, 0)                                # accepted
    out["string_options_no_model"] = bytes([t, 0]) + c_string(OPTIONS_, 0, 1)
    out["string_options_variants"] = bytes([t, 0]) + c_string(OPTIONS_, 0, 8) + c_string(OPTIONS_, 3, 11)  # accepted
    out["string_options_deleted_model_given"] = bytes([t, 0x40]) + c_string(OPTIONS_, 4, 0)  # accepted
    out["string_config_broken"] = b + c_string(CONFIG_, 0, 1)
    out["string_literal"] = b + c_string(FORMAT_, 0, 0, lit=b"cfsp-mpi-pruned/2\x00x")     # accepted
    out["config_layers"] = b + c_config(K_LAYERS, 0, 3)                                    # 3 blocks: missing
    out["config_one_layer"] = b + c_config(K_LAYERS, 0, 1) + c_config(K_SIZES, 2, 0)       # accepted (block 1 ignored)
    out["config_sizes_entry_1e300"] = b + c_config(K_SIZES, 0, 13, 1)
    out["config_sizes_deleted"] = b + c_config(K_SIZES, 5, 0)                              # accepted
    out["config_sizes_string_entry"] = b + c_config(K_SIZES, 3, 1, 0)
    out["config_tied"] = b + c_config(K_TIE, 1, 1)                                         # accepted, lm_head ignored
    out["config_qwen2_on_llama"] = b + c_config(K_TYPE, 2, 1)
    out["config_hidden"] = b + c_config(K_HIDDEN, 0, 8)
    out["ratio_nan"] = b + c_ratio(0, 0x7ff8000000000000)                                  # accepted
    out["ratio_string"] = b + c_ratio(10)
    out["ratio_deleted"] = b + c_ratio(13)                                                 # accepted
    out["numt_deleted"] = b + c_numt(4)
    out["numt_plus_one"] = b + c_numt(11)                                                  # open ok, verify fails
    out["resize_ffn_valid"] = b + c_resize(1, 7, 3)                                        # 9 channels, accepted
    out["resize_ffn_one"] = b + c_resize(0, 0, 3)                                          # accepted
    out["resize_ffn_huge_no_config"] = bytes([t, 0x00]) + c_resize(0, 12, 2)               # 2^31 channels
    out["extra_all"] = b + c_extra(1, 0) + c_extra(3, 1) + c_extra(2, 2) + c_extra(0, 3) + c_extra(9, 4)  # accepted
    out["fixall"] = b + c_elem(slot(0, V), 1, 5) + c_remove(35, 0) + c_elem(slot(1, KEPT), 0, 9) + bytes([C_FIXALL])   # accepted
    out["qwen2_bias_edit"] = bytes([0x81, 0xc0]) + c_elem(slot(0, QB), 2, 0x3f000000, 1) + c_cksum(slot(1, KB), 10)
    out["qwen3_norm_reshape"] = bytes([0x82, 0xc0]) + c_reshape(slot(0, QN), 4, 3, 0, 1)
    out["flap_bias_retype"] = bytes([0xa4, 0xc0]) + c_retype(slot(0, BIAS), 1, 1)
    # the inputs that found the fixes in src/ (results/fuzz/README.md): the old code fails on them
    out["regress_bf16_norm_none_accepted"] = bytes.fromhex("fefe1c001c00")
    out["regress_f32_big_endian_accepted"] = bytes([t, 0x00]) + c_retype(slot(0, GATE), 3, 2)
    out["regress_sizes_entry_int_cast"] = bytes.fromhex("1865e165ad4f65")
    out["regress_ffn_above_2_30"] = bytes.fromhex("ed3c2d1cbb75c4c4")
    out["regress_ffn_2_32_plus_3_as_3"] = bytes([0x00, 0x00]) + c_resize(0, 13, 2)
    out["regress_4096_blocks_listing"] = bytes([0x00, 0x40]) + c_config(K_LAYERS, 0, 17)     # timed out under ASan
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "corpus"))
    a = ap.parse_args()
    for h, seeds in (("fuzz_stats", stats_seeds()), ("fuzz_h5ckpt", ckpt_seeds())):
        d = os.path.join(a.out, h)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in sorted(seeds.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("%s: %d seeds, %d bytes" % (d, len(seeds), sum(len(x) for x in seeds.values())))


if __name__ == "__main__":
    main()
