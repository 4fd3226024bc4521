/* forward.h — the LLaMA forward pass, one function per layer op (llama2.c style), over flat
 * row-major fp32 arrays. Matrix products go through the matmul backend (matmul.h): OpenBLAS sgemm
 * in fp32 (weights stored in bf16/f16 converted a row panel at a time into a bounded scratch
 * buffer), or oneDNN with bf16-rounded operands in bf16; everything else is fp32. */
#ifndef CFSP_FORWARD_H
#define CFSP_FORWARD_H
#include "cfsp/model/evalref.h"
#include "cfsp/model/matmul.h"
#include "cfsp/model/weights.h"

/* The statistics hook: what the calibration sees of a block (prune/stats.c implements it; the
 * model layer only calls it). channels: the down_proj input act [n, k] of the block's channels
 * c0..c0+k-1; block: the block's input hin and output hout [n, D], after its last FFN slice. */
typedef struct fwd_hook {
    void (*channels)(void *ctx, int layer, const float *act, int n, int k, int c0);
    void (*block)(void *ctx, int layer, const float *hin, const float *hout, int n, int D);
    void *ctx;
} fwd_hook;

typedef struct {
    int D, H, K, hd, ctx, chunk, m_max, V;
    float *xn, *hin, *q, *att, *scores, *g, *u, *tmp;
    float *rope_cos, *rope_sin;        /* [ctx, hd/2] */
    float *scratch;                    /* weight conversion panel */
    size_t scratch_floats;
    float *logits;                     /* [head_rows, V] on the last stage */
    int head_rows;
    mm_scratch mm;                     /* bf16 mode: rounded operands (matmul.h); empty in fp32 */
} fwd_ws;

/* ctx: longest sequence; chunk: most tokens per call */
void fwd_ws_init(fwd_ws *ws, const model_config *c, int ctx, int chunk, int need_head);
/* the same, with the gate/up activation buffers sized for FFN units of at most ffn_width
 * channels (an FFN slice) instead of the widest block (0: the widest block) */
void fwd_ws_init_width(fwd_ws *ws, const model_config *c, int ctx, int chunk, int need_head, int ffn_width);
void fwd_ws_free(fwd_ws *ws);
/* the bytes fwd_ws_init_width allocates for the same arguments, by purpose: the conversion panel,
 * the activations (xn hin tmp q att scores g u), the RoPE tables, the last stage's logits and, in
 * the bf16 mode (mm_bf16() when called), the rounded operands */
typedef struct { size_t panel, acts, rope, logits, operands; } fwd_ws_size;
fwd_ws_size fwd_ws_bytes(const model_config *c, int ctx, int chunk, int need_head, int ffn_width);

void embed_tokens(const wmat *emb, const uint32_t *ids, int n, float *x);
void rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps);
void linear(float *y, const float *x, int n, const wmat *W, float beta, fwd_ws *ws);
void attention(float *out, const float *q, const float *kc, const float *vc, int n, int pos0, fwd_ws *ws);
void swiglu(float *g, const float *u, size_t n);

/* The attention half of a block on n tokens at positions pos0..pos0+n-1: x += o(attn(norm(x))).
 * kc/vc hold the block's keys/values for positions 0..pos0+n-1 (filled here for the new ones). */
void attention_unit(const unit_weights *u, float *x, int n, int pos0, float *kc, float *vc,
                    const model_config *c, fwd_ws *ws);
/* One FFN slice: acc (+)= down_s(silu(gate_s(norm(x))) * up_s(norm(x))) (+ the slice's bias share);
 * the first slice starts acc, the last adds it to x. With a hook, the slice's down_proj input
 * goes to hook->channels, and after the last slice (hin, x) to hook->block. */
void ffn_unit(const unit_weights *u, float *x, float *acc, const float *hin, int n,
              const fwd_hook *hook, const model_config *c, fwd_ws *ws);

/* Final norm + lm_head over n positions; adds -log p(target) for positions with target >= 0 to
 * *nll (double) and counts them. If logits_out is non-NULL, the logits [n, V] are copied there; if
 * ref is non-NULL, each position with a target is passed to it (evalref.h: recorded or compared). */
void head_nll(const rank_weights *w, const float *x, int n, const int32_t *targets, double *nll,
              int64_t *count, float *logits_out, eval_ref *ref, fwd_ws *ws);
#endif
