"""All-or-nothing outputs and one job per output directory (issue 17), at -n 1 and -n 2:
two --ratios that name one output file (the same value twice, 0.3 and 0.30000001) are refused
before any work (one line, no file created); an existing results.md is not overwritten without
--force; a second job on a directory another job is using (held there by CFSP_FAULT=hold:0:lock
until the test releases it) is refused at once naming the other job's host and pid, and a stale lock file (no job holds it) is taken over with a note; a directory
in the way of a final name (at the start, and appearing during the job), a failed rename in the
middle of the commit (CFSP_FAULT=erename:0:commit) and a full disk (a small tmpfs) while writing a
pruned checkpoint and while writing the reports after it: each time exit != 0, one error line,
nothing under a final name (the --dump-logits file included), no .tmp left, an unrelated file of
the directory untouched, and the corrected command then succeeds. Also a full disk while recover
writes its adapter checkpoint at -n 2 (pipeline and data trainers): one line, no crash or hang.
The tmpfs cases need mount (root); they are skipped, saying why, where it fails."""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

LOCK = ".cfsp-mpi.lock"
NOTE = "notes.txt"
NOTE_TEXT = b"an unrelated file of the user's\n"


def err_lines(log):
    return [ln for ln in log.splitlines() if ln.startswith("cfsp-mpi: error:") or ln.startswith("cfsp-mpi: fatal:")]


def one_line(ck, label, rc, log, *words):
    errs = err_lines(log)
    ok = rc not in (0, -999) and len(errs) == 1 and all(w in errs[0] for w in words)
    ck.check(ok, "%s: exit %d, one error line naming %s" % (label, rc, ", ".join(words)), " | ".join(errs) or log[-400:])
    return errs[0] if errs else ""


def with_note(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, NOTE), "wb") as f:
        f.write(NOTE_TEXT)


def clean_after(ck, label, d, allowed=(NOTE,)):
    """nothing but the unrelated file(s) (no final name, no .tmp, no lock) and the note untouched"""
    left = sorted(f for f in os.listdir(d) if f not in allowed)
    ck.check(not left, "%s: nothing under a final name, no .tmp, no lock left" % label, " ".join(left))
    with open(os.path.join(d, NOTE), "rb") as f:
        ck.check(f.read() == NOTE_TEXT, "%s: the unrelated file is untouched" % label)


def complete(ck, label, d, dump=True):
    want = ["cfsp_r0.3.h5", "cfsp_r0.6.h5", "ppl_vs_ratio.svg", "results.json", "results.md", "stats.h5"] + (["logits.bin"] if dump else [])
    have = sorted(os.listdir(d))
    ok = all(w in have for w in want) and not [f for f in have if f.endswith(".tmp") or f == LOCK]
    ck.check(ok, "%s: the outputs are complete, no .tmp and no lock left" % label, " ".join(have))


def popen_cfsp(args, opts, n, env=None):
    cmd = [args.mpiexec, "--oversubscribe", "-n", str(n), args.bin, "run"] + [str(o) for o in opts]
    print("$ " + " ".join(cmd) + " &", flush=True)
    e = C.mpi_env()
    e.update(env or {})
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e)


def wait_for(path, proc, timeout=60):
    t = time.time()
    while time.time() - t < timeout and proc.poll() is None:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return True
        time.sleep(0.05)
    return False


def blocks(path):
    return os.stat(path).st_blocks * 512


def mount_tmpfs(d, size):
    os.makedirs(d, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size, "tmpfs", d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p.returncode == 0, p.stdout.decode("utf-8", "replace").strip()


def umount(d):
    subprocess.run(["umount", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def umount_all(d):
    """every tmpfs still mounted on d (a run of this test that was killed leaves its mounts)"""
    d = os.path.realpath(d)
    for _ in range(16):
        with open("/proc/mounts") as f:
            if not any(ln.split()[1] == d for ln in f if len(ln.split()) > 1):
                return
        umount(d)


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("outputs_atomic")
    model, tok = C.model_dir(args, "stories260K"), C.token_file(args, "stories260K")
    small = ["--model", model, "--calib-tokens", tok, "--eval-tokens", tok, "--nsamples", 4, "--seqlen", 64, "--eval-windows", 2]
    host = socket.gethostname()
    for n in (1, 2):
        w = os.path.join(args.workdir, "n%d" % n)
        umount_all(os.path.join(w, "tmpfs"))
        C.fresh_dir(w)

        # 1. two ratios naming one file: refused before anything exists
        for ratios, words in (("0.3,0.3", ("--ratios", "0.3", "twice", "cfsp_r0.3.h5")),
                              ("0.2,0.3,0.30000001", ("--ratios", "0.3 and 0.30000001", "cfsp_r0.3.h5"))):
            out = os.path.join(w, "dup")
            rc, log = C.run_cfsp(args, small + ["--ratios", ratios, "--output-dir", out], np_ranks=n)
            one_line(ck, "-n %d --ratios %s" % (n, ratios), rc, log, *words)
            ck.check(not os.path.exists(out), "-n %d --ratios %s: no output directory or file created" % (n, ratios))

        # 2. an existing results.md is not overwritten without --force
        out = os.path.join(w, "md")
        with_note(out)
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write("an older table\n")
        opts = small + ["--ratios", "0.3,0.6", "--output-dir", out, "--dump-logits", os.path.join(out, "logits.bin")]
        rc, log = C.run_cfsp(args, opts, np_ranks=n)
        one_line(ck, "-n %d existing results.md" % n, rc, log, "results.md", "use --force")
        with open(os.path.join(out, "results.md")) as f:
            ck.check(f.read() == "an older table\n", "-n %d: the existing results.md is untouched" % n)
        clean_after(ck, "-n %d existing results.md" % n, out, (NOTE, "results.md"))
        rc, log = C.run_cfsp(args, opts + ["--force"], np_ranks=n)
        ck.check(rc == 0, "-n %d: with --force the job succeeds" % n)
        complete(ck, "-n %d --force" % n, out)

        # 3. two jobs on one directory: the second is refused at once, naming the first's host and pid
        out = os.path.join(w, "lock")
        with_note(out)
        # the first job holds its lock (before any work) until the test releases it (CFSP_FAULT=hold:0:lock)
        release = os.path.join(w, "release_lock")
        opts_a = small + ["--ratios", "0.3,0.6", "--output-dir", out]
        a = popen_cfsp(args, opts_a, n, {"CFSP_FAULT": "hold:0:lock", "CFSP_FAULT_RELEASE": release})
        if ck.check(wait_for(os.path.join(out, LOCK), a), "-n %d: the first job holds %s" % (n, LOCK)):
            with open(os.path.join(out, LOCK)) as f:
                holder = f.read().strip()
            t0 = time.time()
            rc, log = C.run_cfsp(args, small + ["--ratios", "0.3,0.6", "--output-dir", out], np_ranks=n, timeout=120)
            dt = time.time() - t0
            ck.check(a.poll() is None, "-n %d: the first job is still running when the second is refused (%.1f s)" % (n, dt))
            one_line(ck, "-n %d second job" % n, rc, log, "another cfsp-mpi job", holder, "host " + host)
        open(release, "w").close()
        log_a = a.communicate(timeout=600)[0].decode("utf-8", "replace")
        ck.check(a.returncode == 0, "-n %d: the first job completes undisturbed" % n, log_a[-400:] if a.returncode else "")
        complete(ck, "-n %d first job" % n, out, dump=False)
        # a stale lock file (its job is gone, nothing holds the lock) is taken over with a note
        out = os.path.join(w, "stale")
        with_note(out)
        with open(os.path.join(out, LOCK), "w") as f:
            f.write("host node-gone pid 424242\n")
        rc, log = C.run_cfsp(args, small + ["--ratios", "0.3,0.6", "--output-dir", out], np_ranks=n)
        notes = [ln for ln in log.splitlines() if "taking over the stale lock" in ln]
        ck.check(rc == 0 and len(notes) == 1 and "host node-gone pid 424242" in notes[0],
                 "-n %d: a stale lock is taken over with one note naming the old host and pid" % n, " | ".join(notes) or log[-300:])
        complete(ck, "-n %d stale lock" % n, out, dump=False)

        # 4. a directory in the way of a final name: at the start (even with --force) ...
        out = os.path.join(w, "dir")
        with_note(out)
        os.makedirs(os.path.join(out, "results.md"))
        opts = small + ["--ratios", "0.3,0.6", "--output-dir", out, "--dump-logits", os.path.join(out, "logits.bin")]
        rc, log = C.run_cfsp(args, opts + ["--force"], np_ranks=n)
        one_line(ck, "-n %d results.md a directory at the start" % n, rc, log, "results.md", "directory is in the way")
        clean_after(ck, "-n %d directory at the start" % n, out, (NOTE, "results.md"))
        os.rmdir(os.path.join(out, "results.md"))
        # ... and appearing during the job: caught before any rename
        release = os.path.join(w, "release_dir")
        a = popen_cfsp(args, opts, n, {"CFSP_FAULT": "hold:0:lock", "CFSP_FAULT_RELEASE": release})
        if ck.check(wait_for(os.path.join(out, LOCK), a), "-n %d: the job holds %s" % (n, LOCK)):
            os.makedirs(os.path.join(out, "results.md"))
        open(release, "w").close()
        log = a.communicate(timeout=600)[0].decode("utf-8", "replace")
        one_line(ck, "-n %d results.md made a directory during the job" % n, a.returncode, log, "results.md", "directory is in the way")
        clean_after(ck, "-n %d directory during the job" % n, out, (NOTE, "results.md"))
        os.rmdir(os.path.join(out, "results.md"))
        rc, log = C.run_cfsp(args, opts, np_ranks=n)
        ck.check(rc == 0, "-n %d: once the directory is gone the command succeeds" % n)
        complete(ck, "-n %d after the directory" % n, out)

        # 5. a rename failing in the middle of the commit: the renamed outputs are rolled back
        out = os.path.join(w, "rename")
        with_note(out)
        opts = small + ["--ratios", "0.3,0.6", "--output-dir", out, "--dump-logits", os.path.join(out, "logits.bin")]
        p = popen_cfsp(args, opts, n, {"CFSP_FAULT": "erename:0:commit"})
        log = p.communicate(timeout=300)[0].decode("utf-8", "replace")
        one_line(ck, "-n %d second rename fails" % n, p.returncode, log, "cannot rename", "Input/output error")
        clean_after(ck, "-n %d rename failure" % n, out)
        rc, log = C.run_cfsp(args, opts, np_ranks=n)
        ck.check(rc == 0, "-n %d: without the fault the command succeeds" % n)
        complete(ck, "-n %d after the rename failure" % n, out)

        # 6. disk full (tmpfs): sizes from a run on a large tmpfs; the dump made large (8 windows)
        # so that the free-space check of the start (the dense size per checkpoint) passes
        fs = os.path.join(w, "tmpfs")
        ok, why = mount_tmpfs(fs, 64 << 20)
        if not ok:
            ck.note("SKIP the disk-full cases: mount -t tmpfs failed: %s" % why)
            continue
        try:
            out = os.path.join(fs, "out")
            opts = ["--model", model, "--calib-tokens", tok, "--eval-tokens", tok, "--nsamples", 4, "--seqlen", 64,
                    "--eval-windows", 8, "--ratios", "0.3,0.6", "--output-dir", out, "--dump-logits", os.path.join(out, "logits.bin")]
            with_note(out)
            rc, log = C.run_cfsp(args, opts, np_ranks=n)
            if not ck.check(rc == 0, "-n %d: the job succeeds on a large tmpfs" % n):
                continue
            b = {f: blocks(os.path.join(out, f)) for f in os.listdir(out)}
            page = 4096
            base = b[NOTE] + page + page          # the note, the lock file, the output directory's slack
            # the dense logits' scratch file of the KL figures (unlinked, alive from the dense evaluation
            # to the end of the job): 8 windows x 63 positions x the vocabulary x 4 bytes
            with open(os.path.join(model, "config.json")) as f:
                vocab = json.load(f)["vocab_size"]
            scratch = (8 * 63 * vocab * 4 + page - 1) // page * page
            early = base + b["logits.bin"] + b["stats.h5"] + scratch
            need = 2 * os.path.getsize(os.path.join(model, "model.safetensors"))   # >= the start's check
            cases = (("a pruned checkpoint", max(early + b["cfsp_r0.3.h5"] + b["cfsp_r0.6.h5"] // 2, need + page), "cfsp_r0.6.h5"),
                     ("the reports after the checkpoints", early + b["cfsp_r0.3.h5"] + b["cfsp_r0.6.h5"] + b["results.json"], ".tmp: write failed"))
            for what, size, name in cases:
                for f in os.listdir(out):
                    os.unlink(os.path.join(out, f))
                umount(fs)
                ok, why = mount_tmpfs(fs, (size + page - 1) // page * page)
                if not ck.check(ok, "-n %d: mount a %d-byte tmpfs" % (n, size), why):
                    break
                with_note(out)
                rc, log = C.run_cfsp(args, opts, np_ranks=n)
                errs = err_lines(log)
                ck.check(rc not in (0, -999) and len(errs) == 1 and name in errs[0] and "No space left on device" in errs[0]
                         and (name != ".tmp: write failed" or any(r in errs[0] for r in ("results.json", "results.md", "ppl_vs_ratio.svg"))),
                         "-n %d: the disk fills while writing %s: exit %d, one error line naming %s" % (n, what, rc, name), " | ".join(errs) or log[-400:])
                clean_after(ck, "-n %d disk full while writing %s" % (n, what), out)
                subprocess.run(["mount", "-o", "remount,size=%d" % (64 << 20), fs])
                rc, log = C.run_cfsp(args, opts, np_ranks=n)
                ck.check(rc == 0, "-n %d: with room on the disk the same command succeeds" % n)
                complete(ck, "-n %d after the disk-full failure (%s)" % (n, what), out)
        finally:
            umount(fs)

    # 7. a full disk while recover writes its adapter checkpoint (--save-every) at -n 2, by every rank
    #    (pipeline trainer) or by rank 0 alone (data): one error line naming the file and the errno
    #    text, exit != 0 within 60 s (before, a crash or a hang in MPI_Finalize re-closing the file),
    #    no checkpoint.h5(.tmp) left; with room, the same command with --force succeeds (the plan,
    #    adapter_config.json, is written first and stays, as after a killed job)
    w = os.path.join(args.workdir, "recover")
    umount_all(os.path.join(w, "tmpfs"))
    C.fresh_dir(w)
    prune = os.path.join(w, "prune")
    rc, _ = C.run_cfsp(args, small + ["--ratios", 0.3, "--eval-dense", 0, "--eval-pruned", 0, "--output-dir", prune], np_ranks=2)
    fs = os.path.join(w, "tmpfs")
    if ck.check(rc == 0, "recover: a pruned model to train"):
        ok, why = mount_tmpfs(fs, 64 << 20)
        if not ok:
            ck.note("SKIP the recover disk-full cases: mount -t tmpfs failed: %s" % why)
        try:
            for trainer in ("pipeline", "data") if ok else ():
                out = os.path.join(fs, "out")
                opts = ["--model", os.path.join(prune, "cfsp_r0.3.h5"), "--stats", os.path.join(prune, "stats.h5"),
                        "--train-tokens", tok + "@20000:60000", "--eval-tokens", tok + "@60000:70000", "--eval-windows", 2,
                        "--seqlen", 64, "--batch", 4, "--steps", 2, "--save-every", 1, "--rank", 4, "--trainer", trainer,
                        "--output-dir", out]
                subprocess.run(["mount", "-o", "remount,size=%d" % (64 << 20), fs])
                if os.path.isdir(out):
                    for f in os.listdir(out):
                        os.unlink(os.path.join(out, f))
                with_note(out)
                rc, log = C.run_cfsp(args, opts, np_ranks=2, sub="recover")
                if not ck.check(rc == 0 and os.path.exists(os.path.join(out, "checkpoint.h5")), "recover --trainer %s: succeeds on a large tmpfs" % trainer):
                    continue
                page = 4096
                size = blocks(os.path.join(out, NOTE)) + 2 * page + blocks(os.path.join(out, "adapter_config.json")) + \
                    blocks(os.path.join(out, "checkpoint.h5")) // 2
                for f in os.listdir(out):
                    os.unlink(os.path.join(out, f))
                umount(fs)
                ok2, why = mount_tmpfs(fs, (size + page - 1) // page * page)
                if not ck.check(ok2, "recover: mount a %d-byte tmpfs" % size, why):
                    break
                with_note(out)
                t0 = time.time()
                rc, log = C.run_cfsp(args, opts, np_ranks=2, sub="recover", timeout=90)
                dt = time.time() - t0
                errs = err_lines(log)
                ck.check(rc not in (0, -999) and dt < 60 and len(errs) == 1 and "checkpoint.h5.tmp" in errs[0] and "No space left on device" in errs[0],
                         "recover --trainer %s -n 2: the disk fills while writing the checkpoint: exit %d after %.1f s, one error line naming "
                         "checkpoint.h5.tmp and the errno" % (trainer, rc, dt), " | ".join(errs) or log[-400:])
                ck.check(not os.path.exists(os.path.join(out, "checkpoint.h5.tmp")) and not os.path.exists(os.path.join(out, "checkpoint.h5")),
                         "recover --trainer %s: no checkpoint.h5(.tmp) left" % trainer, str(sorted(os.listdir(out))))
                subprocess.run(["mount", "-o", "remount,size=%d" % (64 << 20), fs])
                rc, log = C.run_cfsp(args, opts + ["--force"], np_ranks=2, sub="recover")   # the plan (adapter_config.json) stays
                ck.check(rc == 0 and os.path.exists(os.path.join(out, "checkpoint.h5")),
                         "recover --trainer %s: with room on the disk the same command with --force succeeds" % trainer, log[-300:])
        finally:
            umount(fs)
    ck.finish()


if __name__ == "__main__":
    main()
