/* forward.c — LLaMA layer ops: embedding, RMSNorm, linear, RoPE (HF rotate_half, optional llama3
 * or yarn frequency scaling), grouped-query causal attention (with Qwen2's q/k/v biases and Qwen3's per-head
 * q/k RMSNorm), SwiGLU, block, head; fp32 but for the
 * matrix products, which the matmul backend does (matmul.c: fp32 sgemm or bf16 oneDNN). */
#include "cfsp/model/forward.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the fp32 conversion panel: 64 MB (rather than 16) halves-to-quarters the number of sgemm calls per
 * weight, each of which repacks the activations (sgemm_incopy): -2.2% calibration time on the
 * 70B-shape slice (41.8 -> 40.9 s, 1 x 512, -n 1), for 48 MB more per rank */
#define SCRATCH_BYTES (64u << 20)
#define HEAD_FLOATS (8u << 20)

static void rope_tables(fwd_ws *ws, const model_config *c)
{
    int half = c->head_dim / 2;
    double *inv = xmalloc(sizeof(double) * (size_t)half);
    for (int i = 0; i < half; i++) {
        inv[i] = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_llama3) {   /* transformers' _compute_llama3_parameters */
            double low_wl = c->rope_orig_max_pos / c->rope_low_freq;
            double high_wl = c->rope_orig_max_pos / c->rope_high_freq;
            double wl = 2.0 * M_PI / inv[i];
            double f = wl > low_wl ? inv[i] / c->rope_factor : inv[i];
            if (!(wl < high_wl) && !(wl > low_wl)) {
                double s = (c->rope_orig_max_pos / wl - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
                f = (1.0 - s) * f / c->rope_factor + s * f;
            }
            inv[i] = f;
        }
    }
    double mscale = 1.0;
    if (c->rope_yarn) {   /* transformers' _compute_yarn_parameters: interpolation blended in by a ramp over the dims */
        double dim = c->head_dim, base = c->rope_theta, om = c->yarn_orig_max_pos;
        double lo = dim * log(om / (c->yarn_beta_fast * 2.0 * M_PI)) / (2.0 * log(base));
        double hi = dim * log(om / (c->yarn_beta_slow * 2.0 * M_PI)) / (2.0 * log(base));
        if (c->yarn_truncate) { lo = floor(lo); hi = ceil(hi); }
        if (lo < 0) lo = 0;
        if (hi > dim - 1) hi = dim - 1;
        if (lo == hi) hi += 0.001;
        for (int i = 0; i < half; i++) {
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra = 1.0 - ramp, pos = pow(base, (2.0 * i) / dim);
            inv[i] = 1.0 / (c->yarn_factor * pos) * (1.0 - extra) + 1.0 / pos * extra;
        }
        mscale = c->yarn_attn_factor;     /* multiplies cos and sin */
    }
    for (int p = 0; p < ws->ctx; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)p * inv[i];
            ws->rope_cos[(size_t)p * half + i] = (float)(cos(a) * mscale);
            ws->rope_sin[(size_t)p * half + i] = (float)(sin(a) * mscale);
        }
    free(inv);
}

/* the bf16 mode's operand A: the widest product input of a chunk (hidden, q heads, FFN, or the
 * attention probabilities over ctx positions) */
static size_t operand_a_floats(const model_config *c, int ctx, int chunk, int m)
{
    size_t k = (size_t)c->hidden, q = (size_t)c->n_heads * c->head_dim;
    if (q > k) k = q;
    if ((size_t)m > k) k = (size_t)m;
    if ((size_t)ctx > k) k = (size_t)ctx;
    return (size_t)chunk * k;
}

void fwd_ws_init(fwd_ws *ws, const model_config *c, int ctx, int chunk, int need_head)
{
    fwd_ws_init_width(ws, c, ctx, chunk, need_head, 0);
}

void fwd_ws_init_width(fwd_ws *ws, const model_config *c, int ctx, int chunk, int need_head, int ffn_width)
{
    memset(ws, 0, sizeof *ws);
    ws->D = c->hidden; ws->H = c->n_heads; ws->K = c->n_kv_heads; ws->hd = c->head_dim;
    ws->ctx = ctx; ws->chunk = chunk; ws->V = c->vocab;
    for (int l = 0; l < c->n_layers; l++) if (c->ffn[l] > ws->m_max) ws->m_max = c->ffn[l];
    if (ffn_width > 0 && ffn_width < ws->m_max) ws->m_max = ffn_width;
    size_t n = (size_t)chunk, D = (size_t)ws->D, Q = (size_t)ws->H * ws->hd;
    ws->xn = xmalloc(sizeof(float) * n * D);
    ws->hin = xmalloc(sizeof(float) * n * D);
    ws->tmp = xmalloc(sizeof(float) * n * D);
    ws->q = xmalloc(sizeof(float) * n * Q);
    ws->att = xmalloc(sizeof(float) * n * Q);
    ws->scores = xmalloc(sizeof(float) * n * (size_t)ctx);
    ws->g = xmalloc(sizeof(float) * n * (size_t)ws->m_max);
    ws->u = xmalloc(sizeof(float) * n * (size_t)ws->m_max);
    ws->rope_cos = xmalloc(sizeof(float) * (size_t)ctx * (size_t)(ws->hd / 2));
    ws->rope_sin = xmalloc(sizeof(float) * (size_t)ctx * (size_t)(ws->hd / 2));
    ws->scratch_floats = SCRATCH_BYTES / sizeof(float);
    ws->scratch = xmalloc(SCRATCH_BYTES);
    if (mm_bf16()) {
        ws->mm.a_floats = operand_a_floats(c, ctx, chunk, ws->m_max);
        ws->mm.b_floats = (size_t)ctx * (size_t)ws->hd;
        ws->mm.c_floats = (size_t)chunk * (size_t)ws->hd;     /* a head's attention output [n, hd] */
        ws->mm.a = xmalloc(sizeof(float) * ws->mm.a_floats);
        ws->mm.b = xmalloc(sizeof(float) * ws->mm.b_floats);
        ws->mm.c = xmalloc(sizeof(float) * ws->mm.c_floats);
    }
    if (need_head) {
        ws->head_rows = (int)(HEAD_FLOATS / (size_t)ws->V);
        if (ws->head_rows < 1) ws->head_rows = 1;
        if (ws->head_rows > chunk) ws->head_rows = chunk;
        ws->logits = xmalloc(sizeof(float) * (size_t)ws->head_rows * (size_t)ws->V);
    }
    rope_tables(ws, c);
}

void fwd_ws_free(fwd_ws *ws)
{
    float *p[] = { ws->xn, ws->hin, ws->tmp, ws->q, ws->att, ws->scores, ws->g, ws->u,
                   ws->rope_cos, ws->rope_sin, ws->scratch, ws->logits, ws->mm.a, ws->mm.b, ws->mm.c };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    memset(ws, 0, sizeof *ws);
}

fwd_ws_size fwd_ws_bytes(const model_config *c, int ctx, int chunk, int need_head, int ffn_width)
{
    size_t m = 0, n = (size_t)chunk, D = (size_t)c->hidden, Q = (size_t)c->n_heads * c->head_dim, V = (size_t)c->vocab;
    for (int l = 0; l < c->n_layers; l++) if ((size_t)c->ffn[l] > m) m = (size_t)c->ffn[l];
    if (ffn_width > 0 && (size_t)ffn_width < m) m = (size_t)ffn_width;
    fwd_ws_size s = { SCRATCH_BYTES, sizeof(float) * n * (3 * D + 2 * Q + (size_t)ctx + 2 * m),
                      sizeof(float) * 2 * (size_t)ctx * (size_t)(c->head_dim / 2), 0, 0 };
    if (mm_bf16())
        s.operands = sizeof(float) * (operand_a_floats(c, ctx, chunk, (int)m) + (size_t)ctx * (size_t)c->head_dim +
                                      (size_t)chunk * (size_t)c->head_dim);
    if (need_head) {                   /* head_rows as fwd_ws_init_width sets it */
        size_t rows = HEAD_FLOATS / V;
        rows = rows < 1 ? 1 : rows > n ? n : rows;
        s.logits = sizeof(float) * rows * V;
    }
    return s;
}

void embed_tokens(const wmat *emb, const uint32_t *ids, int n, float *x)
{
    for (int t = 0; t < n; t++) wmat_row_f32(emb, ids[t], x + (size_t)t * emb->cols);
}

void rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * D;
        float *ot = out + (size_t)t * D;
        float ss = 0.0f;
        for (int i = 0; i < D; i++) ss += xt[i] * xt[i];
        float r = 1.0f / sqrtf(ss / (float)D + eps);
        for (int i = 0; i < D; i++) ot[i] = w[i] * (xt[i] * r);
    }
}

/* y[n, rows] = x[n, cols] W^T + beta * y, through the matmul backend (matmul.c): in fp32, stored
 * bf16/f16 weights are converted a panel of rows at a time into the scratch buffer (SCRATCH_BYTES,
 * 64 MB), so no fp32 copy of a weight ever exists; in bf16 the stored bf16 weights are used in place. */
void linear(float *y, const float *x, int n, const wmat *W, float beta, fwd_ws *ws)
{
    mm_linear(n, (int)W->rows, (int)W->cols, x, W->dtype, W->data, W->ld, beta, y, (int)W->rows, ws->scratch,
              ws->scratch_floats, &ws->mm);
}

static void rope_apply(float *x, int n, int nheads, int hd, int pos0, const fwd_ws *ws)
{
    int half = hd / 2;
    for (int t = 0; t < n; t++) {
        const float *cs = ws->rope_cos + (size_t)(pos0 + t) * half, *sn = ws->rope_sin + (size_t)(pos0 + t) * half;
        for (int h = 0; h < nheads; h++) {
            float *v = x + ((size_t)t * nheads + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void attention(float *out, const float *q, const float *kc, const float *vc, int n, int pos0, fwd_ws *ws)
{
    int H = ws->H, K = ws->K, hd = ws->hd, ctx = pos0 + n, group = H / K;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < H; h++) {
        int kvh = h / group;
        float *S = ws->scores;
        mm_gemm(1, n, ctx, hd, scale, q + (size_t)h * hd, H * hd, kc + (size_t)kvh * hd, K * hd, 0.0f, S, ctx, &ws->mm);
        for (int t = 0; t < n; t++) {
            float *row = S + (size_t)t * ctx;
            int last = pos0 + t;                 /* causal: attend to positions 0..last */
            float mx = row[0];
            for (int j = 1; j <= last; j++) if (row[j] > mx) mx = row[j];
            float sum = 0.0f;
            for (int j = 0; j <= last; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
            float inv = 1.0f / sum;
            for (int j = 0; j <= last; j++) row[j] *= inv;
            for (int j = last + 1; j < ctx; j++) row[j] = 0.0f;
        }
        mm_gemm(0, n, hd, ctx, 1.0f, S, ctx, vc + (size_t)kvh * hd, K * hd, 0.0f, out + (size_t)h * hd, H * hd, &ws->mm);
    }
}

void swiglu(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void add_inplace(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* x[t, :] += b for t < n, x [n, w] */
static void add_rows(float *x, const float *b, int n, int w)
{
    for (int t = 0; t < n; t++) add_inplace(x + (size_t)t * w, b, (size_t)w);
}

void attention_unit(const unit_weights *u, float *x, int n, int pos0, float *kc, float *vc,
                    const model_config *c, fwd_ws *ws)
{
    int D = c->hidden, KV = c->n_kv_heads * c->head_dim;
    rmsnorm(ws->xn, x, u->ln, n, D, (float)c->eps);
    float *k = kc + (size_t)pos0 * KV, *v = vc + (size_t)pos0 * KV;
    linear(ws->q, ws->xn, n, &u->q, 0.0f, ws);
    linear(k, ws->xn, n, &u->k_proj, 0.0f, ws);
    linear(v, ws->xn, n, &u->v, 0.0f, ws);
    if (u->qb) {                                  /* Qwen2: q/k/v biases */
        add_rows(ws->q, u->qb, n, c->n_heads * c->head_dim);
        add_rows(k, u->kb, n, KV);
        add_rows(v, u->vb, n, KV);
    }
    if (u->qn) {                                  /* Qwen3: RMSNorm of every head, before RoPE */
        rmsnorm(ws->q, ws->q, u->qn, n * c->n_heads, c->head_dim, (float)c->eps);
        rmsnorm(k, k, u->kn, n * c->n_kv_heads, c->head_dim, (float)c->eps);
    }
    rope_apply(ws->q, n, c->n_heads, c->head_dim, pos0, ws);
    rope_apply(k, n, c->n_kv_heads, c->head_dim, pos0, ws);
    attention(ws->att, ws->q, kc, vc, n, pos0, ws);
    linear(ws->tmp, ws->att, n, &u->o, 0.0f, ws);
    add_inplace(x, ws->tmp, (size_t)n * D);
}

void ffn_unit(const unit_weights *u, float *x, float *acc, const float *hin, int n,
              const fwd_hook *hook, const model_config *c, fwd_ws *ws)
{
    int D = c->hidden, k = u->k;
    size_t nd = (size_t)n * D;
    if (k > 0) {
        rmsnorm(ws->xn, x, u->ln, n, D, (float)c->eps);
        linear(ws->g, ws->xn, n, &u->gate, 0.0f, ws);
        linear(ws->u, ws->xn, n, &u->up, 0.0f, ws);
        swiglu(ws->g, ws->u, (size_t)n * k);
        if (hook) hook->channels(hook->ctx, u->layer, ws->g, n, k, u->c0);
        linear(acc, ws->g, n, &u->down, u->slice == 0 ? 0.0f : 1.0f, ws);
    } else if (u->slice == 0) {
        memset(acc, 0, sizeof(float) * nd);
    }
    if (u->bias)
        for (int t = 0; t < n; t++) add_inplace(acc + (size_t)t * D, u->bias, (size_t)D);
    if (u->slice == u->nslices - 1) {
        add_inplace(x, acc, nd);
        if (hook) hook->block(hook->ctx, u->layer, hin, x, n, D);
    }
}

void head_nll(const rank_weights *w, const float *x, int n, const int32_t *targets, double *nll,
              int64_t *count, float *logits_out, eval_ref *ref, fwd_ws *ws)
{
    const model_config *c = w->cfg;
    int D = c->hidden, V = c->vocab;
    for (int r0 = 0; r0 < n; r0 += ws->head_rows) {
        int nr = n - r0 < ws->head_rows ? n - r0 : ws->head_rows;
        rmsnorm(ws->xn, x + (size_t)r0 * D, w->final_norm, nr, D, (float)c->eps);
        linear(ws->logits, ws->xn, nr, &w->lm_head, 0.0f, ws);
        if (logits_out) memcpy(logits_out + (size_t)r0 * V, ws->logits, sizeof(float) * (size_t)nr * V);
        for (int t = 0; t < nr; t++) {
            int32_t tgt = targets[r0 + t];
            if (tgt < 0) continue;
            const float *row = ws->logits + (size_t)t * V;
            float mx = row[0];
            for (int j = 1; j < V; j++) if (row[j] > mx) mx = row[j];
            double s = 0.0;
            for (int j = 0; j < V; j++) s += exp((double)row[j] - mx);
            double lse = (double)mx + log(s);
            *nll += lse - (double)row[tgt];
            (*count)++;
            if (ref) eval_ref_row(ref, row, lse);
        }
    }
}
