/* slice.c — build the smaller dense block: rows of gate/up and columns of down at the kept
 * channels, copied in the stored dtype (bit-exact), plus flap's bias compensation. */
#include "cfsp/prune.h"
#include "cfsp/util.h"
#include <stdlib.h>
#include <string.h>

static void take_rows(const wmat *src, const int64_t *idx, int k, wmat *dst)
{
    size_t rb = (size_t)src->cols * dtype_size(src->dtype);
    *dst = *src;
    dst->rows = k;
    dst->owned = xmalloc(rb * (size_t)k);
    for (int r = 0; r < k; r++) memcpy((char *)dst->owned + rb * r, (const char *)src->data + rb * (size_t)idx[r], rb);
    dst->data = dst->owned;
}

static void take_cols(const wmat *src, const int64_t *idx, int k, wmat *dst)
{
    size_t es = dtype_size(src->dtype);
    *dst = *src;
    dst->cols = k;
    dst->owned = xmalloc(es * (size_t)k * (size_t)src->rows);
    for (int64_t r = 0; r < src->rows; r++) {
        const char *s = (const char *)src->data + es * (size_t)r * (size_t)src->cols;
        char *d = (char *)dst->owned + es * (size_t)r * (size_t)k;
        for (int c = 0; c < k; c++) memcpy(d + es * c, s + es * (size_t)idx[c], es);
    }
    dst->data = dst->owned;
}

void slice_block(const block_weights *src, const int64_t *keep_idx, int k, const double *mean_x,
                 block_weights *dst)
{
    *dst = *src;             /* attention weights and norms are shared, not copied */
    dst->ffn = k;
    dst->q.owned = dst->k.owned = dst->v.owned = dst->o.owned = NULL;
    take_rows(&src->gate, keep_idx, k, &dst->gate);
    take_rows(&src->up, keep_idx, k, &dst->up);
    take_cols(&src->down, keep_idx, k, &dst->down);
    dst->down_bias = NULL;
    if (mean_x) {
        int m = src->ffn, D = (int)src->down.rows;
        char *kept = xcalloc((size_t)m, 1);
        for (int r = 0; r < k; r++) kept[keep_idx[r]] = 1;
        float *row = xmalloc(sizeof(float) * (size_t)m);
        dst->down_bias = xmalloc(sizeof(float) * (size_t)D);
        for (int i = 0; i < D; i++) {
            wmat_row_f32(&src->down, i, row);
            double s = src->down_bias ? src->down_bias[i] : 0.0;
            for (int j = 0; j < m; j++) if (!kept[j]) s += (double)row[j] * mean_x[j];
            dst->down_bias[i] = (float)s;
        }
        free(row);
        free(kept);
    }
}

void free_sliced_block(block_weights *b)
{
    free(b->gate.owned);
    free(b->up.owned);
    free(b->down.owned);
    free(b->down_bias);
    memset(b, 0, sizeof *b);
}
