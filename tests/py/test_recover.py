#!/usr/bin/python3
"""`cfsp-mpi recover` (issue 7, LoRA recovery fine-tuning) against independent computations.

On stories260K pruned at 0.4 with cfsp (a short calibration, statistics saved):
  1. rank plan: adapter_config.json (adaptive and uniform) against a NumPy computation of the plan
     from stats.h5 (sigmoid scores of the allocation, equal-parameter budget, largest remainder);
     the importances of the pruned file give the same plan as the statistics file;
  2. loss parity: the logged loss of step 1 (B = 0) and of step 4 after resuming from the step-3
     checkpoint equal the mean cross-entropy of tests/ref/cfsp_ref.py's float64 forward pass on the
     same windows with W + alpha/r B A from the checkpoint; the perplexity before training equals
     the NumPy perplexity of the pruned model;
  3. data-parallel invariance: -n 1 and -n 2 with the same global batch give the same losses and
     adapters to rounding (the per-window gradients are identical; only the double-precision sums
     are associated differently);
  4. resume: 3 steps + resume to 4 equals 4 steps straight, bit for bit;
  5. --merge: merged.h5 passes `cfsp-mpi verify`, holds float32(W + s B A), and evaluates to the
     same perplexity as base + adapters; --peft: adapter_model.safetensors holds the checkpoint's
     A and B with the plan's shapes;
  6. a random bf16 model with an untied lm_head (pruned at 0.3), adapters on q,v,down only: loss
     parity of steps 1 and 2 (the block matrices converted from bf16 one block at a time), merged
     weights rounded to bf16;
  7. refusals: batch not a multiple of the ranks, existing outputs without --force, resuming with
     another plan.
"""
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import np, ref  # noqa: E402
import h5py  # noqa: E402

MODS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
T, B = 64, 4


def load_h5_tensors(path):
    return common.h5_model_tensors(path)


def read_ckpt(path):
    with h5py.File(path, "r") as f:
        ad = {}
        for l in f["lora"]:
            for mod in MODS:
                p = "lora/%s/%s" % (l, mod)
                if p in f:
                    ad[(int(l), mod)] = (f[p + "/A"][()].astype("f8"), f[p + "/B"][()].astype("f8"), float(f[p].attrs["scaling"]))
        return ad, f["state/param"][()], int(f.attrs["step"])


def adapted_model(cfg, t, ad):
    t = dict(t)
    for (l, mod), (A, Bm, s) in ad.items():
        k = "model.layers.%d.%s.weight" % (l, mod)
        t[k] = t[k] + s * (Bm @ A)
    return ref.model_from_tensors(cfg, t)


def batch_loss(model, tokens, offsets, T=T):
    nll, n = 0.0, 0
    for o in offsets:
        seq = tokens[o:o + T]
        lp = ref.log_softmax(ref.forward(model, seq)[:-1])
        nll -= float(lp[np.arange(T - 1), seq[1:]].sum())
        n += T - 1
    return nll / n


def numpy_plan(imp, nsamples, seqlen, ffn, cfg, r, a=1.0):
    x = (np.array(imp) - np.mean(imp)) / 1e4 * (131072.0 / (nsamples * seqlen))
    s = 1.0 / (1.0 + np.exp(-a * x))
    return numpy_ranks(s / s.sum(), ffn, cfg, r)


def numpy_ranks(w, ffn, cfg, r):
    """ranks proportional to the weights w (largest remainder under the uniform budget)"""
    L = len(w)
    w = np.asarray(w, dtype=np.float64)
    D = cfg["hidden_size"]
    hd = cfg.get("head_dim") or D // cfg["num_attention_heads"]
    Q, KV = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    cost = np.array([(D + Q) * 2 + (D + KV) * 2 + 3 * (D + m) for m in ffn])
    budget = r * cost.sum()
    fixed = np.zeros(L, bool)
    while True:
        rest = budget - cost[fixed].sum()
        xr = np.where(fixed, 1.0, rest / (w[~fixed] * cost[~fixed]).sum() * w)
        newly = (~fixed) & (xr < 1)
        if not newly.any():
            break
        fixed |= newly
    rank = np.maximum(1, np.floor(xr + 1e-9)).astype(int)
    frac = np.where(fixed, -1.0, xr - np.floor(xr + 1e-9))
    used = int((rank * cost).sum())
    for l in sorted(range(L), key=lambda i: (-frac[i], i)):
        if used + cost[l] <= budget:
            rank[l] += 1
            used += cost[l]
    return rank, used, int(budget), int(cost.max())


def main():
    args = common.parse_args(__doc__)
    ck = common.Checker("recover")
    wd = args.workdir
    tok = common.token_file(args, "stories260K")
    model_dir = common.model_dir(args, "stories260K")
    tokens = ref.read_tokens(tok)
    train_spec, eval_spec = tok + "@100000:300000", tok + "@300000:393013"
    train_tok, eval_tok = tokens[100000:300000], tokens[300000:393013]

    prune = common.fresh_dir(os.path.join(wd, "prune"))
    rc, _ = common.run_cfsp(args, ["--model", model_dir, "--calib-tokens", tok + "@0:100000", "--nsamples", 16, "--seqlen", 128,
                                   "--ratios", 0.4, "--method", "cfsp", "--save-stats", 1, "--eval-windows", 0,
                                   "--output-dir", prune], np_ranks=2)
    if not ck.check(rc == 0, "prune stories260K at 0.4 (cfsp, statistics saved)"):
        ck.finish()
    res = common.load_results(prune)
    h5 = common.pruned_file(prune, common.find_pruned(res, "cfsp", 0.4))
    stats = os.path.join(prune, "stats.h5")
    cfg, tens = load_h5_tensors(h5)
    L = cfg["num_hidden_layers"]
    ffn = [int(tens["model.layers.%d.mlp.gate_proj.weight" % l].shape[0]) for l in range(L)]

    # ---- 1. rank plan -----------------------------------------------------------------------------
    def plan(name, extra):
        d = os.path.join(wd, name)
        common.fresh_dir(d)
        rc, out = common.run_cfsp(args, ["--model", h5, "--plan-only", "--output-dir", d] + extra, np_ranks=1, sub="recover")
        with open(os.path.join(d, "adapter_config.json")) as f:
            return rc, json.load(f)
    rc, ac = plan("plan_adaptive", ["--plan", "adaptive", "--stats", stats, "--rank", 8, "--alpha", 16])
    with h5py.File(stats, "r") as f:
        imp = f["importance/angular"][()]
        ns, sl = int(f.attrs["nsamples"]), int(f.attrs["seqlen"])
    want, used, budget, cmax = numpy_plan(imp, ns, sl, ffn, cfg, 8)
    got = ac["cfsp_plan"]["block_ranks"]
    ck.check(rc == 0 and got == list(want), "adaptive plan = NumPy plan", "C %s NumPy %s" % (got, list(want)))
    ck.check(ac["cfsp_plan"]["lora_params"] == used and ac["cfsp_plan"]["lora_params_uniform"] == budget
             and 0 <= budget - used < cmax,
             "parameter count %d vs uniform %d (short by less than one block-rank)" % (used, budget))
    rp_ok = all(ac["rank_pattern"].get("model.layers.%d.%s" % (l, m), 8) == want[l] for l in range(L) for m in MODS)
    ap_ok = all(ac["alpha_pattern"].get("model.layers.%d.%s" % (l, m), 16) == 16 * want[l] / 8 for l in range(L) for m in MODS)
    ck.check(rp_ok and ap_ok and ac["r"] == 8 and ac["lora_alpha"] == 16 and ac["peft_type"] == "LORA"
             and ac["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
             "adapter_config.json: r, lora_alpha, target_modules, rank_pattern and alpha_pattern by module path")
    ck.note("adaptive ranks %s, importance shares %s" % (got, [round(x, 4) for x in ac["cfsp_plan"]["importance_share"]]))
    # the other direction: rank proportional to the fraction of the block's FFN channels pruned
    rcp, acp = plan("plan_pruned", ["--plan", "pruned", "--rank", 8])
    with h5py.File(h5, "r") as f:
        pruned_frac = 1.0 - f["cfsp/keep_fraction"][()]
    orig = cfg.get("intermediate_size")
    wantp, usedp, _, _ = numpy_ranks(pruned_frac / pruned_frac.sum(), ffn, cfg, 8)
    gotp = acp["cfsp_plan"]["block_ranks"]
    ck.check(rcp == 0 and gotp == list(wantp) and acp["cfsp_plan"]["lora_params"] == usedp and acp["cfsp_plan"]["plan"] == "pruned",
             "pruned plan (rank by pruned fraction) = NumPy plan", "C %s NumPy %s, pruned fractions %s (of %s channels)" % (
                 gotp, list(wantp), [round(x, 3) for x in pruned_frac], orig))
    rc2, ac2 = plan("plan_from_h5", ["--plan", "adaptive", "--rank", 8])
    ck.check(rc2 == 0 and ac2["cfsp_plan"]["block_ranks"] == got, "importances of the pruned file give the same plan")
    rc3, ac3 = plan("plan_uniform", ["--plan", "uniform", "--rank", 8])
    ck.check(rc3 == 0 and ac3["rank_pattern"] == {} and ac3["cfsp_plan"]["block_ranks"] == [8] * L, "uniform plan: no rank_pattern")

    # ---- 2-5. training runs -----------------------------------------------------------------------------
    common_opts = ["--model", h5, "--train-tokens", train_spec, "--eval-tokens", eval_spec, "--eval-windows", 6,
                   "--seqlen", T, "--batch", B, "--lr", 5e-3, "--warmup", 0, "--min-lr-ratio", 1, "--plan", "adaptive",
                   "--stats", stats, "--seed", 3]

    def train(name, n, steps, extra=()):
        d = os.path.join(wd, name)
        common.fresh_dir(d)
        rc, out = common.run_cfsp(args, common_opts + ["--steps", steps, "--output-dir", d] + list(extra), np_ranks=n, sub="recover")
        r = None
        if rc == 0:
            with open(os.path.join(d, "recover.json")) as f:
                r = json.load(f)
        return rc, r, d

    rc1, r1, d1 = train("n1", 1, 3, ["--merge", "--peft"])
    rc2, r2, d2 = train("n2", 2, 3)
    if not ck.check(rc1 == 0 and rc2 == 0, "3 training steps at -n 1 and -n 2"):
        ck.finish()
    l1 = [e["loss"] for e in r1["log"]]
    l2 = [e["loss"] for e in r2["log"]]
    ck.note("losses -n 1 %s, -n 2 %s" % (l1, l2))
    _, p1, _ = read_ckpt(os.path.join(d1, "checkpoint.h5"))
    _, p2, _ = read_ckpt(os.path.join(d2, "checkpoint.h5"))
    dl = max(abs(a - b) / abs(a) for a, b in zip(l1, l2))
    dp = float(np.max(np.abs(p1.astype("f8") - p2))) / float(np.max(np.abs(p1)))
    ck.check(dl < 1e-6 and dp < 1e-5, "data-parallel invariance -n 1 vs -n 2 (batch %d vs %d+%d)" % (B, B // 2, B // 2),
             "loss rel %.2e, adapter max rel %.2e, %d of %d adapter values bitwise equal" % (dl, dp, int((p1 == p2).sum()), p1.size))
    pb, pa = r1["eval_before"]["ppl"], r1["eval_after"]["ppl"]
    ck.check(pa < pb, "3 steps lower the held-out perplexity (%.3f -> %.3f)" % (pb, pa))

    # loss parity: step 1 (B = 0) against the pruned model
    base = ref.model_from_tensors(cfg, tens)
    off1 = r1["log"][0]["offsets"]
    nl = batch_loss(base, train_tok, off1)
    ck.check(abs(nl - l1[0]) / nl < 2e-5, "loss of step 1 = NumPy cross-entropy of the pruned model", "C %.7f NumPy %.7f" % (l1[0], nl))
    pe = ref.perplexity(base, eval_tok, T, windows=6)[0]
    cb = r1["eval_before"]["ppl"]
    ck.check(abs(pe - cb) / pe < 2e-5, "perplexity before training = NumPy", "C %.6f NumPy %.6f" % (cb, pe))

    # resume from the step-3 checkpoint to step 4; the same 4 steps straight
    rcr, rr, dr = train("resume", 1, 4, ["--resume", os.path.join(d1, "checkpoint.h5")])
    rcs, rs, ds = train("straight", 1, 4)
    if ck.check(rcr == 0 and rcs == 0, "resume 3 -> 4 and 4 steps straight"):
        ad3, _, st3 = read_ckpt(os.path.join(d1, "checkpoint.h5"))
        e4 = rr["log"][0]
        nl4 = batch_loss(adapted_model(cfg, tens, ad3), train_tok, e4["offsets"])
        ck.check(e4["step"] == 4 and st3 == 3 and abs(nl4 - e4["loss"]) / nl4 < 2e-5,
                 "loss of step 4 (adapters of step 3) = NumPy forward with W + s B A", "C %.7f NumPy %.7f" % (e4["loss"], nl4))
        _, pr, _ = read_ckpt(os.path.join(dr, "checkpoint.h5"))
        _, ps, _ = read_ckpt(os.path.join(ds, "checkpoint.h5"))
        ck.check(rs["log"][3]["loss"] == e4["loss"] and np.array_equal(pr, ps), "resume equals the straight run bit for bit")
        offs = [o for e in rs["log"] for o in e["offsets"]]
        rc0, r0, _ = train("seed0", 1, 4, ["--seed", 0, "--seqlen", 16])
        offs0 = [o for e in r0["log"] for o in e["offsets"]] if rc0 == 0 else [0, 0]
        ck.check(len(set(offs)) == len(offs) and len(set(offs0)) == len(offs0),
                 "the %d windows of 4 steps are distinct at seeds 3 and 0 (independent per-step streams)" % len(offs))

    # the initial adapters (--steps 0): A from independent streams (no value repeats), B = 0
    rc, ri, di = train("init", 1, 0)
    if ck.check(rc == 0, "--steps 0 writes the initial adapters"):
        ad0, p0, st0 = read_ckpt(os.path.join(di, "checkpoint.h5"))
        avals = np.concatenate([A.ravel() for A, _, _ in ad0.values()])
        bound_ok = all(np.max(np.abs(A)) <= 1 / math.sqrt(A.shape[1]) for A, _, _ in ad0.values())
        dup = avals.size - len(np.unique(avals))       # overlapping streams would repeat most values; chance float32 ties: a few
        ck.check(st0 == 0 and dup < avals.size // 1000 and bound_ok and all(not Bm.any() for _, Bm, _ in ad0.values()),
                 "initial A: U(-1/sqrt(in), 1/sqrt(in)), independent streams (%d repeated of %d values); B = 0" % (dup, avals.size))

    # ---- 5. merge and PEFT ---------------------------------------------------------------------------
    merged = os.path.join(d1, "merged.h5")
    rc, out = common.run_cmd([args.bin, "verify", merged])
    ck.check(rc == 0, "merged.h5 passes cfsp-mpi verify")
    hfo = os.path.join(wd, "merged_hf")
    if os.path.exists(hfo):
        common.shutil.rmtree(hfo)
    rc, out = common.run_cmd([args.bin, "export", "--format", "hf", merged, hfo])
    ck.check(rc == 0 and os.path.exists(os.path.join(hfo, "model.safetensors")), "cfsp-mpi export takes merged.h5")
    ad, _, _ = read_ckpt(os.path.join(d1, "checkpoint.h5"))
    mc, mt = load_h5_tensors(merged)
    worst = 0.0
    for (l, mod), (A, Bm, s) in ad.items():
        k = "model.layers.%d.%s.weight" % (l, mod)
        w = (tens[k] + s * (Bm @ A)).astype("f4").astype("f8")
        worst = max(worst, float(np.max(np.abs(mt[k] - w))))
    untouched = all(np.array_equal(mt[k], tens[k]) for k in tens if not any(m in k for m in MODS))
    ck.check(worst < 1e-6 and untouched, "merged weights = float32(W + s B A); other tensors unchanged", "max abs %.2e" % worst)
    dm = os.path.join(wd, "merged_eval")
    common.fresh_dir(dm)
    rc, _ = common.run_cfsp(args, ["--model", merged, "--steps", 0, "--eval-tokens", eval_spec, "--eval-windows", 6, "--seqlen", T,
                                   "--output-dir", dm], np_ranks=2, sub="recover")
    if rc == 0:
        with open(os.path.join(dm, "recover.json")) as f:
            pm = json.load(f)["eval_before"]["ppl"]
        pa = r1["eval_after"]["ppl"]
        ck.check(abs(pm - pa) / pa < 1e-4, "perplexity of merged.h5 = base + adapters", "%.6f vs %.6f" % (pm, pa))
    else:
        ck.check(False, "evaluate merged.h5")
    with open(os.path.join(d1, "adapter_model.safetensors"), "rb") as f:
        raw = f.read()
    hl = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + hl])
    ok = True
    with open(os.path.join(d1, "adapter_config.json")) as f:
        acfg = json.load(f)
    for (l, mod), (A, Bm, s) in ad.items():
        for nm, arr in (("A", A), ("B", Bm)):
            e = hdr.get("base_model.model.model.layers.%d.%s.lora_%s.weight" % (l, mod, nm))
            if e is None:
                ok = False
                continue
            a0, a1 = e["data_offsets"]
            v = np.frombuffer(raw[8 + hl + a0:8 + hl + a1], dtype="<f4").reshape(e["shape"])
            ok &= e["dtype"] == "F32" and np.array_equal(v.astype("f8"), arr)
        r = acfg["rank_pattern"].get("model.layers.%d.%s" % (l, mod), acfg["r"])
        ok &= A.shape[0] == r and Bm.shape[1] == r
    ck.check(ok and len(hdr) == 2 * len(ad) + 1, "adapter_model.safetensors = the checkpoint's A and B, shapes of the rank_pattern")

    # ---- 6. bf16, untied head, a subset of projections ------------------------------------------------
    bdir = os.path.join(wd, "bf16_model")
    if ck.check(common.mkmodel(args, bdir, 64, 150, 2, 4, 2, 200, dtype="bf16", seed=5, tie=0), "generated a bf16 model"):
        btok = common.write_tokens(os.path.join(wd, "bf16_tokens.bin"), 20000, 200, 7)
        bp = common.fresh_dir(os.path.join(wd, "bf16_prune"))
        rc, _ = common.run_cfsp(args, ["--model", bdir, "--calib-tokens", btok, "--nsamples", 4, "--seqlen", 64, "--ratios", 0.3,
                                       "--method", "cfsp", "--output-dir", bp], np_ranks=2)
        bh5 = common.pruned_file(bp, common.find_pruned(common.load_results(bp), "cfsp", 0.3)) if rc == 0 else None
        bo = ["--model", bh5, "--train-tokens", btok, "--seqlen", 32, "--batch", 4, "--lr", 1e-2, "--warmup", 0, "--min-lr-ratio", 1,
              "--rank", 4, "--alpha", 8, "--targets", "q,v,down", "--seed", 1]
        outs = []
        for steps in (1, 2):
            d = common.fresh_dir(os.path.join(wd, "bf16_s%d" % steps))
            rc2, _ = common.run_cfsp(args, bo + ["--steps", steps, "--output-dir", d] + (["--merge"] if steps == 2 else []),
                                     np_ranks=2, sub="recover")
            outs.append((rc2, d))
        if ck.check(rc == 0 and all(r == 0 for r, _ in outs), "bf16: prune, 1 and 2 recovery steps"):
            bcfg, bt = load_h5_tensors(bh5)
            with open(os.path.join(outs[1][1], "recover.json")) as f:
                lg = json.load(f)["log"]
            ad1, _, _ = read_ckpt(os.path.join(outs[0][1], "checkpoint.h5"))
            ad2, _, _ = read_ckpt(os.path.join(outs[1][1], "checkpoint.h5"))
            btoks = ref.read_tokens(btok)
            n1 = batch_loss(ref.model_from_tensors(bcfg, bt), btoks, lg[0]["offsets"], T=32)
            n2 = batch_loss(adapted_model(bcfg, bt, ad1), btoks, lg[1]["offsets"], T=32)
            ck.check(abs(n1 - lg[0]["loss"]) / n1 < 2e-5 and abs(n2 - lg[1]["loss"]) / n2 < 2e-5,
                     "bf16: losses of steps 1 and 2 = NumPy", "C %.7f %.7f NumPy %.7f %.7f" % (lg[0]["loss"], lg[1]["loss"], n1, n2))
            ck.check(sorted({m for _, m in ad2}) == ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"] and "lm_head.weight" in bt,
                     "bf16: adapters on q, v, down only; untied lm_head")
            _, mt2 = load_h5_tensors(os.path.join(outs[1][1], "merged.h5"))
            worst = 0.0
            for (l, mod), (A, Bm, s) in ad2.items():
                k = "model.layers.%d.%s.weight" % (l, mod)
                w = bt[k] + s * (Bm @ A)
                worst = max(worst, float(np.max(np.abs(mt2[k] - w) / np.maximum(np.abs(w), 1e-30))))
            ck.check(worst <= 2.0 ** -8, "bf16: merged weights = W + s B A rounded to bf16", "max rel %.2e" % worst)

            # --compute bf16 (oneDNN; emulated where the CPU has no bf16 instructions): the loss of step 1
            # (B = 0) against NumPy with the projections' operands rounded to bf16 (attention, lm_head and
            # the adapters fp32), and the pipelined trainer bitwise equal to the data-parallel one in that
            # mode. (On a generated model: the trained shared models are sensitive enough to the few
            # operands that round the other way, from float32 against float64 activations, that
            # cfsp-mpi's bf16 calibration itself agrees with NumPy to ~2e-4 there.)
            cres = []
            for n, trn in ((1, "data"), (2, "pipeline")):
                d = common.fresh_dir(os.path.join(wd, "bf16c_%s" % trn))
                rc3, _ = common.run_cfsp(args, bo + ["--steps", 2, "--compute", "bf16", "--trainer", trn, "--eval-tokens", btok + "@0:4000",
                                                     "--eval-windows", 4, "--output-dir", d], np_ranks=n, sub="recover")
                cres.append(json.load(open(os.path.join(d, "recover.json"))) if rc3 == 0 else None)
            if ck.check(all(cres) and cres[0]["compute"]["mode"] == "bf16", "--compute bf16: 2 steps, data -n 1 and pipeline -n 2"):
                ref.set_products("bf16_proj")
                nb = batch_loss(ref.model_from_tensors(bcfg, bt), btoks, cres[0]["log"][0]["offsets"], T=32)
                ref.set_products("fp32")
                nf = batch_loss(ref.model_from_tensors(bcfg, bt), btoks, cres[0]["log"][0]["offsets"], T=32)
                cb = cres[0]["log"][0]["loss"]
                ck.check(abs(nb - cb) / nb < 2e-6 and abs(nf - cb) / nf > 20 * abs(nb - cb) / nb,
                         "bf16: loss of step 1 = NumPy with bf16-rounded projection operands, not the fp32 loss",
                         "C %.8f NumPy bf16 %.8f, fp32 %.8f" % (cb, nb, nf))
                ck.check([e["loss"] for e in cres[0]["log"]] == [e["loss"] for e in cres[1]["log"]] and
                         cres[0]["eval_after"] == cres[1]["eval_after"], "bf16: pipelined -n 2 bitwise = data -n 1")

    # ---- 7. refusals ---------------------------------------------------------------------------------
    rc, out = common.run_cfsp(args, common_opts + ["--steps", 1, "--batch", 3, "--trainer", "data", "--output-dir", os.path.join(wd, "bad")],
                              np_ranks=2, sub="recover")
    ck.check(rc != 0 and "not a multiple" in out, "batch 3 on 2 ranks is refused by the data-parallel trainer")
    rc, out = common.run_cfsp(args, common_opts + ["--steps", 1, "--batch", 3, "--output-dir", common.fresh_dir(os.path.join(wd, "odd_batch"))], np_ranks=2, sub="recover")
    ck.check(rc == 0 and "pipeline trainer" in out, "batch 3 on 2 ranks: --trainer auto takes the pipelined trainer")
    rc, out = common.run_cfsp(args, common_opts + ["--steps", 1, "--output-dir", d2], np_ranks=1, sub="recover")
    ck.check(rc != 0 and "--force" in out, "existing outputs are not replaced without --force")
    rc, out = common.run_cfsp(args, common_opts + ["--steps", 4, "--plan", "uniform", "--output-dir", os.path.join(wd, "bad2"),
                                                   "--resume", os.path.join(d1, "checkpoint.h5")], np_ranks=1, sub="recover")
    ck.check(rc != 0 and "rank" in out, "resuming with another plan is refused")
    ck.finish()


if __name__ == "__main__":
    main()
