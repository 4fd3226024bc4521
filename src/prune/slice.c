/* slice.c — build the smaller dense block: rows of gate/up and columns of down at the kept
 * channels, copied in the stored dtype (bit-exact), plus flap's bias compensation. */
#include "cfsp/prune/prune.h"
#include "cfsp/util/util.h"
#include <stdlib.h>
#include <string.h>

/* rows idx[r] - off of src, compact */
static void take_rows(const wmat *src, const int64_t *idx, int k, int off, wmat *dst)
{
    size_t es = dtype_size(src->dtype), rb = (size_t)src->cols * es;
    *dst = *src;
    dst->rows = k;
    dst->ld = src->cols;
    dst->owned = xmalloc(rb * (size_t)(k ? k : 1));
    for (int r = 0; r < k; r++)
        memcpy((char *)dst->owned + rb * r, (const char *)src->data + (size_t)(idx[r] - off) * (size_t)src->ld * es, rb);
    dst->data = dst->owned;
}

/* columns idx[c] - off of src, compact */
static void take_cols(const wmat *src, const int64_t *idx, int k, int off, wmat *dst)
{
    size_t es = dtype_size(src->dtype);
    *dst = *src;
    dst->cols = k;
    dst->ld = k;
    dst->owned = xmalloc(es * (size_t)(k ? k : 1) * (size_t)src->rows);
    int *col = xmalloc(sizeof(int) * (size_t)(k ? k : 1));   /* the gathers below index by int */
    for (int c = 0; c < k; c++) col[c] = (int)(idx[c] - off);
    for (int64_t r = 0; r < src->rows; r++) {
        const char *s = (const char *)src->data + es * (size_t)r * (size_t)src->ld;
        char *d = (char *)dst->owned + es * (size_t)r * (size_t)k;
        if (es == 2) {                /* bf16 / f16: a typed gather, not one memcpy per element */
            const uint16_t *s2 = (const uint16_t *)s;
            uint16_t *d2 = (uint16_t *)d;
            for (int c = 0; c < k; c++) d2[c] = s2[col[c]];
        } else if (es == 4) {
            const uint32_t *s4 = (const uint32_t *)s;
            uint32_t *d4 = (uint32_t *)d;
            for (int c = 0; c < k; c++) d4[c] = s4[col[c]];
        } else
            for (int c = 0; c < k; c++) memcpy(d + es * c, s + es * (size_t)col[c], es);
    }
    free(col);
    dst->data = dst->owned;
}

void slice_unit(const unit_weights *src, const int64_t *keep_idx, int k, const double *mean_x, unit_weights *dst)
{
    *dst = *src;             /* the norm weights are shared, not copied */
    dst->k = k;
    dst->q.owned = dst->k_proj.owned = dst->v.owned = dst->o.owned = NULL;
    take_rows(&src->gate, keep_idx, k, src->c0, &dst->gate);
    take_rows(&src->up, keep_idx, k, src->c0, &dst->up);
    take_cols(&src->down, keep_idx, k, src->c0, &dst->down);
    dst->bias = NULL;
    if (mean_x) {
        int m = src->c1 - src->c0, D = (int)src->down.rows;
        char *kept = xcalloc((size_t)(m ? m : 1), 1);
        for (int r = 0; r < k; r++) kept[keep_idx[r] - src->c0] = 1;
        float *row = xmalloc(sizeof(float) * (size_t)(m ? m : 1));
        dst->bias = xmalloc(sizeof(float) * (size_t)D);
        for (int i = 0; i < D; i++) {
            wmat_row_f32(&src->down, i, row);
            double s = src->bias ? src->bias[i] : 0.0;
            for (int j = 0; j < m; j++) if (!kept[j]) s += (double)row[j] * mean_x[src->c0 + j];
            dst->bias[i] = (float)s;
        }
        free(row);
        free(kept);
    }
    /* the original rows of this slice are no longer needed resident (a later ratio faults them in
     * again); down is shared column-wise by the block's slices: dropped after the block's last */
    wmat_release_pages(&src->gate);
    wmat_release_pages(&src->up);
    if (src->slice == src->nslices - 1) wmat_release_pages(&src->down);
}
