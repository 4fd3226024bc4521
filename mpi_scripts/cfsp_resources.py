#!/usr/bin/python3
"""cfsp_resources.py — what to request from a batch scheduler for one cfsp-mpi job.

Asks `cfsp-mpi plan --json` (the program's own unit plan, flop-balanced stage split and memory
model: include/cfsp/pipeline/plan_mem.h) and prints, per rank, its stage units and blocks, the
stored bytes it maps (its units; the embedding on rank 0; the final norm and lm_head on the last
rank, the embedding there too when tied), its working buffers and its memory request:

    request = stored + max(stored / 4, largest FFN slice) + buffers + 1 GiB   (per rank)
    mem-per-cpu = the largest rank's request, rounded up to 100 MiB   (cpus-per-task=1)

The run parameters that change the plan (--nsamples, --seqlen, --chunk, --ffn-slice) come from
the run file (--config) and can be overridden here; the defaults are cfsp-mpi's.

Time estimate: plan's pipeline model with every unit's flops at --core-gflops G per rank
(stage costs, fill/drain, load balance): the calibration time; --tokens N scales it to N forward
tokens (evaluation windows run the same pipeline). An estimate, not a measurement.

The cfsp-mpi binary: CFSP_BIN, else build/cfsp-mpi of this repository, else cfsp-mpi on PATH.

Usage:
    cfsp_resources.py --model DIR --ranks P            # a table
    cfsp_resources.py --config RUN.json --ranks P      # model path and run parameters from the run file
    cfsp_resources.py --preset llama3-70b --ranks 80   # configs/models/NAME/config.json
    cfsp_resources.py --model DIR --ranks P --mem-mb   # just the mem-per-cpu value in MiB
    cfsp_resources.py --model DIR --suggest-ranks      # the most ranks the unit plan allows (its stage units)
    cfsp_resources.py --table llama2-7b:8,32 llama3-70b:40,80:256 llama3.1-405b:63,126:256
                                                       # README "What to request": PRESET:RANKS,...[:CHUNK]
Debian /usr/bin/python3, standard library only.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = os.path.join(ROOT, "configs", "models")
GIB = 1 << 30


def size(b):
    """bytes in GB, or MB below 1 GB"""
    return "%.3f GB" % (b / 1e9) if b >= 1e9 else "%.3f MB" % (b / 1e6)


def fail(msg):
    sys.stderr.write("cfsp_resources: error: %s\n" % msg)
    sys.exit(2)


def cfsp_bin():
    b = os.environ.get("CFSP_BIN")
    if b:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            fail("CFSP_BIN=%s: not an executable (set CFSP_BIN to cfsp-mpi, or unset it to use %s/build/cfsp-mpi)" % (b, ROOT))
        return b
    b = os.path.join(ROOT, "build", "cfsp-mpi")
    if os.path.isfile(b) and os.access(b, os.X_OK):
        return b
    b = shutil.which("cfsp-mpi")
    if b:
        return b
    fail("no cfsp-mpi: set CFSP_BIN, build %s/build/cfsp-mpi (mpi_scripts/setup.sh) or put cfsp-mpi on PATH" % ROOT)


def presets():
    try:
        return sorted(n for n in os.listdir(PRESETS) if os.path.exists(os.path.join(PRESETS, n, "config.json")))
    except OSError:
        return []


def model_and_run(a):
    """the model directory, a label, and the run file's parameters (dict)"""
    if a.preset:
        if a.preset not in presets():
            fail("unknown preset %s (known: %s, the directories of %s)" % (a.preset, ", ".join(presets()), PRESETS))
        return os.path.join(PRESETS, a.preset), "preset " + a.preset, {}
    run = {}
    model = a.model
    if not model and a.config:
        try:
            with open(a.config) as f:
                run = json.load(f)
        except (OSError, ValueError) as e:
            fail("%s: %s" % (a.config, e))
        model = run.get("model", "")
        if not model:
            fail("%s: no \"model\" key (give --model)" % a.config)
    if not model:
        fail("give --model DIR, --config RUN.json or --preset NAME")
    if not os.path.exists(os.path.join(model, "config.json")):
        fail("%s/config.json: no such file" % model)
    return model, model, run


def plan(model, P, opts):
    """`cfsp-mpi plan ... --json` as a dict; cfsp-mpi's error line becomes ours"""
    fd, js = tempfile.mkstemp(prefix="cfsp-plan-", suffix=".json")
    os.close(fd)
    cmd = [cfsp_bin(), "plan", "--model", model, "--ranks", str(P), "--json", js] + opts
    # plan is serial: a singleton MPI process, outside the job's MPI world (no PMI/PMIx of a step)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_COMM_WORLD"))}
    env["OPENBLAS_NUM_THREADS"] = "1"
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    try:
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if p.returncode != 0:
            err = [l for l in p.stderr.decode("utf-8", "replace").splitlines() if "error:" in l]
            fail("%s: %s" % (" ".join(cmd[:2]), err[0].split("error:", 1)[1].strip() if err else "exit status %d" % p.returncode))
        with open(js) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail("%s plan: %s" % (cmd[0], e))
    finally:
        if os.path.exists(js):
            os.unlink(js)


def eval_seconds(r, cfg, tokens, gflops):
    """plan's pipeline model for an evaluation pass of `tokens` tokens: the same stages, plus the
    lm_head (2 x V x D flops per token, not a stage unit) on the last rank"""
    t = list(r["stage_seconds_per_microbatch"])
    t[-1] += 2.0 * cfg["vocab_size"] * cfg["hidden_size"] * r["chunk"] / (gflops * 1e9)
    m = max(1, int(tokens // r["chunk"]))
    return sum(t) + (m - 1) * max(t)


def hours(s):
    return "~%.0f min" % (s / 60) if s < 3600 else "~%.1f h" % (s / 3600)


def table(specs, a):
    """the README tables (memory per rank; time) for PRESET:RANKS,...[:CHUNK] at cfsp-mpi's defaults"""
    mem = ["| model | blocks | stage units | stored | ranks (chunk) | largest rank: stored | of which embedding, norm + lm_head "
           "| buffers | request | `--mem-per-cpu` | memory in all |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    tim = ["| model, ranks (chunk) | predicted efficiency | calibration, 128 x 1024 tokens | each evaluation, ~0.3 M tokens |",
           "|---|---|---|---|"]
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] not in presets():
            fail("--table %s: expected PRESET:RANKS,...[:CHUNK] with PRESET one of %s" % (spec, ", ".join(presets())))
        model = os.path.join(PRESETS, parts[0])
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
        opts = ["--gflops", repr(a.core_gflops)] + (["--chunk", parts[2]] if len(parts) == 3 else [])
        for i, P in enumerate(int(x) for x in parts[1].split(",")):
            r = plan(model, P, opts)
            big = r["stages"][r["largest_request_rank"]]["memory"]
            mb = int(math.ceil(r["largest_request_bytes"] / float(1 << 20) / 100.0) * 100)
            allm = mb * P / 1024.0
            lead = ["%s" % parts[0], "%d" % r["blocks"], "%d" % r["units"], "%.1f GB" % (r["model_stored_bytes"] / 1e9)] if i == 0 else [""] * 4
            mem.append("| " + " | ".join(lead + [
                "%d (%d)" % (P, r["chunk"]), "%.2f GB" % (big["stored_bytes"] / 1e9),
                "%.2f GB" % ((big["embed_bytes"] + big["head_bytes"]) / 1e9), "%.2f GB" % (big["buffer_bytes"] / 1e9),
                "%.2f GB" % (big["request_bytes"] / 1e9), "%dM" % mb,
                "%.0f GiB" % allm if allm < 1024 else "%.1f TiB" % (allm / 1024)]) + " |")
            tim.append("| %s, %d (%d) | %.3f | %s | %s |" % (parts[0], P, r["chunk"], r["predicted_efficiency"],
                                                          hours(r["predicted_calibration_seconds"]),
                                                          hours(eval_seconds(r, cfg, 3e5, a.core_gflops))))
    print("\n".join(mem) + "\n\n" + "\n".join(tim))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="Hugging Face LLaMA directory")
    src.add_argument("--config", help="cfsp-mpi run file (its \"model\" key and run parameters)")
    src.add_argument("--preset", help="configs/models/NAME: " + ", ".join(presets()))
    ap.add_argument("--ranks", type=int, default=0, help="MPI ranks (default: number of blocks)")
    ap.add_argument("--nsamples", type=int, help="calibration sequences (default: the run file's, else 128)")
    ap.add_argument("--seqlen", type=int, help="tokens per sequence (default: the run file's, else 1024)")
    ap.add_argument("--chunk", type=int, help="tokens per micro-batch (default: the run file's, else seqlen)")
    ap.add_argument("--ffn-slice", type=int, help="FFN channels per stage unit (default: the run file's, else 4096)")
    ap.add_argument("--tokens", type=float, default=0, help="forward tokens for the time estimate")
    ap.add_argument("--core-gflops", type=float, default=100.0, help="sustained fp32 GFLOP/s per core (time estimate)")
    ap.add_argument("--mem-mb", action="store_true", help="print only mem-per-cpu in MiB")
    ap.add_argument("--suggest-ranks", action="store_true", help="print only the most ranks the unit plan allows")
    ap.add_argument("--table", nargs="+", metavar="PRESET:RANKS[:CHUNK]", help="print the README tables for these presets")
    a = ap.parse_args()
    if not a.core_gflops > 0:
        fail("--core-gflops must be positive")
    if a.table:
        table(a.table, a)
        return

    model, label, run = model_and_run(a)
    opts = ["--gflops", repr(a.core_gflops)]
    for flag, key in (("--nsamples", "nsamples"), ("--seqlen", "seqlen"), ("--chunk", "chunk"), ("--ffn-slice", "ffn_slice")):
        v = getattr(a, key)
        if v is None:
            v = run.get(key, run.get(key.replace("_", "-")))
        if v is not None:
            opts += [flag, str(v)]
    first = plan(model, 1, opts)
    if a.suggest_ranks:
        print(first["units"])
        return
    P = a.ranks or first["blocks"]
    if P < 1:
        fail("--ranks must be at least 1")
    r = first if P == 1 else plan(model, P, opts)
    st = r["stages"]
    big = st[r["largest_request_rank"]]["memory"]
    mem_mb = int(math.ceil(r["largest_request_bytes"] / float(1 << 20) / 100.0) * 100)
    if a.mem_mb:
        print(mem_mb)
        return
    print("model: %s" % label)
    print("blocks: %d, stage units: %d (--ffn-slice %d), stored: %s (dtypes: %s)"
          % (r["blocks"], r["units"], r["ffn_slice"], size(r["model_stored_bytes"]), r["stored_dtypes"]))
    print("ranks: %d (contiguous runs of stage units balanced by flops, as cfsp-mpi splits them; at most %d)" % (P, r["units"]))
    for s in st:
        m = s["memory"]
        if P <= 8 or s["rank"] < 3 or s["rank"] >= P - 3 or s["rank"] == r["largest_request_rank"]:
            print("  rank %d: units %d-%d, blocks %d-%d, stored %s, buffers %s, request %s"
                  % (s["rank"], s["first_unit"], s["last_unit"], s["first_block"], s["last_block"],
                     size(m["stored_bytes"]), size(m["buffer_bytes"]), size(m["request_bytes"])))
        elif s["rank"] == 3:
            print("  ...")
    print("largest request: rank %d, %s = stored %s (units %s, embedding %s, norm + lm_head %s) + margin %s + buffers %s"
          " (conversion panel %s, activations %s, key/value cache %s, logits %s, tables %s) + 1 GiB"
          % (r["largest_request_rank"], size(big["request_bytes"]), size(big["stored_bytes"]), size(big["unit_bytes"]),
             size(big["embed_bytes"]), size(big["head_bytes"]), size(big["margin_bytes"]), size(big["buffer_bytes"]),
             size(big["conversion_panel_bytes"]), size(big["activation_bytes"]), size(big["kv_cache_bytes"]),
             size(big["logits_bytes"]), size(big["table_bytes"])))
    print("request: --ntasks=%d --cpus-per-task=1 --mem-per-cpu=%dM   (%s, rounded up to 100 MiB; %d GiB in all)"
          % (P, mem_mb, r["memory_rule"], math.ceil(mem_mb * P / 1024.0)))
    cal = r["predicted_calibration_seconds"]
    print("calibration estimate: %.3g s (%.2f h) for %d x %d tokens at %g GFLOP/s per rank, predicted pipeline efficiency %.3f"
          " (cfsp-mpi plan --gflops) — an estimate" % (cal, cal / 3600, r["nsamples"], r["seqlen"], a.core_gflops,
                                                       r["predicted_efficiency"]))
    if a.tokens > 0:
        sec = cal * a.tokens / float(r["nsamples"] * r["seqlen"])
        print("time estimate: %.3g tokens: %.0f s (%.2f h) — an estimate" % (a.tokens, sec, sec / 3600))


if __name__ == "__main__":
    main()
