/* stages.c — the unit plan (attention + FFN slices per block, with their flop costs) and the
 * split of units into contiguous stages: the smallest possible maximum stage cost (binary search
 * over the bound, greedy fill), every stage non-empty. */
#include "cfsp/pipeline.h"
#include "cfsp/err.h"
#include "cfsp/util.h"
#include <math.h>
#include <stdlib.h>

void units_plan(const model_config *c, int ffn_slice, int seqlen, unit_plan *p)
{
    double D = c->hidden, Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim;
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int m = c->ffn[l];
        n += 1 + (ffn_slice > 0 ? (m + ffn_slice - 1) / ffn_slice : 1);
    }
    p->n = n;
    p->u = xcalloc((size_t)n, sizeof(stage_unit));
    int i = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int m = c->ffn[l], ns = ffn_slice > 0 ? (m + ffn_slice - 1) / ffn_slice : 1;
        /* projections 2*(2*D*Q + 2*D*KV) flops per token; causal attention 4*Q*(t+1) on average (T+1)/2 */
        p->u[i++] = (stage_unit){ l, -1, ns, 0, 0, 2 * (2 * D * Q + 2 * D * KV) + 4 * Q * (seqlen + 1) / 2.0 };
        for (int s = 0; s < ns; s++) {
            int c0 = (int)((int64_t)s * m / ns), c1 = (int)((int64_t)(s + 1) * m / ns);
            p->u[i++] = (stage_unit){ l, s, ns, c0, c1, 2 * 3 * D * (c1 - c0) };
        }
    }
}

void units_free(unit_plan *p) { free(p->u); p->u = NULL; p->n = 0; }

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
