/* layout.c — the names and shapes of the pruned checkpoint's tensors (see layout.h). */
#include "cfsp/ckpt/layout.h"
#include "cfsp/util/util.h"
#include <stdio.h>

/* [kind]: the name after "model.layers.N." (block kinds) or the whole name */
static const char *const kind_name[] = {
    [CK_LN1] = "input_layernorm.weight",
    [CK_LN2] = "post_attention_layernorm.weight",
    [CK_Q] = "self_attn.q_proj.weight",
    [CK_K] = "self_attn.k_proj.weight",
    [CK_V] = "self_attn.v_proj.weight",
    [CK_O] = "self_attn.o_proj.weight",
    [CK_GATE] = "mlp.gate_proj.weight",
    [CK_UP] = "mlp.up_proj.weight",
    [CK_DOWN] = "mlp.down_proj.weight",
    [CK_KEPT] = "mlp.kept_channels",
    [CK_BIAS] = "mlp.down_proj.bias",
    [CK_QB] = "self_attn.q_proj.bias",
    [CK_KB] = "self_attn.k_proj.bias",
    [CK_VB] = "self_attn.v_proj.bias",
    [CK_QN] = "self_attn.q_norm.weight",
    [CK_KN] = "self_attn.k_norm.weight",
    [CK_EMBED] = "model.embed_tokens.weight",
    [CK_NORM] = "model.norm.weight",
    [CK_HEAD] = "lm_head.weight",
};

void ckpt_tensor_name(ckpt_kind kind, int l, char *out, size_t n)
{
    if (kind < CK_NBLOCK) snprintf(out, n, "model.layers.%d.%s", l, kind_name[kind]);
    else snprintf(out, n, "%s", kind_name[kind]);
}

void ckpt_dataset_path(const char *name, char *out, size_t n)
{
    snprintf(out, n, "/%s", name);
    for (char *p = out; *p; p++) if (*p == '.') *p = '/';
}

int ckpt_tensor_shape(const model_config *c, ckpt_kind kind, int64_t m, int64_t dims[2])
{
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t r = D, cols = D;
    switch (kind) {
    case CK_Q: r = Q; break;
    case CK_K: case CK_V: r = KV; break;
    case CK_O: cols = Q; break;
    case CK_GATE: case CK_UP: r = m; break;
    case CK_DOWN: cols = m; break;
    case CK_EMBED: case CK_HEAD: r = c->vocab; break;
    case CK_KEPT: r = m; cols = 0; break;
    case CK_QB: r = Q; cols = 0; break;
    case CK_KB: case CK_VB: r = KV; cols = 0; break;
    case CK_QN: case CK_KN: r = c->head_dim; cols = 0; break;
    default: cols = 0; break;                  /* LN1, LN2, BIAS, NORM: [D] */
    }
    dims[0] = r;
    dims[1] = cols;
    /* 1-D: norms, biases, kept channels (a 2-D tensor may have 0 columns: down_proj of an empty block) */
    return kind == CK_KEPT || kind == CK_LN1 || kind == CK_LN2 || kind == CK_BIAS || kind == CK_NORM ||
                   (kind >= CK_QB && kind <= CK_KN) ? 1 : 2;
}

int ckpt_kind_in_block(const model_config *c, ckpt_kind k)
{
    if (k == CK_QB || k == CK_KB || k == CK_VB) return c->qkv_bias;
    if (k == CK_QN || k == CK_KN) return c->qk_norm;
    return k < CK_NBLOCK && k != CK_BIAS;
}

int ckpt_attn_extras(const model_config *c, ckpt_kind out[5])
{
    int n = 0;
    for (ckpt_kind k = CK_QB; k <= CK_KN; k++) if (ckpt_kind_in_block(c, k)) out[n++] = k;
    return n;
}

void ckpt_store_f32(dtype_t dt, const float *src, void *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == DT_F32) ((float *)dst)[i] = src[i];
        else if (dt == DT_BF16) ((uint16_t *)dst)[i] = f32_to_bf16(src[i]);
        else ((uint16_t *)dst)[i] = f32_to_f16(src[i]);
    }
}
