#!/usr/bin/python3
"""The pipelined LoRA trainer of `cfsp-mpi recover` (src/train/train_pipe.c, issue 15) against the
data-parallel trainer on one rank.

A generated bf16 checkpoint of odd shapes (D 48, 6 blocks of FFN widths 67..120, GQA 4/2 heads,
vocabulary 301, untied head) is pruned (cfsp, 0.3) and recovered with the adaptive plan, 3 steps of
5 windows x 24 tokens (a batch that is no multiple of most rank counts), constant learning rate,
--merge and --peft:
  1. the data-parallel trainer at -n 1 is the reference (its gradients are checked against NumPy
     and finite differences by test_recover.py and test_optimizer.py; the pipelined trainer's by
     test_optimizer.py --trainer pipeline as ctest optimizer_pipeline);
  2. the pipelined trainer at -n 1, 2, 3, 4 and 8 (more ranks than blocks: idle ranks): the losses,
     gradient norms and held-out perplexities of recover.json, every dataset of checkpoint.h5
     (adapters and AdamW moments), every tensor of merged.h5 and adapter_model.safetensors are
     bitwise equal to the reference; merged.h5 passes `cfsp-mpi verify`;
  2b. the same with the activations recomputed in the backward (--recompute on) at -n 3 and 4;
  3. the stage map of recover.json: min(P, L + 1) contiguous stages covering every block, each
     with at least one block but the last (which may hold the head alone);
  4. resume: 2 steps pipelined at -n 2, resumed to 4 steps by the data-parallel trainer at -n 1 and
     by the pipelined trainer at -n 3, equal to 4 steps in one run (the checkpoint is one file for
     both trainers and any rank count);
  5. --trainer auto takes the data-parallel trainer on this small model at -n 2 (batch 6), and the
     pipelined one when the batch is no multiple of the ranks; --trainer data refuses that batch;
  7. --replicas R (data parallelism over R pipelines) with --grad-groups 4: -n 2/4/4/8/7 with 2 or 4
     replicas give losses, perplexities, checkpoint.h5 and merged.h5 bitwise equal to one pipeline on
     one rank with 4 gradient groups; a group count that is no multiple of the replicas is refused;
  8. a rank killed in the middle of step 3 (CFSP_FAULT=kill:1:step3) after the step-2 checkpoint: the
     job ends, nothing of the run under a final name but the plan and that checkpoint, and resuming
     from it gives the uninterrupted run's losses and merged weights bitwise;
  6. `cfsp-mpi plan --train-batch` gives the stage map `recover` runs (at -n 3, 4 and 7), which is the
     best contiguous split of the blocks (brute force over all splits with the step costs recomputed
     here), and its predicted efficiency = balance x B / (B + S - 1).

    /usr/bin/python3 tests/py/test_recover_pipeline.py --bin build/cfsp-mpi --mkmodel build/cfsp-mpi-mkmodel --workdir /tmp/rp
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import np  # noqa: E402
import h5py  # noqa: E402

FFN = [67, 90, 31, 120, 55, 77]


def h5_all(path):
    return common.h5_datasets(path)


def same_arrays(a, b):
    if set(a) != set(b):
        return False, "datasets differ: %s" % sorted(set(a) ^ set(b))[:4]
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            return False, "dataset %s differs" % k
    return True, "%d datasets" % len(a)


def log_of(res):
    return [(e["step"], e["loss"], e["grad_norm"]) for e in res["log"]]


def main():
    args = common.parse_args(__doc__)
    ck = common.Checker("recover_pipeline")
    wd = args.workdir
    mdir = os.path.join(wd, "model")
    if not ck.check(common.mkmodel(args, mdir, 48, None, len(FFN), 4, 2, 301, dtype="bf16", seed=11, tie=0, ffn_per_layer=FFN),
                    "generated a bf16 checkpoint, FFN widths %s" % FFN):
        ck.finish()
    tok = common.write_tokens(os.path.join(wd, "tokens.bin"), 30000, 301, 4)
    prune = common.fresh_dir(os.path.join(wd, "prune"))
    rc, _ = common.run_cfsp(args, ["--model", mdir, "--calib-tokens", tok + "@0:10000", "--nsamples", 4, "--seqlen", 32,
                                   "--ratios", 0.3, "--eval-dense", 0, "--eval-pruned", 0, "--output-dir", prune], np_ranks=2)
    h5 = os.path.join(prune, "cfsp_r0.3.h5")
    if not ck.check(rc == 0 and os.path.exists(h5), "pruned at 0.3"):
        ck.finish()
    base = ["--model", h5, "--train-tokens", tok + "@10000:25000", "--eval-tokens", tok + "@25000:30000", "--eval-windows", 7,
            "--seqlen", 24, "--batch", 5, "--lr", 0.01, "--warmup", 0, "--min-lr-ratio", 1, "--plan", "adaptive",
            "--stats", os.path.join(prune, "stats.h5"), "--rank", 3, "--seed", 9, "--clip", 0.5]

    def recover(name, n, trainer, steps, extra=()):
        d = common.fresh_dir(os.path.join(wd, name))
        rc, out = common.run_cfsp(args, base + ["--steps", steps, "--trainer", trainer, "--output-dir", d] + list(extra),
                                  np_ranks=n, sub="recover")
        res = None
        if rc == 0:
            with open(os.path.join(d, "recover.json")) as f:
                res = json.load(f)
        return d, res, out

    # 1. the reference
    ref_dir, ref, _ = recover("data_n1", 1, "data", 3, ["--merge", 1, "--peft", 1])
    if not ck.check(ref is not None and ref["trainer"]["kind"] == "data", "data-parallel reference at -n 1"):
        ck.finish()
    ref_ck, ref_mg = h5_all(os.path.join(ref_dir, "checkpoint.h5")), h5_all(os.path.join(ref_dir, "merged.h5"))
    with open(os.path.join(ref_dir, "adapter_model.safetensors"), "rb") as f:
        ref_peft = f.read()
    ck.note("reference losses %s" % [round(x[1], 6) for x in log_of(ref)])

    # 2./3. the pipelined trainer at several rank counts
    L = len(FFN)
    for n in (1, 2, 3, 4, 8):
        d, res, out = recover("pipe_n%d" % n, n, "pipeline", 3, ["--merge", 1, "--peft", 1])
        if not ck.check(res is not None, "pipelined trainer at -n %d" % n):
            continue
        t = res["trainer"]
        fb = t.get("first_block", [])
        ok_map = (t["kind"] == "pipeline" and t["stages"] == min(n, L + 1) and fb[0] == 0 and fb[-1] == L and
                  all(fb[i] < fb[i + 1] for i in range(len(fb) - 2)) and fb[-2] <= fb[-1])
        ck.check(ok_map, "-n %d: %d stages, first blocks %s" % (n, t.get("stages", -1), fb))
        ck.check(log_of(res) == log_of(ref), "-n %d: losses and gradient norms of 3 steps bitwise = data -n 1" % n)
        if n == 2:
            ck.check(res["timings"]["rank_activations_kept"] == [1, 1], "-n 2: --recompute auto keeps the activations (small model)")
        ck.check(res["eval_before"] == ref["eval_before"] and res["eval_after"] == ref["eval_after"],
                 "-n %d: held-out perplexity before/after bitwise = data -n 1" % n,
                 "%.6f -> %.6f" % (res["eval_before"]["ppl"], res["eval_after"]["ppl"]))
        ok, why = same_arrays(h5_all(os.path.join(d, "checkpoint.h5")), ref_ck)
        ck.check(ok, "-n %d: checkpoint.h5 (adapters, AdamW moments) bitwise = data -n 1" % n, why)
        ok, why = same_arrays(h5_all(os.path.join(d, "merged.h5")), ref_mg)
        ck.check(ok, "-n %d: merged.h5 written in parallel, tensors bitwise = data -n 1" % n, why)
        with open(os.path.join(d, "adapter_model.safetensors"), "rb") as f:
            ck.check(f.read() == ref_peft, "-n %d: adapter_model.safetensors byte for byte = data -n 1" % n)
        if n == 3:
            rc, vout = common.run_cmd([args.bin, "verify", os.path.join(d, "merged.h5")])
            ck.check(rc == 0 and "all checksums match" in vout, "-n 3: cfsp-mpi verify merged.h5")

    # 2b. activations recomputed in the backward (--recompute on) instead of kept (auto keeps them here)
    for n in (3, 4):
        d, res, _ = recover("pipe_recompute_n%d" % n, n, "pipeline", 3, ["--recompute", "on", "--merge", 1])
        ok = (res is not None and res["timings"]["rank_activations_kept"][:n] == [0] * n and log_of(res) == log_of(ref) and
              res["eval_after"] == ref["eval_after"] and same_arrays(h5_all(os.path.join(d, "checkpoint.h5")), ref_ck)[0] and
              same_arrays(h5_all(os.path.join(d, "merged.h5")), ref_mg)[0])
        ck.check(ok, "-n %d --recompute on: losses, perplexity, checkpoint.h5, merged.h5 bitwise = data -n 1" % n)

    # 4. resume across trainers and rank counts (constant lr: the schedule does not depend on --steps)
    full_dir, full, _ = recover("full4", 1, "data", 4)
    half_dir, half, _ = recover("half2", 2, "pipeline", 2)
    if ck.check(full is not None and half is not None, "4 steps in one run; 2 steps pipelined at -n 2"):
        full_ck = h5_all(os.path.join(full_dir, "checkpoint.h5"))
        for name, n, trainer in (("resume_data_n1", 1, "data"), ("resume_pipe_n3", 3, "pipeline")):
            d, res, _ = recover(name, n, trainer, 4, ["--resume", os.path.join(half_dir, "checkpoint.h5")])
            if not ck.check(res is not None and res["start_step"] == 2, "resume at step 2 with the %s trainer at -n %d" % (trainer, n)):
                continue
            ck.check(log_of(res) == log_of(full)[2:], "resumed steps 3-4 (%s, -n %d) bitwise = one run" % (trainer, n))
            ok, why = same_arrays(h5_all(os.path.join(d, "checkpoint.h5")), full_ck)
            ck.check(ok, "resumed checkpoint.h5 (%s, -n %d) bitwise = one run" % (trainer, n), why)

    # 4b. a checkpoint of other targets or another alpha is refused (k and v adapters have one shape under GQA)
    if half is not None:
        for extra, what, msg in ((["--targets", "q,k,o,gate,up,down,v"], "the same targets in another order", None),
                                 (["--targets", "q,k,o,gate,up,down"], "other targets", "use the same --targets"),
                                 (["--alpha", 8], "another alpha", "use the same --rank/--alpha/--alpha-scales")):
            d = common.fresh_dir(os.path.join(wd, "resume_bad"))
            rc, out = common.run_cfsp(args, base + ["--steps", 4, "--trainer", "pipeline", "--resume", os.path.join(half_dir, "checkpoint.h5"),
                                                    "--output-dir", d] + extra, np_ranks=2, sub="recover")
            if msg is None:
                ck.check(rc == 0, "resume with %s: accepted" % what)
            else:
                ck.check(rc != 0 and msg in out, "resume with %s: refused with the reason" % what)

    # 7. data parallelism on top: R replicas of the pipeline, G = 4 gradient groups; bitwise the same
    #    for every R dividing G and any stage count, -n 1 included
    g_ref_dir, g_ref, _ = recover("groups_n1", 1, "pipeline", 2, ["--grad-groups", 4, "--merge", 1])
    if ck.check(g_ref is not None and g_ref["trainer"]["grad_groups"] == 4, "4 gradient groups at -n 1 (one pipeline)"):
        g_ck, g_mg = h5_all(os.path.join(g_ref_dir, "checkpoint.h5")), h5_all(os.path.join(g_ref_dir, "merged.h5"))
        for n, rr in ((2, 2), (4, 2), (4, 4), (8, 4), (7, 2)):
            d, res, _ = recover("groups_n%d_r%d" % (n, rr), n, "pipeline", 2, ["--grad-groups", 4, "--replicas", rr, "--merge", 1])
            if not ck.check(res is not None and res["trainer"]["replicas"] == rr,
                            "-n %d, %d replicas of %s stages" % (n, rr, res["trainer"]["stages"] if res else "?")):
                continue
            same = (log_of(res) == log_of(g_ref) and res["eval_after"] == g_ref["eval_after"] and
                    same_arrays(h5_all(os.path.join(d, "checkpoint.h5")), g_ck)[0] and same_arrays(h5_all(os.path.join(d, "merged.h5")), g_mg)[0])
            ck.check(same, "-n %d, %d replicas: losses, perplexity, checkpoint.h5 and merged.h5 bitwise = one pipeline with 4 groups" % (n, rr))
    d = common.fresh_dir(os.path.join(wd, "groups_bad"))
    rc, out = common.run_cfsp(args, base + ["--steps", 1, "--replicas", 2, "--grad-groups", 3, "--output-dir", d], np_ranks=2, sub="recover")
    ck.check(rc != 0 and "--grad-groups = '3': not a multiple of --replicas = 2" in out, "--grad-groups 3 with 2 replicas: refused with the reason")

    # 8. a rank killed in the middle of step 3 (after the checkpoint of step 2): the job ends, no
    #    output of the run under its final name but that checkpoint, no .tmp left; resuming from it
    #    gives the uninterrupted run's adapters bitwise
    import subprocess
    import time
    d = common.fresh_dir(os.path.join(wd, "killed"))
    cmd = [args.mpiexec, "--oversubscribe", "-n", "3", args.bin, "recover"] + [str(x) for x in base] + [
        "--steps", "4", "--save-every", "2", "--trainer", "pipeline", "--merge", "1", "--compute", args.compute, "--output-dir", d]
    env = common.mpi_env()
    env["CFSP_FAULT"] = "kill:1:step3"
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
        krc = p.returncode
    except subprocess.TimeoutExpired:
        krc = None
    left = sorted(os.listdir(d))
    ck.check(krc not in (0, None) and time.time() - t0 < 120, "rank 1 killed in step 3 at -n 3: the job ends (exit %s)" % krc)
    ck.check(left == ["adapter_config.json", "checkpoint.h5"], "only the plan and the step-2 checkpoint are left", "files %s" % left)
    if "checkpoint.h5" in left:
        full_dir2, full2, _ = recover("kill_ref", 1, "data", 4, ["--merge", 1])
        dr, res, _ = recover("kill_resume", 2, "pipeline", 4, ["--resume", os.path.join(d, "checkpoint.h5"), "--merge", 1])
        ok = (res is not None and full2 is not None and res["start_step"] == 2 and log_of(res) == log_of(full2)[2:] and
              same_arrays(h5_all(os.path.join(dr, "merged.h5")), h5_all(os.path.join(full_dir2, "merged.h5")))[0])
        ck.check(ok, "resumed at -n 2 from the step-2 checkpoint: steps 3-4 and merged.h5 bitwise = the uninterrupted run")

    # 6. the stage map: `cfsp-mpi plan --train-batch` and `recover` agree, and it is the best split
    #    (brute force over every split of the 6 blocks into S contiguous stages, costs recomputed here)
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    D, H, KV, V, T, r = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"], 24, 3
    hd = D // H

    def block_cost(m):
        shapes = [(H * hd, D), (KV * hd, D), (KV * hd, D), (D, H * hd), (m, D), (m, D), (D, m)]
        fwd = 2 * (sum(o * i for o, i in shapes) + r * sum(o + i for o, i in shapes)) + 4 * H * hd * (T + 1) / 2
        return 4 * fwd
    costs, head = [block_cost(m) for m in FFN], 6.0 * V * D

    def best_max(S):
        import itertools
        best = None
        for cuts in itertools.combinations(range(1, L + 1), S - 1):   # the last stage may be the head alone
            b = [0] + list(cuts) + [L]
            mx = max(sum(costs[b[k]:b[k + 1]]) + (head if k == S - 1 else 0) for k in range(S))
            best = mx if best is None or mx < best else best
        return best
    for n in (3, 4, 7):
        pj = os.path.join(wd, "plan_train_%d.json" % n)
        rc, _ = common.run_cmd([args.bin, "plan", "--model", mdir, "--ranks", str(n), "--train-batch", "5", "--train-seqlen", str(T),
                                "--train-rank", str(r), "--json", pj])
        d = common.fresh_dir(os.path.join(wd, "hf_pipe_%d" % n))
        rc2, _ = common.run_cfsp(args, ["--model", mdir, "--train-tokens", tok + "@10000:25000", "--seqlen", T, "--batch", 5, "--steps", 1,
                                        "--rank", r, "--trainer", "pipeline", "--output-dir", d], np_ranks=n, sub="recover")
        if not ck.check(rc == 0 and rc2 == 0, "plan --train-batch and recover on the unpruned checkpoint at -n %d" % n):
            continue
        with open(pj) as f:
            pl = json.load(f)
        with open(os.path.join(d, "recover.json")) as f:
            fb = json.load(f)["trainer"]["first_block"]
        pfb = [s_["first_block"] for s_ in pl["stages"]] + [L]
        mx = max(sum(costs[fb[k]:fb[k + 1]]) + (head if k == n - 1 else 0) for k in range(n))
        sums = [sum(costs[fb[k]:fb[k + 1]]) + (head if k == n - 1 else 0) for k in range(n)]
        pred = (sum(sums) / n) / mx * 5 / (5 + n - 1)
        ck.check(pfb == fb and abs(mx - best_max(n)) <= 1e-9 * mx and abs(pl["predicted_efficiency"] - pred) < 1e-9,
                 "-n %d: plan's stage map = recover's %s, the best split (largest stage %.4g flops/token), predicted efficiency %.4f" % (
                     n, fb, mx, pred), "plan %s %.6f" % (pfb, pl["predicted_efficiency"]))

    # 5. the automatic choice
    d = common.fresh_dir(os.path.join(wd, "auto6"))
    rc, out = common.run_cfsp(args, base + ["--steps", 1, "--batch", 6, "--output-dir", d], np_ranks=2, sub="recover")
    ck.check(rc == 0 and "data trainer (auto" in out, "auto, batch 6 at -n 2: the data-parallel trainer on this small model")
    d = common.fresh_dir(os.path.join(wd, "auto5"))
    rc, out = common.run_cfsp(args, base + ["--steps", 1, "--output-dir", d], np_ranks=2, sub="recover")
    ck.check(rc == 0 and "pipeline trainer (auto" in out, "auto, batch 5 at -n 2: the pipelined trainer")
    d = common.fresh_dir(os.path.join(wd, "data5"))
    rc, out = common.run_cfsp(args, base + ["--steps", 1, "--trainer", "data", "--output-dir", d], np_ranks=2, sub="recover")
    ck.check(rc != 0 and "not a multiple" in out, "--trainer data, batch 5 at -n 2: refused with the reason")
    ck.finish()


if __name__ == "__main__":
    main()
