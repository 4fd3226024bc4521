/* train_block.c — a LLaMA block (with Qwen2's q/k/v biases or Qwen3's q/k norms) and the head
 * composed from the training ops (train_ops.h), forward
 * keeping activations and the backward in reverse order. Compiled for float (the program) and for
 * double (the gradient check). */
#include "cfsp/train/train_ops.h"
#include <string.h>

void blk_act_sizes(const blk_params *p, int n, int64_t *s)
{
    int64_t D = p->D, Q = (int64_t)p->H * p->hd, KV = (int64_t)p->K * p->hd, m = p->m;
    int64_t v[] = { n * D, n, n * D, n * Q, n * KV, n * KV, (int64_t)p->H * n * n, n * Q, n * D, n, n * D, n * m, n * m, n * m };
    for (int i = 0; i < 14; i++) s[i] = v[i];
    for (int i = 0; i < OP_NLIN; i++) s[14 + i] = (int64_t)n * p->lin[i].r;
    int qn = p->qn != NULL;
    s[14 + OP_NLIN] = qn ? n * Q : 0;
    s[15 + OP_NLIN] = qn ? n * KV : 0;
    s[16 + OP_NLIN] = qn ? (int64_t)n * p->H : 0;
    s[17 + OP_NLIN] = qn ? (int64_t)n * p->K : 0;
}

void blk_scratch_sizes(const blk_params *p, int n, int rmax, int64_t *s)
{
    int64_t D = p->D, Q = (int64_t)p->H * p->hd, KV = (int64_t)p->K * p->hd, m = p->m;
    int qn = p->qn != NULL;
    int64_t v[] = { n * D, n * Q, n * KV, n * KV, n * Q, (int64_t)n * n, n * m, n * m, n * m, (int64_t)n * (rmax > 0 ? rmax : 1),
                    qn ? n * Q : 0, qn ? n * KV : 0 };
    for (int i = 0; i < BLK_NSCRATCH; i++) s[i] = v[i];
}

/* x[t, :] += b for t < n, x [n, w] */
static void add_rows(real *x, const real *b, int n, int w)
{
    for (int t = 0; t < n; t++) op_add(x + (size_t)t * w, b, w);
}

void blk_forward(const blk_params *p, blk_act *a, const real *x_in, real *x_out, int n, const real *cos, const real *sin)
{
    int D = p->D;
    int64_t nd = (int64_t)n * D, nm = (int64_t)n * p->m;
    memcpy(a->x0, x_in, sizeof(real) * (size_t)nd);
    op_rmsnorm_fwd(a->xn1, a->rstd1, a->x0, p->ln1, n, D, p->eps);
    int Q = p->H * p->hd, KV = p->K * p->hd;
    real *q = p->qn ? a->qr : a->q, *k = p->qn ? a->kr : a->k;   /* Qwen3: the projections, normed below */
    op_linear_fwd(q, a->xa[OP_Q], &p->lin[OP_Q], a->xn1, n);
    op_linear_fwd(k, a->xa[OP_K], &p->lin[OP_K], a->xn1, n);
    op_linear_fwd(a->v, a->xa[OP_V], &p->lin[OP_V], a->xn1, n);
    if (p->qb) {
        add_rows(q, p->qb, n, Q);
        add_rows(k, p->kb, n, KV);
        add_rows(a->v, p->vb, n, KV);
    }
    if (p->qn) {
        op_rmsnorm_fwd(a->q, a->rq, q, p->qn, n * p->H, p->hd, p->eps);
        op_rmsnorm_fwd(a->k, a->rk, k, p->kn, n * p->K, p->hd, p->eps);
    }
    op_rope_fwd(a->q, n, p->H, p->hd, cos, sin);
    op_rope_fwd(a->k, n, p->K, p->hd, cos, sin);
    op_attn_fwd(a->att, a->P, a->q, a->k, a->v, n, p->H, p->K, p->hd);
    op_linear_fwd(a->x1, a->xa[OP_O], &p->lin[OP_O], a->att, n);
    op_add(a->x1, a->x0, nd);
    op_rmsnorm_fwd(a->xn2, a->rstd2, a->x1, p->ln2, n, D, p->eps);
    op_linear_fwd(a->g, a->xa[OP_GATE], &p->lin[OP_GATE], a->xn2, n);
    op_linear_fwd(a->u, a->xa[OP_UP], &p->lin[OP_UP], a->xn2, n);
    op_swiglu_fwd(a->h, a->g, a->u, nm);
    op_linear_fwd(x_out, a->xa[OP_DOWN], &p->lin[OP_DOWN], a->h, n);
    if (p->bias) for (int t = 0; t < n; t++) op_add(x_out + (size_t)t * D, p->bias, D);
    op_add(x_out, a->x1, nd);
}

void blk_backward(const blk_params *p, const blk_act *a, real *dx, int n, const real *cos, const real *sin, blk_scratch *s)
{
    int D = p->D;
    int64_t nm = (int64_t)n * p->m;
    /* FFN half: dx holds d(x_out) = d(x1) through the residual */
    op_linear_bwd(s->dh, 0, s->dxa, &p->lin[OP_DOWN], dx, a->h, a->xa[OP_DOWN], n);
    op_swiglu_bwd(s->dg, s->du, s->dh, a->g, a->u, nm);
    op_linear_bwd(s->dxn, 0, s->dxa, &p->lin[OP_UP], s->du, a->xn2, a->xa[OP_UP], n);
    op_linear_bwd(s->dxn, 1, s->dxa, &p->lin[OP_GATE], s->dg, a->xn2, a->xa[OP_GATE], n);
    op_rmsnorm_bwd(dx, s->dxn, a->x1, p->ln2, a->rstd2, n, D);
    /* attention half: dx = d(x1) = d(x0) through the residual */
    op_linear_bwd(s->datt, 0, s->dxa, &p->lin[OP_O], dx, a->att, a->xa[OP_O], n);
    op_attn_bwd(s->dq, s->dk, s->dv, s->dS, s->datt, a->P, a->q, a->k, a->v, n, p->H, p->K, p->hd);
    op_rope_bwd(s->dq, n, p->H, p->hd, cos, sin);
    op_rope_bwd(s->dk, n, p->K, p->hd, cos, sin);
    real *dq = s->dq, *dk = s->dk;
    if (p->qn) {                                    /* through the per-head norms (the biases: no gradient) */
        memset(s->dqr, 0, sizeof(real) * (size_t)n * p->H * p->hd);
        memset(s->dkr, 0, sizeof(real) * (size_t)n * p->K * p->hd);
        op_rmsnorm_bwd(s->dqr, s->dq, a->qr, p->qn, a->rq, n * p->H, p->hd);
        op_rmsnorm_bwd(s->dkr, s->dk, a->kr, p->kn, a->rk, n * p->K, p->hd);
        dq = s->dqr;
        dk = s->dkr;
    }
    op_linear_bwd(s->dxn, 0, s->dxa, &p->lin[OP_Q], dq, a->xn1, a->xa[OP_Q], n);
    op_linear_bwd(s->dxn, 1, s->dxa, &p->lin[OP_K], dk, a->xn1, a->xa[OP_K], n);
    op_linear_bwd(s->dxn, 1, s->dxa, &p->lin[OP_V], s->dv, a->xn1, a->xa[OP_V], n);
    op_rmsnorm_bwd(dx, s->dxn, a->x0, p->ln1, a->rstd1, n, D);
}

double head_loss(const head_params *p, const real *x, const int32_t *tgt, int n, real scale, real *dx,
                 real *xn, real *rstd, real *logits, int64_t *count)
{
    lora_lin lm = { .W = p->E, .out = p->V, .in = p->D };
    op_rmsnorm_fwd(xn, rstd, x, p->norm, n, p->D, p->eps);
    op_linear_fwd(logits, NULL, &lm, xn, n);
    double loss = op_xent(dx ? logits : NULL, logits, tgt, n, p->V, scale, count);   /* dlogits in place */
    if (dx) {
        real *dxn = xn;                        /* xn is not needed after this: reuse it for d(xn) */
        /* d(xn) = dlogits E; the rmsnorm backward needs x and rstd only */
        op_linear_bwd(dxn, 0, NULL, &lm, logits, NULL, NULL, n);
        memset(dx, 0, sizeof(real) * (size_t)n * p->D);
        op_rmsnorm_bwd(dx, dxn, x, p->norm, rstd, n, p->D);
    }
    return loss;
}
