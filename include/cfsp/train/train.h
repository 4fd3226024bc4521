/* train.h — `cfsp-mpi recover`: LoRA recovery fine-tuning of a pruned model (issue 7).
 *
 * Data parallel: every rank holds the whole (small) pruned model, frozen, in its stored dtype (a
 * block's matrices are converted to fp32 one block at a time only when they are not F32), and the
 * same fp32 master adapters. A step takes a global batch of B windows of T tokens from the
 * training tokens (offsets from the seed and the step number only), rank p computes windows
 * [p B/P, (p+1) B/P) one at a time (forward keeping activations, backward, train_ops.h), adds
 * each window's adapter gradient to a double accumulator in window order, and one MPI_Allreduce
 * (MPI_SUM, double) combines the ranks; gradient-norm clipping, AdamW and the cosine schedule then
 * run identically on every rank. Loss = mean next-token cross-entropy over the batch's B (T-1)
 * predictions.
 *
 *   train_io.c   the model (pruned HDF5 of model_h5.h, or a Hugging Face directory), adapter
 *                checkpoints (HDF5, rank 0, tmp + rename), --merge (a pruned HDF5 in the same
 *                format with B A alpha/r folded in), PEFT adapter_model.safetensors
 *   trainer.c    adapters, one training step, evaluation (perplexity of windows), the schedule */
#ifndef CFSP_TRAIN_H
#define CFSP_TRAIN_H
#include "cfsp/model/weights.h"
#include "cfsp/train/lora_plan.h"
#include "cfsp/train/train_ops.h"
#include <stdint.h>

typedef struct {
    model_config cfg;
    char path[4096];             /* the pruned .h5 file or the HF directory */
    int from_h5;
    char src_dir[4096];          /* the source checkpoint (tokenizer, provenance) */
    wmat (*w)[LORA_NMOD];        /* [L][7] frozen projections, stored dtype, owned */
    float **ln1, **ln2, **bias;  /* [L] fp32 copies of the norms; bias NULL unless flap */
    wmat embed;                  /* [V, D] */
    float *head_f32;             /* lm_head (or the tied embedding) as fp32 [V, D] */
    float *final_norm;
} train_model;

int train_model_load(const char *path, train_model *m);
void train_model_free(train_model *m);

typedef struct {
    int seqlen, batch, steps, warmup;
    double lr, min_lr_ratio, weight_decay, clip, beta1, beta2, adam_eps;
    uint64_t seed;
} train_hparams;

typedef struct {
    const train_model *m;
    lora_plan plan;
    int64_t nparam;
    int64_t (*offA)[LORA_NMOD], (*offB)[LORA_NMOD];   /* [L][7] offsets into the flat arrays, -1 if not adapted */
    float *param, *grad, *adam_m, *adam_v;          /* [nparam]: A and B of every adapter, block by block */
    double *gacc;
    int step;                                      /* optimizer steps done */
    /* work buffers */
    int T, rmax;
    blk_params *bp;
    blk_act *act;
    blk_scratch sc;
    float *x, *y, *dx, *xn, *rstd, *logits, *cosb, *sinb, *wconv;
    int32_t *tgt;
} trainer;

void trainer_init(trainer *tr, const train_model *m, const lora_plan *plan, int seqlen, uint64_t seed);
void trainer_free(trainer *tr);
/* the global batch of step s (1-based): B window offsets into ntok tokens */
void train_batch_offsets(uint64_t seed, int step, int B, int T, int64_t ntok, int64_t *off);
double train_lr(const train_hparams *h, int step);
/* collective: one optimizer step on the global batch; returns the batch's mean loss; *gnorm the
 * global gradient norm before clipping */
double trainer_step(trainer *tr, const train_hparams *h, const uint32_t *tokens, int64_t ntok, double *gnorm);
/* collective: perplexity over the first nwin non-overlapping windows of T tokens (split across ranks) */
double trainer_eval(trainer *tr, const uint32_t *tokens, int64_t ntok, int nwin, double *nll, int64_t *count);

/* rank 0: adapters + optimizer state to path (written as path.tmp, renamed) */
int train_ckpt_write(const trainer *tr, const char *path, const char *meta_json);
/* every rank: restore; FAILs unless the plan (ranks, targets, shapes) matches */
int train_ckpt_read(trainer *tr, const char *path);
/* rank 0: the pruned checkpoint with every adapter folded in (W += alpha/r B A, rounded to the stored dtype) */
int train_merge_write(const trainer *tr, const char *out_path);
/* rank 0: PEFT adapter_model.safetensors (F32 lora_A / lora_B) */
int train_peft_write(const trainer *tr, const char *out_path);
#endif
