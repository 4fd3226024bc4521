/* weights.h — the weights one rank holds: its own blocks (plus embeddings on the first stage and
 * final norm / lm_head on the last), kept in their stored dtype (views into the mmap, or owned
 * copies after pruning). Compute converts to fp32 on the fly (forward.c). */
#ifndef CFSP_WEIGHTS_H
#define CFSP_WEIGHTS_H
#include "cfsp/model_config.h"
#include "cfsp/safetensors.h"

typedef struct {
    dtype_t dtype;
    int64_t rows, cols;          /* row-major [rows, cols], as HF stores Linear weights [out, in] */
    const void *data;
    void *owned;                 /* non-NULL if data was allocated here */
} wmat;

typedef struct {
    int layer;
    int ffn;                     /* m_l, current (pruned) FFN size */
    float *ln1, *ln2;            /* RMSNorm weights, fp32 [D] */
    dtype_t ln_dtype;            /* their stored dtype (fp32 copies convert back exactly) */
    wmat q, k, v, o;
    wmat gate, up, down;
    float *down_bias;            /* [D] or NULL (flap bias compensation) */
} block_weights;

typedef struct {
    model_config *cfg;
    int first_block, last_block; /* this rank's blocks [first, last) */
    int has_embed, has_head;
    block_weights *blocks;       /* last_block - first_block entries */
    wmat embed;                  /* [V, D] (first stage, and last stage when tied) */
    wmat lm_head;                /* [V, D] */
    float *final_norm;           /* [D] */
    dtype_t final_norm_dtype;
    uint64_t bytes_expected;     /* stored bytes of the tensors this rank needs */
} rank_weights;

/* Map and validate (name, shape, dtype) every tensor this rank needs. */
int weights_load(st_model *st, model_config *cfg, int first, int last, int has_embed, int has_head, rank_weights *w);
void weights_free(rank_weights *w);
void block_weights_free(block_weights *b);
size_t wmat_bytes(const wmat *m);
/* row r of m converted to fp32 */
void wmat_row_f32(const wmat *m, int64_t r, float *out);
void convert_to_f32(dtype_t dt, const void *src, float *dst, size_t n);
#endif
