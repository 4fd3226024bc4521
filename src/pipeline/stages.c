/* stages.c — the split of the stage units (model/units.c) into contiguous stages: the smallest
 * possible maximum stage cost (binary search over the bound, greedy fill), every stage non-empty. */
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdlib.h>

static int fits(const unit_plan *p, int P, double bound, int *first)
{
    int stage = 0;
    double acc = 0;
    first[0] = 0;
    for (int i = 0; i < p->n; i++) {
        double c = p->u[i].cost;
        if (c > bound) return 0;
        /* open a new stage if this unit overflows, or if the remaining units are needed to give
         * every remaining stage at least one */
        if (i > first[stage] && (acc + c > bound || p->n - i <= P - stage - 1)) {
            if (++stage >= P) return 0;
            first[stage] = i;
            acc = 0;
        }
        acc += c;
    }
    if (stage != P - 1) return 0;
    first[P] = p->n;
    return 1;
}

int stages_plan(const unit_plan *p, int P, stage_map *map)
{
    if (P > p->n)
        return FAIL("%d ranks but the model has only %d stage units (attention + FFN slices of %d blocks): "
                    "use at most %d ranks or a smaller --ffn-slice", P, p->n, p->u[p->n - 1].layer + 1, p->n);
    double lo = 0, hi = 0;
    for (int i = 0; i < p->n; i++) { hi += p->u[i].cost; if (p->u[i].cost > lo) lo = p->u[i].cost; }
    map->nranks = P;
    map->first = xmalloc(sizeof(int) * (size_t)(P + 1));
    for (int it = 0; it < 100 && hi - lo > 1e-9 * hi; it++) {
        double mid = 0.5 * (lo + hi);
        if (fits(p, P, mid, map->first)) hi = mid;
        else lo = mid;
    }
    if (!fits(p, P, hi, map->first)) return FAIL("internal: no stage split of %d units over %d ranks", p->n, P);
    return 0;
}

int stage_of_unit(const stage_map *map, int u)
{
    for (int r = 0; r < map->nranks; r++) if (u < map->first[r + 1]) return r;
    return map->nranks - 1;
}

void stages_free(stage_map *map) { free(map->first); map->first = NULL; }
