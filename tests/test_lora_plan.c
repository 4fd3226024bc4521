/* test_lora_plan.c — unit tests of the LoRA rank plan (src/train/lora_plan.c): largest-remainder
 * rounding (exact totals with equal costs, budget never exceeded and shortfall below one block's
 * cost with unequal costs, every rank >= 1, monotone in the weights, a hand-worked case), the
 * sigmoid scores against the allocation's keep fractions (alloc.c), plans built from a config, and
 * the --targets parser. Prints 'N passed, N failed'. */
#include "cfsp/prune/prune.h"
#include "cfsp/train/lora_plan.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int npass, nfail;
#define T(cond, ...) do { if (cond) npass++; else { nfail++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static uint64_t rs = 12345;
static double ur(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (double)(rs >> 11) / 9007199254740992.0; }

int main(void)
{
    /* hand-worked: weights 0.25/0.13/0.42/0.20, equal costs, r = 3 -> x = 12 w = 3, 1.56, 5.04, 2.4;
     * floors 3 1 5 2 (11), one rank left -> the largest remainder 0.56 (block 1) */
    {
        double w[4] = { 0.25, 0.13, 0.42, 0.20 };
        int64_t c[4] = { 10, 10, 10, 10 };
        int r[4];
        lora_adaptive_ranks(w, c, 4, 3, r);
        T(r[0] == 3 && r[1] == 2 && r[2] == 5 && r[3] == 2, "hand case: got %d %d %d %d, want 3 2 5 2", r[0], r[1], r[2], r[3]);
    }
    /* clamp: one dominant block; the others get 1 and the total is still exact */
    {
        double w[5] = { 100, 0.01, 0.01, 0.01, 0.01 };
        int64_t c[5] = { 7, 7, 7, 7, 7 };
        int r[5], sum = 0;
        lora_adaptive_ranks(w, c, 5, 4, r);
        for (int l = 0; l < 5; l++) sum += r[l];
        T(r[1] == 1 && r[2] == 1 && r[3] == 1 && r[4] == 1 && r[0] == 16 && sum == 20, "clamp: %d %d %d %d %d", r[0], r[1], r[2], r[3], r[4]);
    }
    /* random cases */
    for (int trial = 0; trial < 2000; trial++) {
        int L = 1 + (int)(ur() * 40), r = 1 + (int)(ur() * 16), eq = trial % 2;
        double w[64];
        int64_t c[64], budget = 0, used = 0, cmax = 0;
        int rk[64];
        for (int l = 0; l < L; l++) {
            w[l] = trial % 7 == 0 ? 1.0 : 0.01 + ur();
            c[l] = eq ? 100 : 50 + (int64_t)(ur() * 200);
            budget += (int64_t)r * c[l];
            if (c[l] > cmax) cmax = c[l];
        }
        lora_adaptive_ranks(w, c, L, r, rk);
        int ok_min = 1, mono = 1, uni = 1;
        for (int l = 0; l < L; l++) {
            used += (int64_t)rk[l] * c[l];
            if (rk[l] < 1) ok_min = 0;
            if (rk[l] != r) uni = 0;
            if (eq) for (int k = 0; k < L; k++) if (w[l] > w[k] && rk[l] < rk[k]) mono = 0;
        }
        T(ok_min, "trial %d: a rank below 1", trial);
        T(used <= budget, "trial %d: %lld parameters above the budget %lld", trial, (long long)used, (long long)budget);
        if (eq) {
            T(used == budget, "trial %d: equal costs: %lld parameters, budget %lld", trial, (long long)used, (long long)budget);
            T(mono, "trial %d: a larger weight got a smaller rank", trial);
        } else {
            T(budget - used < cmax, "trial %d: shortfall %lld not below the largest cost %lld", trial, (long long)(budget - used), (long long)cmax);
        }
        if (trial % 7 == 0) T(uni, "trial %d: equal weights must give the uniform plan", trial);
    }
    /* the sigmoid scores are the allocation's: keep_l / keep_k = s_l / s_k when nothing is squeezed */
    {
        double imp[6] = { 1767.2, 1327.4, 1231.8, 1249.8, 1386.7, 1500 }, s[6], keep[6];
        double ts = 131072.0 / (32.0 * 256.0);
        lora_sigmoid_scores(imp, 6, 1.0, ts, s);
        alloc_keep_fraction(imp, 6, 0.5, 1.0, ts, keep);
        double worst = 0;
        for (int l = 1; l < 6; l++) worst = fmax(worst, fabs(keep[l] / keep[0] - s[l] / s[0]));
        T(worst < 1e-12, "sigmoid scores differ from the allocation's by %g", worst);
        T(s[0] > s[4] && s[4] > s[1] && s[1] > s[3] && s[3] > s[2], "sigmoid scores not ordered as the importances");
    }
    /* plans from a config (pruned FFN sizes) */
    {
        model_config c;
        memset(&c, 0, sizeof c);
        int ffn[5] = { 133, 98, 90, 92, 103 };
        c.hidden = 64; c.n_layers = 5; c.n_heads = 8; c.n_kv_heads = 4; c.head_dim = 8; c.ffn = ffn;
        int tg[LORA_NMOD];
        T(lora_parse_targets("q,k,v,o,gate,up,down", tg) == 0, "targets parse");
        lora_plan u, a;
        double imp[5] = { 1767.2, 1327.4, 1231.8, 1249.8, 1386.7 };
        lora_plan_build(&u, &c, tg, 8, 16, 1, 0, NULL, 1, 1);
        lora_plan_build(&a, &c, tg, 8, 16, 1, 1, imp, 1.0, 16.0);
        /* cost of block 0: q 64+64, k 64+32, v 64+32, o 64+64, gate/up 64+133 each, down 133+64 */
        T(u.cost[0] == 128 + 96 + 96 + 128 + 3 * 197, "cost of block 0: %lld", (long long)u.cost[0]);
        T(u.params == u.params_uniform && u.rank[3] == 8, "uniform plan");
        T(a.params <= a.params_uniform && a.params_uniform - a.params < a.cost[0], "adaptive parameters %lld vs %lld", (long long)a.params, (long long)a.params_uniform);
        T(a.rank[0] > 8 && a.rank[2] < 8, "adaptive ranks follow the importances (%d .. %d)", a.rank[0], a.rank[2]);
        T(fabs(lora_plan_scaling(&a, 0) - 2.0) < 1e-15 && fabs(lora_plan_scaling(&a, 2) - 2.0) < 1e-15, "alpha scales: constant alpha/r");
        lora_plan b;
        lora_plan_build(&b, &c, tg, 8, 16, 0, 1, imp, 1.0, 16.0);
        T(fabs(lora_plan_scaling(&b, 0) - 16.0 / b.rank[0]) < 1e-15, "fixed alpha: alpha/r_l");
        lora_plan_free(&u); lora_plan_free(&a); lora_plan_free(&b);
        int only[LORA_NMOD];
        T(lora_parse_targets("q_proj,down", only) == 0 && only[TM_Q] && only[TM_DOWN] && !only[TM_K] && !only[TM_GATE], "targets subset");
        T(lora_parse_targets("q,lm_head", only) != 0, "unknown target rejected");
        T(lora_parse_targets(",", only) != 0, "empty target list rejected");
    }
    printf("%d passed, %d failed\n", npass, nfail);
    return nfail ? 1 : 0;
}
