/* units.c — the unit plan: attention + FFN slices per block, with their flop costs per token. */
#include "cfsp/model/units.h"
#include "cfsp/util/util.h"
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
