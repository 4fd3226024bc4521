"""`cfsp-mpi plan`, the pipeline simulator: with --gflops its stage costs, balance, fill/drain share
and predicted efficiency equal an independent recomputation from the config (units, flops, the
optimal contiguous split found by dynamic programming here); its stage map is the one the program
really runs (results.json of -n P runs, including more ranks than blocks); its per-rank stored bytes
equal an independent count from config.json + the safetensors headers and the run's own figure, its
buffers an independent count of what the run allocates, its request covers the run's peak RSS and
follows the rule; the same for a tied, sharded model with per-block FFN sizes and for the
Llama-3-70B config (no weights: torch_dtype); cfsp_resources.py reports plan's request; the
measured mode times the model's operations and gives consistent figures; bad arguments give one
error line."""
import json
import math
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DT = {"F32": 4, "F16": 2, "BF16": 2, "float32": 4, "float16": 2, "bfloat16": 2}


def ffn_sizes(cfg):
    bc = cfg.get("block_configs")
    if bc:
        return [b["ffn"]["intermediate_size"] for b in bc]
    return [cfg["intermediate_size"]] * cfg["num_hidden_layers"]


def units_of(cfg, ffn_slice, T):
    D, H, K = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    Q, KV = H * hd, K * hd
    out = []
    for l in range(cfg["num_hidden_layers"]):
        m = ffn_sizes(cfg)[l]
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


def header_dtypes(model):
    """tensor name -> stored dtype, from the safetensors headers (one file or the index's shards)"""
    idx = os.path.join(model, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for name in files:
        with open(os.path.join(model, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            out.update({k: v["dtype"] for k, v in json.loads(f.read(n)).items() if k != "__metadata__"})
    return out


def memory_ref(cfg, dtypes, units, first, T, chunk):
    """per rank: the stored bytes of what the rank maps (its units, embedding, norm + lm_head) and
    the fp32 buffers the run allocates at --compute fp32, as every plan and run here is given (forward workspace, micro-batch buffers, key/value caches,
    logits, RoPE tables, fp32 norms), counted from the shapes"""
    D, H, K, V = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or D // H
    Q, KV, P, tied = H * hd, K * hd, len(first) - 1, cfg.get("tie_word_embeddings", False)
    es = (lambda n: DT[dtypes[n]]) if dtypes else (lambda n: DT[cfg["torch_dtype"]])
    out = []
    for r in range(P):
        own = units[first[r]:first[r + 1]]
        ub, natt, width = 0, 0, 0
        for (l, s, c0, c1, _) in own:
            a = "model.layers.%d." % l
            if s < 0:
                natt += 1
                ub += Q * D * (es(a + "self_attn.q_proj.weight") + es(a + "self_attn.o_proj.weight")) + \
                    KV * D * (es(a + "self_attn.k_proj.weight") + es(a + "self_attn.v_proj.weight")) + D * es(a + "input_layernorm.weight")
            else:
                width = max(width, c1 - c0)
                ub += 3 * D * (c1 - c0) * es(a + "mlp.gate_proj.weight") + (D * es(a + "post_attention_layernorm.weight") if s == 0 else 0)
        head = r == P - 1
        emb = V * D * es("model.embed_tokens.weight") if r == 0 or (head and tied) else 0
        hb = (D * es("model.norm.weight") + (0 if tied else V * D * es("lm_head.weight"))) if head else 0
        m = min(max(ffn_sizes(cfg)), width or 1)
        acts = 4 * chunk * (3 * D + 2 * Q + T + 2 * m) + 4 * 9 * chunk * D + 4 * chunk
        kv = 4 * 2 * KV * T * max(natt, 1)
        logits = 4 * V * min(max((8 << 20) // V, 1), chunk) if head else 0
        tables = 4 * 2 * T * (hd // 2) + 4 * D * (len(own) + head)
        out.append(dict(unit=ub, embed=emb, head=hb, stored=ub + emb + hb, buffers=(64 << 20) + acts + kv + logits + tables))
    return out


def check_memory(ck, what, r, ref):
    """the plan's per-rank memory against memory_ref, and the request rule from its own terms"""
    st = r["stages"]
    got = [(s["memory"]["unit_bytes"], s["memory"]["embed_bytes"], s["memory"]["head_bytes"], s["memory"]["stored_bytes"]) for s in st]
    want = [(x["unit"], x["embed"], x["head"], x["stored"]) for x in ref]
    ck.check(got == want, "%s: per-rank stored bytes (units, embedding, norm + lm_head) = the count from config + headers" % what,
             "" if got == want else "plan %s, independent %s" % (got[:4], want[:4]))
    bgot = [s["memory"]["buffer_bytes"] for s in st]
    ck.check(bgot == [x["buffers"] for x in ref], "%s: per-rank buffers = the count of the run's allocations" % what,
             "plan %s, independent %s" % (bgot[:4], [x["buffers"] for x in ref][:4]))
    ok = True
    for s in st:
        m = s["memory"]
        terms = m["conversion_panel_bytes"] + m["activation_bytes"] + m["kv_cache_bytes"] + m["logits_bytes"] + m["table_bytes"]
        margin = max(m["stored_bytes"] // 4, m["largest_ffn_slice_bytes"])
        ok &= terms == m["buffer_bytes"] and m["margin_bytes"] == margin and \
            m["request_bytes"] == m["stored_bytes"] + margin + m["buffer_bytes"] + (1 << 30)
    ck.check(ok, "%s: request = stored + max(stored / 4, largest FFN slice) + buffers + 1 GiB on every rank" % what)
    ck.check(r["largest_request_bytes"] == max(s["memory"]["request_bytes"] for s in st),
             "%s: largest request %.0f bytes" % (what, r["largest_request_bytes"]))


def check_run_memory(ck, what, r, res):
    """the plan's per-rank stored bytes = the run's own (results.json), its request >= the run's peak RSS"""
    key = next((k for k in ("weight_bytes_expected", "weight_bytes_read") if k in res["stages"][0]), None)
    got = [s["memory"]["stored_bytes"] for s in r["stages"]]
    run = [s.get(key) for s in res["stages"]]
    ck.check(key is not None and got == run, "%s: plan's stored bytes per rank = the run's %s %s" % (what, key, run))
    hwm = [s["vmhwm_bytes"] for s in res["stages"]]
    ck.check(all(0 < h <= s["memory"]["request_bytes"] for h, s in zip(hwm, r["stages"])),
             "%s: the run's peak RSS per rank %s <= the plan's request" % (what, hwm))


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
        rc, log = C.run_cmd([str(x) for x in [args.bin, "plan", "--compute", args.compute, "--model", gen, "--ranks", P, "--nsamples", N, "--seqlen", T,
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
        check_memory(ck, "-n %d" % P, r, memory_ref(cfg, header_dtypes(gen), units, first, T, chunk))
        # the real program runs this very stage map
        out = C.fresh_dir(os.path.join(args.workdir, "run_%d" % P))
        rc, log = C.run_cfsp(args, ["--model", gen, "--calib-tokens", tok, "--nsamples", N, "--seqlen", T,
                                    "--chunk", chunk, "--ffn-slice", S, "--ratios", "0.3", "--save-models", 0,
                                    "--output-dir", out], np_ranks=P)
        if ck.check(rc == 0, "-n %d: the real run" % P, log[-300:]):
            res = C.load_results(out)
            got = [s["first_unit"] for s in res["stages"]] + [res["stages"][-1]["last_unit"] + 1]
            ck.check(got == first, "-n %d: the run's stage map %s = the plan's %s" % (P, got, first))
            check_run_memory(ck, "-n %d" % P, r, res)
    # tied embeddings (on the first and the last rank), shards, per-block FFN sizes
    tied = os.path.join(args.workdir, "tied")
    ok = C.mkmodel(args, tied, 64, None, 3, 4, 2, 200, dtype="f16", seed=6, tie=1, shard_bytes=60000, ffn_per_layer=[300, 180, 260])
    if ck.check(ok, "generated a tied, sharded 3-block f16 model with FFN sizes 300/180/260"):
        tcfg = json.load(open(os.path.join(tied, "config.json")))
        for P in (1, 3):
            js = os.path.join(args.workdir, "plan_tied_%d.json" % P)
            rc, log = C.run_cmd([str(x) for x in [args.bin, "plan", "--compute", args.compute, "--model", tied, "--ranks", P, "--nsamples", N, "--seqlen", T,
                                                  "--chunk", chunk, "--ffn-slice", S, "--gflops", G, "--json", js]])
            if not ck.check(rc == 0, "tied -n %d: plan runs" % P, log[-300:]):
                continue
            r = json.load(open(js))
            check_memory(ck, "tied -n %d" % P, r, memory_ref(tcfg, header_dtypes(tied), units_of(tcfg, S, T), r["stage_first_unit"], T, chunk))
            out = C.fresh_dir(os.path.join(args.workdir, "run_tied_%d" % P))
            rc, log = C.run_cfsp(args, ["--model", tied, "--calib-tokens", tok, "--nsamples", N, "--seqlen", T, "--chunk", chunk,
                                        "--ffn-slice", S, "--ratios", "0.3", "--save-models", 0, "--output-dir", out], np_ranks=P)
            if ck.check(rc == 0, "tied -n %d: the real run" % P, log[-300:]):
                check_run_memory(ck, "tied -n %d" % P, r, C.load_results(out))
    # a cluster-size config without weights: the stored dtype is torch_dtype
    m70 = os.path.join(ROOT, "configs", "models", "llama3-70b")
    js = os.path.join(args.workdir, "plan_70b.json")
    rc, log = C.run_cmd([args.bin, "plan", "--compute", args.compute, "--model", m70, "--ranks", "64", "--chunk", "256", "--gflops", "100", "--json", js])
    if ck.check(rc == 0, "llama3-70b -n 64: plan runs", log[-300:]):
        r = json.load(open(js))
        c70 = json.load(open(os.path.join(m70, "config.json")))
        ref = memory_ref(c70, None, units_of(c70, 4096, 1024), r["stage_first_unit"], 1024, 256)
        check_memory(ck, "llama3-70b -n 64", r, ref)
        D, V, L, H, K, m = 8192, 128256, 80, 64, 8, 28672
        total = 2 * (L * (2 * D * D + 2 * D * (D // H) * K + 3 * D * m + 2 * D) + 2 * V * D + D)
        ck.check(r["model_stored_bytes"] == total, "llama3-70b: the model's stored bytes %.4g = 2 x its %.4g parameters"
                 % (r["model_stored_bytes"], total / 2))
        # cfsp_resources.py asks plan: its --mem-mb is the largest request in MiB, rounded up to 100
        env = dict(C.mpi_env(), CFSP_BIN=args.bin)
        res = os.path.join(ROOT, "mpi_scripts", "cfsp_resources.py")
        p = subprocess.run(["/usr/bin/python3", res, "--model", m70, "--ranks", "64", "--chunk", "256", "--mem-mb"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        want = int(math.ceil(r["largest_request_bytes"] / (1 << 20) / 100.0) * 100)
        ck.check(p.returncode == 0 and p.stdout.decode().strip() == str(want),
                 "cfsp_resources.py --mem-mb %s = plan's largest request rounded up (%d MiB)" % (p.stdout.decode().strip(), want),
                 p.stderr.decode()[-300:])
        p = subprocess.run(["/usr/bin/python3", res, "--preset", "llama3-70b", "--suggest-ranks"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        ck.check(p.returncode == 0 and p.stdout.decode().strip() == str(r["units"]),
                 "cfsp_resources.py --suggest-ranks %s = the stage units (%d)" % (p.stdout.decode().strip(), r["units"]),
                 p.stderr.decode()[-300:])
        env["CFSP_BIN"] = os.path.join(args.workdir, "no-such-cfsp-mpi")
        p = subprocess.run(["/usr/bin/python3", res, "--model", m70, "--ranks", "8", "--mem-mb"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        err = p.stderr.decode()
        ck.check(p.returncode != 0 and "CFSP_BIN" in err and len(err.strip().splitlines()) == 1,
                 "cfsp_resources.py with a missing CFSP_BIN: one error line naming it", err[-300:])
    # measured per-op timings
    js = os.path.join(args.workdir, "plan_measured.json")
    rc, log = C.run_cmd([str(x) for x in [args.bin, "plan", "--compute", args.compute, "--model", gen, "--ranks", 4, "--nsamples", N, "--seqlen", T,
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
