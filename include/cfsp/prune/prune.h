/* prune.h — CFSP and baseline pruning: per-channel scores (local, on the rank that owns the
 * block), the root's budget allocation, per-block selection, and slicing of the FFN weights. */
#ifndef CFSP_PRUNE_H
#define CFSP_PRUNE_H
#include "cfsp/model/weights.h"
#include "cfsp/prune/stats.h"
#include <stdint.h>

typedef enum {
    LM_THREE_W_ONE_WA = 0, LM_THREE_W_ONE_A, LM_ONE_WA, LM_ONE_A, LM_WANDA_BASE, LM_MAG_BASE,
    LM_THREE_W_ONE_WA_ROWNORM, LM_COUNT
} local_metric;
extern const char *const local_metric_names[LM_COUNT];

typedef enum { PM_CFSP = 0, PM_WANDA_SP, PM_FLAP, PM_MAG_SP, PM_COUNT } prune_method;
extern const char *const prune_method_names[PM_COUNT];

/* Per-channel scores of one FFN slice (double, length u->k, channels c0.. of the block).
 * nsamples: calibration sequences (A_j = sqrt(sum_sq/nsamples)). flap: fluctuation x sum_i W_ij^2;
 * wanda_sp: wanda_base; mag_sp: mag_base. rowsums: for three_w_one_wa_rownorm, the block's row
 * sums [3][D] (down weighted by A^b, up, gate) summed over all its slices; otherwise NULL. */
void score_slice(const unit_weights *u, const block_stats *st, int nsamples, prune_method pm,
                 local_metric lm, double bexp, double cexp, const double *rowsums, double *score);
/* this slice's share of those row sums: out[3][D] */
void rowsum_slice(const unit_weights *u, const block_stats *st, int nsamples, double bexp, double *out);

/* Root: CFSP keep fraction of every block (mean 1-p) by the sigmoid rule.
 * temp_scale = 1 in reference mode, 131072/(N*T) in the default mode. */
void alloc_keep_fraction(const double *imp, int L, double ratio, double a, double temp_scale, double *keep);

/* Root, for wanda_sp/flap: one global threshold over per-layer standardised scores.
 * scores: all blocks concatenated (lengths m[l]); fills counts[L] (each >= 1). */
void alloc_global_threshold(const double *scores, const int *m, int L, double ratio, int *counts);

/* Per-block selection. reference=1 reproduces the reference's threshold rule and quirks
 * (ties at the threshold all kept); otherwise keeps exactly the target count by (score desc,
 * index asc). align=0 means off. Writes ascending kept indices to keep_idx, returns the count. */
int select_cfsp(const double *score, int m, double keep_frac, int reference, int align, int64_t *keep_idx);
int select_topk(const double *score, int m, int k, int64_t *keep_idx);
int default_count(int m, double keep_frac, int align);

/* Pruned copy of an FFN slice unit: gate/up rows and down columns at the kept channels (block
 * channel numbers, all within [c0, c1)), copied in the stored dtype (bit-exact). With mean_x
 * (flap; indexed by block channel), the removed channels' mean input times W becomes this slice's
 * share of the down_proj bias. Attention units and norms are shared, not copied. */
void slice_unit(const unit_weights *src, const int64_t *keep_idx, int k, const double *mean_x, unit_weights *dst);
#endif
