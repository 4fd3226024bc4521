/* driver.h — the distributed pruning sweep, as every rank executes it: the statistics move
 * between the owners of the FFN slices and the root; every channel is scored on the owner of its
 * slice and the scores are gathered at the root; the root allocates the budget and selects every
 * block's channels, which are broadcast; each rank slices its own FFN units; flap's down_proj
 * bias shares are summed at the root in slice order (so the sums do not depend on the rank count).
 * Every function here is collective: all ranks call it, in the same order. */
#ifndef CFSP_PRUNE_DRIVER_H
#define CFSP_PRUNE_DRIVER_H
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/prune/prune.h"
#include "cfsp/prune/stats.h"

typedef struct {
    int local_metric, global_metric;   /* local_metric, GM_* */
    double a, b, c;                    /* allocation temperature, activation and weight exponents */
    int align;                         /* kept-channel multiple (<= 1: off) */
    int alloc_reference;               /* 1: the reference's allocation scale and threshold rule */
} prune_params;

/* the job as the sweep sees it (built once, read only) */
typedef struct {
    const model_config *cfg;
    const unit_plan *plan;
    const stage_map *map;
    const rank_weights *w;             /* this rank's units [w->first_unit, w->last_unit) */
    const block_stats *stats;          /* [L]: the blocks this rank touches (root: all) */
    int nsamples, seqlen;              /* of the statistics */
    prune_params p;
    int rank, nranks, L, nu;           /* nu: own units */
    int64_t total;                     /* FFN channels of all blocks */
} prune_ctx;

void prune_ctx_init(prune_ctx *x, const model_config *cfg, const unit_plan *plan, const stage_map *map,
                    const rank_weights *w, const block_stats *stats, int nsamples, int seqlen, const prune_params *p);

/* Statistics [L] between each FFN slice's owner and the root, slice by slice: to_root = 1 owner ->
 * root (after calibration), 0 root -> owner (read from a file). A block's importances travel
 * with its last slice (where they were computed). */
void prune_stats_move(const unit_plan *plan, const stage_map *map, block_stats *stats, int to_root);

/* Once per method: every FFN channel's score, in block and channel order. Root: [total] (caller
 * frees); other ranks: NULL. The row-normalised local metric first sums every block's row sums
 * over its slices on every rank. */
double *prune_scores(const prune_ctx *x, prune_method method);

/* one method at one ratio */
typedef struct {
    prune_method method;
    double ratio;
    double *keep;                      /* [L] keep fraction per block */
    int *counts;                       /* [L] kept channels per block */
    int64_t nkept;                     /* sum of counts */
    int *kofs;                         /* [plan units] where each FFN slice's kept channels start in its block */
    int64_t **kept;                    /* [own units] an FFN slice's kept block channels, ascending (attention: NULL) */
    int *nk;                           /* [own units] how many */
    unit_weights *units;               /* [own units] after prune_slice: the pruned FFN slices (owned
                                        * copies), the attention units shared with the dense weights */
    float *bias;                       /* flap, after prune_slice: root [L][D] summed down_proj bias,
                                        * other ranks a non-NULL marker; other methods NULL */
    double select_seconds;             /* this rank's wall time in prune_select (root: allocation, */
    double slice_seconds;              /* selection, broadcast) and in prune_slice */
} prune_cut;

/* The root allocates and selects from scores (its prune_scores); keep, counts and the kept
 * channels reach every rank, which keeps the lists of its own slices. */
void prune_select(const prune_ctx *x, prune_method method, double ratio, const double *scores, prune_cut *cut);
/* This rank's pruned units; flap: the removed channels' mean contribution as bias, summed at the root. */
void prune_slice(const prune_ctx *x, prune_cut *cut);
void prune_cut_free(const prune_ctx *x, prune_cut *cut);
#endif
