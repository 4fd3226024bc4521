"""The three ways tensor bytes reach the HDF5 file (--write-io direct | buffered | mpiio) write the
same data: on a generated bf16 model whose tensors are large enough for the O_DIRECT path (>= 1 MiB
pieces, sizes that are not multiples of 4096 bytes) and whose blocks are split into FFN slices held
by different ranks (row ranges of gate/up and column ranges of down_proj written by different
ranks), at -n 1, 2 and 4, every dataset's stored bytes (read at its file offset) equal the -n 1
mpiio file's and every checksum matches its NumPy recomputation. Then the failure paths:
O_DIRECT refused on one rank (CFSP_FAULT=nodirect at open, einval at a write) falls back to buffered writes with the same
bytes and says so; without the writer thread (nothread) the bytes are the same; a device write error on one rank (CFSP_FAULT=eio) ends the job with one line
naming the file, offset and errno text, and leaves no output file behind."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import common as C  # noqa: E402
from test_outputs import np_checksum  # noqa: E402


def raw_datasets(path):
    """{name: stored bytes} of every dataset, read from the file at the dataset's offset."""
    out = {}
    with h5py.File(path, "r") as f, open(path, "rb") as fh:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                n = obj.id.get_storage_size()
                off = obj.id.get_offset()
                if n and off is not None:
                    fh.seek(off)
                    out[name] = fh.read(n)
                else:
                    out[name] = b""
        f.visititems(visit)
    return out


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("write_io")
    model = os.path.join(args.workdir, "model_bf16")
    # hidden 1040 (8 heads of 130): q_proj 2.16 MB, gate/up slices of ~700-1000 rows x 2080 bytes;
    # FFN 3000 in slices of 1024 -> 3 FFN units + attention per block, 8 stage units in all
    if not C.mkmodel(args, model, 1040, 3000, 2, 8, 4, 600, dtype="bf16", seed=7):
        ck.check(False, "generate the bf16 model")
        return ck.finish()
    tok = os.path.join(args.workdir, "tok.u32.bin")
    C.write_tokens(tok, 4096, 600, 3)
    base = ["--model", model, "--calib-tokens", tok, "--nsamples", 2, "--seqlen", 64, "--ffn-slice", 1024,
            "--ratios", "0.3", "--save-stats", 0, "--eval-dense", 0]

    def run(tag, np_ranks, mode, env_fault=None):
        out = C.fresh_dir(os.path.join(args.workdir, tag))
        env_old = os.environ.get("CFSP_FAULT")
        if env_fault:
            os.environ["CFSP_FAULT"] = env_fault
        try:
            rc, log = C.run_cfsp(args, base + ["--write-io", mode, "--output-dir", out], np_ranks=np_ranks)
        finally:
            if env_fault:
                os.environ.pop("CFSP_FAULT", None)
            if env_old is not None:
                os.environ["CFSP_FAULT"] = env_old
        return out, rc, log

    ref = None
    for np_ranks in (1, 2, 4):
        for mode in ("mpiio", "buffered", "direct"):
            out, rc, log = run("n%d_%s" % (np_ranks, mode), np_ranks, mode)
            if not ck.check(rc == 0, "-n %d --write-io %s: the run succeeds" % (np_ranks, mode), log[-400:] if rc else ""):
                continue
            res = C.load_results(out)
            e = res["pruned"][0]
            ck.check(e.get("write_io") == mode and e.get("write_io_fallback_ranks") == 0,
                     "-n %d %s: results.json records write_io %s, no fallback" % (np_ranks, mode, e.get("write_io")))
            path = C.pruned_file(out, e)
            n, bad = np_checksum(path)
            ck.check(n >= 20 and not bad, "-n %d %s: %d tensor checksums equal their NumPy recomputation" % (np_ranks, mode, n),
                     " ".join(bad))
            data = raw_datasets(path)
            if ref is None:
                ref = data
                big = sum(1 for v in data.values() if len(v) >= (1 << 20))
                odd = sum(1 for v in data.values() if len(v) % 4096)
                ck.check(big >= 8 and odd >= 8, "the model exercises the O_DIRECT path: %d datasets >= 1 MiB, %d not a "
                         "multiple of 4096 bytes" % (big, odd))
                continue
            diff = [k for k in ref if data.get(k) != ref[k]] + [k for k in data if k not in ref]
            ck.check(not diff, "-n %d %s: every dataset's stored bytes equal those of -n 1 mpiio (%d datasets)" % (np_ranks, mode, len(data)),
                     " ".join(diff[:6]))

    # O_DIRECT refused on rank 1: buffered, the same bytes, one line saying so, counted in results.json
    out, rc, log = run("nodirect", 2, "direct", "nodirect:1:rawio")
    if ck.check(rc == 0, "-n 2, O_DIRECT refused on rank 1: the run succeeds", log[-400:] if rc else ""):
        e = C.load_results(out)["pruned"][0]
        ck.check(e.get("write_io_fallback_ranks") == 1, "results.json counts 1 rank that wrote buffered (%s)" % e.get("write_io_fallback_ranks"))
        ck.check("rank 1: output written buffered (O_DIRECT open refused" in log, "rank 1 says it wrote buffered and why",
                 log[-400:] if "rank 1: output written" not in log else "")
        data = raw_datasets(C.pruned_file(out, e))
        ck.check(data == ref, "the fallback file holds the same bytes")

    # O_DIRECT writes failing with EINVAL on rank 1 (a file system wanting another alignment): that
    # piece and the rest go buffered, the same bytes, counted and said
    out, rc, log = run("einval", 2, "direct", "einval:1:rawio")
    if ck.check(rc == 0, "-n 2, O_DIRECT writes refused (EINVAL) on rank 1: the run succeeds", log[-400:] if rc else ""):
        e = C.load_results(out)["pruned"][0]
        ck.check(e.get("write_io_fallback_ranks") == 1 and "rank 1: output written buffered (O_DIRECT write refused" in log,
                 "1 rank fell back, and says why", "" if "O_DIRECT write refused" in log else log[-400:])
        ck.check(raw_datasets(C.pruned_file(out, e)) == ref, "the file holds the same bytes")

    # no writer thread on rank 0 (as when MPI does not grant MPI_THREAD_FUNNELED): the same bytes
    out, rc, log = run("nothread", 2, "direct", "nothread:0:rawio")
    if ck.check(rc == 0, "-n 2, rank 0 without a writer thread: the run succeeds", log[-400:] if rc else ""):
        e = C.load_results(out)["pruned"][0]
        ck.check(e.get("write_io") == "direct" and raw_datasets(C.pruned_file(out, e)) == ref,
                 "it writes O_DIRECT from its own thread, the same bytes")

    # a device write error on rank 1 (in the writer thread: the O_DIRECT pieces): one clear line, non-zero exit, no output file left
    out, rc, log = run("eio", 2, "direct", "eio:1:rawio")
    lines = [ln for ln in log.splitlines() if "Input/output error" in ln]
    ck.check(rc != 0, "-n 2, write error on rank 1: the job fails (exit %d)" % rc)
    ck.check(len(lines) >= 1 and ".h5" in lines[0] and "offset" in lines[0] and "rank 1" in lines[0],
             "the error names the file, the offset, the errno text and the rank", lines[0] if lines else log[-400:])
    left = [f for f in os.listdir(out) if f.endswith(".h5") or f.endswith(".tmp")]
    ck.check(not left, "no output file is left behind", " ".join(left))
    return ck.finish()


if __name__ == "__main__":
    sys.exit(main())
