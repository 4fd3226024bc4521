"""`cfsp-mpi plan`, the pipeline simulator: with --gflops its stage costs, balance, fill/drain share
and predicted efficiency equal an independent recomputation from the config (units, flops, the
optimal contiguous split found by dynamic programming here); its stage map is the one the program
really runs (results.json of -n P runs, including more ranks than blocks); the measured mode times
the model's operations and gives consistent figures; bad arguments give one error line."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def units_of(cfg, ffn_slice, T):
    D, H, K = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    Q, KV = H * hd, K * hd
    out = []
    for l in range(cfg["num_hidden_layers"]):
        m = cfg["intermediate_size"]
        ns = -(-m // ffn_slice) if ffn_slice > 0 else 1
        out.append((l, -1, 0, 0, 2 * (2 * D * Q + 2 * D * KV) + 4 * Q * (T + 1) / 2.0))
        for s in range(ns):
            c0, c1 = s * m // ns, (s + 1) * m // ns
            out.append((l, s, c0, c1, 2 * 3 * D * (c1 - c0)))
    return out


def best_max_stage(costs, P):
    """smallest possible largest stage cost over contiguous splits into P non-empty stages (DP)"""
    n = len(costs)
    pre = [0.0]
    for c in costs:
        pre.append(pre[-1] + c)
    INF = float("inf")
    f = [[INF] * (n + 1) for _ in range(P + 1)]
    f[0][0] = 0.0
    for p in range(1, P + 1):
        for i in range(p, n + 1):
            f[p][i] = min(max(f[p - 1][j], pre[i] - pre[j]) for j in range(p - 1, i))
    return f[P][n]


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("plan")
    gen = os.path.join(args.workdir, "gen")
    ok = C.mkmodel(args, gen, 64, 300, 3, 4, 2, 200, dtype="bf16", seed=5)
    ck.check(ok, "generated a 3-block bf16 model (hidden 64, FFN 300, GQA 4/2)")
    cfg = json.load(open(os.path.join(gen, "config.json")))
    tok = C.write_tokens(os.path.join(args.workdir, "gen.u32.bin"), 4000, 200, 2)
    N, T, chunk, S, G = 6, 64, 16, 128, 7.5
    for P in (1, 2, 4, 7):
        js = os.path.join(args.workdir, "plan_%d.json" % P)
        rc, log = C.run_cmd([str(x) for x in [args.bin, "plan", "--model", gen, "--ranks", P, "--nsamples", N, "--seqlen", T,
                                              "--chunk", chunk, "--ffn-slice", S, "--gflops", G, "--json", js]])
        if not ck.check(rc == 0 and os.path.exists(js), "plan -n %d --gflops runs" % P, log[-300:]):
            continue
        r = json.load(open(js))
        units = units_of(cfg, S, T)
        ck.check(r["units"] == len(units), "-n %d: %d stage units (independent count %d)" % (P, r["units"], len(units)))
        first = r["stage_first_unit"]
        costs = [u[4] for u in units]
        stage = [sum(costs[first[p]:first[p + 1]]) for p in range(P)]
        ck.check(all(first[p] < first[p + 1] for p in range(P)) and first[0] == 0 and first[P] == len(units),
                 "-n %d: every rank gets a contiguous non-empty run of units" % P)
        ck.check(abs(max(stage) - best_max_stage(costs, P)) <= 1e-9 * max(stage),
                 "-n %d: the split minimises the largest stage (%.0f flops/token, DP optimum %.0f)"
                 % (P, max(stage), best_max_stage(costs, P)))
        secs = [c * chunk / (G * 1e9) for c in stage]
        ck.check(all(abs(a - b) <= 1e-9 * b for a, b in zip(r["stage_seconds_per_microbatch"], secs)),
                 "-n %d: stage seconds = stage flops x chunk / (G GFLOP/s)" % P)
        M = N * (T // chunk)
        makespan = sum(secs) + (M - 1) * max(secs)
        eff = M * sum(secs) / (P * makespan)
        ck.check(abs(r["predicted_efficiency"] - eff) <= 1e-9, "-n %d: predicted efficiency %.6f (independent %.6f)"
                 % (P, r["predicted_efficiency"], eff))
        ck.check(abs(r["fill_drain_share"] - (P - 1) / (M + P - 1)) <= 1e-12 and
                 abs(r["load_balance"] - sum(secs) / P / max(secs)) <= 1e-9, "-n %d: balance and fill/drain share" % P)
        # the real program runs this very stage map
        out = C.fresh_dir(os.path.join(args.workdir, "run_%d" % P))
        rc, log = C.run_cfsp(args, ["--model", gen, "--calib-tokens", tok, "--nsamples", N, "--seqlen", T,
                                    "--chunk", chunk, "--ffn-slice", S, "--ratios", "0.3", "--save-models", 0,
                                    "--output-dir", out], np_ranks=P)
        if ck.check(rc == 0, "-n %d: the real run" % P, log[-300:]):
            res = C.load_results(out)
            got = [s["first_unit"] for s in res["stages"]] + [res["stages"][-1]["last_unit"] + 1]
            ck.check(got == first, "-n %d: the run's stage map %s = the plan's %s" % (P, got, first))
    # measured per-op timings
    js = os.path.join(args.workdir, "plan_measured.json")
    rc, log = C.run_cmd([str(x) for x in [args.bin, "plan", "--model", gen, "--ranks", 4, "--nsamples", N, "--seqlen", T,
                                          "--chunk", chunk, "--ffn-slice", S, "--json", js]])
    if ck.check(rc == 0 and os.path.exists(js), "plan with measured per-op timings runs", log[-300:]):
        r = json.load(open(js))
        m = r["measured_seconds_per_microbatch"]
        ck.check(all(m[k] > 0 for k in ("attention_unit", "attention_projections", "attention_core_mean_context", "ffn_slice"))
                 and m["attention_unit"] >= m["attention_projections"] + m["attention_core_mean_context"],
                 "measured: positive op times, attention unit >= projections + core")
        units = units_of(cfg, S, T)
        first = r["stage_first_unit"]
        want = []
        for p in range(4):
            t = 0.0
            for u in units[first[p]:first[p + 1]]:
                t += m["attention_unit"] if u[1] < 0 else m["ffn_slice"] * (u[3] - u[2]) / m["ffn_slice_width"]
            want.append(t)
        ck.check(all(abs(a - b) <= 1e-9 * b for a, b in zip(r["stage_seconds_per_microbatch"], want)),
                 "measured: stage seconds = sum of the measured unit times")
        ck.check(0 < r["predicted_efficiency"] <= 1, "measured: efficiency %.4f in (0, 1]" % r["predicted_efficiency"])
    # bad arguments
    for bad, what in ((["--ranks", 0], "--ranks"), (["--ranks", 2, "--chunk", 7], "--chunk"),
                      (["--ranks", 99], "stage units"), (["--ranks", 2, "--gflops", "-1"], "--gflops")):
        rc, log = C.run_cmd([str(x) for x in [args.bin, "plan", "--model", gen, "--seqlen", T] + bad])
        errs = [l for l in log.splitlines() if l.startswith("cfsp-mpi: error:")]
        ck.check(rc != 0 and len(errs) == 1 and what in errs[0], "plan %s: one error line naming %s" % (" ".join(map(str, bad)), what),
                 log[-300:])
    ck.finish()


if __name__ == "__main__":
    main()
