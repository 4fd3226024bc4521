/* pipeline.h — the stage map and the pipelined schedule (layer: pipeline).
 *
 * The units (model/units.h) are fixed by the model and --ffn-slice, never by the rank count, so
 * every run performs the same sequence of matrix products and sums whatever the number of ranks.
 * Ranks own contiguous runs of units, balanced by
 * cost; micro-batches (a sequence, or --chunk tokens of one) flow rank to rank with non-blocking
 * point-to-point messages carrying the residual stream, the partial FFN sum and the block input;
 * the first stage embeds, the last computes the loss. The same schedule serves calibration
 * (statistics hook) and evaluation (perplexity). */
#ifndef CFSP_PIPELINE_H
#define CFSP_PIPELINE_H
#include "cfsp/model/forward.h"
#include "cfsp/model/units.h"
#include <stdio.h>

typedef struct {
    int nranks;
    int *first;                /* first[r]..first[r+1]-1 are rank r's units; first[nranks] = units */
} stage_map;

/* contiguous runs of units minimising the largest stage cost; every rank at least one unit */
int stages_plan(const unit_plan *p, int nranks, stage_map *map);
void stages_free(stage_map *map);
int stage_of_unit(const stage_map *map, int u);

typedef struct {
    const uint32_t *tokens;    /* the whole token stream (identical on every rank) */
    const int64_t *offsets;    /* start of each sequence in tokens */
    int nseq, seqlen, chunk;   /* micro-batch = chunk tokens of one sequence; chunk divides seqlen */
    const fwd_hook *hook;      /* the statistics hook (calibration), or NULL */
    int eval;                  /* last stage computes the loss */
    int score_from;            /* eval: the logits at positions score_from..seqlen-2 of every sequence are
                                  scored (0: every position that has a target) */
    FILE *dump_logits;         /* last stage: raw float32 logits of every position, or NULL */
    eval_ref *ref;             /* last stage: the dense reference (records or compares), or NULL */
    const char *label;         /* for progress lines */
    double *seq_nll;           /* eval: [nseq] each sequence's summed NLL (on every rank after the run), or NULL */
    /* results (eval: valid on every rank after the run) */
    double nll_sum;
    int64_t ntok;
    double seconds, compute_seconds, wait_seconds;
    double rank_seconds;           /* this rank's own pipeline time (seconds: the slowest rank's, set by the caller) */
} pipe_job;

typedef struct {
    const model_config *cfg;
    const rank_weights *w;
    int rank, nranks;
    fwd_ws ws;
    float *kcache, *vcache;    /* per own attention unit [seqlen, KV] */
    float *buf[3];             /* rotating micro-batch buffers: x, acc, hin, each [chunk, D] */
    int seqlen, chunk;
} pipeline;

void pipeline_init(pipeline *p, const model_config *c, const rank_weights *w, int rank, int nranks, int seqlen, int chunk);
void pipeline_free(pipeline *p);
/* units: this rank's (possibly pruned) unit weights, last-first entries */
void pipeline_run(pipeline *p, const unit_weights *units, pipe_job *job);
#endif
