"""Untrusted inputs (issue 17): inputs that would hang (a FIFO, a directory, ... given as a file),
safetensors headers outside the format (trailing garbage, duplicate keys, overlong UTF-8 and
surrogates, overlapping offsets, holes, a non-string __metadata__ value), tensors the architecture
does not use, and invalid UTF-8 in a calibration text.

Each case runs at -n 1 and -n 2 (where it is a run input) and must: exit != 0 within the timeout (a
hang fails), print exactly one error line naming the file/field, leave no output file under a final
name; then the corrected input (the case's fix) must succeed. Standalone:
  test_untrusted_inputs.py --bin cfsp-mpi [--mkmodel ...] [--shared /work/shared] [--workdir DIR]
  [--case NAME] [--list]"""
import argparse
import json
import os
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

MODEL = "stories260K"
TIMEOUT = 60
TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
        "One day, she saw a big red ball in the park. She ran to it and kicked it very hard. The ball "
        "flew over the tree and landed near a small dog. The dog was happy and played with the ball. "
        "Lily and the dog became good friends and played together every day. ") * 6


# ---- safetensors helpers ----------------------------------------------------------------------
def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    return hdr, data


def write_st(path, raw_header, data):
    if os.path.exists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw_header)) + raw_header + data)


def st_path(m):
    return os.path.join(m, "model.safetensors")


def st_raw(m, fn):
    """fn(hdr, data) -> (raw header bytes, data)"""
    hdr, data = read_st(st_path(m))
    raw, data = fn(hdr, data)
    write_st(st_path(m), raw, data)


def dumps(h):
    return json.dumps(h).encode()


def replace_file(p, kind):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.remove(p)
    if kind == "fifo":
        os.mkfifo(p)
    else:
        os.makedirs(p)


# ---- cases: prep(ctx) makes the bad input, fix(ctx) the corrected one --------------------------
# ctx: dict with m (model copy), calib, eval, text, out, run (the run.json), stats (good stats.h5)
def restore_model(ctx):
    src = C.model_dir(ctx["a"], MODEL)
    for f in os.listdir(ctx["m"]):
        p = os.path.join(ctx["m"], f)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
    for f in os.listdir(src):
        shutil.copyfile(os.path.join(src, f), os.path.join(ctx["m"], f))


def fifo_at(rel):
    return lambda c: replace_file(os.path.join(c["m"], rel), "fifo")


def index_fifo(c):
    os.mkfifo(os.path.join(c["m"], "model.safetensors.index.json"))


def index_remove(c):
    os.remove(os.path.join(c["m"], "model.safetensors.index.json"))


def tokjson_fifo(c):
    os.mkfifo(os.path.join(c["m"], "tokenizer.json"))


def tokjson_remove(c):
    os.remove(os.path.join(c["m"], "tokenizer.json"))


def header_trailing(c, pad):
    st_raw(c["m"], lambda h, x: (dumps(h) + pad, x))


def header_dup_nested(c):
    def f(h, x):
        k = "model.norm.weight"
        e = h[k]
        s = dumps(h).decode()
        one = json.dumps({k: e})[1:-1]
        two = one[:-1] + ', "dtype": ' + json.dumps(e["dtype"]) + "}"
        assert one in s
        return s.replace(one, two).encode(), x
    st_raw(c["m"], f)


def meta_key(c, key_bytes):
    def f(h, x):
        h = dict(h)
        h["__metadata__"] = {"format": "pt", "KEY": "v"}
        return dumps(h).replace(b"KEY", key_bytes), x
    st_raw(c["m"], f)


def meta_value(c, v):
    st_raw(c["m"], lambda h, x: (dumps(dict(h, __metadata__={"format": v})), x))


def overlap(c):
    def f(h, x):
        a, b = h["model.layers.0.mlp.up_proj.weight"], h["model.layers.0.mlp.gate_proj.weight"]
        b["data_offsets"] = [a["data_offsets"][0] + 4, a["data_offsets"][1] + 4]
        return dumps(h), x
    st_raw(c["m"], f)


def trailing_bytes(c):
    st_raw(c["m"], lambda h, x: (dumps(h), x + b"\0" * 64))


def add_tensors(c, names_from):
    """names_from: {new name: existing name}; the copies' data appended after the buffer"""
    def f(h, x):
        for new, old in names_from.items():
            e = dict(h[old])
            b0, b1 = e["data_offsets"]
            e["data_offsets"] = [len(x), len(x) + (b1 - b0)]
            x = x + x[b0:b1]
            h[new] = e
        return dumps(h), x
    st_raw(c["m"], f)


def extra_layer(c):
    hdr, _ = read_st(st_path(c["m"]))
    L = json.load(open(os.path.join(c["m"], "config.json")))["num_hidden_layers"]
    add_tensors(c, {k.replace("model.layers.%d." % (L - 1), "model.layers.%d." % L): k
                    for k in hdr if k.startswith("model.layers.%d." % (L - 1))})


def config_dup(c):
    p = os.path.join(c["m"], "config.json")
    s = open(p).read().rstrip()
    assert s.endswith("}")
    os.remove(p)
    open(p, "w").write(s[:-1] + ', "hidden_size": 64}')


def config_dir(c):
    replace_file(os.path.join(c["m"], "config.json"), "dir")


def bad_text(c):
    b = TEXT.encode()
    with open(c["text"], "wb") as f:
        f.write(b[:100] + b"\xe0\x80\xaf" + b[100:])     # an overlong '/' at byte 100


def good_text(c):
    with open(c["text"], "wb") as f:
        f.write(TEXT.encode())


def fifo_path(key):
    def f(c):
        replace_file(c[key], "fifo")
    return f


def real_file(key):
    def f(c):
        os.remove(c[key])
        if key == "calib":
            shutil.copyfile(C.token_file(c["a"], MODEL), c[key])
        elif key == "text":
            good_text(c)
        elif key == "run":
            json.dump({"ratios": [0.3]}, open(c[key], "w"))
        elif key == "stats_in":
            shutil.copyfile(c["stats"], c[key])
    return f


TOKENS = ["--calib-tokens", "CALIB"]
TEXTIN = ["--calib-text", "TEXT"]
# name: (prep, fix, expected substring of the error line (None: the run must succeed with a
#        warning line containing WARN), file the error names, extra options, sub, ranks)
CASES = {
    "fifo_config": (fifo_at("config.json"), restore_model, "not a regular file (a FIFO)", "config.json", TOKENS),
    "dir_config": (config_dir, restore_model, "not a regular file (a directory)", "config.json", TOKENS),
    "fifo_shard": (fifo_at("model.safetensors"), restore_model, "not a regular file (a FIFO)", "model.safetensors", TOKENS),
    "fifo_index": (index_fifo, index_remove, "not a regular file (a FIFO)", "model.safetensors.index.json", TOKENS),
    "fifo_tokenizer_json": (tokjson_fifo, tokjson_remove, "not a regular file (a FIFO)", "tokenizer.json", TEXTIN),
    "fifo_token_file": (fifo_path("calib"), real_file("calib"), "not a regular file (a FIFO)", "calib.bin", TOKENS),
    "fifo_text": (fifo_path("text"), real_file("text"), "not a regular file (a FIFO)", "calib.txt", TEXTIN),
    "fifo_run_config": (fifo_path("run"), real_file("run"), "not a regular file (a FIFO)", "run.json", TOKENS + ["--config", "RUN"]),
    "fifo_stats": (fifo_path("stats_in"), real_file("stats_in"), "not a regular file (a FIFO)", "stats_in.h5",
                   ["--stats", "STATS"], "prune"),
    "st_trailing_garbage": (lambda c: header_trailing(c, b"  x"), lambda c: header_trailing(c, b"   "),
                            "only spaces, 0x20, may pad the header", "model.safetensors", TOKENS),
    "st_trailing_newline": (lambda c: header_trailing(c, b"\n"), lambda c: header_trailing(c, b"        "),
                            "only spaces, 0x20, may pad the header", "model.safetensors", TOKENS),
    "st_dup_key_nested": (header_dup_nested, restore_model, "JSON key 'dtype' appears twice", "model.safetensors", TOKENS),
    "config_dup_key": (config_dup, restore_model, "JSON key 'hidden_size' appears twice", "config.json", TOKENS),
    "st_overlong_utf8": (lambda c: meta_key(c, b"k\xe0\x80\xaf"), lambda c: meta_key(c, b"k/"), "invalid UTF-8 at byte", "model.safetensors", TOKENS),
    "st_surrogate_utf8": (lambda c: meta_key(c, b"k\xed\xa0\x80"), lambda c: meta_key(c, "k\U00010000".encode()),
                          "invalid UTF-8 at byte", "model.safetensors", TOKENS),
    "st_metadata_not_string": (lambda c: meta_value(c, 1), lambda c: meta_value(c, "pt"), "'__metadata__' entry 'format': expected a string",
                               "model.safetensors", TOKENS),
    "st_overlap": (overlap, restore_model, "overlap in the data buffer", "model.safetensors", TOKENS),
    "st_hole_at_end": (trailing_bytes, restore_model, "64 bytes after the last tensor", "model.safetensors", TOKENS),
    "st_extra_layer": (extra_layer, restore_model, "layer 5, but config.json says num_hidden_layers = 5", "model.safetensors", TOKENS),
    "st_unknown_block_tensor": (lambda c: add_tensors(c, {"model.layers.0.mlp.extra_proj.weight": "model.layers.0.mlp.up_proj.weight"}),
                                restore_model, "a tensor of layer 0 the llama architecture does not use", "model.safetensors", TOKENS),
    "text_bad_utf8": (bad_text, good_text, "invalid UTF-8 at byte 100", "calib.txt", TEXTIN),
    "tokenize_bad_utf8": (bad_text, good_text, "invalid UTF-8 at byte 100", "calib.txt", [], "tokenize", [1]),
}
# accepted with one warning line (tensors read by nothing that change nothing); the fix is unused
WARN_CASES = {
    # stories260K itself: tie_word_embeddings true, and its file holds lm_head.weight too
    "st_tied_lm_head": (lambda c: None, "1 tensor the model does not read, ignored: 'lm_head.weight' "
                        "(tie_word_embeddings is true: the head is model.embed_tokens.weight)"),
    "st_unused_top_level": (lambda c: add_tensors(c, {"model.extra.weight": "model.norm.weight"}),
                            "2 tensors the model does not read, ignored: 'lm_head.weight', 'model.extra.weight'"),
}


def opts_for(c, extra, sub):
    rep = {"CALIB": c["calib"], "TEXT": c["text"], "RUN": c["run"], "STATS": c["stats_in"]}
    extra = [rep.get(x, x) for x in extra]
    if sub == "tokenize":
        return ["--model", c["m"], c["text"], c["out"] + ".u32.bin"]
    base = ["--model", c["m"], "--nsamples", 2, "--seqlen", 64, "--ratios", "0.3", "--output-dir", c["out"],
            "--save-models", 0]
    if sub == "run":
        base += ["--eval-tokens", c["eval"]]
    return base + extra


def outputs_left(c):
    left = []
    if os.path.isdir(c["out"]):
        left += os.listdir(c["out"])
    if os.path.exists(c["out"] + ".u32.bin"):
        left.append(os.path.basename(c["out"]) + ".u32.bin")
    return left


def clear_outputs(c):
    if os.path.isdir(c["out"]):
        shutil.rmtree(c["out"])
    if os.path.exists(c["out"] + ".u32.bin"):
        os.remove(c["out"] + ".u32.bin")


def run(a, c, opts, np_ranks, sub):
    t0 = time.time()
    if sub == "tokenize":
        rc, log = C.run_cmd([a.bin, "tokenize"] + [str(o) for o in opts], timeout=TIMEOUT)
    else:
        rc, log = C.run_cfsp(a, opts, np_ranks=np_ranks, sub=sub, timeout=TIMEOUT)
    return rc, log, time.time() - t0


def errors(log):
    return [l for l in log.splitlines() if l.startswith("cfsp-mpi: error:") or l.startswith("cfsp-mpi: fatal:")]


def setup(a, name, np_ranks):
    d = C.fresh_dir(os.path.join(a.workdir, "%s_n%d" % (name, np_ranks)))
    m = os.path.join(d, "model")
    os.makedirs(m)
    c = dict(a=a, d=d, m=m, calib=os.path.join(d, "calib.bin"), eval=os.path.join(d, "eval.bin"), text=os.path.join(d, "calib.txt"),
             out=os.path.join(d, "out"), run=os.path.join(d, "run.json"), stats_in=os.path.join(d, "stats_in.h5"), stats=a.stats)
    restore_model(c)
    shutil.copyfile(C.token_file(a, MODEL), c["calib"])
    tok = open(C.token_file(a, MODEL), "rb").read()
    with open(c["eval"], "wb") as f:
        f.write(tok[:4 * 4096])
    good_text(c)
    json.dump({"ratios": [0.3]}, open(c["run"], "w"))
    if a.stats:
        shutil.copyfile(a.stats, c["stats_in"])
    return c


def make_stats(a):
    """a good stats.h5 of the model (for the --stats case)"""
    d = C.fresh_dir(os.path.join(a.workdir, "stats_source"))
    rc, log = C.run_cfsp(a, ["--model", C.model_dir(a, MODEL), "--calib-tokens", C.token_file(a, MODEL), "--nsamples", 2,
                             "--seqlen", 64, "--ratios", "0.3", "--output-dir", os.path.join(d, "out"), "--save-models", 0],
                         np_ranks=1, timeout=300)
    p = os.path.join(d, "out", "stats.h5")
    return p if rc == 0 and os.path.exists(p) else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mkmodel", default=None)
    ap.add_argument("--shared", default="/work/shared")
    ap.add_argument("--workdir", default="/tmp/cfsp-untrusted")
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--np", type=int, action="append", help="rank counts (default 1 and 2)")
    ap.add_argument("--case", action="append")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    a.compute = None
    if a.list:
        print(";".join(list(CASES) + list(WARN_CASES)))
        return
    a.workdir = os.path.abspath(a.workdir)
    os.makedirs(a.workdir, exist_ok=True)
    ck = C.Checker("untrusted_inputs")
    names = a.case or (list(CASES) + list(WARN_CASES))
    a.stats = make_stats(a) if "fifo_stats" in names else None
    if "fifo_stats" in names:
        ck.check(a.stats is not None, "a good stats.h5 for the --stats case")
    for name in names:
        if name in WARN_CASES:
            prep, want = WARN_CASES[name]
            for n in a.np or [1, 2]:
                c = setup(a, name, n)
                prep(c)
                rc, log, dt = run(a, c, opts_for(c, TOKENS, "run"), n, "run")
                warns = [l for l in log.splitlines() if l.startswith("cfsp-mpi: warning:") and "does not read" in l]
                ck.check(rc == 0, "%s -n %d: accepted (exit %d, %.1f s)" % (name, n, rc, dt), (errors(log) or [""])[0])
                ck.check(len(warns) == 1 and want in warns[0] and "model.safetensors" in warns[0],
                         "%s -n %d: one warning line naming the unused tensor" % (name, n), warns[0] if warns else log[-400:])
            continue
        spec = CASES[name]
        prep, fix, want, fname, extra = spec[:5]
        sub = spec[5] if len(spec) > 5 else "run"
        if sub == "prune" and not a.stats:
            ck.check(False, "%s: no stats.h5 to start from" % name)
            continue
        for n in (spec[6] if len(spec) > 6 else (a.np or [1, 2])):
            c = setup(a, name, n)
            prep(c)
            opts = opts_for(c, extra, sub)
            rc, log, dt = run(a, c, opts, n, sub)
            errs = errors(log)
            ck.check(rc not in (0, -999), "%s -n %d: non-zero exit (%d) within %.1f s (no hang)" % (name, n, rc, dt))
            ck.check(len(errs) == 1 and want in errs[0] and fname in errs[0],
                     "%s -n %d: exactly one error line naming %s" % (name, n, fname), errs[0] if errs else "(no error line) " + log[-500:])
            left = outputs_left(c)
            ck.check(not left, "%s -n %d: no output left behind" % (name, n), " ".join(left))
            clear_outputs(c)
            if name.startswith("st_"):
                restore_model(c)       # a corrupt header cannot be edited: start again from the copy
            fix(c)
            rc, log, dt = run(a, c, opts, n, sub)
            ck.check(rc == 0 and not errors(log), "%s -n %d: the corrected input succeeds (exit %d, %.1f s)" % (name, n, rc, dt),
                     (errors(log) or [""])[0])
    ck.finish()


if __name__ == "__main__":
    main()
