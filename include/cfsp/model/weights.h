/* weights.h — the weights one rank holds, per stage unit: the attention half of a block, or one
 * FFN channel slice of a block (plus embeddings on the first stage and final norm / lm_head on
 * the last). Matrices stay in their stored dtype (views into the mmap, or owned copies after
 * pruning); compute converts to fp32 on the fly (forward.c). */
#ifndef CFSP_WEIGHTS_H
#define CFSP_WEIGHTS_H
#include "cfsp/format/model_config.h"
#include "cfsp/format/safetensors.h"
#include "cfsp/model/units.h"

typedef struct {
    dtype_t dtype;
    int64_t rows, cols;          /* row-major [rows, cols], as HF stores Linear weights [out, in] */
    int64_t ld;                  /* elements between consecutive rows (>= cols; a column slice has ld > cols) */
    const void *data;
    void *owned;                 /* non-NULL if data was allocated here */
} wmat;

/* One stage unit: slice < 0 is the attention half of the block; otherwise FFN channels [c0, c1)
 * of the block's original numbering (after pruning, the kept ones among them: k of them). */
typedef struct {
    int layer, slice, nslices;
    int c0, c1, k;
    dtype_t ln_dtype;
    float *ln;                   /* input_layernorm (attention) or post_attention_layernorm (FFN), fp32 [D] */
    wmat q, k_proj, v, o;        /* attention */
    float *qb, *kb, *vb;         /* Qwen2: q/k/v_proj biases, fp32 [Q], [KV], [KV] (else NULL) */
    float *qn, *kn;              /* Qwen3: q_norm / k_norm weights, fp32 [head_dim] (else NULL) */
    dtype_t extra_dtype[5];      /* stored dtype of qb kb vb qn kn */
    wmat gate, up, down;         /* FFN slice: gate/up [k, D], down [D, k] */
    float *bias;                 /* FFN slice: this slice's share of flap's down_proj bias [D], or NULL */
    uint64_t bytes;              /* stored bytes of this unit's tensors (or tensor slices) */
} unit_weights;

typedef struct {
    model_config *cfg;
    int first_unit, last_unit;   /* this rank's units [first, last) of the unit plan */
    int has_embed, has_head;
    unit_weights *units;
    wmat embed;                  /* [V, D] (first stage, and last stage when tied) */
    wmat lm_head;                /* [V, D] */
    float *final_norm;           /* [D] */
    dtype_t final_norm_dtype;
    uint64_t bytes_expected;     /* stored bytes of everything this rank needs */
} rank_weights;

/* Map and validate (name, shape, dtype) every tensor this rank's units need. */
int weights_load(st_model *st, model_config *cfg, const unit_plan *plan, int first, int last,
                 int has_embed, int has_head, rank_weights *w);
void weights_free(rank_weights *w);
/* FAIL naming the first '*.bias' or self_attn q/k norm tensor of the checkpoint that model c does not
 * use (read by nothing, it would silently change the model: e.g. Qwen2 biases under a LLaMA config) */
int weights_check_biases(const st_model *st, const model_config *c);
/* Then every other tensor against the names the model reads (weights_check_unused): a tensor of a
 * layer >= num_hidden_layers, or an unknown tensor inside a block (a weight this forward pass has
 * no place for), is refused; the rest (rotary inv_freq buffers, a tied model's lm_head.weight,
 * other top-level extras) changes nothing and gets one warning line (rank 0) naming them. */
int weights_check_unused(const st_model *st, const model_config *c);
void unit_weights_free_owned(unit_weights *u);
/* Drop the resident pages of a view into the mmap (whole pages inside it) from this process: the
 * data stays valid and is faulted back in from the page cache or the file if read again. Used
 * after a unit is sliced, so its pruned copy does not sit in memory beside the original. */
void wmat_release_pages(const wmat *m);
/* row r of m converted to fp32 */
void wmat_row_f32(const wmat *m, int64_t r, float *out);
void convert_to_f32(dtype_t dt, const void *src, float *dst, size_t n);
#endif
