"""Shared helpers of the parity test scripts: argument parsing, running cfsp-mpi / the model
generator under mpiexec, reading its outputs, pass/fail bookkeeping, synthetic models.

Every test script is standalone:  /usr/bin/python3 tests/py/test_X.py --bin BIN --mkmodel MK
--shared /work/shared --workdir DIR [--np N]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "ref"))

import numpy as np  # noqa: E402
import cfsp_ref as ref  # noqa: E402

SHARED_MODELS = ("stories260K", "tinystories656K")


def parse_args(desc, need_bin=True):
    ap = argparse.ArgumentParser(description=desc)
    ap.add_argument("--bin", required=need_bin, help="path to cfsp-mpi")
    ap.add_argument("--mkmodel", default=None, help="path to cfsp-mpi-mkmodel")
    ap.add_argument("--shared", default="/work/shared")
    ap.add_argument("--workdir", default="/tmp/cfsp-test")
    ap.add_argument("--np", type=int, default=2, help="MPI ranks")
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--full", action="store_true", help="larger test matrix (slower)")
    # fp32 unless a test asks otherwise: the parity checks' tolerances are fp32's, and the program's
    # default (auto) takes bf16 for bf16 checkpoints on CPUs with bf16 instructions (AVX512-BF16, AMX)
    ap.add_argument("--compute", default="fp32", choices=("auto", "fp32", "bf16"),
                    help="give every run / prune / recover job this --compute unless it names its own (default fp32)")
    ap.add_argument("--trainer", default=None, choices=("auto", "data", "pipeline"),
                    help="give every recover job this --trainer (default: the program's default)")
    args = ap.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    return args


class Checker:
    """Counts named checks, prints one line per check and the closing 'N passed, N failed'."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.t0 = time.time()

    def check(self, ok, what, detail=""):
        tag = "PASS" if ok else "FAIL"
        print("[%s] %s%s" % (tag, what, (": " + detail) if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def note(self, msg):
        print("       " + msg, flush=True)

    def finish(self):
        print("%s: %.1f s" % (self.name, time.time() - self.t0))
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed or not self.passed else 0)


def mpi_env():
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1", "OPENBLAS_NUM_THREADS": "1"})
    return env


def run_cmd(cmd, timeout=300, log=None):
    """Run a command; print it; return (rc, combined output)."""
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=mpi_env(),
                           timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + "\n<timeout>"
        rc = -999
    if log:
        with open(log, "w") as f:
            f.write(out)
    if rc != 0:
        print("  exit %d after %.1f s; last output:\n%s" % (rc, time.time() - t, out[-3000:]),
              flush=True)
    return rc, out


def run_cfsp(args, opts, np_ranks=None, sub="run", timeout=300):
    """mpiexec --oversubscribe -n NP BIN <sub> <opts...>; returns (rc, output)."""
    n = np_ranks or args.np
    if getattr(args, "compute", None) and sub in ("run", "prune", "recover") and "--compute" not in opts:
        opts = list(opts) + ["--compute", args.compute]
    cmd = [args.mpiexec, "--oversubscribe", "-n", str(n), args.bin, sub] + [str(o) for o in opts]
    return run_cmd(cmd, timeout=timeout)


def load_results(outdir):
    with open(os.path.join(outdir, "results.json")) as f:
        return json.load(f)


def pruned_file(outdir, entry):
    f = entry.get("file")
    if not f:
        return None
    if os.path.isabs(f):
        return f
    p = os.path.join(outdir, f)
    return p if os.path.exists(p) or not os.path.exists(f) else os.path.abspath(f)


def find_pruned(res, method, ratio):
    for e in res.get("pruned", []):
        if e.get("method") == method and abs(float(e.get("ratio")) - ratio) < 1e-9:
            return e
    return None


def fresh_dir(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def write_tokens(path, n, vocab, seed):
    rng = np.random.default_rng(seed)
    rng.integers(0, vocab, size=n, dtype=np.uint64).astype("<u4").tofile(path)
    return path


def token_file(args, model, text="tinystories_val_head"):
    return os.path.join(args.shared, "data", "tokens", model, text + ".u32.bin")


def model_dir(args, model):
    return os.path.join(args.shared, "models", model)


def mkmodel(args, out, hidden, ffn, layers, heads, kv, vocab, dtype="f32", head_dim=None,
            shard_bytes=None, seed=None, tie=None, rope_theta=None, rope_llama3=None,
            ffn_per_layer=None, family=None):
    """Run the C checkpoint generator; returns True on success. ffn_per_layer (list) writes
    block_configs with per-block FFN sizes (generator option --ffn-per-layer)."""
    if not args.mkmodel:
        return False
    if os.path.exists(out):
        shutil.rmtree(out)
    cmd = [args.mkmodel, "--out", out, "--hidden", hidden, "--layers", layers,
           "--heads", heads, "--kv-heads", kv, "--vocab", vocab, "--dtype", dtype]
    if not ffn_per_layer:
        cmd += ["--ffn", ffn]
    for flag, val in (("--head-dim", head_dim), ("--shard-bytes", shard_bytes), ("--seed", seed),
                      ("--tie", tie), ("--rope-theta", rope_theta), ("--rope-llama3", rope_llama3),
                      ("--family", family),
                      ("--ffn-per-layer", ",".join(str(x) for x in ffn_per_layer) if ffn_per_layer else None)):
        if val is not None:
            cmd += [flag, val]
    rc, _ = run_cmd([str(c) for c in cmd], timeout=120)
    return rc == 0


def rel(a, b, floor=1e-30):
    """max relative difference of arrays a vs reference b."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor))) if a.size else 0.0


def random_model(D, m, L, H, KV, V, hd=None, seed=0, tie=True, rope_scaling=None, theta=10000.0,
                 ffn_list=None, scale=0.2):
    """A random LLaMA model built in Python (config dict, {name: float32 array})."""
    rng = np.random.default_rng(seed)
    hd = hd or D // H
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
           "intermediate_size": m, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "head_dim": hd, "hidden_act": "silu", "rms_norm_eps": 1e-5,
           "rope_theta": theta, "rope_scaling": rope_scaling, "vocab_size": V,
           "max_position_embeddings": 2048, "tie_word_embeddings": tie, "torch_dtype": "float32"}
    if ffn_list:
        cfg["block_configs"] = [{"ffn": {"intermediate_size": int(x)}} for x in ffn_list]
    sizes = ffn_list or [m] * L

    def w(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"model.embed_tokens.weight": w(V, D),
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)}
    if not tie:
        t["lm_head.weight"] = w(V, D)
    for l in range(L):
        p = "model.layers.%d." % l
        ml = sizes[l]
        t[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        t[p + "self_attn.q_proj.weight"] = w(H * hd, D)
        t[p + "self_attn.k_proj.weight"] = w(KV * hd, D)
        t[p + "self_attn.v_proj.weight"] = w(KV * hd, D)
        t[p + "self_attn.o_proj.weight"] = w(D, H * hd)
        t[p + "mlp.gate_proj.weight"] = w(ml, D)
        t[p + "mlp.up_proj.weight"] = w(ml, D)
        t[p + "mlp.down_proj.weight"] = w(D, ml)
    return cfg, t


def logit_tolerance(ref_logits, base=1e-4):
    """Absolute bound for |C - reference| on logits.

    The C program computes in float32 (unit roundoff 6e-8); its error on a logit grows with the
    magnitude of the values it is made of, so the bound is base for logits of magnitude <= 10 (the
    shared models' range, where 1e-4 absolute is ~1e-5 relative) and base * max|logit| / 10 above,
    i.e. a constant 1e-5 relative bound for the large logits random generated models can produce."""
    mx = float(np.max(np.abs(ref_logits)))
    return base * max(1.0, mx / 10.0)


# ---------------------------------------------------------------------------------------------
# kept-set comparison with a near-tie allowance
# ---------------------------------------------------------------------------------------------

def boundary(score, kept):
    """(lowest kept score, highest removed score) of one layer under a reference selection."""
    score = np.asarray(score, dtype=np.float64)
    mask = np.zeros(len(score), dtype=bool)
    mask[np.asarray(kept, dtype=np.int64)] = True
    lo = float(score[mask].min()) if mask.any() else math.inf
    hi = float(score[~mask].max()) if (~mask).any() else -math.inf
    return lo, hi


def compare_kept(c_kept, r_kept, score, lo, hi, tol_abs):
    """Compare the C kept set with the reference one. Differences are tolerated only as near
    ties: the reference scores of all differing channels must lie within tol_abs of each other
    (a swap of two channels whose scores differ by more is a real difference) and within tol_abs
    of the reference boundary (lo = lowest kept score, hi = highest removed score).
    Returns (ok, list of (channel, score, in C, in ref, tolerated))."""
    score = np.asarray(score, dtype=np.float64)
    c = set(int(x) for x in c_kept)
    r = set(int(x) for x in r_kept)
    diff = sorted(c ^ r)
    if not diff:
        return True, []
    vals = score[diff]
    spread_ok = float(vals.max() - vals.min()) <= tol_abs
    rows = []
    ok = True
    for j in diff:
        d = min(abs(score[j] - lo) if math.isfinite(lo) else math.inf,
                abs(score[j] - hi) if math.isfinite(hi) else math.inf)
        near = spread_ok and d <= tol_abs
        ok &= near
        rows.append((j, float(score[j]), j in c, j in r, near))
    return ok, rows


def describe_diff(rows, limit=6):
    return "; ".join("ch %d score %.9g C=%d ref=%d%s" % (j, s, ic, ir, "" if near else " NOT A TIE")
                     for j, s, ic, ir, near in rows[:limit]) + (" ..." if len(rows) > limit else "")


def stats_scale_error(c_st, r_st):
    """Worst relative difference of A_j (C stats vs reference stats) over all layers."""
    return max(rel(c_st.A(l), r_st.A(l), floor=1e-12) for l in range(len(r_st.sum_sq)))


def sum_error(c_st, r_st):
    """Worst |sum_C - sum_ref| / sqrt(ntokens * sum_sq_ref) (the natural scale of a sum of
    ntokens values whose mean square is sum_sq/ntokens; robust to cancellation)."""
    w = 0.0
    for l in range(len(r_st.sum)):
        scale = np.sqrt(r_st.ntokens * r_st.sum_sq[l]) + 1e-30
        w = max(w, float(np.max(np.abs(c_st.sum[l] - r_st.sum[l]) / scale)))
    return w


def ratios_arg(ratios):
    return ",".join("%g" % r for r in ratios)


def h5_datasets(path):
    """{dataset path: array as stored} of every dataset of an HDF5 file."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def h5_model_tensors(path):
    """(config, tensors) of a cfsp-mpi pruned HDF5 file: every weight as float64 under its HF name
    (bf16/f16 widened exactly), block_configs from the stored FFN sizes; kept_channels left out."""
    import h5py
    t = {}
    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["config"])

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith(("model/", "lm_head/")) and not name.endswith("kept_channels"):
                t[name.replace("/", ".")] = obj.astype("f8")[()] if obj.dtype.itemsize == 2 else obj[()].astype("f8")
        f.visititems(visit)
    cfg["block_configs"] = [{"ffn": {"intermediate_size": int(t["model.layers.%d.mlp.gate_proj.weight" % l].shape[0])}}
                            for l in range(cfg["num_hidden_layers"])]
    return cfg, t
