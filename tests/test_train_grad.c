/* test_train_grad.c — gradient check of the LoRA training ops (issue 7). This file compiles the
 * program's own op sources (src/train/train_ops.c, train_block.c) with -DTRAIN_DOUBLE, i.e. the
 * same code with real = double, and compares every analytic gradient with central finite
 * differences (step 1e-5) of a scalar loss sum(R o output) with a random R: per gradient tensor,
 * ||analytic - fd|| / ||fd|| < 1e-4 and every element within 1e-4 * |fd| + 1e-8.
 * What is checked: rmsnorm, linear+LoRA (dx, dA, dB), rope, causal GQA attention (dq, dk, dv),
 * SwiGLU, cross-entropy, the head (norm + lm_head + cross-entropy), and a whole block (input and
 * all 14 adapter gradients, with a down_proj bias). The float build is the same source; its
 * float rounding is not what this test measures. Prints 'N passed, N failed'. */
#include "cfsp/train/train_ops.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int npass, nfail;
static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}
/* every test array is recorded and freed at the end (the suite runs under LeakSanitizer) */
static void **allocs;
static size_t nallocs;
static void *track(void *p)
{
    allocs = realloc(allocs, (nallocs + 1) * sizeof *allocs);
    if (!p || !allocs) { fprintf(stderr, "test_train_grad: out of memory\n"); exit(2); }
    return allocs[nallocs++] = p;
}
static double *rnd(int64_t n, double sc)
{
    double *p = track(malloc(sizeof(double) * (size_t)(n > 0 ? n : 1)));
    for (int64_t i = 0; i < n; i++) p[i] = urand() * sc;
    return p;
}
static double *zeros(int64_t n) { return track(calloc((size_t)(n > 0 ? n : 1), sizeof(double))); }
static double dotp(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);
#define FD_EPS 1e-5

static void check(const char *what, loss_fn f, void *ctx, double *param, int64_t n, const double *analytic)
{
    double num = 0, den = 0, worst = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double save = param[i];
        param[i] = save + FD_EPS;
        double lp = f(ctx);
        param[i] = save - FD_EPS;
        double lm = f(ctx);
        param[i] = save;
        double fd = (lp - lm) / (2 * FD_EPS), d = fabs(analytic[i] - fd);
        num += d * d;
        den += fd * fd;
        if (d > 1e-4 * fabs(fd) + 1e-8) bad++;
        if (d > worst) worst = d;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    int ok = rel < 1e-4 && bad == 0 && den > 0;
    printf("%s %-28s rel %.2e  max abs %.2e  (%lld values, %d outside)\n", ok ? "PASS" : "FAIL", what, rel, worst, (long long)n, bad);
    if (ok) npass++; else nfail++;
}

/* ---- single ops ---------------------------------------------------------------------------------- */
enum { N = 6, D = 8, H = 4, K = 2, HD = 4, M = 10, V = 11, R = 3 };

typedef struct { double *x, *w, *R, *out, *rstd; } rms_ctx;
static double rms_loss(void *c_)
{
    rms_ctx *c = c_;
    op_rmsnorm_fwd(c->out, c->rstd, c->x, c->w, N, D, 1e-5);
    return dotp(c->out, c->R, N * D);
}

typedef struct { lora_lin m; double *x, *R, *y, *xa; int in, out; } lin_ctx;
static double lin_loss(void *c_)
{
    lin_ctx *c = c_;
    op_linear_fwd(c->y, c->xa, &c->m, c->x, N);
    return dotp(c->y, c->R, (int64_t)N * c->out);
}

typedef struct { double *x, *y, *R, *cs, *sn; int nh; } rope_ctx;
static double rope_loss(void *c_)
{
    rope_ctx *c = c_;
    memcpy(c->y, c->x, sizeof(double) * N * c->nh * HD);
    op_rope_fwd(c->y, N, c->nh, HD, c->cs, c->sn);
    return dotp(c->y, c->R, N * c->nh * HD);
}

typedef struct { double *q, *k, *v, *out, *P, *R; } attn_ctx;
static double attn_loss(void *c_)
{
    attn_ctx *c = c_;
    op_attn_fwd(c->out, c->P, c->q, c->k, c->v, N, H, K, HD);
    return dotp(c->out, c->R, N * H * HD);
}

typedef struct { double *g, *u, *h, *R; } swi_ctx;
static double swi_loss(void *c_)
{
    swi_ctx *c = c_;
    op_swiglu_fwd(c->h, c->g, c->u, N * M);
    return dotp(c->h, c->R, N * M);
}

typedef struct { double *logits; int32_t *tgt; } xent_ctx;
static double xent_loss(void *c_)
{
    xent_ctx *c = c_;
    int64_t cnt = 0;
    return op_xent(NULL, c->logits, c->tgt, N, V, 1, &cnt);
}

typedef struct { head_params p; double *x, *xn, *rstd, *logits; int32_t *tgt; } head_ctx;
static double head_l(void *c_)
{
    head_ctx *c = c_;
    int64_t cnt = 0;
    return head_loss(&c->p, c->x, c->tgt, N, 1, NULL, c->xn, c->rstd, c->logits, &cnt);
}

static void rope_tab(double *cs, double *sn, int n)
{
    for (int t = 0; t < n; t++)
        for (int i = 0; i < HD / 2; i++) {
            double a = t * pow(10000.0, -2.0 * i / HD);
            cs[t * (HD / 2) + i] = cos(a);
            sn[t * (HD / 2) + i] = sin(a);
        }
}

/* ---- a whole block ------------------------------------------------------------------------------- */
typedef struct { blk_params p; blk_act a; double *x, *y, *R, *cs, *sn; } blk_ctx;
static double blk_loss(void *c_)
{
    blk_ctx *c = c_;
    blk_forward(&c->p, &c->a, c->x, c->y, N, c->cs, c->sn);
    return dotp(c->y, c->R, N * D);
}

int main(void)
{
    double cs[N * HD / 2], sn[N * HD / 2];
    rope_tab(cs, sn, N);
    { /* rmsnorm */
        rms_ctx c = { rnd(N * D, 1), rnd(D, 1), rnd(N * D, 1), zeros(N * D), zeros(N) };
        double *dx = zeros(N * D);
        rms_loss(&c);
        op_rmsnorm_bwd(dx, c.R, c.x, c.w, c.rstd, N, D);
        check("rmsnorm dx", rms_loss, &c, c.x, N * D, dx);
    }
    { /* linear with LoRA, and without */
        for (int r = R; r >= 0; r -= R) {
            lin_ctx c;
            memset(&c, 0, sizeof c);
            c.in = D; c.out = M;
            c.m = (lora_lin){ rnd(M * D, 0.5), M, D, r, 0.7, rnd(r * D, 0.5), rnd(M * r, 0.5), zeros(r * D), zeros(M * r) };
            c.x = rnd(N * D, 1); c.R = rnd(N * M, 1); c.y = zeros(N * M); c.xa = zeros(N * R);
            double *dx = zeros(N * D), *dxa = zeros(N * R);
            lin_loss(&c);
            op_linear_bwd(dx, 0, dxa, &c.m, c.R, c.x, c.xa, N);
            check(r ? "linear+lora dx" : "linear dx", lin_loss, &c, c.x, N * D, dx);
            if (r) {
                check("linear+lora dA", lin_loss, &c, (double *)c.m.A, r * D, c.m.dA);
                check("linear+lora dB", lin_loss, &c, (double *)c.m.B, M * r, c.m.dB);
            }
        }
    }
    { /* rope */
        rope_ctx c = { rnd(N * H * HD, 1), zeros(N * H * HD), rnd(N * H * HD, 1), cs, sn, H };
        double *d = track(malloc(sizeof(double) * N * H * HD));
        memcpy(d, c.R, sizeof(double) * N * H * HD);
        op_rope_bwd(d, N, H, HD, cs, sn);
        check("rope dx", rope_loss, &c, c.x, N * H * HD, d);
    }
    { /* attention (GQA 4/2, causal) */
        attn_ctx c = { rnd(N * H * HD, 1), rnd(N * K * HD, 1), rnd(N * K * HD, 1), zeros(N * H * HD), zeros(H * N * N), rnd(N * H * HD, 1) };
        double *dq = zeros(N * H * HD), *dk = zeros(N * K * HD), *dv = zeros(N * K * HD), *dS = zeros(N * N);
        attn_loss(&c);
        op_attn_bwd(dq, dk, dv, dS, c.R, c.P, c.q, c.k, c.v, N, H, K, HD);
        check("attention dq", attn_loss, &c, c.q, N * H * HD, dq);
        check("attention dk", attn_loss, &c, c.k, N * K * HD, dk);
        check("attention dv", attn_loss, &c, c.v, N * K * HD, dv);
    }
    { /* swiglu */
        swi_ctx c = { rnd(N * M, 2), rnd(N * M, 1), zeros(N * M), rnd(N * M, 1) };
        double *dg = zeros(N * M), *du = zeros(N * M);
        op_swiglu_bwd(dg, du, c.R, c.g, c.u, N * M);
        check("swiglu dg", swi_loss, &c, c.g, N * M, dg);
        check("swiglu du", swi_loss, &c, c.u, N * M, du);
    }
    int32_t tgt[N] = { 3, 0, -1, 10, 7, 5 };
    { /* cross-entropy (one position without a target) */
        xent_ctx c = { rnd(N * V, 3), tgt };
        double *dl = zeros(N * V);
        int64_t cnt = 0;
        op_xent(dl, c.logits, tgt, N, V, 1, &cnt);
        check("cross-entropy dlogits", xent_loss, &c, c.logits, N * V, dl);
    }
    { /* head: final norm + lm_head + cross-entropy */
        head_ctx c = { { D, V, 1e-5, NULL, NULL }, rnd(N * D, 1), zeros(N * D), zeros(N), zeros(N * V), tgt };
        c.p.norm = rnd(D, 1);
        c.p.E = rnd(V * D, 1);
        double *dx = zeros(N * D);
        int64_t cnt = 0;
        head_loss(&c.p, c.x, tgt, N, 1, dx, c.xn, c.rstd, c.logits, &cnt);
        check("head dx", head_l, &c, c.x, N * D, dx);
    }
    /* a whole block: GQA attention, SwiGLU FFN, LoRA on all 7 projections (different ranks), bias;
     * then with Qwen2's q/k/v biases, then with Qwen3's per-head q/k norms */
    for (int fam = 0; fam < 3; fam++) {
        static const char *const fam_name[3] = { "", "qwen2 ", "qwen3 " };
        blk_ctx c;
        memset(&c, 0, sizeof c);
        blk_params *p = &c.p;
        p->D = D; p->H = H; p->K = K; p->hd = HD; p->m = M; p->eps = 1e-5;
        p->ln1 = rnd(D, 1); p->ln2 = rnd(D, 1); p->bias = rnd(D, 0.3);
        if (fam == 1) { p->qb = rnd(H * HD, 0.5); p->kb = rnd(K * HD, 0.5); p->vb = rnd(K * HD, 0.5); }
        if (fam == 2) { p->qn = rnd(HD, 1); p->kn = rnd(HD, 1); }
        int outs[OP_NLIN] = { H * HD, K * HD, K * HD, D, M, M, D }, ins[OP_NLIN] = { D, D, D, H * HD, D, D, M };
        for (int i = 0; i < OP_NLIN; i++) {
            int r = 1 + i % 3, o = outs[i], in = ins[i];
            p->lin[i] = (lora_lin){ rnd(o * in, 0.5), o, in, r, 0.5 + 0.1 * i, rnd(r * in, 0.4), rnd(o * r, 0.4), zeros(r * in), zeros(o * r) };
        }
        int64_t as[BLK_NACT], ss[BLK_NSCRATCH];
        blk_act_sizes(p, N, as);
        blk_scratch_sizes(p, N, 3, ss);
        real **ap = (real **)&c.a;
        for (int i = 0; i < BLK_NACT; i++) ap[i] = zeros(as[i]);
        blk_scratch s;
        real **sp = (real **)&s;
        for (int i = 0; i < BLK_NSCRATCH; i++) sp[i] = zeros(ss[i]);
        c.x = rnd(N * D, 1); c.y = zeros(N * D); c.R = rnd(N * D, 1); c.cs = cs; c.sn = sn;
        blk_loss(&c);
        double *dx = track(malloc(sizeof(double) * N * D));
        memcpy(dx, c.R, sizeof(double) * N * D);
        blk_backward(p, &c.a, dx, N, cs, sn, &s);
        char w[64];
        snprintf(w, sizeof w, "%sblock dx_in", fam_name[fam]);
        check(w, blk_loss, &c, c.x, N * D, dx);
        static const char *nm[OP_NLIN] = { "q", "k", "v", "o", "gate", "up", "down" };
        for (int i = 0; i < OP_NLIN; i++) {
            lora_lin *m = &p->lin[i];
            snprintf(w, sizeof w, "%sblock %s dA (r=%d)", fam_name[fam], nm[i], m->r);
            check(w, blk_loss, &c, (double *)m->A, (int64_t)m->r * m->in, m->dA);
            snprintf(w, sizeof w, "%sblock %s dB", fam_name[fam], nm[i]);
            check(w, blk_loss, &c, (double *)m->B, (int64_t)m->out * m->r, m->dB);
        }
    }
    for (size_t i = 0; i < nallocs; i++) free(allocs[i]);
    free(allocs);
    printf("%d passed, %d failed\n", npass, nfail);
    return nfail ? 1 : 0;
}
