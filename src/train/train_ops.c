/* train_ops.c — forward and backward of every training op (see train_ops.h): RMSNorm, linear with
 * LoRA, rotary embedding, causal GQA attention, SwiGLU, cross-entropy. Compiled with real = float
 * for the program and real = double (-DTRAIN_DOUBLE) for the gradient check. */
#include "cfsp/train/train_ops.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef TRAIN_DOUBLE
#define GEMM cblas_dgemm
#define RSQRT(x) (1.0 / sqrt(x))
#define EXP exp
#else
#define GEMM cblas_sgemm
#define RSQRT(x) (1.0f / sqrtf(x))
#define EXP expf
#endif

void op_add(real *y, const real *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void op_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int n, int D, real eps)
{
    for (int t = 0; t < n; t++) {
        const real *xt = x + (size_t)t * D;
        real *ot = out + (size_t)t * D;
        real ss = 0;
        for (int i = 0; i < D; i++) ss += xt[i] * xt[i];
        real r = RSQRT(ss / (real)D + eps);
        rstd[t] = r;
        for (int i = 0; i < D; i++) ot[i] = w[i] * (xt[i] * r);
    }
}

/* y_i = w_i x_i r, r = (mean x^2 + eps)^-1/2:  dx_i = r w_i dy_i - r^3 x_i sum_j(w_j dy_j x_j) / D */
void op_rmsnorm_bwd(real *dx, const real *dout, const real *x, const real *w, const real *rstd, int n, int D)
{
    for (int t = 0; t < n; t++) {
        const real *xt = x + (size_t)t * D, *dt = dout + (size_t)t * D;
        real *gt = dx + (size_t)t * D;
        real r = rstd[t], dot = 0;
        for (int i = 0; i < D; i++) dot += w[i] * dt[i] * xt[i];
        real c = r * r * r * dot / (real)D;
        for (int i = 0; i < D; i++) gt[i] += r * w[i] * dt[i] - c * xt[i];
    }
}

#ifndef TRAIN_DOUBLE
#include "cfsp/model/matmul.h"
#include "cfsp/model/weights.h"
/* dx[n, in] = beta dx + dy[n, out] W[out, in], W stored: fp32 mode on an f32 weight one sgemm, else
 * rows of W a panel at a time (16-bit converted to fp32) through mm_gemm (fp32: sgemm; bf16: both
 * operands rounded to bf16, oneDNN) */
static void stored_dyW(const lora_lin *m, const float *dy, int n, float beta, float *dx)
{
    if (m->wdt == DT_F32 && !mm_bf16()) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m->in, m->out, 1.0f, dy, m->out, (const float *)m->Wst, m->in, beta, dx, m->in);
        return;
    }
    int rows = (int)(m->panel_floats / (size_t)m->in);
    size_t es = dtype_size((dtype_t)m->wdt);
    for (int o0 = 0; o0 < m->out; o0 += rows) {
        int k = m->out - o0 < rows ? m->out - o0 : rows;
        const char *src = (const char *)m->Wst + (size_t)o0 * (size_t)m->in * es;
        const float *w = (const float *)src;
        if (m->wdt != DT_F32) { convert_to_f32((dtype_t)m->wdt, src, m->panel, (size_t)k * (size_t)m->in); w = m->panel; }
        mm_gemm(0, n, m->in, k, 1.0f, dy + o0, m->out, w, m->in, o0 ? 1.0f : beta, dx, m->in, (const mm_scratch *)m->mms);
    }
}
#endif

void op_linear_fwd(real *y, real *xa, const lora_lin *m, const real *x, int n)
{
    if (n == 0 || m->out == 0) return;
#ifndef TRAIN_DOUBLE
    if (m->Wst)                  /* the stored weight through the forward pass's product (matmul.h) */
        mm_linear(n, m->out, m->in, x, (dtype_t)m->wdt, m->Wst, m->in, 0.0f, y, m->out, m->panel, m->panel_floats, (const mm_scratch *)m->mms);
    else
#endif
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, m->out, m->in, 1, x, m->in, m->W, m->in, 0, y, m->out);
    if (m->r > 0) {
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, m->r, m->in, 1, x, m->in, m->A, m->in, 0, xa, m->r);
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, m->out, m->r, m->s, xa, m->r, m->B, m->r, 1, y, m->out);
    }
}

void op_linear_bwd(real *dx, real beta, real *dxa, const lora_lin *m, const real *dy, const real *x, const real *xa, int n)
{
    if (n == 0) return;
    if (m->r > 0) {
        /* dB += s dy^T xa;  dxa = s dy B;  dA += dxa^T x */
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, m->out, m->r, n, m->s, dy, m->out, xa, m->r, 1, m->dB, m->r);
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m->r, m->out, m->s, dy, m->out, m->B, m->r, 0, dxa, m->r);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, m->r, m->in, n, 1, dxa, m->r, x, m->in, 1, m->dA, m->in);
    }
    if (!dx) return;
#ifndef TRAIN_DOUBLE
    if (m->Wst) stored_dyW(m, dy, n, beta, dx);
    else
#endif
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m->in, m->out, 1, dy, m->out, m->W, m->in, beta, dx, m->in);
    if (m->r > 0)
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m->in, m->r, 1, dxa, m->r, m->A, m->in, 1, dx, m->in);
}

void op_rope_fwd(real *x, int n, int nheads, int hd, const real *cos, const real *sin)
{
    int half = hd / 2;
    for (int t = 0; t < n; t++) {
        const real *cs = cos + (size_t)t * half, *sn = sin + (size_t)t * half;
        for (int h = 0; h < nheads; h++) {
            real *v = x + ((size_t)t * nheads + h) * hd;
            for (int i = 0; i < half; i++) {
                real a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void op_rope_bwd(real *dx, int n, int nheads, int hd, const real *cos, const real *sin)
{
    int half = hd / 2;
    for (int t = 0; t < n; t++) {
        const real *cs = cos + (size_t)t * half, *sn = sin + (size_t)t * half;
        for (int h = 0; h < nheads; h++) {
            real *v = dx + ((size_t)t * nheads + h) * hd;
            for (int i = 0; i < half; i++) {
                real da = v[i], db = v[i + half];
                v[i] = da * cs[i] + db * sn[i];
                v[i + half] = db * cs[i] - da * sn[i];
            }
        }
    }
}

void op_attn_fwd(real *out, real *P, const real *q, const real *k, const real *v, int n, int H, int K, int hd)
{
    int group = H / K;
    real scale = RSQRT((real)hd);
    for (int h = 0; h < H; h++) {
        int g = h / group;
        real *S = P + (size_t)h * n * n;
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, scale, q + (size_t)h * hd, H * hd, k + (size_t)g * hd, K * hd, 0, S, n);
        for (int t = 0; t < n; t++) {
            real *row = S + (size_t)t * n;
            real mx = row[0];
            for (int j = 1; j <= t; j++) if (row[j] > mx) mx = row[j];
            real sum = 0;
            for (int j = 0; j <= t; j++) { row[j] = EXP(row[j] - mx); sum += row[j]; }
            real inv = 1 / sum;
            for (int j = 0; j <= t; j++) row[j] *= inv;
            for (int j = t + 1; j < n; j++) row[j] = 0;
        }
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, 1, S, n, v + (size_t)g * hd, K * hd, 0, out + (size_t)h * hd, H * hd);
    }
}

/* per head: dP = dout v^T, dv += P^T dout, dS = P o (dP - rowsum(P o dP)), dq = c dS k, dk += c dS^T q */
void op_attn_bwd(real *dq, real *dk, real *dv, real *dS, const real *dout, const real *P, const real *q, const real *k,
                 const real *v, int n, int H, int K, int hd)
{
    int group = H / K;
    real scale = RSQRT((real)hd);
    memset(dk, 0, sizeof(real) * (size_t)n * K * hd);
    memset(dv, 0, sizeof(real) * (size_t)n * K * hd);
    for (int h = 0; h < H; h++) {
        int g = h / group;
        const real *Ph = P + (size_t)h * n * n;
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, 1, dout + (size_t)h * hd, H * hd, v + (size_t)g * hd, K * hd, 0, dS, n);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, 1, Ph, n, dout + (size_t)h * hd, H * hd, 1, dv + (size_t)g * hd, K * hd);
        for (int t = 0; t < n; t++) {
            real *d = dS + (size_t)t * n;
            const real *p = Ph + (size_t)t * n;
            real dot = 0;
            for (int j = 0; j <= t; j++) dot += p[j] * d[j];
            for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
            for (int j = t + 1; j < n; j++) d[j] = 0;
        }
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, scale, dS, n, k + (size_t)g * hd, K * hd, 0, dq + (size_t)h * hd, H * hd);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, scale, dS, n, q + (size_t)h * hd, H * hd, 1, dk + (size_t)g * hd, K * hd);
    }
}

void op_swiglu_fwd(real *h, const real *g, const real *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1 + EXP(-g[i])) * u[i];
}

/* silu'(g) = sig(g) (1 + g (1 - sig(g))) */
void op_swiglu_bwd(real *dg, real *du, const real *dh, const real *g, const real *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        real sg = 1 / (1 + EXP(-g[i]));
        du[i] = dh[i] * g[i] * sg;
        dg[i] = dh[i] * u[i] * sg * (1 + g[i] * (1 - sg));
    }
}

double op_xent(real *dlogits, const real *logits, const int32_t *tgt, int n, int V, real scale, int64_t *count)
{
    double loss = 0;
    for (int t = 0; t < n; t++) {
        const real *row = logits + (size_t)t * V;
        real *d = dlogits ? dlogits + (size_t)t * V : NULL;
        if (tgt[t] < 0) {
            if (d) memset(d, 0, sizeof(real) * (size_t)V);
            continue;
        }
        real mx = row[0];
        for (int j = 1; j < V; j++) if (row[j] > mx) mx = row[j];
        double s = 0;
        for (int j = 0; j < V; j++) s += exp((double)row[j] - mx);
        loss += (double)mx + log(s) - (double)row[tgt[t]];
        (*count)++;
        if (d) {
            double inv = 1.0 / s;
            for (int j = 0; j < V; j++) d[j] = (real)(scale * (exp((double)row[j] - mx) * inv));
            d[tgt[t]] -= scale;
        }
    }
    return loss;
}
