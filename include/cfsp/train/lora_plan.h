/* lora_plan.h — the LoRA rank plan of the recovery fine-tuning (issue 7): which projections carry
 * adapters and the rank of each block's adapters. The adaptive plan gives block l a rank r_l
 * proportional to its share of the sigmoid-smoothed coarse importances (the scores of the CFSP
 * budget allocation, alloc.c), scaled so that the total number of LoRA parameters is at most that of
 * the uniform plan with rank r and short of it by less than one rank of one block (largest-remainder
 * rounding, every r_l >= 1; lora_adaptive_ranks below); the uniform plan is the
 * baseline. The plan is exported as a PEFT adapter_config.json (rank_pattern / alpha_pattern keyed
 * by module path). Pure computation and serial file output; no MPI. */
#ifndef CFSP_LORA_PLAN_H
#define CFSP_LORA_PLAN_H
#include "cfsp/format/model_config.h"
#include <stdint.h>

/* the adaptable projections of a block, in this order everywhere (arrays [L][LORA_NMOD]) */
enum { TM_Q = 0, TM_K, TM_V, TM_O, TM_GATE, TM_UP, TM_DOWN, LORA_NMOD };
extern const char *const lora_module_names[LORA_NMOD];   /* "q_proj", ... "down_proj" */
extern const char *const lora_module_paths[LORA_NMOD];   /* "self_attn.q_proj", ... "mlp.down_proj" */
/* "q,k,v,o,gate,up,down" (short or *_proj names, or "all") -> mask[LORA_NMOD] */
int lora_parse_targets(const char *s, int *mask);
/* [out, in] of module t of block l */
void lora_module_shape(const model_config *c, int l, int t, int64_t *out, int64_t *in);

enum { LORA_UNIFORM = 0, LORA_ADAPTIVE = 1, LORA_PRUNED = 2 };
extern const char *const lora_plan_names[3];   /* "uniform", "adaptive", "pruned" */

typedef struct {
    int L;
    int target[LORA_NMOD];       /* 1 = adapted */
    int adaptive;                /* LORA_UNIFORM (rank r), LORA_ADAPTIVE (by importance), LORA_PRUNED
                                  * (by the fraction of the block's FFN channels pruned) */
    int r;                       /* the uniform rank (and PEFT's default "r") */
    double alpha;                /* scaling = alpha / r; with alpha_scales, block l's alpha = alpha * r_l / r */
    int alpha_scales;            /* keep alpha / r_l constant (written as alpha_pattern) */
    int *rank;                   /* [L] */
    double *share;               /* [L] importance share (sigmoid scores / their sum); uniform: 1/L */
    int64_t *cost;               /* [L] LoRA parameters per unit of rank: sum over adapted modules of in + out */
    int64_t params, params_uniform;
} lora_plan;

/* the sigmoid scores of alloc_keep_fraction (before the squeeze): s_l = 1/(1+exp(-a (I_l - mean I) / 1e4 * temp_scale)) */
void lora_sigmoid_scores(const double *imp, int L, double a, double temp_scale, double *s);
/* Ranks proportional to weight[l], total parameters sum rank[l]*cost[l] <= r * sum cost[l] with the
 * shortfall smaller than the largest cost (exactly equal when the costs are equal): blocks whose
 * share would give a rank below 1 get 1 and the rest is re-shared; then floor, and the leftover
 * budget goes one rank at a time in order of the largest fractional remainder (ties: lower block). */
void lora_adaptive_ranks(const double *weight, const int64_t *cost, int L, int r, int *rank);

/* Build a plan. imp = NULL or adaptive = LORA_UNIFORM: uniform. LORA_ADAPTIVE: imp holds the
 * coarse importances (weights: their sigmoid scores); LORA_PRUNED: imp holds each block's pruned
 * fraction of FFN channels (the weights themselves: more rank to the blocks pruned hardest). */
void lora_plan_build(lora_plan *p, const model_config *c, const int *target, int r, double alpha, int alpha_scales,
                     int adaptive, const double *imp, double a, double temp_scale);
void lora_plan_free(lora_plan *p);
/* scaling of block l's adapters: alpha_l / r_l */
double lora_plan_scaling(const lora_plan *p, int l);

/* The coarse importances of a statistics file (stats.h5: /importance/<metric>, and the temperature
 * scale 131072/(nsamples*seqlen) of the default allocation mode; 1 with reference = 1), or of a
 * pruned checkpoint (/cfsp/importance, the run's options). FAIL on a layer-count mismatch. */
int lora_read_importance(const char *path, int L, const char *metric, int reference, double *imp, double *temp_scale);

/* The fraction of FFN channels pruned in each block of a pruned checkpoint: 1 - its /cfsp keep
 * fractions. FAIL if the file is not a pruned checkpoint of cfsp-mpi or has another block count. */
int lora_read_pruned_fraction(const char *path, int L, double *frac);

/* PEFT adapter_config.json (tmp name + rename; never over an existing file unless force) */
int lora_plan_write_peft(const lora_plan *p, const char *path, const char *base_model, int force);
#endif
