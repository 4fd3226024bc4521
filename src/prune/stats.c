/* stats.c — the statistics hook: per-token block distances and per-channel activation sums. */
#include "cfsp/prune/stats.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const global_metric_names[GM_COUNT] = { "angular", "cosine", "mse", "mae" };

void stats_init(block_stats *s, int layer, int m)
{
    memset(s, 0, sizeof *s);
    s->layer = layer;
    s->m = m;
    s->sum_sq = xcalloc((size_t)m, sizeof(double));
    s->sum = xcalloc((size_t)m, sizeof(double));
}

void stats_free(block_stats *s)
{
    free(s->sum_sq);
    free(s->sum);
    memset(s, 0, sizeof *s);
}

/* act [n, k]: channels c0..c0+k-1 of the block */
static void stats_channels(block_stats *s, const float *act, int n, int k, int c0)
{
    double *sq = s->sum_sq + c0, *sm = s->sum + c0;
    for (int t = 0; t < n; t++) {
        const float *a = act + (size_t)t * k;
        for (int j = 0; j < k; j++) {
            double v = a[j];
            sq[j] += v * v;
            sm[j] += v;
        }
    }
}

/* hin, hout [n, D]: the block's input and output; every global metric's d_t summed into imp */
static void stats_coarse(block_stats *s, const float *hin, const float *hout, int n, int D)
{
    for (int t = 0; t < n; t++) {
        const float *a = hin + (size_t)t * D, *b = hout + (size_t)t * D;
        double dot = 0, na = 0, nb = 0, se = 0, ae = 0;
        for (int i = 0; i < D; i++) {
            double x = a[i], y = b[i], d = x - y;
            dot += x * y; na += x * x; nb += y * y; se += d * d; ae += fabs(d);
        }
        double cs = dot / (sqrt(na) * sqrt(nb));
        if (isnan(cs)) cs = 0.5;                 /* the reference maps NaN to 0.5 */
        if (cs > 1.0) cs = 1.0;
        if (cs < -1.0) cs = -1.0;
        s->imp[GM_ANGULAR] += acos(cs) / M_PI;
        s->imp[GM_COSINE] += 1.0 - cs;
        s->imp[GM_MSE] += se / D;
        s->imp[GM_MAE] += ae / D;
    }
    s->ntok += n;
}

static void hook_channels(void *ctx, int layer, const float *act, int n, int k, int c0)
{
    stats_channels(&((block_stats *)ctx)[layer], act, n, k, c0);
}

static void hook_block(void *ctx, int layer, const float *hin, const float *hout, int n, int D)
{
    stats_coarse(&((block_stats *)ctx)[layer], hin, hout, n, D);
}

fwd_hook stats_hook(block_stats *all) { return (fwd_hook){ hook_channels, hook_block, all }; }

#define NONFINITE_HINT "a NaN or Inf in the checkpoint's weights (cfsp-mpi verify --model DIR names the first non-finite tensor) or an overflow in the forward pass"

int stats_check_finite(const block_stats *s, int c0, int c1, int block)
{
    for (int j = c0; j < c1; j++)
        if (!isfinite(s->sum_sq[j]) || !isfinite(s->sum[j]))
            return FAIL("block %d: the down_proj input channel statistics are not finite (channel %d: sum of squares %g, sum %g) on rank %d: " NONFINITE_HINT,
                        s->layer, j, s->sum_sq[j], s->sum[j], cfsp_rank());
    if (block)
        for (int g = 0; g < GM_COUNT; g++)
            if (!isfinite(s->imp[g]))
                return FAIL("block %d: the block output is not finite (its %s distance sum is %g) on rank %d: " NONFINITE_HINT,
                            s->layer, global_metric_names[g], s->imp[g], cfsp_rank());
    return 0;
}
