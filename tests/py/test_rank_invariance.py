"""Rank invariance and per-rank memory accounting: the same statistics, perplexities, kept
channels and output files (dataset by dataset, bitwise) on a shared model at -n 1, 2, 4
(oversubscribed), on a generated bf16 GQA model whose blocks split unevenly at -n 1, 2, 3, and on a
generated 2-block model cut into 18 stage units (--ffn-slice 48) at -n 1, 8, 16; chunked
micro-batches agree with whole-sequence ones to rounding (fp32). ctest rank_invariance_bf16 runs the
same with --compute bf16 (every check but the chunking one, whose 1e-5 bound is fp32's). Per rank: weight_bytes_expected (the
run's own count) equals the stored bytes of its units, computed here from config.json and the
safetensors headers; weight_bytes_resident (measured: the Rss of the rank's mappings of the
safetensors files after calibration) lies between the whole pages of what the forward pass reads
for certain and the pages its own tensors' mappings can hold, and at 4 or more ranks is under
half of the whole model's pages."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import common as C  # noqa: E402
import st_raw  # noqa: E402


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()].tobytes() if obj.dtype.itemsize != 2 else obj.astype("f4")[()].tobytes()
        f.visititems(visit)
    return out


def expected_bytes(model_dir, units, first, last, rank, nranks, cfg):
    """stored bytes of this rank's stage units, from the safetensors headers: an attention unit is
    input_layernorm + q/k/v/o; an FFN slice [c0, c1) is that share of gate/up/down (+ the
    post-attention norm with the first slice); plus embeddings / final norm / lm_head."""
    t = st_raw.tensors(model_dir)
    D = cfg["hidden_size"]
    es = {"F32": 4, "F16": 2, "BF16": 2}
    total = 0
    for u in units[first:last + 1]:
        l = u["layer"]
        if u["kind"] == "attention":
            names = ["model.layers.%d.input_layernorm.weight" % l] + \
                    ["model.layers.%d.self_attn.%s_proj.weight" % (l, s) for s in "qkvo"]
            total += sum(t[n][4] for n in names)
        else:
            gate = t["model.layers.%d.mlp.gate_proj.weight" % l]
            total += 3 * D * (u["c1"] - u["c0"]) * es[gate[0]]
            if u["c0"] == 0:
                total += t["model.layers.%d.post_attention_layernorm.weight" % l][4]
    tied = cfg.get("tie_word_embeddings", False)
    names = []
    if rank == 0 or (rank == nranks - 1 and tied):
        names.append("model.embed_tokens.weight")
    if rank == nranks - 1:
        names.append("model.norm.weight")
        if not tied:
            names.append("lm_head.weight")
    return total + sum(t[n][4] for n in names)


PAGE = os.sysconf("SC_PAGE_SIZE")
FAULT_AROUND = 65536   # the kernel maps up to this much of the page cache around a faulting page


def own_tensors(units, first, last, rank, nranks, cfg):
    """{tensor name: [(first row, end row) read, or None for all of it]} of this rank's units"""
    own = {}
    for u in units[first:last + 1]:
        l = u["layer"]
        if u["kind"] == "attention":
            for n in ["model.layers.%d.input_layernorm.weight" % l] + \
                     ["model.layers.%d.self_attn.%s_proj.weight" % (l, s) for s in "qkvo"]:
                own[n] = None
        else:
            own["model.layers.%d.post_attention_layernorm.weight" % l] = None
            own["model.layers.%d.mlp.down_proj.weight" % l] = None      # columns c0..c1 of every row
            for s in ("gate", "up"):
                own.setdefault("model.layers.%d.mlp.%s_proj.weight" % (l, s), []).append((u["c0"], u["c1"]))
    tied = cfg.get("tie_word_embeddings", False)
    if rank == 0 or (rank == nranks - 1 and tied):
        own["model.embed_tokens.weight"] = None
    if rank == nranks - 1:
        own["model.norm.weight"] = None
        if not tied:
            own["lm_head.weight"] = None
    return own


def resident_bounds(model_dir, own):
    """(low, high) bytes of resident pages in a rank's mappings: high, every tensor's mapping (its
    page range) or, for the gate/up rows of the rank's slices, those rows' pages widened by the
    fault-around window; low, the whole pages inside what the forward pass certainly reads (all of
    q/k/v/o, the slices' gate/up rows)."""
    t = st_raw.tensors(model_dir)
    low = high = 0
    for name, rows in own.items():
        dt, shape, _, off, nb = t[name]
        m0, m1 = off // PAGE * PAGE, -(-(off + nb) // PAGE) * PAGE
        row = nb // shape[0]
        spans = [(off, off + nb)] if rows is None else [(off + a * row, off + b * row) for a, b in sorted(rows)]
        if rows is not None or "self_attn" in name:
            low += sum(max(0, (e // PAGE) - (-(-b // PAGE))) * PAGE for b, e in spans)
        if rows is None:
            high += m1 - m0
            continue
        cover = []
        for b, e in spans:
            b, e = max(m0, (b - FAULT_AROUND) // PAGE * PAGE), min(m1, -(-(e + FAULT_AROUND) // PAGE) * PAGE)
            if cover and b <= cover[-1][1]:
                cover[-1][1] = max(cover[-1][1], e)
            else:
                cover.append([b, e])
        high += sum(e - b for b, e in cover)
    return low, high


def model_pages(model_dir):
    return sum(-(-(off + nb) // PAGE) * PAGE - off // PAGE * PAGE for _, _, _, off, nb in st_raw.tensors(model_dir).values())


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("rank_invariance")
    import json
    gen = os.path.join(args.workdir, "gen_bf16")
    ok = C.mkmodel(args, gen, 96, 200, 3, 6, 2, 300, dtype="bf16", head_dim=24, shard_bytes=150000, seed=7)
    ck.check(ok, "generated a 3-block bf16 GQA 6/2 model, head_dim 24, FFN 200, sharded")
    gtok = C.write_tokens(os.path.join(args.workdir, "gen.u32.bin"), 6000, 300, 1)
    sliced = os.path.join(args.workdir, "gen_sliced")
    ok = C.mkmodel(args, sliced, 64, 384, 2, 4, 2, 200, dtype="bf16", seed=11)
    ck.check(ok, "generated a 2-block bf16 model with FFN 384 (8 slices of 48 channels per block: 18 stage units)")
    stok = C.write_tokens(os.path.join(args.workdir, "sliced.u32.bin"), 4000, 200, 3)
    cases = [
        ("stories260K", C.model_dir(args, "stories260K"), C.token_file(args, "stories260K"),
         C.token_file(args, "stories260K", "wikitext2_test.joined"), (1, 2, 4), "cfsp,flap,wanda_sp,mag_sp", []),
        ("gen_bf16", gen, gtok, gtok, (1, 2, 3), "cfsp,flap", []),
        # more ranks than blocks: blocks split into attention + FFN-slice stage units
        ("gen_sliced", sliced, stok, stok, (1, 8, 16), "cfsp,flap", ["--ffn-slice", 48]),
    ]
    for name, mdir, calib, ev, ranks, methods, extra in cases:
        cfg = json.load(open(os.path.join(mdir, "config.json")))
        outs = {}
        for n in ranks:
            out = C.fresh_dir(os.path.join(args.workdir, "%s_n%d" % (name, n)))
            rc, log = C.run_cfsp(args, ["--model", mdir, "--calib-tokens", calib, "--eval-tokens", ev,
                                        "--nsamples", 6, "--seqlen", 64, "--eval-windows", 12,
                                        "--ratios", "0.25,0.5", "--method", methods, "--output-dir", out] + extra, np_ranks=n, timeout=600)
            if not ck.check(rc == 0, "%s runs at -n %d" % (name, n)):
                continue
            outs[n] = out
            res = C.load_results(out)
            whole = model_pages(mdir)
            for st in res["stages"]:
                want = expected_bytes(mdir, res["units"], st["first_unit"], st["last_unit"], st["rank"], n, cfg)
                who = "%s -n %d rank %d (units %d-%d, blocks %d-%d)" % (name, n, st["rank"], st["first_unit"], st["last_unit"],
                                                                       st["first_block"], st["last_block"])
                ck.check(st["weight_bytes_expected"] == want, "%s: weight_bytes_expected counts exactly its units' bytes" % who,
                         "%d bytes, %d expected" % (st["weight_bytes_expected"], want))
                own = own_tensors(res["units"], st["first_unit"], st["last_unit"], st["rank"], n, cfg)
                low, high = resident_bounds(mdir, own)
                got = st["weight_bytes_resident"]
                ck.check(low <= got <= high, "%s: resident weight pages within what its own tensors allow" % who,
                         "%d resident, bounds [%d, %d]" % (got, low, high))
                if n >= 4:
                    ck.check(got < whole / 2, "%s: resident under half the model's pages" % who,
                             "%d resident of %d" % (got, whole))
        if 1 not in outs:
            continue
        r1 = C.load_results(outs[1])
        files = ["stats.h5"] + [os.path.basename(e["file"]) for e in r1["pruned"]]
        d1 = {f: datasets(os.path.join(outs[1], f)) for f in files}
        for n, out in outs.items():
            if n == 1:
                continue
            rn = C.load_results(out)
            ck.check(rn["importance"] == r1["importance"], "%s -n %d: block importances identical to -n 1" % (name, n))
            ck.check(rn["dense"]["nll_sum"] == r1["dense"]["nll_sum"], "%s -n %d: dense NLL bitwise equal" % (name, n),
                     "%.17g vs %.17g" % (rn["dense"]["nll_sum"], r1["dense"]["nll_sum"]))
            same = all(a["keep_counts"] == b["keep_counts"] and a["nll_sum"] == b["nll_sum"]
                       for a, b in zip(rn["pruned"], r1["pruned"]))
            ck.check(same and len(rn["pruned"]) == len(r1["pruned"]), "%s -n %d: pruned counts and NLL identical" % (name, n))
            for f in files:
                dn = datasets(os.path.join(out, f))
                diff = [k for k in d1[f] if dn.get(k) != d1[f][k]] + [k for k in dn if k not in d1[f]]
                ck.check(not diff, "%s -n %d: %s identical dataset by dataset (%d datasets)" % (name, n, f, len(d1[f])),
                         "differ: %s" % diff[:5])
    if args.compute == "bf16":   # ctest rank_invariance_bf16: the chunking comparison below is fp32's
        ck.finish()
    # chunked micro-batches (a sequence split into 4 chunks with a key/value cache) vs whole sequences
    mdir = C.model_dir(args, "stories260K")
    outs = []
    for n, chunk in ((1, 64), (2, 16)):
        out = C.fresh_dir(os.path.join(args.workdir, "chunk_n%d_c%d" % (n, chunk)))
        rc, _ = C.run_cfsp(args, ["--model", mdir, "--calib-tokens", C.token_file(args, "stories260K"),
                                  "--eval-tokens", C.token_file(args, "stories260K", "wikitext2_test.joined"),
                                  "--nsamples", 6, "--seqlen", 64, "--chunk", chunk, "--eval-windows", 12,
                                  "--save-models", 0, "--output-dir", out], np_ranks=n)
        ck.check(rc == 0, "stories260K -n %d --chunk %d runs" % (n, chunk))
        outs.append(out)
    if all(os.path.exists(os.path.join(o, "results.json")) for o in outs):
        a, b = C.load_results(outs[0]), C.load_results(outs[1])
        e1 = C.rel(b["importance"]["angular"], a["importance"]["angular"])
        e2 = abs(b["dense"]["ppl"] / a["dense"]["ppl"] - 1)
        ck.check(e1 < 1e-5 and e2 < 1e-6, "chunk 16 at -n 2 matches whole sequences at -n 1",
                 "importance rel %.2e, ppl rel %.2e" % (e1, e2))
    ck.finish()


if __name__ == "__main__":
    main()
