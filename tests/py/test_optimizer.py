#!/usr/bin/python3
"""The optimizer of `cfsp-mpi recover` (src/train/trainer.c: train_lr, trainer_step) against NumPy.

LoRA rank 4 on stories260K (no pruning needed), -n 2, batch 4 x 32 tokens, non-default AdamW
hyper-parameters (beta1 0.85, beta2 0.99, eps 1e-7, weight decay 0.1) so that each one matters.
A chain of runs, each resuming the previous checkpoint one step further, leaves the state
(adapters p, AdamW m and v, step) before and after steps 1, 2 and 3 on disk:
  step 1  clip 0 (off), zero moments, B = 0 (so the gradient of every A is 0);
  step 2  clip 1e6 (on, not reached);
  step 3  clip a quarter of step 2's gradient norm (reached).
With --warmup 2 and --steps k (the warm-up is capped at --steps), lr is the peak at steps 1 and 2
and the cosine floor at step 3 (where lr evaluated at step k - 1 would give the peak).
For each step k, with the state S_{k-1} -> S_k and recover.json's log entry of step k:
  1. lr_k = the schedule written here (W = min(--warmup, --steps); linear warm-up lr k / W for
     k <= W, else the cosine from lr to min_lr_ratio lr over the remaining steps) — also for every
     step of a 12-step run with warm-up 3, a 5-step run without warm-up and a 4-step run with
     --warmup 6 (capped at 4);
  2. the gradient the optimizer applied, g = (m_k - beta1 m_{k-1}) / (1 - beta1), against the
     float64 loss of tests/ref/cfsp_ref.py (W + s B A from S_{k-1}) by central differences, for every
     adapter matrix along g's own direction (g.u / (c D_u L) = 1) and along a random direction:
     g = c grad L with c the clipping factor clip / (|grad| + 1e-6) (1 when off or not reached),
     |g| = c x the logged grad_norm, and the logged loss = the NumPy loss at S_{k-1};
  3. v_k = beta2 v_{k-1} + (1 - beta2) g^2;
  4. p_k = p_{k-1} - lr_k (m_k / (1 - beta1^k)) / (sqrt(v_k / (1 - beta2^k)) + eps) - lr_k wd p_{k-1}.
3 and 4 are elementwise, to the float32 rounding of the stored m, v, p (bounds in the code).
Tried by mutating trainer.c: a changed bias correction (either), weight decay (scaled or coupled),
beta1 or beta2 term, epsilon placement, clip rule, loss scale 1/(B T) or lr of step k - 1 fails.

    /usr/bin/python3 tests/py/test_optimizer.py --bin build/cfsp-mpi --shared /work/shared --workdir /tmp/opt
    (with --trainer pipeline --np 3: the same checks of the pipelined trainer on three stages)
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import np, ref  # noqa: E402
import h5py  # noqa: E402
from test_recover import MODS, batch_loss  # noqa: E402

T, B, RANK, ALPHA, NP = 32, 4, 4, 8, 2
HP = dict(lr=1e-2, warmup=2, min_lr_ratio=0.2, weight_decay=0.1, beta1=0.85, beta2=0.99, adam_eps=1e-7)
U = 2.0 ** -24                      # unit roundoff of float32 (round to nearest)
FD_H = 1e-4                         # central-difference step along a unit direction in parameter space
FD_TOL = 5e-4                       # relative, see fd_check


def lr_schedule(k, steps, lr, warmup, min_lr_ratio):
    """the learning rate of step k (1-based) of a run of `steps` steps; the warm-up is capped at the
    run's steps (recover's option check)."""
    warmup = min(warmup, steps)
    if warmup > 0 and k <= warmup:
        return lr * k / warmup
    lo = lr * min_lr_ratio
    prog = min(1.0, (k - warmup) / (steps - warmup)) if steps > warmup else 1.0
    return lo + (lr - lo) * (1 + math.cos(math.pi * prog)) / 2


def read_state(path):
    """(step, p, m, v as float64, [(l, mod, 'A'|'B', slice into p, shape)], {(l, mod): scaling})"""
    with h5py.File(path, "r") as f:
        p, m, v = (f["state/" + k][()].astype("f8") for k in ("param", "adam_m", "adam_v"))
        pieces, scal, off = [], {}, 0
        for l in sorted(int(x) for x in f["lora"]):
            for mod in MODS:
                g = "lora/%d/%s" % (l, mod)
                if g not in f:
                    continue
                scal[(l, mod)] = float(f[g].attrs["scaling"])
                for ab in "AB":
                    a = f[g + "/" + ab][()]
                    pieces.append((l, mod, ab, slice(off, off + a.size), a.shape))
                    if not np.array_equal(p[off:off + a.size], a.ravel().astype("f8"), equal_nan=True):
                        raise ValueError("%s: /lora/%d/%s/%s is not /state/param[%d:%d]" % (path, l, mod, ab, off, off + a.size))
                    off += a.size
        if off != p.size:
            raise ValueError("%s: the adapters hold %d values, /state/param %d" % (path, off, p.size))
        return int(f.attrs["step"]), p, m, v, pieces, scal


class Loss:
    """the mean cross-entropy of tests/ref/cfsp_ref.py (float64) over one batch, as a function of the
    flat adapter vector p (the layout of /state/param)."""

    def __init__(self, cfg, tens, tokens, offsets, pieces, scal):
        self.cfg, self.tens, self.tokens, self.offsets = cfg, tens, tokens, offsets
        self.pieces, self.scal = pieces, scal

    def __call__(self, p):
        t = dict(self.tens)
        ab = {}
        for l, mod, which, sl, shape in self.pieces:
            ab[(l, mod, which)] = p[sl].reshape(shape)
        for (l, mod), s in self.scal.items():
            k = "model.layers.%d.%s.weight" % (l, mod)
            t[k] = t[k] + s * (ab[(l, mod, "B")] @ ab[(l, mod, "A")])
        return batch_loss(ref.model_from_tensors(self.cfg, t), self.tokens, self.offsets, T=T)

    def deriv(self, p, d):
        """central difference of the loss along the unit direction d"""
        return (self(p + FD_H * d) - self(p - FD_H * d)) / (2 * FD_H)


def fd_check(ck, label, loss, p0, g, clipf, pieces, rng):
    """g (the applied gradient) = clipf x the gradient of the float64 loss, matrix by matrix.

    Tolerance FD_TOL relative to |g_piece| / clipf: the C gradient is that of a float32 forward and
    backward, and the central difference with a step of 1e-4 has a truncation error h^2 |L'''| / 6;
    together observed at 2e-6 here and at 4e-5 on a trajectory blown up to |grad| = 24 (a mutated
    optimizer); 5e-4 leaves room for both while a wrong factor (1 - beta1, the clip) is off by more."""
    worst_dir, worst_rand, worst_zero, nzero, bad = 0.0, 0.0, 0.0, 0, []
    gnorm = float(np.linalg.norm(g))
    for l, mod, which, sl, shape in pieces:
        gp = np.zeros_like(g)
        gp[sl] = g[sl]
        n = float(np.linalg.norm(gp))
        d = np.zeros_like(g)
        d[sl] = rng.standard_normal(sl.stop - sl.start)
        d /= np.linalg.norm(d)
        name = "%d.%s.%s" % (l, mod, which)
        if n == 0.0:                  # A while B = 0: the loss does not depend on A at all
            e = abs(loss.deriv(p0, d)) / (gnorm / clipf)
            worst_zero = max(worst_zero, e)
            nzero += 1
            if e > 1e-9:
                bad.append("%s: g = 0 but dL/dd = %.3g" % (name, loss.deriv(p0, d)))
            continue
        du = loss.deriv(p0, gp / n)
        e1 = abs(n / clipf - du) / (n / clipf)
        dd = loss.deriv(p0, d)
        e2 = abs(float(g @ d) / clipf - dd) / (n / clipf)
        worst_dir, worst_rand = max(worst_dir, e1), max(worst_rand, e2)
        if e1 > FD_TOL or e2 > FD_TOL:
            bad.append("%s: |g|/c %.6g vs dL/du %.6g; g.d/c %.6g vs dL/dd %.6g" % (name, n / clipf, du, float(g @ d) / clipf, dd))
    ck.check(not bad, "%s: applied gradient = %.4g x d(NumPy loss), %d matrices, along g and a random direction" %
             (label, clipf, len(pieces)),
             "worst rel %.2e (along g), %.2e (random); %d matrices with g = 0 (A while B = 0): |dL/dd| / |grad| %.2e%s" %
             (worst_dir, worst_rand, nzero, worst_zero, "; " + " | ".join(bad[:3]) if bad else ""))


def check_step(ck, k, before, after, entry, steps, clip, cfg, tens, tokens):
    b1, b2, eps, wd = HP["beta1"], HP["beta2"], HP["adam_eps"], HP["weight_decay"]
    s0, p0, m0, v0, pieces, scal = before
    s1, p1, m1, v1, _, _ = after
    label = "step %d (clip %g)" % (k, clip)
    ck.check(s0 == k - 1 and s1 == k and entry["step"] == k, "%s: checkpoints at steps %d, %d; log entry %d" % (label, s0, s1, entry["step"]))
    lr = lr_schedule(k, steps, HP["lr"], HP["warmup"], HP["min_lr_ratio"])
    ck.check(abs(entry["lr"] - lr) <= 1e-12 * lr, "%s: logged lr %.9g = schedule %.9g" % (label, entry["lr"], lr))

    # the gradient the update used, from the first moment; its float32 rounding error bound eg
    g = (m1 - b1 * m0) / (1 - b1)
    eg = U * (np.abs(m1) + b1 * np.abs(m0)) / (1 - b1)
    gn = float(entry["grad_norm"])
    clipf = clip / (gn + 1e-6) if clip > 0 and gn > clip else 1.0
    n = float(np.linalg.norm(g))
    tol = float(np.linalg.norm(eg)) + 4 * U * n
    ck.check(abs(n - clipf * gn) <= tol, "%s: |applied gradient| %.9g = clip factor %.6g x logged grad_norm %.9g" % (label, n, clipf, gn),
             "diff %.3g, bound %.3g" % (abs(n - clipf * gn), tol))

    # logged loss and the gradient against the float64 reference
    loss = Loss(cfg, tens, tokens, entry["offsets"], pieces, scal)
    l0 = loss(p0)
    ck.check(abs(l0 - entry["loss"]) <= 2e-5 * l0, "%s: logged loss %.7f = NumPy loss at the step-%d adapters %.7f" % (label, entry["loss"], k - 1, l0))
    fd_check(ck, label, loss, p0, g, clipf, pieces, np.random.default_rng(k))

    # second moment: rounding of v_{k-1}, v_k (float32) and the error of g^2 from eg
    want_v = b2 * v0 + (1 - b2) * g * g
    tv = U * (np.abs(v1) + b2 * v0) + (1 - b2) * (2 * np.abs(g) * eg + eg * eg) + 1e-45
    dv = np.abs(v1 - want_v)
    ck.check(bool(np.all(dv <= tv)), "%s: v = beta2 v + (1 - beta2) g^2, elementwise to float32 rounding" % label,
             "worst diff / bound %.3g" % float(np.max(dv / tv)))

    # the AdamW update (decoupled weight decay) from the stored moments
    bc1, bc2 = 1 - b1 ** k, 1 - b2 ** k
    step = (m1 / bc1) / (np.sqrt(v1 / bc2) + eps)
    want_p = p0 - lr * (step + wd * p0)
    tp = U * np.abs(p1) + lr * np.abs(step) * 4 * U + 1e-45       # p rounded once; m, v rounded before use
    dp = np.abs(p1 - want_p)
    ck.check(bool(np.all(dp <= tp)), "%s: p -= lr (m/(1-b1^k)) / (sqrt(v/(1-b2^k)) + eps) + lr wd p, elementwise to float32 rounding" % label,
             "worst diff / bound %.3g (at index %d: %.9g vs %.9g)" % (float(np.max(dp / tp)), int(np.argmax(dp / tp)),
                                                                     p1[int(np.argmax(dp / tp))], want_p[int(np.argmax(dp / tp))]))
    ck.check(float(np.max(lr * wd * np.abs(p0) / tp)) > 100,
             "%s: the weight-decay term exceeds the rounding bound 100-fold (the check sees it)" % label)
    return gn


def main():
    args = common.parse_args(__doc__)
    ck = common.Checker("optimizer")
    wd = args.workdir
    mdir = common.model_dir(args, "stories260K")
    tok = common.token_file(args, "stories260K")
    tokens = ref.read_tokens(tok)[:100000]
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    tens = {k: np.asarray(v, dtype="f8") for k, v in ref.read_model_tensors(mdir).items()}
    base = ["--model", mdir, "--train-tokens", tok + "@0:100000", "--seqlen", T, "--batch", B, "--plan", "uniform",
            "--rank", RANK, "--alpha", ALPHA, "--seed", 5, "--lr", HP["lr"], "--min-lr-ratio", HP["min_lr_ratio"],
            "--weight-decay", HP["weight_decay"], "--beta1", HP["beta1"], "--beta2", HP["beta2"], "--adam-eps", HP["adam_eps"]]

    # --trainer pipeline --np P: the same checks of the pipelined trainer (each rank its stage's blocks)
    nprocs = NP
    if args.trainer:
        base += ["--trainer", args.trainer]
        nprocs = args.np
        ck.note("trainer %s at -n %d" % (args.trainer, nprocs))

    def recover(name, steps, warmup, clip, resume=None):
        d = common.fresh_dir(os.path.join(wd, name))
        opts = base + ["--steps", steps, "--warmup", warmup, "--clip", clip, "--output-dir", d]
        rc, _ = common.run_cfsp(args, opts + (["--resume", resume] if resume else []), np_ranks=nprocs, sub="recover")
        if rc != 0:
            return None, None
        with open(os.path.join(d, "recover.json")) as f:
            return os.path.join(d, "checkpoint.h5"), json.load(f)

    # the schedule over whole runs
    for steps, warmup in ((12, 3), (5, 0), (4, 6)):
        _, r = recover("schedule_%d_w%d" % (steps, warmup), steps, warmup, 0)
        if not ck.check(r is not None, "recover %d steps, warm-up %d" % (steps, warmup)):
            continue
        want = [lr_schedule(k, steps, HP["lr"], warmup, HP["min_lr_ratio"]) for k in range(1, steps + 1)]
        got = [e["lr"] for e in r["log"]]
        ok = len(got) == steps and all(abs(a - b) <= 1e-12 * b for a, b in zip(got, want))
        ok &= r["hparams"]["warmup"] == min(warmup, steps)
        ck.check(ok and [e["step"] for e in r["log"]] == list(range(1, steps + 1)),
                 "%d steps, warm-up %d: logged lr = linear warm-up + cosine to %g x lr" % (steps, warmup, HP["min_lr_ratio"]),
                 "C %s schedule %s" % (np.round(got, 7), np.round(want, 7)))

    # one step at a time
    ck0, _ = recover("chain0", 0, HP["warmup"], 0)
    if not ck.check(ck0 is not None, "recover --steps 0 (the initial adapters)"):
        ck.finish()
    states, prev, gn = [read_state(ck0)], ck0, 0.0
    for k, clip in ((1, 0.0), (2, 1e6), (3, None)):
        if clip is None:                # a quarter of the previous step's gradient norm: reached
            clip = 0.25 * gn
        ckk, r = recover("chain%d" % k, k, HP["warmup"], clip, resume=prev)
        if not ck.check(ckk is not None and len(r["log"]) == 1, "resume to step %d (clip %g)" % (k, clip)):
            break
        try:
            states.append(read_state(ckk))
        except ValueError as ex:
            ck.check(False, "step %d: checkpoint layout" % k, str(ex))
            break
        gn = check_step(ck, k, states[-2], states[-1], r["log"][0], k, clip, cfg, tens, tokens)
        if clip > 0:
            ck.check((gn > clip) == (k == 3), "step %d: the clip is %s (grad_norm %.4g, clip %g)" %
                     (k, "reached" if k == 3 else "not reached", gn, clip))
        prev = ckk
    ck.finish()


if __name__ == "__main__":
    main()
