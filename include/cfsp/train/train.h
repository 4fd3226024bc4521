/* train.h — `cfsp-mpi recover`: LoRA recovery fine-tuning of a pruned model (issues 7 and 15).
 *
 * Two trainers, one arithmetic. A step takes a global batch of B windows of T tokens from the
 * training tokens (offsets from the seed and the step number only); every window's forward and
 * backward run block by block (train_ops.h), the window's adapter gradient (float) is added to a
 * double accumulator in window order, and the gradient norm is the sum over blocks, in block order,
 * of each block's sum of squares; clipping, AdamW and the cosine schedule then run per parameter.
 * Loss = mean next-token cross-entropy over the batch's B (T-1) predictions.
 *
 *  - data parallel (TRAINER_DATA): every rank holds the whole (small) pruned model, frozen, in its
 *    stored dtype, and all adapters; rank p computes windows [p B/P, (p+1) B/P) and one
 *    MPI_Allreduce (MPI_SUM, double) combines the ranks' accumulators.
 *  - pipelined (TRAINER_PIPELINE, train_pipe.c): stage s of S holds only the blocks
 *    [first[s], first[s+1]) (stored dtype), their adapters and AdamW state, stage 0 the embedding,
 *    stage S-1 the final norm and lm_head. Windows are the micro-batches of a 1F1B schedule:
 *    hidden states flow down, their gradients flow up; each stage keeps the activations of its
 *    blocks for the windows in flight (S - s of them) when they fit (--recompute auto), else only
 *    the blocks' inputs, recomputing the activations in the backward (except for the window whose
 *    activations are still there). Every stage sums its windows in
 *    window order, so the adapters after a step are bitwise those of the data-parallel trainer on
 *    one rank, at any rank count. Ranks beyond S (more ranks than blocks) hold nothing and only
 *    join the collectives.
 *    Data parallelism on top (--replicas R): R pipelines of S stages each take a contiguous share
 *    of the batch. The batch is cut into G gradient groups of contiguous windows (--grad-groups,
 *    a multiple of R); every stage sums each group's windows in window order, the stage's ranks of
 *    all replicas exchange their groups' sums (MPI_Allgather) and add the G sums in group order.
 *    The order depends on G only, so the adapters are bitwise the same for every R dividing G and
 *    any stage count (R = 1 included); with G = 1 it is the data-parallel trainer's order. The
 *    replicas then hold identical adapters; replica 0 writes the checkpoint and the merge.
 *
 *   train_io.c   the model (pruned HDF5 of model_h5.h, or a Hugging Face directory; a block range),
 *                adapter checkpoints (one HDF5 file, every rank writing its own part, tmp +
 *                rename), --merge (a pruned HDF5 in the same format with B A alpha/r folded in,
 *                each rank writing its blocks), PEFT adapter_model.safetensors
 *   trainer.c    adapters, the data-parallel step, the update, evaluation, the schedule
 *   train_pipe.c the stage plan, the pipelined step and evaluation */
#ifndef CFSP_TRAIN_H
#define CFSP_TRAIN_H
#include "cfsp/model/matmul.h"
#include "cfsp/model/weights.h"
#include "cfsp/train/lora_plan.h"
#include "cfsp/train/train_ops.h"
#include <mpi.h>
#include <stdint.h>

typedef struct {
    model_config cfg;
    int b0, b1;                  /* the blocks held: [b0, b1) (the others' entries are empty) */
    int has_embed, has_head;
    char path[4096];             /* the pruned .h5 file or the HF directory */
    int from_h5;
    char src_dir[4096];          /* the source checkpoint (tokenizer, provenance) */
    wmat (*w)[LORA_NMOD];        /* [L][7] frozen projections, stored dtype, owned */
    float **ln1, **ln2, **bias;  /* [L] fp32 copies of the norms; bias NULL unless flap */
    float **extra[5];            /* [L] fp32 q/k/v_proj biases (Qwen2) and q/k norms (Qwen3), NULL where the family has none */
    wmat embed;                  /* [V, D] */
    wmat head;                   /* lm_head (or the tied embedding) [V, D], stored dtype; owned
                                  * unless it is the loaded embedding itself (tied) */
    float *final_norm;
} train_model;

int train_model_load(const char *path, train_model *m);
/* only blocks [b0, b1), the embedding if embed, the final norm and lm_head if head */
int train_model_load_range(const char *path, int b0, int b1, int embed, int head, train_model *m);
void train_model_free(train_model *m);

typedef struct {
    int seqlen, batch, steps, warmup;
    double lr, min_lr_ratio, weight_decay, clip, beta1, beta2, adam_eps;
    uint64_t seed;
} train_hparams;

typedef enum { TRAINER_DATA = 0, TRAINER_PIPELINE = 1 } trainer_kind;
extern const char *const trainer_kind_names[2];   /* "data", "pipeline" */

/* the pipeline's stages: S = min(P, L + 1) stages of contiguous blocks, the largest stage cost (a
 * training step's flops per token: forward, recomputation and backward of its blocks, the head's
 * on the last) as small as possible, every stage at least one block but the last, which may hold
 * the head alone */
typedef struct {
    int nstages;
    int *first;                  /* [S + 1]: stage s holds blocks first[s] .. first[s+1]-1 */
    double *cost;                /* [S] flops per token of a step */
    int replicas;                /* R pipelines of S stages (world rank = replica x S + stage), set by the caller */
    int groups;                  /* G gradient groups (R divides G), set by the caller */
    int recompute;               /* 1: recompute activations in the backward, 0: keep them for the
                                  * windows in flight, -1: auto (keep when they take at most an
                                  * eighth of the stage's weights + 256 MB); set by the caller */
} train_stages;
void train_stages_plan(const model_config *c, const lora_plan *plan, int T, int P, train_stages *st);
void train_stages_free(train_stages *st);
/* flops per token of block l's training step (forward twice, backward) and of the head's */
double train_block_cost(const model_config *c, const lora_plan *plan, int l, int T);
double train_head_cost(const model_config *c);

typedef struct {
    const train_model *m;
    lora_plan plan;
    trainer_kind kind;
    int stage, nstages;                            /* pipeline: this rank's stage (-1: idle) of S */
    int replica, replicas, base;                   /* pipeline: this rank's replica of R, its world rank of stage 0 */
    int groups;                                    /* pipeline: G gradient groups of the batch */
    double *gsum;                                  /* pipeline, G > 1: [G][nlocal] the groups' sums */
    MPI_Comm stage_comm;                           /* pipeline, R > 1: this stage's ranks of every replica */
    int *first;                                    /* pipeline: [S + 1] the stage map (a copy) */
    int b0, b1;                                    /* the blocks whose adapters this rank holds */
    int64_t nparam;                                /* all adapters' parameters */
    int64_t pbase, nlocal;                         /* this rank's part: global offsets [pbase, pbase + nlocal) */
    int64_t (*offA)[LORA_NMOD], (*offB)[LORA_NMOD];   /* [L][7] global offsets into the flat arrays, -1 if not adapted */
    float *param, *grad, *adam_m, *adam_v;          /* [nlocal]: A and B of every adapter held, block by block */
    double *gacc;
    int step;                                      /* optimizer steps done */
    /* pipeline: windows in flight, their block inputs, the window whose activations act[l] holds */
    int slots;
    int store_act;                                 /* pipeline: activations kept per window in flight (no recomputation) */
    blk_act *acts;                                 /* store_act: [slots][b1 - b0] */
    double act_bytes;                              /* pipeline: bytes of the activations held (kept or one set per block) */
    float *xin;                                    /* [slots][b1 - b0][T, D] */
    float *sendbuf;                                /* [2][T, D] the forward messages in flight */
    float *dxbuf;                                  /* [T, D] the gradient flowing up */
    int *act_win;                                  /* [L] */
    double compute_seconds, wait_seconds;          /* this rank's, accumulated over steps */
    /* work buffers */
    int T, rmax;
    blk_params *bp;
    blk_act *act;
    blk_scratch sc;
    float *x, *y, *dx, *xn, *rstd, *logits, *cosb, *sinb;
    float *wconv;                                  /* the fp32 panel of 16-bit weight rows (train_ops.h) */
    mm_scratch mms;                                /* bf16 mode: the rounded operands (model/matmul.h) */
    float *hpanel;                                 /* [HEAD_PANEL, D]: lm_head rows converted to fp32 */
    int32_t *tgt;
} trainer;

/* kind TRAINER_DATA: m holds every block; TRAINER_PIPELINE: m holds stage `stage`'s blocks of st
 * (stage -1: an idle rank, m empty) */
void trainer_init(trainer *tr, const train_model *m, const lora_plan *plan, int seqlen, uint64_t seed, trainer_kind kind,
                  const train_stages *st, int stage);
/* the parameter pointer of global offset off (held by this rank) */
static inline float *trainer_param(const trainer *tr, int64_t off) { return tr->param + (off - tr->pbase); }
void trainer_free(trainer *tr);
/* the global batch of step s (1-based): B window offsets into ntok tokens */
void train_batch_offsets(uint64_t seed, int step, int B, int T, int64_t ntok, int64_t *off);
double train_lr(const train_hparams *h, int step);
/* collective: one optimizer step on the global batch; returns the batch's mean loss; *gnorm the
 * global gradient norm before clipping */
double trainer_step(trainer *tr, const train_hparams *h, const uint32_t *tokens, int64_t ntok, double *gnorm);
double trainer_pipe_step(trainer *tr, const train_hparams *h, const uint32_t *tokens, int64_t ntok, double *gnorm);
/* after the batch's gradient is in tr->gacc: the global norm (block order), clipping, AdamW; loss and
 * count are the batch's sums (valid on every rank) */
double trainer_update(trainer *tr, const train_hparams *h, int step, const double *red, double *gnorm);
/* the head on the stored lm_head, HEAD_PANEL rows converted to fp32 at a time (no fp32 copy of
 * the [V, D] matrix): loss = sum over targets of -log softmax(norm(x) E^T); with dx (overwritten),
 * the backward of scale * loss. tr->logits [n, V] holds the logits (then their gradient). */
#define HEAD_PANEL 2048
/* floats of the panel through which 16-bit frozen weights are used (at most the largest projection) */
#define TRAIN_PANEL_FLOATS ((size_t)1 << 22)
double trainer_head(trainer *tr, const float *x, int n, float scale, float *dx, int64_t *count);
/* the stage that holds block l's adapters (data parallel: 0, every rank holds them) */
int trainer_owner(const trainer *tr, int l);
/* collective: perplexity over the first nwin non-overlapping windows of T tokens (split across ranks) */
double trainer_eval(trainer *tr, const uint32_t *tokens, int64_t ntok, int nwin, double *nll, int64_t *count);
double trainer_pipe_eval(trainer *tr, const uint32_t *tokens, int64_t ntok, int nwin, double *nll, int64_t *count);

/* collective: adapters + optimizer state to path (path.tmp, renamed): one file, the same for both
 * trainers and any rank count; data parallel: rank 0 writes it all; pipelined: every rank its part */
int train_ckpt_write(const trainer *tr, const char *path, const char *meta_json);
/* every rank: restore its part; FAILs unless the plan (ranks, targets, shapes) matches */
int train_ckpt_read(trainer *tr, const char *path);
/* collective: the pruned checkpoint with every adapter folded in (W += alpha/r B A, rounded to the
 * stored dtype); data parallel: rank 0 writes it; pipelined: every rank its blocks */
int train_merge_write(const trainer *tr, const char *out_path);
/* collective: PEFT adapter_model.safetensors (F32 lora_A / lora_B), written by rank 0 (pipelined:
 * each block's adapters sent to it in turn) */
int train_peft_write(const trainer *tr, const char *out_path);
#endif
