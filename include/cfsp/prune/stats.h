/* stats.h — calibration statistics of one block, accumulated in double during the single dense
 * forward pass: the coarse block importance for every global metric and the per-channel sums of
 * the down_proj input (sum x_j^2 and sum x_j) that every local metric and baseline needs. */
#ifndef CFSP_STATS_H
#define CFSP_STATS_H
#include "cfsp/model/forward.h"
#include <stdint.h>

enum { GM_ANGULAR = 0, GM_COSINE, GM_MSE, GM_MAE, GM_COUNT };
extern const char *const global_metric_names[GM_COUNT];

typedef struct block_stats {
    int layer, m;
    double imp[GM_COUNT];     /* I_l for each global metric: sum over tokens of d_t */
    double *sum_sq, *sum;     /* [m] */
    int64_t ntok;
} block_stats;

void stats_init(block_stats *s, int layer, int m);
void stats_free(block_stats *s);
/* The forward pass's check of its own numbers, on reductions it computed anyway: sums over every
 * token and channel, so a NaN or Inf anywhere upstream (a checkpoint weight, an overflow) shows in
 * them. FAIL (one line naming block s->layer, what was non-finite and this rank) if channels
 * [c0, c1) of the down_proj input sums (sum_sq, sum) or, with block set, the block output's
 * distance sums (every global metric) are not finite. */
int stats_check_finite(const block_stats *s, int c0, int c1, int block);
/* the forward pass's statistics hook over all[L] (indexed by layer; entries of this rank's blocks) */
fwd_hook stats_hook(block_stats *all);
#endif
