"""A rank killed (SIGKILL) in the middle of writing the pruned checkpoints: the job ends on every
rank within seconds, no output file with a final name exists (outputs are committed together only
when the whole job has succeeded; a job lock left by a killed rank 0 is taken over), and running the
same command again succeeds and verifies.
Fault injection: CFSP_FAULT=kill:RANK:write (cfsp_fault, err.h)."""
import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("kill")
    tok = C.token_file(args, "stories260K")
    for np_ranks, victim in ((2, 1), (3, 0)):
        out = C.fresh_dir(os.path.join(args.workdir, "kill_n%d_r%d" % (np_ranks, victim)))
        opts = ["--model", C.model_dir(args, "stories260K"), "--calib-tokens", tok, "--eval-tokens", tok,
                "--nsamples", 4, "--seqlen", 64, "--eval-windows", 4, "--ratios", "0.2,0.4", "--method", "cfsp,flap",
                "--output-dir", out]
        cmd = [args.mpiexec, "--oversubscribe", "-n", str(np_ranks), args.bin, "run"] + [str(o) for o in opts]
        env = C.mpi_env()
        env["CFSP_FAULT"] = "kill:%d:write" % victim
        t0 = time.time()
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
            rc, log = p.returncode, p.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, log = -999, "<timeout>"
        dt = time.time() - t0
        ck.check(rc not in (0, -999) and dt < 60, "-n %d, rank %d killed while writing: the job ends (exit %d, %.1f s)" % (np_ranks, victim, rc, dt),
                 log[-300:] if rc in (0, -999) else "")
        # the job lock of a SIGKILLed rank 0 stays (it is no output): the rerun takes it over
        finals = [f for f in os.listdir(out) if not f.endswith(".tmp") and f != ".cfsp-mpi.lock"]
        stale = os.path.exists(os.path.join(out, ".cfsp-mpi.lock"))
        ck.check(not finals, "-n %d: no file with a final name exists" % np_ranks, " ".join(finals))
        ck.note("left as temporary files: %s" % " ".join(sorted(os.listdir(out))))
        rc, log = C.run_cfsp(args, opts, np_ranks=np_ranks)
        ck.check(rc == 0, "-n %d: the same command run again succeeds" % np_ranks)
        if stale:
            ck.check("taking over the stale lock" in log and not os.path.exists(os.path.join(out, ".cfsp-mpi.lock")),
                     "-n %d: the rerun takes over the killed job's stale lock (and removes it at its end)" % np_ranks)
        files = sorted(glob.glob(os.path.join(out, "*.h5")))
        ok = len(files) == 5 and all(C.run_cmd([args.bin, "verify", f])[0] == 0 for f in files if "stats" not in f)
        ck.check(ok and not glob.glob(os.path.join(out, "*.tmp")), "-n %d: rerun outputs complete and verified, no temporary file left" % np_ranks,
                 " ".join(os.path.basename(f) for f in files))
    ck.finish()


if __name__ == "__main__":
    main()
