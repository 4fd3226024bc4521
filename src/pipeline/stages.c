/* stages.c — split the L blocks into contiguous stages balanced by parameter count: the smallest
 * possible maximum stage cost (binary search over the bound, greedy fill), every stage non-empty. */
#include "cfsp/pipeline.h"
#include "cfsp/err.h"
#include "cfsp/util.h"
#include <stdlib.h>

static int fits(const int64_t *cost, int L, int P, int64_t bound, int *first)
{
    int stage = 0;
    int64_t acc = 0;
    first[0] = 0;
    for (int l = 0; l < L; l++) {
        if (cost[l] > bound) return 0;
        /* open a new stage if this block overflows, or if the remaining blocks are needed to
         * give every remaining stage at least one block */
        int remaining_blocks = L - l, remaining_stages = P - stage - 1;
        if (l > first[stage] && (acc + cost[l] > bound || remaining_blocks <= remaining_stages)) {
            if (++stage >= P) return 0;
            first[stage] = l;
            acc = 0;
        }
        acc += cost[l];
    }
    if (stage != P - 1) return 0;
    first[P] = L;
    return 1;
}

int stages_plan(const model_config *c, int P, stage_map *map)
{
    int L = c->n_layers;
    if (P > L)
        return FAIL("%d ranks but the model has only %d blocks: run with at most %d ranks (one stage per rank, at least one block each)", P, L, L);
    int64_t *cost = xmalloc(sizeof(int64_t) * (size_t)L), lo = 0, hi = 0;
    for (int l = 0; l < L; l++) {
        cost[l] = model_block_params(c, l);
        hi += cost[l];
        if (cost[l] > lo) lo = cost[l];
    }
    map->nranks = P;
    map->first = xmalloc(sizeof(int) * (size_t)(P + 1));
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (fits(cost, L, P, mid, map->first)) hi = mid;
        else lo = mid + 1;
    }
    if (!fits(cost, L, P, lo, map->first)) { free(cost); return FAIL("internal: no stage split of %d blocks over %d ranks", L, P); }
    free(cost);
    return 0;
}

void stages_free(stage_map *map) { free(map->first); map->first = NULL; }
