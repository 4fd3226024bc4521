/* alloc.c — the root's budget allocation (CFSP sigmoid rule, global thresholds of the baselines)
 * and per-block channel selection (reference threshold rule, or exact top-k). */
#include "cfsp/prune/prune.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void alloc_keep_fraction(const double *imp, int L, double ratio, double a, double temp_scale, double *keep)
{
    double mid = 0;
    for (int l = 0; l < L; l++) mid += imp[l];
    mid /= L;
    double *s = xmalloc(sizeof(double) * (size_t)L), avg = 0, mx = -INFINITY;
    for (int l = 0; l < L; l++) {
        double x = (imp[l] - mid) / 1e4 * temp_scale;
        s[l] = 1.0 / (1.0 + exp(-a * x));
        avg += s[l];
        if (s[l] > mx) mx = s[l];
    }
    avg /= L;
    if (mx / avg * (1.0 - ratio) >= 1.0) {          /* some block would keep >= 100%: squeeze */
        double k = avg * (1.0 / (1.0 - ratio) - 1.0) / (mx - avg) / 1.05;
        double na = 0;
        for (int l = 0; l < L; l++) { s[l] = avg + (s[l] - avg) * k; na += s[l]; }
        avg = na / L;
    }
    for (int l = 0; l < L; l++) keep[l] = s[l] / avg * (1.0 - ratio);
    free(s);
}

typedef struct { double v; int64_t i; } scored;

static int by_score_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void alloc_global_threshold(const double *scores, const int *m, int L, double ratio, int *counts)
{
    int64_t C = 0;
    for (int l = 0; l < L; l++) C += m[l];
    scored *all = xmalloc(sizeof(scored) * (size_t)C);
    int64_t off = 0;
    for (int l = 0; l < L; l++) {
        double mean = 0, var = 0;
        for (int j = 0; j < m[l]; j++) mean += scores[off + j];
        mean /= m[l];
        for (int j = 0; j < m[l]; j++) var += (scores[off + j] - mean) * (scores[off + j] - mean);
        double sd = sqrt(var / m[l]);
        for (int j = 0; j < m[l]; j++) {
            all[off + j].v = sd > 0 ? (scores[off + j] - mean) / sd : 0.0;
            all[off + j].i = off + j;
        }
        off += m[l];
    }
    int64_t keep = C - (int64_t)floor(ratio * (double)C + 0.5);
    qsort(all, (size_t)C, sizeof(scored), by_score_desc);
    memset(counts, 0, sizeof(int) * (size_t)L);
    for (int64_t r = 0; r < keep; r++) {
        int64_t g = all[r].i, acc = 0;
        int l = 0;
        while (g >= acc + m[l]) acc += m[l++];
        counts[l]++;
    }
    for (int l = 0; l < L; l++) if (counts[l] < 1) counts[l] = 1;   /* a block keeps at least one channel */
    free(all);
}

int select_topk(const double *score, int m, int k, int64_t *keep_idx)
{
    scored *s = xmalloc(sizeof(scored) * (size_t)m);
    for (int j = 0; j < m; j++) { s[j].v = score[j]; s[j].i = j; }
    qsort(s, (size_t)m, sizeof(scored), by_score_desc);
    for (int r = 0; r < k; r++) keep_idx[r] = s[r].i;
    qsort(keep_idx, (size_t)k, sizeof(int64_t), cmp_i64);
    free(s);
    return k;
}

int default_count(int m, double keep_frac, int align)
{
    long k;
    if (align > 0) {
        k = (long)floor(m * keep_frac / align + 0.5) * align;
        if (k < align) k = align;
    } else {
        k = (long)floor(m * keep_frac + 0.5);
        if (k < 1) k = 1;
    }
    if (k > m) k = m;
    return (int)k;
}

int select_cfsp(const double *score, int m, double keep_frac, int reference, int align, int64_t *keep_idx)
{
    if (!reference) return select_topk(score, m, default_count(m, keep_frac, align), keep_idx);
    double *sorted = xmalloc(sizeof(double) * (size_t)m);
    memcpy(sorted, score, sizeof(double) * (size_t)m);
    scored *tmp = xmalloc(sizeof(scored) * (size_t)m);
    for (int j = 0; j < m; j++) { tmp[j].v = score[j]; tmp[j].i = j; }
    qsort(tmp, (size_t)m, sizeof(scored), by_score_desc);
    for (int j = 0; j < m; j++) sorted[j] = tmp[j].v;
    free(tmp);
    long idx;
    if (align > 0) idx = (long)floor((m * keep_frac + align / 2.0) / align) * align - 1;
    else idx = (long)floor(m * keep_frac);
    double thr = idx < 0 ? sorted[m - 1]            /* reference quirk: index -1 keeps everything */
                         : sorted[idx < m ? idx : m - 1];
    int k = 0;
    for (int j = 0; j < m; j++) if (score[j] >= thr) keep_idx[k++] = j;
    free(sorted);
    return k;
}
