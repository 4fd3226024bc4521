/* score.c — per-channel importance scores of one block's FFN channels (all local metrics of the
 * reference, the row-normalised extension, and the wanda_sp / flap / mag_sp baselines). */
#include "cfsp/prune.h"
#include "cfsp/util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const local_metric_names[LM_COUNT] = {
    "three_w_one_wa", "three_w_one_a", "one_wa", "one_a", "wanda_base", "mag_base", "three_w_one_wa_rownorm"
};
const char *const prune_method_names[PM_COUNT] = { "cfsp", "wanda_sp", "flap", "mag_sp" };

int local_metric_from_name(const char *s)
{
    for (int i = 0; i < LM_COUNT; i++) if (!strcmp(s, local_metric_names[i])) return i;
    return -1;
}

int prune_method_from_name(const char *s)
{
    for (int i = 0; i < PM_COUNT; i++) if (!strcmp(s, prune_method_names[i])) return i;
    return -1;
}

static double safe_div(double a, double b) { return b != 0.0 ? a / b : 0.0; }

/* One normalised term of the metric matrix, streamed row by row (memory O(D + m)):
 * X = |mat| seen as D x m (down_proj [D,m] directly; up/gate [m,D] transposed), each column j
 * scaled by w[j] (or 1); acc[j] += sum_i X_ij / colsum_j(X)  (or / rowsum_i(X) when rownorm). */
static void add_term(double *acc, const wmat *mat, int channels_are_rows, const double *w, int rownorm, int D, int m)
{
    double *colsum = xcalloc((size_t)m, sizeof(double)), *rowsum = xcalloc((size_t)D, sizeof(double));
    float *row = xmalloc(sizeof(float) * (size_t)mat->cols);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t r = 0; r < mat->rows; r++) {
            wmat_row_f32(mat, r, row);
            for (int64_t c = 0; c < mat->cols; c++) {
                int j = (int)(channels_are_rows ? r : c), i = (int)(channels_are_rows ? c : r);
                double v = fabs((double)row[c]) * (w ? w[j] : 1.0);
                if (pass == 0) { colsum[j] += v; rowsum[i] += v; }
                else acc[j] += safe_div(v, rownorm ? rowsum[i] : colsum[j]);
            }
        }
    free(row);
    free(colsum);
    free(rowsum);
}

/* column sums of |down| (p=1) or of down^2 (p=2) */
static void down_colsums(const wmat *down, int m, int p, double *out)
{
    float *row = xmalloc(sizeof(float) * (size_t)m);
    memset(out, 0, sizeof(double) * (size_t)m);
    for (int64_t r = 0; r < down->rows; r++) {
        wmat_row_f32(down, r, row);
        for (int j = 0; j < m; j++) out[j] += p == 1 ? fabs((double)row[j]) : (double)row[j] * row[j];
    }
    free(row);
}

void score_block(const block_weights *b, const block_stats *st, int nsamples, prune_method pm,
                 local_metric lm, double bexp, double cexp, double *score)
{
    int m = b->ffn, D = (int)b->down.rows;
    double *A = xmalloc(sizeof(double) * (size_t)m);
    for (int j = 0; j < m; j++) A[j] = sqrt(st->sum_sq[j] / nsamples);
    if (pm == PM_WANDA_SP) lm = LM_WANDA_BASE;
    if (pm == PM_MAG_SP) lm = LM_MAG_BASE;
    if (pm == PM_FLAP) {
        down_colsums(&b->down, m, 2, score);
        double n = (double)st->ntok;
        for (int j = 0; j < m; j++) {
            double mean = st->sum[j] / n, var = st->sum_sq[j] / n - mean * mean;
            score[j] *= var > 0 ? var : 0;
        }
    } else if (lm == LM_WANDA_BASE) {
        down_colsums(&b->down, m, 1, score);
        for (int j = 0; j < m; j++) score[j] = score[j] / D * A[j];
    } else if (lm == LM_MAG_BASE) {
        down_colsums(&b->down, m, 2, score);
        for (int j = 0; j < m; j++) score[j] = sqrt(score[j]);
    } else {
        /* M = (sum of normalised terms) * A^c; score_j = mean over the D rows of column j */
        int rownorm = lm == LM_THREE_W_ONE_WA_ROWNORM;
        int weighted = lm == LM_ONE_WA || lm == LM_THREE_W_ONE_WA || rownorm;
        int three = lm == LM_THREE_W_ONE_A || lm == LM_THREE_W_ONE_WA || rownorm;
        double cpow = lm == LM_ONE_A ? 0.5 : cexp;
        double *wb = NULL, *acc = xcalloc((size_t)m, sizeof(double));
        if (weighted) {
            wb = xmalloc(sizeof(double) * (size_t)m);
            for (int j = 0; j < m; j++) wb[j] = pow(A[j], bexp);
        }
        add_term(acc, &b->down, 0, wb, rownorm, D, m);
        if (three) {
            add_term(acc, &b->up, 1, NULL, rownorm, D, m);
            add_term(acc, &b->gate, 1, NULL, rownorm, D, m);
        }
        for (int j = 0; j < m; j++) score[j] = acc[j] * pow(A[j], cpow) / D;
        free(wb);
        free(acc);
    }
    free(A);
}
