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
    default: cols = 0; break;                  /* LN1, LN2, BIAS, NORM: [D] */
    }
    dims[0] = r;
    dims[1] = cols;
    return kind == CK_KEPT || kind == CK_LN1 || kind == CK_LN2 || kind == CK_BIAS || kind == CK_NORM ? 1 : 2;
}

void ckpt_store_f32(dtype_t dt, const float *src, void *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == DT_F32) ((float *)dst)[i] = src[i];
        else if (dt == DT_BF16) ((uint16_t *)dst)[i] = f32_to_bf16(src[i]);
        else ((uint16_t *)dst)[i] = f32_to_f16(src[i]);
    }
}
