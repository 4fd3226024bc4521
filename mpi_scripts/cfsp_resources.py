#!/usr/bin/python3
"""cfsp_resources.py — what to request from a batch scheduler for one cfsp-mpi job.

Reads a model's config.json (and the dtype of its safetensors), splits the blocks over P ranks
into contiguous stages of whole blocks with the smallest maximum parameter count, every stage
non-empty (an approximation: cfsp-mpi itself balances the flops of attention and FFN-slice units,
src/pipeline/stages.c, which moves the boundaries by less than a block) and prints, per rank, the bytes of weights it maps in their stored
dtype (its own blocks; plus the embedding on rank 0, the final norm and lm_head on the last rank).

Memory rule (per rank = per CPU, cpus-per-task=1):
    mem-per-cpu = 1.25 x (stored bytes of the largest rank) + 1 GiB
The simple form is 1.25 x (model stored bytes / ranks) + 1 GiB; it is exact when the blocks divide
evenly and the embeddings are small, and too low by up to a block plus the embedding otherwise, so
this script uses the largest rank. The 25 % covers the file pages of the memory-mapped weights
counted by the job's memory cgroup and allocator slack; the 1 GiB covers the fp32 conversion panel,
activations, key/value cache, the logits of one chunk on the last rank, MPI and HDF5 buffers.

Time estimate (state it as an estimate until results/bench has measured figures):
    seconds ~ tokens x 2 x params / (ranks x core_gflops x 1e9 x efficiency)
    efficiency = M / (M + P - 1) for M pipeline micro-batches (sequences x seqlen / chunk)
tokens = calibration tokens (nsamples x seqlen) + evaluation tokens x (1 + methods x ratios).

Usage:
    cfsp_resources.py --model DIR --ranks P            # a table
    cfsp_resources.py --config RUN.json --ranks P      # model path from the run file
    cfsp_resources.py --preset llama3-70b --ranks 80
    cfsp_resources.py --model DIR --ranks P --mem-mb   # just the mem-per-cpu value in MiB
    cfsp_resources.py --model DIR --suggest-ranks      # the number of blocks
Debian /usr/bin/python3, standard library only.
"""
import argparse
import json
import math
import os
import struct
import sys

GIB = 1 << 30

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "float32": 4, "float16": 2, "bfloat16": 2}

# Real Hugging Face shapes (config.json of the released checkpoints, bf16).
PRESETS = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                      tie_word_embeddings=False, torch_dtype="bfloat16"),
    "llama3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                       tie_word_embeddings=False, torch_dtype="bfloat16"),
    "llama31-405b": dict(hidden_size=16384, intermediate_size=53248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=False, torch_dtype="bfloat16"),
}


def size(b):
    """bytes in GB, or MB below 1 GB"""
    return "%.3f GB" % (b / 1e9) if b >= 1e9 else "%.3f MB" % (b / 1e6)


def fail(msg):
    sys.stderr.write("cfsp_resources: error: %s\n" % msg)
    sys.exit(2)


def safetensors_dtype(model_dir):
    """dtype of the first block weight found in the (first) safetensors file, or None."""
    names = []
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            names = sorted(set(json.load(f).get("weight_map", {}).values()))
    elif os.path.exists(os.path.join(model_dir, "model.safetensors")):
        names = ["model.safetensors"]
    for name in names:
        try:
            with open(os.path.join(model_dir, name), "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > 100 << 20:
                    continue
                hdr = json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            continue
        for k, v in hdr.items():
            if k != "__metadata__" and isinstance(v, dict) and "mlp" in k and v.get("dtype") in DTYPE_BYTES:
                return v["dtype"]
        for k, v in hdr.items():
            if k != "__metadata__" and isinstance(v, dict) and v.get("dtype") in DTYPE_BYTES:
                return v["dtype"]
    return None


def model_files_bytes(model_dir):
    try:
        return sum(os.path.getsize(os.path.join(model_dir, n)) for n in os.listdir(model_dir) if n.endswith(".safetensors"))
    except OSError:
        return 0


def load_shape(args):
    if args.preset:
        if args.preset not in PRESETS:
            fail("unknown preset %s (known: %s)" % (args.preset, ", ".join(sorted(PRESETS))))
        return dict(PRESETS[args.preset]), "preset " + args.preset, None
    model = args.model
    if not model and args.config:
        try:
            with open(args.config) as f:
                model = json.load(f).get("model", "")
        except (OSError, ValueError) as e:
            fail("%s: %s" % (args.config, e))
        if not model:
            fail("%s: no \"model\" key (give --model)" % args.config)
    if not model:
        fail("give --model DIR, --config RUN.json or --preset NAME")
    try:
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        fail("%s/config.json: %s" % (model, e))
    return cfg, model, model


def block_params(cfg):
    D = int(cfg["hidden_size"])
    L = int(cfg["num_hidden_layers"])
    H = int(cfg["num_attention_heads"])
    K = int(cfg.get("num_key_value_heads") or H)
    hd = int(cfg.get("head_dim") or D // H)
    bc = cfg.get("block_configs")
    if isinstance(bc, list) and len(bc) == L:
        ffn = [int(b["ffn"]["intermediate_size"]) for b in bc]
    else:
        m = cfg["intermediate_size"]
        ffn = [int(x) for x in m] if isinstance(m, list) else [int(m)] * L
    # same count as model_block_params (src/format/model_config.c)
    return [D * H * hd * 2 + D * K * hd * 2 + 3 * D * f + 2 * D for f in ffn], D


def plan(cost, P):
    """cfsp-mpi's stage split: first block of every stage (P+1 entries)."""
    L = len(cost)

    def fits(bound):
        first = [0]
        acc = 0
        for l in range(L):
            if cost[l] > bound:
                return None
            if l > first[-1] and (acc + cost[l] > bound or L - l <= P - len(first)):
                if len(first) >= P:
                    return None
                first.append(l)
                acc = 0
            acc += cost[l]
        return first + [L] if len(first) == P else None

    lo, hi = max(cost), sum(cost)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return fits(lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="Hugging Face LLaMA directory")
    src.add_argument("--config", help="cfsp-mpi run file (its \"model\" key)")
    src.add_argument("--preset", help="built-in shapes: " + ", ".join(sorted(PRESETS)))
    ap.add_argument("--ranks", type=int, default=0, help="MPI ranks (default: number of blocks)")
    ap.add_argument("--dtype-bytes", type=int, default=0, help="override the stored dtype size")
    ap.add_argument("--tokens", type=float, default=0, help="forward tokens for the time estimate")
    ap.add_argument("--microbatches", type=int, default=512, help="pipeline micro-batches (efficiency)")
    ap.add_argument("--core-gflops", type=float, default=100.0, help="sustained fp32 GFLOP/s per core")
    ap.add_argument("--mem-mb", action="store_true", help="print only mem-per-cpu in MiB")
    ap.add_argument("--suggest-ranks", action="store_true", help="print only the number of blocks")
    a = ap.parse_args()

    cfg, label, model_dir = load_shape(a)
    try:
        cost, D = block_params(cfg)
        V = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        fail("%s: config.json: missing or bad field %s" % (label, e))
    L = len(cost)
    if a.suggest_ranks:
        print(L)
        return
    P = a.ranks or L
    if P < 1:
        fail("--ranks must be at least 1")
    dt = safetensors_dtype(model_dir) if model_dir else None
    bpp = a.dtype_bytes or DTYPE_BYTES.get(dt or cfg.get("torch_dtype") or "float32", 4)
    tied = bool(cfg.get("tie_word_embeddings", False))
    embed = V * D
    ranks = []
    if P <= L:
        first = plan(cost, P)
        own = [(first[r], first[r + 1] - 1, sum(cost[first[r]:first[r + 1]])) for r in range(P)]
    else:
        # more ranks than blocks: only a cfsp-mpi that splits blocks into sub-block stages
        # (--ffn-slice) accepts this; assume the block weights spread evenly over the ranks
        own = [(r * L // P, ((r + 1) * L - 1) // P, sum(cost) / P) for r in range(P)]
    for r, (f, l, p) in enumerate(own):
        if r == 0:
            p += embed
        if r == P - 1:
            p += D + (embed if not tied or P > 1 else 0)
        ranks.append((f, l, p * bpp))
    total_params = sum(cost) + embed + D + (0 if tied else embed)
    total = total_params * bpp
    biggest = max(b for _, _, b in ranks)
    mem = 1.25 * biggest + GIB
    mem_mb = int(math.ceil(mem / (1 << 20) / 100.0) * 100)
    if a.mem_mb:
        print(mem_mb)
        return
    print("model: %s" % label)
    print("blocks: %d, params: %.4g, stored: %d bytes/param (%s), %s in total, %s per block (largest)"
          % (L, total_params, bpp, dt or cfg.get("torch_dtype", "?"), size(total), size(max(cost) * bpp)))
    if model_dir and model_files_bytes(model_dir):
        print("safetensors files: %s" % size(model_files_bytes(model_dir)))
    if P <= L:
        print("ranks: %d (stages of whole blocks, balanced by parameters, as cfsp-mpi splits them)" % P)
    else:
        print("ranks: %d > %d blocks: needs a cfsp-mpi with sub-block stages (--ffn-slice); weights assumed evenly spread" % (P, L))
    for r, (f, l, b) in enumerate(ranks):
        if P <= 8 or r < 3 or r >= P - 3 or b == biggest:
            print("  rank %d: blocks %d-%d, %s" % (r, f, l, size(b)))
        elif r == 3:
            print("  ...")
    print("largest rank: %s; simple rule 1.25 x %s / %d + 1 GiB = %s per rank"
          % (size(biggest), size(total), P, size(1.25 * total / P + GIB)))
    print("request: --ntasks=%d --cpus-per-task=1 --mem-per-cpu=%dM   (1.25 x largest rank + 1 GiB, rounded up to 100 MiB;"
          " %d GiB in all)" % (P, mem_mb, math.ceil(mem_mb * P / 1024.0)))
    if a.tokens > 0:
        eff = a.microbatches / float(a.microbatches + P - 1)
        flop = a.tokens * 2.0 * total_params
        sec = flop / (P * a.core_gflops * 1e9 * eff)
        print("time estimate: %.3g tokens x 2 x %.3g params / (%d ranks x %g GFLOP/s x %.2f) = %.0f s (%.2f h) — an estimate"
              % (a.tokens, total_params, P, a.core_gflops, eff, sec, sec / 3600))


if __name__ == "__main__":
    main()
