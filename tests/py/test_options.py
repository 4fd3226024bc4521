"""The one option parser (src/util/opts.c) through every command that uses it: run, prune, verify,
recover, plan, export, tokenize, cfsp-mpi-mkmodel and cfsp-mpi-gemm-bench.

For every command: --help exits 0 and lists every option (the names below, written down here from
the commands' documentation, not read from the C tables) and --config; every enum option's --help
line shows exactly its choices (written down here too); `cfsp-mpi --help` lists the subcommands,
one line each; `verify --help` shows its FILE.h5 argument; a JSON file given with
--config sets options ('-' or '_' in its keys) and the command line overrides it (checked on the
command's output); an unknown option, a bad value, a missing value, a bad run-file field, an
unknown run-file key and a run file that is not JSON each end the job with exit status 1 and one
error line in the one format ("cfsp-mpi: error: <command>: --name = 'value': expected ...",
"cfsp-mpi: error: FILE: key = ...") on every rank count tried, and write no output."""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

V = 64
OPTIONS = {
    "run": "model calib-tokens eval-tokens calib-text eval-text output-dir nsamples seqlen chunk ffn-slice seed "
           "calib-sampling eval-windows ratios method global-metric local-metric a b c alloc-mode align force "
           "save-models write-io save-stats eval-dense eval-pruned dump-logits stats max-rank-memory",
    "recover": "model train-tokens eval-tokens eval-windows seqlen batch steps lr min-lr-ratio warmup weight-decay "
               "clip beta1 beta2 adam-eps plan rank alpha alpha-scales stats global-metric a alloc-mode targets seed "
               "output-dir force save-every resume merge peft plan-only trainer compute recompute replicas grad-groups",
    "plan": "model ranks nsamples seqlen chunk ffn-slice gflops json train-batch train-seqlen train-rank train-keep train-replicas",
    "export": "format model shard-size alignment name force",
    "tokenize": "model bos force",
    "mkmodel": "out hidden ffn layers heads kv-heads head-dim vocab dtype shard-bytes seed tie rope-theta "
               "rope-llama3 eps ffn-per-layer force",
    "gemm-bench": "hidden ffn heads kv-heads head-dim tokens reps bf16 ffn-slice",
    "verify": "",
}
# the choices of every enum option: (command, option) -> names
CHOICES = {
    ("run", "method"): "cfsp wanda_sp flap mag_sp",
    ("run", "global-metric"): "angular cosine mse mae",
    ("run", "local-metric"): "three_w_one_wa three_w_one_a one_wa one_a wanda_base mag_base three_w_one_wa_rownorm",
    ("run", "calib-sampling"): "random consecutive",
    ("run", "alloc-mode"): "default reference",
    ("run", "write-io"): "direct buffered mpiio",
    ("recover", "plan"): "uniform adaptive pruned",
    ("recover", "trainer"): "auto data pipeline",
    ("recover", "compute"): "auto fp32 bf16",
    ("recover", "recompute"): "auto on off",
    ("recover", "global-metric"): "angular cosine mse mae",
    ("recover", "alloc-mode"): "default reference",
    ("export", "format"): "gguf hf hf-padded gguf-padded hf-llama",
    ("mkmodel", "dtype"): "f32 f16 bf16",
    ("tokenize", "bos"): "auto 1 0",
}
SUBCOMMANDS = "run prune verify plan export tokenize recover"


def read_u32(path):
    with open(path, "rb") as f:
        b = f.read()
    return list(struct.unpack("<%dI" % (len(b) // 4), b))


def main():
    a = C.parse_args(__doc__)
    ck = C.Checker("options")
    w = C.fresh_dir(os.path.join(a.workdir, "w"))
    model = os.path.join(w, "model")
    ck.check(C.mkmodel(a, model, 32, 40, 2, 4, 2, V, dtype="f32", seed=5, tie=0), "generated a model")
    calib = os.path.join(w, "calib.bin")
    C.write_tokens(calib, 3000, V, 1)
    stories = os.path.join(a.shared, "models", "stories260K")
    text = os.path.join(w, "text.txt")
    with open(text, "w") as f:
        f.write("Once upon a time there was a cat.")

    def wjson(name, obj, raw=None):
        p = os.path.join(w, name)
        with open(p, "w") as f:
            f.write(raw if raw is not None else json.dumps(obj))
        return p

    gemm = os.path.join(os.path.dirname(os.path.abspath(a.bin)), "cfsp-mpi-gemm-bench")

    def cmd(sub, args, np_ranks=0):
        if sub == "mkmodel":
            return [a.mkmodel] + args
        pre = [a.mpiexec, "--oversubscribe", "-n", str(np_ranks)] if np_ranks else []
        if sub == "gemm-bench":
            return pre + [gemm] + args
        return pre + [a.bin] + ([] if sub == "run" else [sub]) + args

    # ---- --help lists every option and --config, an enum's choices, the subcommands ---------------
    helps = {}
    for sub, names in OPTIONS.items():
        rc, out = C.run_cmd(cmd(sub, ["--help"]), timeout=60)
        helps[sub] = out
        listed = set(tok[2:] for line in out.splitlines() for tok in line.split()[:1] if tok.startswith("--"))
        want = set(names.split()) | {"config"}
        ck.check(rc == 0 and want <= listed, "%s --help: exit 0, lists every option and --config" % sub,
                 "missing %s" % sorted(want - listed))
    for (sub, opt), names in CHOICES.items():
        line = [l for l in helps[sub].splitlines() if l.split()[:1] == ["--" + opt]]
        tail = line[0][line[0].rfind("(") + 1:] if line else ""       # "(a | b | c; default: a)"
        shown = tail.split(";")[0].split(" | ") if ";" in tail else []
        ck.check(sorted(shown) == sorted(names.split()), "%s --help: --%s shows its choices %s" % (sub, opt, names.replace(" ", ", ")),
                 line[0] if line else "no --%s line" % opt)
    vlines = helps["verify"].splitlines()
    ck.check(any(l.split()[:1] == ["FILE.h5"] for l in vlines) and any(l.startswith("usage: cfsp-mpi verify FILE.h5") for l in vlines),
             "verify --help: exit 0, the usage and its FILE.h5 argument (not taken for a file name)", helps["verify"][-300:])
    rc, top = C.run_cmd([a.bin, "--help"], timeout=60)
    first = [l.split()[0] for l in top.splitlines() if l.startswith("  ") and not l.startswith("   ") and l.split()]
    ck.check(rc == 0 and all(c in first for c in SUBCOMMANDS.split()) and "--model" in first,
             "cfsp-mpi --help: one line per subcommand (%s), then the run options" % SUBCOMMANDS.replace(" ", ", "),
             "first words %s" % first[:12])

    # ---- --config sets options, the command line overrides them ----------------------------------
    out1 = os.path.join(w, "run1")
    cfg = wjson("run.json", {"model": model, "calib_tokens": calib, "nsamples": 2, "seqlen": 16, "ratios": [0.25, 0.5],
                             "method": ["cfsp", "flap"], "save-models": False, "_comment": "ignored"})
    rc, _ = C.run_cmd(cmd("run", ["--config", cfg, "--output-dir", out1, "--seqlen", "32"], 2), timeout=120)
    o = C.load_results(out1)["options"] if rc == 0 else {}
    ck.check(rc == 0 and o.get("nsamples") == 2 and o.get("seqlen") == 32 and o.get("ratios") == [0.25, 0.5]
             and o.get("method") == ["cfsp", "flap"] and not [f for f in os.listdir(out1) if f.endswith(".h5") and f != "stats.h5"],
             "run --config: run-file values applied ('-' and '_' keys, lists), --seqlen on the command line wins", str(o)[:300])
    tokc = wjson("tok.json", {"model": stories, "bos": False})
    t1, t2 = os.path.join(w, "t1.bin"), os.path.join(w, "t2.bin")
    rc1, _ = C.run_cmd(cmd("tokenize", ["--config", tokc, text, t1]), timeout=60)
    rc2, _ = C.run_cmd(cmd("tokenize", ["--config", tokc, "--bos", "1", text, t2]), timeout=60)
    ck.check(rc1 == 0 and rc2 == 0 and read_u32(t2)[0] == 1 and read_u32(t2)[1:] == read_u32(t1) and read_u32(t1)[0] != 1,
             "tokenize --config: bos false from the file, --bos 1 on the command line wins")
    pj = os.path.join(w, "plan.json")
    planc = wjson("planc.json", {"model": model, "ranks": 3, "gflops": 5, "json": pj, "seqlen": 64})
    rc, _ = C.run_cmd(cmd("plan", ["--config", planc, "--ranks=2"]), timeout=60)
    r = json.load(open(pj)) if rc == 0 else {}
    ck.check(rc == 0 and r.get("ranks") == 2 and r.get("seqlen") == 64 and r.get("gflops") == 5,
             "plan --config: file values applied, --ranks=2 wins", str({k: r.get(k) for k in ("ranks", "seqlen", "gflops")}))
    gg = os.path.join(w, "dense.gguf")
    expc = wjson("exp.json", {"format": "gguf", "model": stories, "alignment": 64})
    rc, _ = C.run_cmd(cmd("export", ["--config", expc, gg]), timeout=120)
    head = open(gg, "rb").read(4) if rc == 0 else b""
    ck.check(rc == 0 and head == b"GGUF", "export --config: format and model from the file, OUT positional")
    recd = os.path.join(w, "rec")
    recc = wjson("rec.json", {"model": model, "plan_only": True, "rank": 2, "alpha": 4, "output-dir": recd})
    rc, _ = C.run_cmd(cmd("recover", ["--config", recc, "--rank", "4"], 2), timeout=120)
    pc = json.load(open(os.path.join(recd, "adapter_config.json"))) if rc == 0 else {}
    ck.check(rc == 0 and pc.get("r") == 4 and pc.get("lora_alpha") == 4, "recover --config: file values applied, --rank 4 wins",
             str({k: pc.get(k) for k in ("r", "lora_alpha")}))
    mk = os.path.join(w, "mk")
    mkc = wjson("mk.json", {"out": mk, "hidden": 16, "ffn": 24, "layers": 1, "heads": 2, "kv_heads": 2, "vocab": 50, "dtype": "bf16"})
    rc, _ = C.run_cmd(cmd("mkmodel", ["--config", mkc, "--dtype=f16"]), timeout=60)
    mc = json.load(open(os.path.join(mk, "config.json"))) if rc == 0 else {}
    ck.check(rc == 0 and mc.get("hidden_size") == 16 and mc.get("num_key_value_heads") == 2 and mc.get("torch_dtype") == "float16",
             "mkmodel --config: file values applied, --dtype=f16 wins")

    # ---- bad inputs: one error line, exit 1, no output ---------------------------------------------
    bad_key = wjson("badkey.json", {"nsamplez": 2})
    not_json = wjson("notjson.json", None, raw="{\"seed\": 1,,}")
    outdir = os.path.join(w, "bad_out")
    tok_out, gguf_out, mk_out = os.path.join(w, "bad.bin"), os.path.join(w, "bad.gguf"), os.path.join(w, "badmk")
    base = {
        "run": ["--model", model, "--calib-tokens", calib, "--nsamples", "2", "--seqlen", "16", "--output-dir", outdir],
        "prune": ["--model", model, "--stats", os.path.join(out1, "stats.h5"), "--output-dir", outdir, "--ratios", "0.3"],
        "recover": ["--model", model, "--plan-only", "--output-dir", outdir],
        "plan": ["--model", model, "--ranks", "2", "--json", os.path.join(outdir, "p.json")],
        "export": ["--format", "gguf", "--model", stories, gguf_out],
        "tokenize": ["--model", stories, text, tok_out],
        "mkmodel": ["--out", mk_out, "--hidden", "16", "--ffn", "24", "--layers", "1", "--heads", "2", "--kv-heads", "2",
                    "--vocab", "50", "--dtype", "f32"],
        "gemm-bench": ["--hidden", "16", "--ffn", "24", "--heads", "2", "--kv-heads", "2", "--tokens", "4", "--reps", "1"],
    }
    prog = {"mkmodel": "cfsp-mpi-mkmodel", "gemm-bench": "cfsp-mpi-gemm-bench"}
    # (label, extra arguments, the error line after "cfsp-mpi: error: " starts with)
    cases = {
        "run": [("bad value", ["--nsamples", "x"], "run: --nsamples = 'x': expected an integer >= 1"),
                ("bad enum", ["--write-io", "fast"], "run: --write-io = 'fast': expected direct, buffered or mpiio")],
        "prune": [("bad list", ["--method", "cfsp,bogus"],
                   "prune: --method = 'cfsp,bogus': expected a comma-separated list of cfsp, wanda_sp, flap or mag_sp")],
        "recover": [("bad value", ["--steps", "x"], "recover: --steps = 'x': expected an integer in [0, 1000000000]"),
                    ("out of range", ["--beta1", "1"], "recover: --beta1 = '1': expected a number in [0, 0.999999]")],
        "plan": [("bad value", ["--nsamples", "0"], "plan: --nsamples = '0': expected an integer in [1, 1073741824]")],
        "export": [("bad size", ["--shard-size", "2XB"], "export: --shard-size = '2XB': expected a positive size in bytes")],
        "tokenize": [("bad enum", ["--bos=2"], "tokenize: --bos = '2': expected auto, 1 or 0"),
                     ("extra positional", ["extra"], "tokenize: unexpected argument 'extra' (usage: cfsp-mpi tokenize")],
        "mkmodel": [("bad value", ["--eps", "-1"], "cfsp-mpi-mkmodel: --eps = '-1': expected a number > 0"),
                    ("bad enum", ["--dtype", "f8"], "cfsp-mpi-mkmodel: --dtype = 'f8': expected f32, f16 or bf16")],
        "gemm-bench": [("bad value", ["--tokens", "x"], "cfsp-mpi-gemm-bench: --tokens = 'x': expected an integer >= 1"),
                       ("bad bool", ["--bf16", "2"], "cfsp-mpi-gemm-bench: unexpected argument '2' (usage: [mpirun -n P] cfsp-mpi-gemm-bench")],
    }
    missing = {"run": "--seqlen", "prune": "--ratios", "recover": "--rank", "plan": "--chunk", "export": "--name",
               "tokenize": "--model", "mkmodel": "--vocab", "gemm-bench": "--reps"}
    # a bad field of a run file: (key, value, the error after "FILE: ")
    field = {"run": ("nsamples", "x", "nsamples = 'x': expected an integer >= 1"),
             "prune": ("ffn_slice", -1, "ffn_slice = '-1': expected an integer >= 0"),
             "recover": ("save_every", "x", "save_every = 'x': expected an integer in [0, 1000000000]"),
             "plan": ("ranks", -1, "ranks = '-1': expected an integer in [1, 1048576]"),
             "export": ("alignment", 0.5, "alignment = '0.5': expected an integer in [1, 1073741824]"),
             "tokenize": ("bos", "maybe", "bos = 'maybe': expected auto, 1 or 0"),
             "mkmodel": ("kv-heads", 0, "kv-heads = '0': expected an integer >= 1"),
             "gemm-bench": ("kv_heads", 0, "kv_heads = '0': expected an integer >= 1")}
    for sub in base:
        name = prog.get(sub, sub)
        key, val, msg = field[sub]
        fjson = wjson("field_%s.json" % sub, {key: val})
        tkey = {"plan": "model", "gemm-bench": "bf16"}.get(sub, "force")
        tjson = wjson("type_%s.json" % sub, {tkey: {"x": 1}})
        all_cases = cases[sub] + [
            ("unknown option", ["--frobnicate", "1"], "%s: unknown option '--frobnicate' (see " % name),
            ("missing value", [missing[sub]], "%s: %s: missing value" % (name, missing[sub])),
            ("unknown run-file key", ["--config", bad_key], "%s: unknown option 'nsamplez' (see " % bad_key),
            ("bad run-file field", ["--config", fjson], "%s: %s" % (fjson, msg)),
            ("run-file value of a bad type", ["--config", tjson], "%s: %s: expected a string, number, true/false or a list of them" % (tjson, tkey)),
            ("run file not JSON", ["--config", not_json], "%s: not valid JSON" % not_json),
            ("run file absent", ["--config", os.path.join(w, "nope.json")], "%s: cannot open" % os.path.join(w, "nope.json")),
        ]
        for label, extra, want in all_cases:
            # without mpiexec every case; under mpiexec -n 2 the first value case and the run-file field
            for n in ([0] if sub == "mkmodel" else [0, 2]):
                if n and label not in (cases[sub][0][0], "bad run-file field"):
                    continue
                for p in (outdir, tok_out, gguf_out, mk_out):
                    if os.path.isdir(p):
                        C.fresh_dir(p)
                    elif os.path.exists(p):
                        os.remove(p)
                rc, log = C.run_cmd(cmd(sub, base[sub] + extra, n), timeout=60)
                errs = [l for l in log.splitlines() if l.startswith("cfsp-mpi: error:")]
                left = [p for p in (tok_out, gguf_out) if os.path.exists(p)] + \
                    [os.path.join(d, f) for d in (outdir, mk_out) if os.path.isdir(d) for f in os.listdir(d)]
                ok = rc == 1 and len(errs) == 1 and errs[0].startswith("cfsp-mpi: error: " + want) and not left
                ck.check(ok, "%s %s%s: exit 1, one error line, no output" % (sub, label, " -n %d" % n if n else ""),
                         "rc %d, %s, left %s" % (rc, errs if errs else log[-300:], left))
    # verify: one positional FILE.h5 through the same parser
    for label, args, want in [("no file", [], "verify: give FILE.h5 (a pruned checkpoint) or --model DIR (a safetensors checkpoint), one of them"),
                              ("two files", ["a.h5", "b.h5"], "verify: unexpected argument 'b.h5' (usage: cfsp-mpi verify FILE.h5)"),
                              ("unknown option", ["a.h5", "--frobnicate"], "verify: unknown option '--frobnicate' (see cfsp-mpi verify --help)")]:
        rc, log = C.run_cmd(cmd("verify", args), timeout=60)
        errs = [l for l in log.splitlines() if l.startswith("cfsp-mpi: error:")]
        ck.check(rc == 1 and len(errs) == 1 and errs[0].startswith("cfsp-mpi: error: " + want),
                 "verify %s: exit 1, one error line" % label, "rc %d, %s" % (rc, errs if errs else log[-300:]))
    ck.finish()


if __name__ == "__main__":
    main()
