"""Output files: the pruned HDF5 checkpoints hold the original weights at the kept channels bit
for bit (f32 shared model and generated bf16 / f16 models, read with h5py and with h5dump),
`prune --stats` reproduces the full run's outputs without a forward pass, `cfsp-mpi verify`
accepts intact files and rejects a corrupted one, an existing output is not overwritten without
--force, and no temporary file is left behind."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import common as C  # noqa: E402
import st_raw  # noqa: E402

BITS = {"F32": "<u4", "F16": "<u2", "BF16": "<u2"}


def np_checksum(path):
    """Independent recomputation of every dataset's 'checksum' attribute (src/ckpt/model_h5.c's
    definition: sum mod 2^64 over elements of a multiply-xorshift-multiply of (position, stored
    bits)), from the raw bytes of the file. Returns (checked, list of mismatching names)."""
    K0, K1 = np.uint64(0x9e3779b97f4a7c15), np.uint64(0x632be59bd9b4e019)
    K2, K3 = np.uint64(0xbf58476d1ce4e5b9), np.uint64(0x94d049bb133111eb)
    bad, n = [], [0]
    with h5py.File(path, "r") as f, open(path, "rb") as fh:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset) or "checksum" not in obj.attrs:
                return
            count = int(np.prod(obj.shape))
            es = obj.id.get_storage_size() // max(count, 1)   # h5py shows bf16/f16 as float32
            fh.seek(obj.id.get_offset())
            raw = fh.read(es * count)
            bits = np.frombuffer(raw, dtype={2: "<u2", 4: "<u4", 8: "<u8"}[es]).astype(np.uint64)
            pos = np.arange(count, dtype=np.uint64)
            with np.errstate(over="ignore"):
                x = (pos * K0) ^ (bits + K1)
                x *= K2
                x ^= x >> np.uint64(31)
                x *= K3
                got = int(x.sum(dtype=np.uint64))
            n[0] += 1
            if got != int(np.uint64(obj.attrs["checksum"])):
                bad.append(name)
        f.visititems(visit)
    return n[0], bad


def h5_bits(ds, dt):
    """the stored bits of a dataset: read as float32 (an exact widening for bf16/f16) and narrow."""
    f = ds.astype("f4")[()] if ds.dtype.itemsize == 2 else ds[()].astype("f4")
    u = f.view("<u4")
    if dt == "F32":
        return u
    if dt == "BF16":
        return (u >> 16).astype("<u2")
    return f.astype("<f2").view("<u2")


def check_file(ck, path, mdir, label):
    table = st_raw.tensors(mdir)
    with h5py.File(path, "r") as f:
        L = len(f["model/layers"])
        ok_all, nchk = True, 0
        for l in range(L):
            g = f["model/layers/%d" % l]
            kept = g["mlp/kept_channels"][()]
            for name, axis in (("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)):
                dt, orig = st_raw.raw(mdir, "model.layers.%d.mlp.%s.weight" % (l, name), table)
                want = np.take(orig, kept, axis=axis)
                got = h5_bits(g["mlp/%s/weight" % name], dt)
                ok_all &= got.shape == want.shape and np.array_equal(got, want)
                a = g["mlp/%s/weight" % name].attrs["dtype"]
                ok_all &= (a.decode() if isinstance(a, bytes) else str(a)) == dt
                nchk += 1
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                dt, orig = st_raw.raw(mdir, "model.layers.%d.self_attn.%s.weight" % (l, name), table)
                ok_all &= np.array_equal(h5_bits(g["self_attn/%s/weight" % name], dt), orig)
                nchk += 1
            for name in ("input_layernorm", "post_attention_layernorm"):
                dt, orig = st_raw.raw(mdir, "model.layers.%d.%s.weight" % (l, name), table)
                ok_all &= np.array_equal(h5_bits(g["%s/weight" % name], dt), orig)
                nchk += 1
        dt, orig = st_raw.raw(mdir, "model.embed_tokens.weight", table)
        ok_all &= np.array_equal(h5_bits(f["model/embed_tokens/weight"], dt), orig)
        cfg = json.loads(f.attrs["config"])
        ok_all &= cfg["intermediate_sizes"] == [int(f["model/layers/%d/mlp/kept_channels" % l].shape[0]) for l in range(L)]
    ck.check(bool(ok_all), "%s: %d tensors equal the original weights at the kept channels, bit for bit" % (label, nchk))


def h5_content(path):
    """every dataset's bytes and every attribute except the run's options (which name the command)"""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: str(v) for k, v in f.attrs.items() if k != "options"}
        def visit(name, obj):
            attrs = {k: str(v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.id.get_type().get_size(), obj.astype("f4")[()].tobytes() if obj.dtype.itemsize == 2 else obj[()].tobytes(), attrs)
        f.visititems(visit)
    return out


def h5dump_value(path, dset):
    out = subprocess.run(["h5dump", "-d", dset, "-c", "1,1", path], stdout=subprocess.PIPE).stdout.decode()
    m = re.search(r"\(0,0\): ([-0-9.eE+]+)", out)
    return float(m.group(1)) if m else None


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("outputs")
    cases = [("stories260K_f32", C.model_dir(args, "stories260K"), C.token_file(args, "stories260K"), 1)]
    for dt in ("bf16", "f16"):
        d = os.path.join(args.workdir, "gen_" + dt)
        if ck.check(C.mkmodel(args, d, 64, 150, 2, 4, 2, 200, dtype=dt, seed=3, tie=0), "generated a %s model" % dt):
            cases.append(("gen_" + dt, d, C.write_tokens(os.path.join(args.workdir, dt + ".u32.bin"), 4000, 200, 2), 0))
    for label, mdir, tok, _ in cases:
        out = C.fresh_dir(os.path.join(args.workdir, "out_" + label))
        base = ["--model", mdir, "--calib-tokens", tok, "--eval-tokens", tok, "--nsamples", 4, "--seqlen", 64,
                "--eval-windows", 4, "--ratios", "0.3,0.6", "--method", "cfsp,flap"]
        rc, _ = C.run_cfsp(args, base + ["--output-dir", out], np_ranks=2)
        if not ck.check(rc == 0, "%s: full run at -n 2" % label):
            continue
        res = C.load_results(out)
        for e in res["pruned"]:
            check_file(ck, e["file"], mdir, "%s %s r=%g" % (label, e["method"], e["ratio"]))
        # h5dump reads the stored dtype correctly (bf16 first value against the original)
        e = res["pruned"][0]
        table = st_raw.tensors(mdir)
        dt, orig = st_raw.raw(mdir, "model.layers.0.self_attn.q_proj.weight", table)
        v = h5dump_value(e["file"], "/model/layers/0/self_attn/q_proj/weight")
        want = float(st_raw.to_f32(dt, orig.ravel()[:1])[0])
        ck.check(v is not None and abs(v - want) <= 1e-6 * max(1, abs(want)), "%s: h5dump reads q_proj[0,0] = %s (original %r)" % (label, v, want))
        # verify: intact files pass, a flipped byte is caught
        rc, log = C.run_cmd([args.bin, "verify", e["file"]])
        ck.check(rc == 0 and "all checksums match" in log, "%s: verify accepts %s" % (label, os.path.basename(e["file"])))
        nck, badck = np_checksum(e["file"])
        ck.check(nck >= 10 and not badck, "%s: NumPy recomputes %d tensor checksums of %s (mismatch: %s)"
                 % (label, nck, os.path.basename(e["file"]), badck[:3]))
        bad = os.path.join(args.workdir, label + "_corrupt.h5")
        shutil.copy(e["file"], bad)
        with h5py.File(bad, "r") as f:
            off = f["model/layers/0/mlp/up_proj/weight"].id.get_offset()
        with open(bad, "r+b") as fh:
            fh.seek(off + 5)
            b = fh.read(1)
            fh.seek(off + 5)
            fh.write(bytes([b[0] ^ 0x40]))
        rc, log = C.run_cmd([args.bin, "verify", bad])
        ck.check(rc != 0 and "up_proj" in log and "checksum" in log, "%s: verify rejects a flipped byte in up_proj" % label)
        # verify: a checksum attribute it cannot read as one integer is one clear error, not a comparison
        ds = "model/layers/0/mlp/up_proj/weight"
        for kind, value in (("a string", np.bytes_(b"0123456789abcdef")), ("a float", np.float64(1.5)),
                            ("two integers", np.array([1, 2], dtype=np.uint64))):
            bad = os.path.join(args.workdir, label + "_badattr.h5")
            shutil.copy(e["file"], bad)
            with h5py.File(bad, "r+") as f:
                del f[ds].attrs["checksum"]
                f[ds].attrs["checksum"] = value
            rc, log = C.run_cmd([args.bin, "verify", bad])
            errs = [l for l in log.splitlines() if l.startswith("cfsp-mpi: error:") or l.startswith("cfsp-mpi: fatal:")]
            ck.check(rc == 1 and len(errs) == 1 and "dataset /%s: attribute 'checksum': expected one integer" % ds in errs[0]
                     and "mismatch" not in log, "%s: verify rejects a checksum attribute holding %s (exit 1, one error line)" % (label, kind),
                     " | ".join(errs) or log[-300:])
        # prune --stats: same outputs, no forward pass
        out2 = C.fresh_dir(os.path.join(args.workdir, label + "_fromstats"))
        rc, log = C.run_cfsp(args, ["--stats", os.path.join(out, "stats.h5")] + base + ["--output-dir", out2], np_ranks=2, sub="prune")
        if ck.check(rc == 0 and "calibration:" not in log, "%s: prune --stats runs without a calibration pass" % label):
            r2 = C.load_results(out2)
            ck.check([(a["keep_counts"], a["nll_sum"]) for a in r2["pruned"]] == [(a["keep_counts"], a["nll_sum"]) for a in res["pruned"]],
                     "%s: prune --stats gives the same counts and perplexities" % label)
            for a, b in zip(res["pruned"], r2["pruned"]):
                same = h5_content(a["file"]) == h5_content(b["file"])
                ck.check(same, "%s: %s identical to the full run's (every dataset and attribute but 'options')" % (label, os.path.basename(b["file"])))
        # no overwrite without --force; --force overwrites
        rc, log = C.run_cfsp(args, base + ["--output-dir", out], np_ranks=2)
        ck.check(rc != 0 and "use --force" in log, "%s: refuses to overwrite existing outputs" % label)
        rc, log = C.run_cfsp(args, base + ["--output-dir", out, "--force"], np_ranks=1)
        ck.check(rc == 0, "%s: --force overwrites" % label)
        ck.check(not glob.glob(os.path.join(out, "*.tmp")), "%s: no temporary files left" % label)
    ck.finish()


if __name__ == "__main__":
    main()
