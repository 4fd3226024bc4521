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

static double safe_div(double a, double b) { return b != 0.0 ? a / b : 0.0; }

/* X = |mat| seen as D x k (down_proj slice [D,k] directly; gate/up slices [k,D] transposed), each
 * column j scaled by w[j] (or 1). Column sums colsum[k] and row sums rowsum[D] (either may be NULL). */
static void term_sums(const wmat *mat, int channels_are_rows, const double *w, int D, int k, double *colsum, double *rowsum)
{
    if (colsum) memset(colsum, 0, sizeof(double) * (size_t)k);
    if (rowsum) memset(rowsum, 0, sizeof(double) * (size_t)D);
    float *row = xmalloc(sizeof(float) * (size_t)(mat->cols ? mat->cols : 1));
    for (int64_t r = 0; r < mat->rows; r++) {
        wmat_row_f32(mat, r, row);
        for (int64_t c = 0; c < mat->cols; c++) {
            int j = (int)(channels_are_rows ? r : c), i = (int)(channels_are_rows ? c : r);
            double v = fabs((double)row[c]) * (w ? w[j] : 1.0);
            if (colsum) colsum[j] += v;
            if (rowsum) rowsum[i] += v;
        }
    }
    free(row);
}

/* acc[j] += sum_i X_ij / norm, norm = colnorm[j] or rownorm[i] */
static void add_term(double *acc, const wmat *mat, int channels_are_rows, const double *w, int D, int k,
                     const double *colnorm, const double *rownorm)
{
    float *row = xmalloc(sizeof(float) * (size_t)(mat->cols ? mat->cols : 1));
    for (int64_t r = 0; r < mat->rows; r++) {
        wmat_row_f32(mat, r, row);
        for (int64_t c = 0; c < mat->cols; c++) {
            int j = (int)(channels_are_rows ? r : c), i = (int)(channels_are_rows ? c : r);
            double v = fabs((double)row[c]) * (w ? w[j] : 1.0);
            acc[j] += safe_div(v, colnorm ? colnorm[j] : rownorm[i]);
        }
    }
    free(row);
    (void)D;
}

/* column sums of |down| (p=1) or of down^2 (p=2) over the D rows */
static void down_colsums(const wmat *down, int k, int p, double *out)
{
    float *row = xmalloc(sizeof(float) * (size_t)(k ? k : 1));
    memset(out, 0, sizeof(double) * (size_t)k);
    for (int64_t r = 0; r < down->rows; r++) {
        wmat_row_f32(down, r, row);
        for (int j = 0; j < k; j++) out[j] += p == 1 ? fabs((double)row[j]) : (double)row[j] * row[j];
    }
    free(row);
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
    for (int j = 0; j < k; j++) A[j] = pow(A[j], bexp);
    term_sums(&u->down, 0, A, D, k, NULL, out);
    term_sums(&u->up, 1, NULL, D, k, NULL, out + D);
    term_sums(&u->gate, 1, NULL, D, k, NULL, out + 2 * (size_t)D);
    free(A);
}

void score_slice(const unit_weights *u, const block_stats *st, int nsamples, prune_method pm,
                 local_metric lm, double bexp, double cexp, const double *rowsums, double *score)
{
    int k = u->k, D = (int)u->down.rows;
    double *A = activation_norms(u, st, nsamples);
    if (pm == PM_WANDA_SP) lm = LM_WANDA_BASE;
    if (pm == PM_MAG_SP) lm = LM_MAG_BASE;
    if (pm == PM_FLAP) {
        down_colsums(&u->down, k, 2, score);
        double n = (double)st->ntok;
        for (int j = 0; j < k; j++) {
            double mean = st->sum[u->c0 + j] / n, var = st->sum_sq[u->c0 + j] / n - mean * mean;
            score[j] *= var > 0 ? var : 0;
        }
    } else if (lm == LM_WANDA_BASE) {
        down_colsums(&u->down, k, 1, score);
        for (int j = 0; j < k; j++) score[j] = score[j] / D * A[j];
    } else if (lm == LM_MAG_BASE) {
        down_colsums(&u->down, k, 2, score);
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
            if (rownorm) add_term(acc, mats[t], t > 0, w, D, k, NULL, rowsums + (size_t)t * D);
            else {
                term_sums(mats[t], t > 0, w, D, k, cs, NULL);
                add_term(acc, mats[t], t > 0, w, D, k, cs, NULL);
            }
        }
        for (int j = 0; j < k; j++) score[j] = acc[j] * pow(A[j], cpow) / D;
        free(wb);
        free(acc);
        free(cs);
    }
    free(A);
}
