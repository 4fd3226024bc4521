/* train_ops.h — the training forward and backward ops of the LoRA recovery (issue 7), one function
 * per op, plain loops and BLAS gemm over flat row-major arrays of `real`, plus the composition into
 * a LLaMA block and the head. Written once for a scalar type: the program compiles them with real =
 * float (src/train/train_ops.c, train_block.c in libcfsp); the gradient check
 * (tests/test_train_grad.c) compiles the same source files with -DTRAIN_DOUBLE (real = double) and
 * compares every op and a whole block against central finite differences.
 *
 * Shapes: n tokens of one sequence at positions 0..n-1; linear weights W [out, in] (HF layout),
 * y = x W^T; LoRA A [r, in], B [out, r], y += s (x A^T) B^T. Backward functions overwrite their
 * input-gradient outputs unless they say "+=", and always accumulate (+=) parameter gradients.
 * No allocation here: every buffer comes from the caller. */
#ifndef CFSP_TRAIN_OPS_H
#define CFSP_TRAIN_OPS_H
#include <stddef.h>
#include <stdint.h>

#ifdef TRAIN_DOUBLE
typedef double real;
#else
typedef float real;
#endif

/* out = w * x / sqrt(mean(x^2) + eps) per row; rstd [n] kept for the backward */
void op_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int n, int D, real eps);
/* dx += d/dx (weight frozen) */
void op_rmsnorm_bwd(real *dx, const real *dout, const real *x, const real *w, const real *rstd, int n, int D);

/* a frozen linear map with an optional LoRA adapter (r = 0: none) */
typedef struct {
    const real *W;               /* [out, in] */
#ifndef TRAIN_DOUBLE
    /* or (Wst set) the frozen weight in its stored dtype, through the forward pass's matrix-product
     * backend (model/matmul.h: fp32 sgemm, or bf16 with the activations rounded): 16-bit weights a
     * panel of rows at a time converted to fp32 into panel (panel_floats floats, the same on every
     * rank: the panel partition fixes the order of the backward's sums) */
    const void *Wst;
    int wdt;                     /* dtype_t of Wst */
    float *panel;
    size_t panel_floats;
    const void *mms;             /* the bf16 backend's operand scratch (an mm_scratch of model/matmul.h) */
#endif
    int out, in, r;
    real s;                      /* alpha / r */
    const real *A, *B;           /* [r, in], [out, r] */
    real *dA, *dB;               /* gradients (+=) */
} lora_lin;
/* y = x W^T + s (x A^T) B^T; xa = x A^T [n, r] kept for the backward */
void op_linear_fwd(real *y, real *xa, const lora_lin *m, const real *x, int n);
/* dx = beta * dx + dy W + s (dy B) A  (dx may be NULL); dA += .., dB += ..; dxa: scratch [n, r] */
void op_linear_bwd(real *dx, real beta, real *dxa, const lora_lin *m, const real *dy, const real *x, const real *xa, int n);

/* HF rotate_half rotary embedding in place on x [n, nheads*hd]; cos/sin [n, hd/2] */
void op_rope_fwd(real *x, int n, int nheads, int hd, const real *cos, const real *sin);
/* the transposed rotation (the gradient), in place */
void op_rope_bwd(real *dx, int n, int nheads, int hd, const real *cos, const real *sin);

/* causal grouped-query attention: q [n, H*hd], k, v [n, K*hd], out [n, H*hd]; P [H, n, n] the
 * softmax probabilities (zero above the diagonal) kept for the backward */
void op_attn_fwd(real *out, real *P, const real *q, const real *k, const real *v, int n, int H, int K, int hd);
/* dq, dk, dv overwritten; dS: scratch [n, n] */
void op_attn_bwd(real *dq, real *dk, real *dv, real *dS, const real *dout, const real *P, const real *q, const real *k,
                 const real *v, int n, int H, int K, int hd);

/* h = silu(g) * u */
void op_swiglu_fwd(real *h, const real *g, const real *u, int64_t n);
void op_swiglu_bwd(real *dg, real *du, const real *dh, const real *g, const real *u, int64_t n);

/* cross-entropy of logits [n, V] against targets (< 0: no target): returns sum of -log p(target)
 * (double) and adds the number of targets to *count; with dlogits, dlogits = scale * (softmax - onehot)
 * on rows with a target, 0 elsewhere */
double op_xent(real *dlogits, const real *logits, const int32_t *tgt, int n, int V, real scale, int64_t *count);

/* y += x */
void op_add(real *y, const real *x, int64_t n);

/* ---- a block: x_out = x1 + down(swiglu(gate, up)(norm2(x1))) (+ bias), x1 = x + o(attn(rope(q,k), v)(norm1(x)));
 * q, k, v with Qwen2's biases, q and k with Qwen3's per-head norms before rope */
enum { OP_Q = 0, OP_K, OP_V, OP_O, OP_GATE, OP_UP, OP_DOWN, OP_NLIN };
typedef struct {
    int D, H, K, hd, m;
    real eps;
    const real *ln1, *ln2;       /* [D] */
    const real *bias;            /* down_proj bias [D] (flap) or NULL */
    const real *qb, *kb, *vb;    /* Qwen2: q/k/v_proj biases [H*hd], [K*hd], [K*hd] (frozen) or NULL */
    const real *qn, *kn;         /* Qwen3: q_norm / k_norm [hd], RMSNorm of every head before RoPE, or NULL */
    lora_lin lin[OP_NLIN];
} blk_params;

typedef struct {                 /* the activations one block keeps for the backward (n tokens) */
    real *x0, *rstd1, *xn1, *q, *k, *v, *P, *att, *x1, *rstd2, *xn2, *g, *u, *h;
    real *xa[OP_NLIN];           /* [n, r] each */
    real *qr, *kr, *rq, *rk;     /* Qwen3: q and k before their norms, the norms' rstd [n*H], [n*K] (else 0 elements) */
} blk_act;
#define BLK_NACT (14 + OP_NLIN + 4)

typedef struct {                 /* backward scratch (n tokens) */
    real *dxn, *dq, *dk, *dv, *datt, *dS, *dg, *du, *dh, *dxa;
    real *dqr, *dkr;             /* Qwen3: d(q), d(k) before the norms (else 0 elements) */
} blk_scratch;
#define BLK_NSCRATCH 12

/* element counts of the buffers above (for the caller's allocation); rmax = largest rank */
void blk_act_sizes(const blk_params *p, int n, int64_t *sizes /* [BLK_NACT] in struct order */);
void blk_scratch_sizes(const blk_params *p, int n, int rmax, int64_t *sizes /* [BLK_NSCRATCH] in struct order */);

void blk_forward(const blk_params *p, blk_act *a, const real *x_in, real *x_out, int n, const real *cos, const real *sin);
/* dx: in d(x_out), out d(x_in) (in place); adapter gradients accumulate */
void blk_backward(const blk_params *p, const blk_act *a, real *dx, int n, const real *cos, const real *sin, blk_scratch *s);

/* ---- the head: loss = sum_t -log softmax(norm(x_t) E^T)[tgt_t] ----
 * (the gradient check's form, E fp32 in one piece; the program's trainers compute the same on
 * lm_head panels in its stored dtype: trainer_head, train.h) */
typedef struct {
    int D, V;
    real eps;
    const real *norm;            /* [D] */
    const real *E;               /* lm_head [V, D] */
} head_params;
/* buffers: xn [n, D], rstd [n], logits [n, V]; with dx (overwritten), the backward of scale * loss */
double head_loss(const head_params *p, const real *x, const int32_t *tgt, int n, real scale, real *dx,
                 real *xn, real *rstd, real *logits, int64_t *count);
#endif
