"""Byte-reproducible HDF5 outputs: the same job writes the same .h5 files byte for byte, at any rank
count and run after run. Two jobs with --save-stats 1 and the methods cfsp and flap: stories260K,
and a generated bf16 GQA model of odd shapes (hidden 96, head_dim 24, FFN 200) whose blocks are
split by --ffn-slice 48 into attention + 5 FFN slices (48 x 4 + 8), run at -n 1, 2, 4 and a second
time at -n 2; every .h5 output (stats.h5 and one checkpoint per method) equals the -n 1 run's
(SHA-256 of the whole file). Then `recover --merge` (checkpoint.h5, merged.h5) run twice at -n 1
and twice at -n 2 from the same pruned file: equal run to run at the same -n (at -n 1 vs -n 2 the
adapters agree to rounding only, see test_recover.py). Each job writes into the same directory
name in turn (paths given on the command line are recorded in the files) and its outputs are then
moved aside; the first run of each job is followed by a pause of more than a second, so that any
timestamp stored in a file would differ. Directly: no object header of any output holds a
modification-time message, and every header is version 1 (whose groups hold no time)."""
import hashlib
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5py  # noqa: E402
import common as C  # noqa: E402

MTIME_OLD, MTIME_NEW = 0x000E, 0x0012      # HDF5 object header message types of a modification time


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def h5_hashes(d):
    return {f: sha(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".h5")}


def timed_objects(path):
    """names of the objects of an HDF5 file whose header stores a time (or is not version 1)"""
    bad = []
    with h5py.File(path, "r") as f:
        def look(name, obj):
            h = h5py.h5o.get_info(obj.id).hdr
            if h.version != 1 or h.mesg.present & ((1 << MTIME_OLD) | (1 << MTIME_NEW)):
                bad.append("%s (header v%d)" % (name, h.version))
        look("/", f)
        f.visititems(look)
    return bad


def pause_past(t_end):
    """sleep until more than a second has passed since t_end (a new second of the file clock)"""
    time.sleep(max(0.0, t_end + 1.1 - time.time()))


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("reproducible")
    wd = args.workdir
    gen = os.path.join(wd, "gen_bf16")
    ok = C.mkmodel(args, gen, 96, 200, 3, 6, 2, 300, dtype="bf16", head_dim=24, seed=5)
    ck.check(ok, "generated a 3-block bf16 GQA 6/2 model, head_dim 24, FFN 200")
    gtok = C.write_tokens(os.path.join(wd, "gen.u32.bin"), 6000, 300, 2)
    s260 = C.model_dir(args, "stories260K")
    cases = [("stories260K", s260, C.token_file(args, "stories260K"), []),
             ("gen_bf16", gen, gtok, ["--ffn-slice", 48])]
    out = os.path.join(wd, "out")        # every job writes here, then its outputs are moved aside
    firsts = {}
    for name, mdir, tok, extra in cases:
        ref = None
        for tag, n in (("n1", 1), ("n2", 2), ("n4", 4), ("n2_again", 2)):
            if os.path.exists(out):
                shutil.rmtree(out)
            rc, _ = C.run_cfsp(args, ["--model", mdir, "--calib-tokens", tok, "--nsamples", 4, "--seqlen", 64,
                                      "--eval-windows", 0, "--ratios", "0.3", "--method", "cfsp,flap",
                                      "--save-stats", 1, "--output-dir", out] + extra, np_ranks=n)
            t_end = time.time()
            if not ck.check(rc == 0, "%s runs at -n %d (%s)" % (name, n, tag)):
                continue
            kept = os.path.join(wd, "%s_%s" % (name, tag))
            if os.path.exists(kept):
                shutil.rmtree(kept)
            os.rename(out, kept)
            hs = h5_hashes(kept)
            if ref is None:
                ref = hs
                firsts[name] = kept
                ck.check(sorted(hs) == ["cfsp_r0.3.h5", "flap_r0.3.h5", "stats.h5"],
                         "%s -n 1: the .h5 outputs are stats.h5 and one checkpoint per method" % name, " ".join(hs))
                for f in hs:
                    bad = timed_objects(os.path.join(kept, f))
                    ck.check(not bad, "%s -n 1 %s: no object header holds a time" % (name, f), "; ".join(bad[:5]))
                pause_past(t_end)
                continue
            for f in ref:
                ck.check(hs.get(f) == ref[f], "%s %s: %s byte for byte equal to -n 1" % (name, tag, f),
                         "sha256 %s vs %s" % (str(hs.get(f))[:16], ref[f][:16]))
            ck.check(sorted(hs) == sorted(ref), "%s %s: the same .h5 files as -n 1" % (name, tag))

    # recover from one fixed input (its path is recorded in checkpoint.h5 and merged.h5)
    if "stories260K" in firsts:
        src = C.fresh_dir(os.path.join(wd, "recover_in"))
        for f in ("cfsp_r0.3.h5", "stats.h5"):
            shutil.copy(os.path.join(firsts["stories260K"], f), src)
        tok = C.token_file(args, "stories260K")
        rout = os.path.join(wd, "rout")
        for n in (1, 2):
            ref = None
            for tag in ("a", "b"):
                if os.path.exists(rout):
                    shutil.rmtree(rout)
                rc, _ = C.run_cfsp(args, ["--model", os.path.join(src, "cfsp_r0.3.h5"), "--train-tokens", tok + "@100000:300000",
                                          "--seqlen", 32, "--batch", 4, "--steps", 2, "--plan", "adaptive",
                                          "--stats", os.path.join(src, "stats.h5"), "--eval-windows", 0, "--merge", 1,
                                          "--output-dir", rout], np_ranks=n, sub="recover")
                t_end = time.time()
                if not ck.check(rc == 0, "recover --merge at -n %d (run %s)" % (n, tag)):
                    continue
                kept = os.path.join(wd, "recover_n%d_%s" % (n, tag))
                if os.path.exists(kept):
                    shutil.rmtree(kept)
                os.rename(rout, kept)
                hs = h5_hashes(kept)
                if ref is None:
                    ref = hs
                    ck.check(sorted(hs) == ["checkpoint.h5", "merged.h5"], "recover -n %d: checkpoint.h5 and merged.h5" % n, " ".join(hs))
                    for f in hs:
                        bad = timed_objects(os.path.join(kept, f))
                        ck.check(not bad, "recover -n %d %s: no object header holds a time" % (n, f), "; ".join(bad[:5]))
                    pause_past(t_end)
                    continue
                for f in ref:
                    ck.check(hs.get(f) == ref[f], "recover -n %d: %s byte for byte equal run to run" % (n, f),
                             "sha256 %s vs %s" % (str(hs.get(f))[:16], ref[f][:16]))
    ck.finish()


if __name__ == "__main__":
    main()
