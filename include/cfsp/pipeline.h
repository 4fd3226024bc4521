/* pipeline.h — blocks split into contiguous stages (one per rank, balanced by parameter count)
 * and the pipelined schedule: micro-batches (sequences, or chunks of a sequence) flow rank to
 * rank with non-blocking point-to-point messages; the first stage embeds, the last computes the
 * loss. The same schedule serves calibration (statistics hook) and evaluation (perplexity). */
#ifndef CFSP_PIPELINE_H
#define CFSP_PIPELINE_H
#include "cfsp/forward.h"
#include "cfsp/stats.h"
#include <stdio.h>

typedef struct {
    int nranks;
    int *first;          /* first[r]..first[r+1]-1 are rank r's blocks; first[nranks] = L */
} stage_map;

int stages_plan(const model_config *c, int nranks, stage_map *map);
void stages_free(stage_map *map);

typedef struct {
    const uint32_t *tokens;    /* the whole token stream (identical on every rank) */
    const int64_t *offsets;    /* start of each sequence in tokens */
    int nseq, seqlen, chunk;   /* micro-batch = chunk tokens of one sequence; chunk divides seqlen */
    block_stats *stats;        /* this rank's blocks, or NULL */
    int eval;                  /* last stage computes the loss */
    FILE *dump_logits;         /* last stage: raw float32 logits of every position, or NULL */
    const char *label;         /* for progress lines */
    /* results (eval: valid on every rank after the run) */
    double nll_sum;
    int64_t ntok;
    double seconds, compute_seconds, wait_seconds;
} pipe_job;

typedef struct {
    const model_config *cfg;
    const rank_weights *w;
    int rank, nranks;
    int first, last;           /* this rank's blocks */
    fwd_ws ws;
    float *kcache, *vcache;    /* per own block [seqlen, KV] */
    float *buf[3];             /* rotating micro-batch buffers [chunk, D] */
    int seqlen, chunk;
} pipeline;

void pipeline_init(pipeline *p, const model_config *c, const rank_weights *w, int rank, int nranks, int seqlen, int chunk);
void pipeline_free(pipeline *p);
/* blocks: this rank's (possibly pruned) block weights, last-first entries */
void pipeline_run(pipeline *p, const block_weights *blocks, pipe_job *job);
#endif
