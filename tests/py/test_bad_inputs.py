"""The bad-input catalogue: every case must end the job on every rank within seconds (no hang),
with a non-zero exit, one error line naming the file/field and the problem, and no output file
left behind. Run one case:  test_bad_inputs.py --case NAME --np N ...;  --list prints the names."""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

V = 64


def make_model(a, d, layers=2, shard_bytes=None):
    opts = dict(dtype="f32", seed=5, tie=0)
    if shard_bytes:
        opts["shard_bytes"] = shard_bytes
    if not C.mkmodel(a, d, 32, 40, layers, 4, 2, V, **opts):
        raise SystemExit("generator failed")
    return d


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    return hdr, data


def write_st(path, hdr, data, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    fn(cfg)
    json.dump(cfg, open(p, "w"))


def set_raw_config(d, text):
    with open(os.path.join(d, "config.json"), "wb") as f:
        f.write(text)


def st_edit(d, fn):
    p = os.path.join(d, "model.safetensors")
    hdr, data = read_st(p)
    r = fn(hdr, data)
    if not isinstance(r, tuple):
        write_st(p, hdr, data)
    elif len(r) == 2:
        write_st(p, r[0], r[1])
    else:
        write_st(p, r[0], r[1], raw_header=r[2])


def cfg_case(fn):
    return lambda a, d: edit_config(make_model(a, d), fn)


def nested(cfg):
    cfg["x"] = json.loads("[" * 200 + "]" * 200)


CASES = {
    # config.json
    "config_missing": (lambda a, d: os.remove(os.path.join(make_model(a, d), "config.json")), "config.json: cannot open"),
    "config_field_missing": (cfg_case(lambda c: c.pop("hidden_size")), "'hidden_size' is missing"),
    "config_negative": (cfg_case(lambda c: c.update(num_hidden_layers=-2)), "num_hidden_layers"),
    "config_zero": (cfg_case(lambda c: c.update(vocab_size=0)), "vocab_size"),
    "config_heads_not_dividing": (cfg_case(lambda c: (c.update(num_attention_heads=5, num_key_value_heads=5), c.pop("head_dim"))), "does not divide hidden_size"),
    "config_kv_not_dividing": (cfg_case(lambda c: c.update(num_key_value_heads=3)), "num_key_value_heads"),
    "config_wrong_type": (cfg_case(lambda c: c.update(intermediate_size="40")), "'intermediate_size': expected an integer"),
    "config_huge": (cfg_case(lambda c: c.update(hidden_size=1e300)), "hidden_size"),
    "config_bad_utf8": (lambda a, d: set_raw_config(make_model(a, d), b'{"hidden_size": 32, "x": "\xff\xfe"}'), "invalid UTF-8"),
    "config_deep": (cfg_case(nested), "nested deeper"),
    "config_not_json": (lambda a, d: set_raw_config(make_model(a, d), b"hidden_size = 32"), "not valid JSON"),
    # safetensors
    "st_header_beyond_file": (lambda a, d: open(os.path.join(make_model(a, d), "model.safetensors"), "r+b").write(struct.pack("<Q", 10**9)),
                              "exceeds the file size"),
    "st_header_not_json": (lambda a, d: st_edit(make_model(a, d), lambda h, x: (h, x, b"not json at all!")), "not valid JSON"),
    "st_overlap": (lambda a, d: st_edit(make_model(a, d), lambda h, x: overlap(h, x)), "overlap"),
    "st_out_of_range": (lambda a, d: st_edit(make_model(a, d), lambda h, x: (h, x[:len(x) // 2])), "truncated file"),
    "st_size_mismatch": (lambda a, d: st_edit(make_model(a, d), lambda h, x: h["model.norm.weight"].update(shape=[31])), "needs"),
    "st_unknown_dtype": (lambda a, d: st_edit(make_model(a, d), lambda h, x: h["model.norm.weight"].update(dtype="I32")), "not supported"),
    "st_duplicate": (lambda a, d: st_edit(make_model(a, d), lambda h, x: (h, x, dup_header(h))), "appears twice"),
    "st_missing_tensor": (lambda a, d: st_edit(make_model(a, d), lambda h, x: h.pop("model.layers.1.mlp.up_proj.weight")), "'model.layers.1.mlp.up_proj.weight' is missing"),
    "st_wrong_shape": (lambda a, d: st_edit(make_model(a, d), lambda h, x: h["model.layers.0.mlp.gate_proj.weight"].update(shape=[32, 40])), "expected [40,32]"),
    "st_shard_absent": (lambda a, d: remove_shard(make_model(a, d, shard_bytes=6000)), "cannot open safetensors file"),
    "st_too_short": (lambda a, d: open(os.path.join(make_model(a, d), "model.safetensors"), "wb").write(b"\x01\x02"), "too short"),
    "st_no_weights": (lambda a, d: os.remove(os.path.join(make_model(a, d), "model.safetensors")), "model.safetensors: cannot open"),
    # tokens
    "tokens_odd_size": (lambda a, d: (make_model(a, d), open(os.path.join(d, "calib.bin"), "ab").write(b"\x01")), "not a multiple of 4"),
    "tokens_id_too_big": (lambda a, d: (make_model(a, d), open(os.path.join(d, "calib.bin"), "ab").write(struct.pack("<I", V))), "not below vocab_size"),
    "tokens_too_short": (lambda a, d: (make_model(a, d), C.write_tokens(os.path.join(d, "calib.bin"), 20, V, 1)), "need more than seqlen"),
    "tokens_too_few_consecutive": (lambda a, d: make_model(a, d), "too few for nsamples x seqlen", ["--calib-sampling", "consecutive", "--nsamples", 100]),
    "tokens_eval_short": (lambda a, d: (make_model(a, d), C.write_tokens(os.path.join(d, "eval.bin"), 10, V, 1)), "fewer than one evaluation window"),
    "tokens_missing": (lambda a, d: make_model(a, d), "calib.bin: cannot open"),   # main() writes no calib.bin here
    # options
    "opt_ratio_zero": (lambda a, d: make_model(a, d), "--ratios = '0': expected a comma-separated list of at most 64 numbers in (0, 1)", ["--ratios", "0"]),
    "opt_ratio_one": (lambda a, d: make_model(a, d), "--ratios = '0.5,1.0': expected a comma-separated list", ["--ratios", "0.5,1.0"]),
    "opt_align_zero": (lambda a, d: make_model(a, d), "--align = '0': expected an integer >= 1", ["--align", 0]),
    "opt_unknown": (lambda a, d: make_model(a, d), "unknown option '--ratio'", ["--ratio", 0.5]),
    "opt_bad_method": (lambda a, d: make_model(a, d), "--method = 'sparsegpt'", ["--method", "sparsegpt"]),
    "opt_chunk": (lambda a, d: make_model(a, d), "expected a divisor of seqlen", ["--chunk", 7]),
    # a 1-block model has 2 stage units (attention + one FFN slice): 3 ranks are too many
    "opt_more_ranks_than_units": (lambda a, d: make_model(a, d, layers=1), "only 2 stage units", None, 2),
    "opt_unwritable_output": (lambda a, d: make_model(a, d), "cannot create directory", ["--output-dir", "/proc/cfsp_no/out"]),
    "opt_existing_output": (lambda a, d: (make_model(a, d), os.makedirs(os.path.join(d, "out")), open(os.path.join(d, "out", "results.json"), "w").write("{}")),
                            "output exists (use --force", None, 0, True),
    "opt_memory_limit": (lambda a, d: make_model(a, d), "--max-rank-memory", ["--max-rank-memory", "0.000001"]),
    "config_file_unknown_key": (lambda a, d: (make_model(a, d), json.dump({"ratioz": [0.1]}, open(os.path.join(d, "run.json"), "w"))),
                                "run.json: unknown option 'ratioz'", ["--config", "RUNJSON"]),
    "stats_other_model": (lambda a, d: other_stats(a, d), "statistics of another model", ["--stats", "OTHERSTATS"], 0, False, "prune"),
}


def overlap(h, x):
    a, b = h["model.layers.0.mlp.up_proj.weight"], h["model.layers.0.mlp.gate_proj.weight"]
    b["data_offsets"] = [a["data_offsets"][0] + 4, a["data_offsets"][1] + 4]


def dup_header(h):
    s = json.dumps(h)
    k = '"model.norm.weight": ' + json.dumps(h["model.norm.weight"])
    return s[:-1].encode() + b", " + k.encode() + b"}"


def remove_shard(d):
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    os.remove(os.path.join(d, sorted(set(idx["weight_map"].values()))[-1]))


def other_stats(a, d):
    make_model(a, d)
    o = os.path.join(d, "other")
    C.mkmodel(a, o, 32, 40, 2, 4, 2, V, dtype="f32", seed=99, tie=0)
    C.write_tokens(os.path.join(d, "calib.bin"), 2000, V, 1)
    rc, _ = C.run_cfsp(a, ["--model", o, "--calib-tokens", os.path.join(d, "calib.bin"), "--nsamples", 2, "--seqlen", 16,
                           "--output-dir", os.path.join(d, "otherout"), "--save-models", 0], np_ranks=1)
    assert rc == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--mkmodel")
    ap.add_argument("--shared", default="/work/shared")
    ap.add_argument("--workdir", default="/tmp/cfsp-bad")
    ap.add_argument("--np", type=int, default=1)
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--case", action="append")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        print(";".join(CASES))
        return
    ck = C.Checker("bad_inputs")
    for name in a.case or list(CASES):
        spec = CASES[name]
        prep, want = spec[0], spec[1]
        extra = spec[2] if len(spec) > 2 and spec[2] else []
        np_add = spec[3] if len(spec) > 3 else 0
        keep_existing = spec[4] if len(spec) > 4 else False
        sub = spec[5] if len(spec) > 5 else "run"
        d = C.fresh_dir(os.path.join(os.path.abspath(a.workdir), "%s_n%d" % (name, a.np)))
        pre = os.path.join(d, "model")       # the model dir; token files live in it so that cases can edit them
        a_np = a.np + np_add
        try:
            prep(a, pre)
        except SystemExit as e:
            ck.check(False, "%s: preparing the case" % name, str(e))
            continue
        calib, ev = os.path.join(pre, "calib.bin"), os.path.join(pre, "eval.bin")
        if not os.path.exists(calib) and name != "tokens_missing":
            C.write_tokens(calib, 3000, V, 1)
        if not os.path.exists(ev):
            C.write_tokens(ev, 500, V, 2)
        out = os.path.join(pre, "out")
        extra = [str(x).replace("RUNJSON", os.path.join(pre, "run.json")).replace("OTHERSTATS", os.path.join(pre, "otherout", "stats.h5")) for x in extra]
        opts = ["--model", pre, "--calib-tokens", calib, "--eval-tokens", ev, "--nsamples", 4, "--seqlen", 32,
                "--ratios", "0.3", "--output-dir", out] + extra
        t0 = time.time()
        rc, log = C.run_cfsp(a, opts, np_ranks=a_np, sub=sub, timeout=60)
        dt = time.time() - t0
        errs = [l for l in log.splitlines() if l.startswith("cfsp-mpi: error:") or l.startswith("cfsp-mpi: fatal:")]
        ck.check(rc not in (0, -999), "%s -n %d: non-zero exit (%d) within %.1f s" % (name, a_np, rc, dt))
        ck.check(dt < 30, "%s -n %d: ends within 30 s" % (name, a_np))
        ck.check(len(errs) == 1 and want in errs[0], "%s -n %d: one error line naming the problem" % (name, a_np),
                 errs[0] if errs else "(no error line) " + log[-500:])
        left = []
        if os.path.isdir(out):
            for f in os.listdir(out):
                if keep_existing and f == "results.json":
                    continue
                left.append(f)
        ck.check(not left, "%s -n %d: no output left behind" % (name, a_np), " ".join(left))
    ck.finish()


if __name__ == "__main__":
    main()
