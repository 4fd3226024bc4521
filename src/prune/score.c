/* score.c — per-channel importance scores of one block's FFN channels (all local metrics of the
 * reference, the row-normalised extension, and the wanda_sp / flap / mag_sp baselines). */
#include "cfsp/prune/prune.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const local_metric_names[LM_COUNT] = {
    "three_w_one_wa", "three_w_one_a", "one_wa", "one_a", "wanda_base", "mag_base", "three_w_one_wa_rownorm"
};
const char *const prune_method_names[PM_COUNT] = { "cfsp", "wanda_sp", "flap", "mag_sp" };

/* The kernels below read each weight slice once per pass, a piece of TILE elements of a row at
 * a time (converted to fp32, then widened to double: exact), and do the arithmetic of the plain
 * loops "for each row, for each column: v = |x| * w; sum += v (or v / norm)" operation for
 * operation, so every sum adds the same doubles in the same order: the scores are bitwise those of
 * that loop. What changes is the schedule: element-wise steps run two doubles at a time (SSE2,
 * part of x86-64), a sum along a channel's row (gate/up) is kept for GROUP channels side by side
 * (independent serial sums), and the division by a channel's norm happens once per element as
 * before (a product with the reciprocal would round differently). */
#define TILE 512
#define GROUP 8
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#define HAVE_SSE2 1
#endif

/* Two elements of a row as doubles: f32 (f32 = 1) or bf16 (the bf16 bits are the high half of
 * the float's); both widenings are exact. */
#ifdef HAVE_SSE2
static inline __m128d load2(const void *p, int f32)
{
    if (f32) return _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p)));
    int32_t two;
    memcpy(&two, p, 4);
    return _mm_cvtps_pd(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), _mm_cvtsi32_si128(two))));
}
#endif
static inline double load1(const void *p, int i, int f32)
{
    if (f32) return (double)((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return (double)f;
}

/* For i < n, v = |x_i| * (w ? w[i] : ws); with divide, v = norm != 0 ? v / norm : 0 (norm = nv[i]
 * when nv is given, else ns); sq: v = v * v; then dst[i] += v (acc) or dst[i] = v. One fused loop
 * per call site: the flags are constants there. */
static inline __attribute__((always_inline)) void elem(const void *x, int f32, int n, const double *w, double ws, int divide,
                                                       const double *nv, double ns, int sq, int acc, double *dst)
{
    int i = 0;
#ifdef HAVE_SSE2
    const __m128d sign = _mm_set1_pd(-0.0), zero = _mm_setzero_pd(), s = _mm_set1_pd(ws), d = _mm_set1_pd(ns);
    for (; i + 2 <= n; i += 2) {
        __m128d v = _mm_andnot_pd(sign, load2((const char *)x + (size_t)i * (f32 ? 4 : 2), f32));
        v = _mm_mul_pd(v, w ? _mm_loadu_pd(w + i) : s);
        if (divide) {
            __m128d q = nv ? _mm_loadu_pd(nv + i) : d;
            v = _mm_and_pd(_mm_cmpneq_pd(q, zero), _mm_div_pd(v, q));
        }
        if (sq) v = _mm_mul_pd(v, v);
        _mm_storeu_pd(dst + i, acc ? _mm_add_pd(_mm_loadu_pd(dst + i), v) : v);
    }
#endif
    for (; i < n; i++) {
        double v = fabs(load1(x, i, f32)) * (w ? w[i] : ws);
        if (divide) {
            double q = nv ? nv[i] : ns;
            v = q != 0.0 ? v / q : 0.0;
        }
        if (sq) v = v * v;
        dst[i] = acc ? dst[i] + v : v;
    }
}

/* the call sites, each specialised for f32 or bf16 input (f16 is converted to f32 first) */
static void col_term(const void *x, int f32, int n, const double *w, int divide, const double *nv, double ns, double *chan)
{
    if (f32) elem(x, 1, n, w, 1.0, divide, nv, ns, 0, 1, chan);
    else elem(x, 0, n, w, 1.0, divide, nv, ns, 0, 1, chan);
}
static void row_term(const void *x, int f32, int n, const double *w, double ws, int divide, const double *nv, double ns, double *t)
{
    if (f32) elem(x, 1, n, w, ws, divide, nv, ns, 0, 0, t);
    else elem(x, 0, n, w, ws, divide, nv, ns, 0, 0, t);
}
static void col_abs(const void *x, int f32, int n, int sq, double *out)
{
    if (f32) { if (sq) elem(x, 1, n, NULL, 1.0, 0, NULL, 0, 1, 1, out); else elem(x, 1, n, NULL, 1.0, 0, NULL, 0, 0, 1, out); }
    else if (sq) elem(x, 0, n, NULL, 1.0, 0, NULL, 0, 1, 1, out);
    else elem(x, 0, n, NULL, 1.0, 0, NULL, 0, 0, 1, out);
}

/* acc[i] += v[i] */
static void add_to(double *restrict acc, const double *restrict v, int n)
{
    int i = 0;
#ifdef HAVE_SSE2
    for (; i + 2 <= n; i += 2) _mm_storeu_pd(acc + i, _mm_add_pd(_mm_loadu_pd(acc + i), _mm_loadu_pd(v + i)));
#endif
    for (; i < n; i++) acc[i] += v[i];
}

/* s[g] += t[g * TILE + i] for i = 0..n-1 in order, g < G: G independent serial sums */
static void serial_sums(const double *t, int G, int n, double *s)
{
    if (G == GROUP) {
        double s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], s4 = s[4], s5 = s[5], s6 = s[6], s7 = s[7];
        for (int i = 0; i < n; i++) {
            s0 += t[i]; s1 += t[TILE + i]; s2 += t[2 * TILE + i]; s3 += t[3 * TILE + i];
            s4 += t[4 * TILE + i]; s5 += t[5 * TILE + i]; s6 += t[6 * TILE + i]; s7 += t[7 * TILE + i];
        }
        s[0] = s0; s[1] = s1; s[2] = s2; s[3] = s3; s[4] = s4; s[5] = s5; s[6] = s6; s[7] = s7;
        return;
    }
    for (int g = 0; g < G; g++) {
        double a = s[g];
        for (int i = 0; i < n; i++) a += t[(size_t)g * TILE + i];
        s[g] = a;
    }
}

typedef struct { float f[TILE]; double t[GROUP * TILE]; } tiles;

/* n elements of row r of m from column c0: bf16 and f32 in place (*f32 says which), f16
 * converted to fp32 into b->f */
static const void *piece(const wmat *m, int64_t r, int64_t c0, int n, tiles *b, int *f32)
{
    size_t es = dtype_size(m->dtype);
    const char *p = (const char *)m->data + ((size_t)r * (size_t)m->ld + (size_t)c0) * es;
    *f32 = m->dtype != DT_BF16;
    if (m->dtype != DT_F16) return p;
    convert_to_f32(m->dtype, p, b->f, (size_t)n);
    return b->f;
}

/* One pass over X = |mat| seen as D x k, each channel j's entries scaled by w[j] (or 1): the
 * down_proj slice [D, k] directly, gate/up slices [k, D] transposed (channels_are_rows). Per
 * entry v, in the mat's row-major order: chan[j] += v, or v / colnorm[j], or v / rownorm[i]
 * (norm 0: 0); row[i] += v. Any of chan, row may be NULL. */
static void pass(const wmat *mat, int channels_are_rows, const double *w, const double *colnorm, const double *rownorm,
                 double *chan, double *row, tiles *b)
{
    int64_t R = mat->rows, C = mat->cols;
    int divide = colnorm || rownorm, f32;
    if (!channels_are_rows) {                     /* rows i, channels along the row */
        for (int64_t i = 0; i < R; i++)
            for (int64_t c0 = 0; c0 < C; c0 += TILE) {
                int n = (int)(C - c0 < TILE ? C - c0 : TILE);
                const void *x = piece(mat, i, c0, n, b, &f32);
                if (row) {
                    row_term(x, f32, n, w ? w + c0 : NULL, 1.0, 0, NULL, 0, b->t);
                    serial_sums(b->t, 1, n, row + i);
                }
                if (chan) col_term(x, f32, n, w ? w + c0 : NULL, divide, colnorm ? colnorm + c0 : NULL, rownorm ? rownorm[i] : 0, chan + c0);
            }
        return;
    }
    for (int64_t j0 = 0; j0 < R; j0 += GROUP) {  /* GROUP channel rows side by side */
        int G = (int)(R - j0 < GROUP ? R - j0 : GROUP);
        for (int64_t c0 = 0; c0 < C; c0 += TILE) {
            int n = (int)(C - c0 < TILE ? C - c0 : TILE);
            for (int g = 0; g < G; g++) {
                double *t = b->t + (size_t)g * TILE, ws = w ? w[j0 + g] : 1.0;
                const void *x = piece(mat, j0 + g, c0, n, b, &f32);
                if (row) {
                    row_term(x, f32, n, NULL, ws, 0, NULL, 0, t);
                    add_to(row + c0, t, n);
                }
                if (chan) row_term(x, f32, n, NULL, ws, divide, rownorm ? rownorm + c0 : NULL, colnorm ? colnorm[j0 + g] : 0, t);
            }
            if (chan) serial_sums(b->t, G, n, chan + j0);
        }
    }
}

/* column sums of |down| (sq = 0) or of down^2 (sq = 1) over the D rows */
static void down_colsums(const wmat *down, int k, int sq, double *out, tiles *b)
{
    int f32;
    memset(out, 0, sizeof(double) * (size_t)k);
    for (int64_t r = 0; r < down->rows; r++)
        for (int c0 = 0; c0 < k; c0 += TILE) {
            int n = k - c0 < TILE ? k - c0 : TILE;
            const void *x = piece(down, r, c0, n, b, &f32);
            col_abs(x, f32, n, sq, out + c0);
        }
}

static double *activation_norms(const unit_weights *u, const block_stats *st, int nsamples)
{
    double *A = xmalloc(sizeof(double) * (size_t)(u->k ? u->k : 1));
    for (int j = 0; j < u->k; j++) A[j] = sqrt(st->sum_sq[u->c0 + j] / nsamples);
    return A;
}

void rowsum_slice(const unit_weights *u, const block_stats *st, int nsamples, double bexp, double *out)
{
    int k = u->k, D = (int)u->down.rows;
    double *A = activation_norms(u, st, nsamples);
    tiles *b = xmalloc(sizeof *b);
    for (int j = 0; j < k; j++) A[j] = pow(A[j], bexp);
    memset(out, 0, sizeof(double) * 3 * (size_t)D);
    pass(&u->down, 0, A, NULL, NULL, NULL, out, b);
    pass(&u->up, 1, NULL, NULL, NULL, NULL, out + D, b);
    pass(&u->gate, 1, NULL, NULL, NULL, NULL, out + 2 * (size_t)D, b);
    free(b);
    free(A);
}

void score_slice(const unit_weights *u, const block_stats *st, int nsamples, prune_method pm,
                 local_metric lm, double bexp, double cexp, const double *rowsums, double *score)
{
    int k = u->k, D = (int)u->down.rows;
    double *A = activation_norms(u, st, nsamples);
    tiles *b = xmalloc(sizeof *b);
    if (pm == PM_WANDA_SP) lm = LM_WANDA_BASE;
    if (pm == PM_MAG_SP) lm = LM_MAG_BASE;
    if (pm == PM_FLAP) {
        down_colsums(&u->down, k, 1, score, b);
        double n = (double)st->ntok;
        for (int j = 0; j < k; j++) {
            double mean = st->sum[u->c0 + j] / n, var = st->sum_sq[u->c0 + j] / n - mean * mean;
            score[j] *= var > 0 ? var : 0;
        }
    } else if (lm == LM_WANDA_BASE) {
        down_colsums(&u->down, k, 0, score, b);
        for (int j = 0; j < k; j++) score[j] = score[j] / D * A[j];
    } else if (lm == LM_MAG_BASE) {
        down_colsums(&u->down, k, 1, score, b);
        for (int j = 0; j < k; j++) score[j] = sqrt(score[j]);
    } else {
        /* M = (sum of normalised terms) * A^c; score_j = mean over the D rows of column j */
        int rownorm = lm == LM_THREE_W_ONE_WA_ROWNORM;
        int weighted = lm == LM_ONE_WA || lm == LM_THREE_W_ONE_WA || rownorm;
        int three = lm == LM_THREE_W_ONE_A || lm == LM_THREE_W_ONE_WA || rownorm;
        double cpow = lm == LM_ONE_A ? 0.5 : cexp;
        double *wb = NULL, *acc = xcalloc((size_t)(k ? k : 1), sizeof(double)), *cs = xmalloc(sizeof(double) * (size_t)(k ? k : 1));
        if (weighted) {
            wb = xmalloc(sizeof(double) * (size_t)(k ? k : 1));
            for (int j = 0; j < k; j++) wb[j] = pow(A[j], bexp);
        }
        const wmat *mats[3] = { &u->down, &u->up, &u->gate };
        for (int t = 0; t < (three ? 3 : 1); t++) {
            const double *w = t == 0 ? wb : NULL;
            if (rownorm) pass(mats[t], t > 0, w, NULL, rowsums + (size_t)t * D, acc, NULL, b);
            else {
                memset(cs, 0, sizeof(double) * (size_t)k);
                pass(mats[t], t > 0, w, NULL, NULL, cs, NULL, b);        /* the term's channel sums */
                pass(mats[t], t > 0, w, cs, NULL, acc, NULL, b);         /* acc_j += sum_i X_ij / cs_j */
            }
        }
        for (int j = 0; j < k; j++) score[j] = acc[j] * pow(A[j], cpow) / D;
        free(wb);
        free(acc);
        free(cs);
    }
    free(b);
    free(A);
}
