/* plan_mem.c — the per-rank memory of a run (see plan_mem.h): the stored sizes of the tensors
 * weights_load maps (model/weights.c) and the buffers pipeline_init (pipeline.c) and
 * fwd_ws_init_width (model/forward.c) allocate, term by term, and the request rule. */
#include "cfsp/pipeline/plan_mem.h"
#include "cfsp/util/err.h"
#include <stdio.h>
#include <string.h>

/* the stored dtype of a tensor: from the checkpoint's headers, or the config's torch_dtype */
static int stored_dtype(const model_config *c, const st_model *st, const char *name, dtype_t *dt)
{
    if (!st) {
        *dt = !strcmp(c->torch_dtype, "float32") ? DT_F32 : !strcmp(c->torch_dtype, "float16") ? DT_F16 : DT_BF16;
        return 0;
    }
    const st_tensor *t = st_find(st, name);
    if (!t) return FAIL("%s: tensor '%s' is missing", st->nfiles ? st->files[0].path : "safetensors", name);
    *dt = t->dtype;
    return 0;
}

/* stored bytes of one unit, as load_unit counts them */
static int unit_stored(const model_config *c, const st_model *st, const stage_unit *su, uint64_t *bytes)
{
    uint64_t D = (uint64_t)c->hidden, Q = (uint64_t)c->n_heads * c->head_dim, KV = (uint64_t)c->n_kv_heads * c->head_dim;
    char n[256];
    dtype_t dt;
    *bytes = 0;
    if (su->slice < 0) {
        const char *names[4] = { "q_proj", "k_proj", "v_proj", "o_proj" };
        uint64_t elems[4] = { Q * D, KV * D, KV * D, D * Q };
        for (int i = 0; i < 4; i++) {
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.weight", su->layer, names[i]);
            if (stored_dtype(c, st, n, &dt)) return -1;
            *bytes += elems[i] * dtype_size(dt);
        }
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", su->layer);
        if (stored_dtype(c, st, n, &dt)) return -1;
        *bytes += D * dtype_size(dt);
        /* Qwen2 q/k/v biases, Qwen3 q/k norms (load_unit) */
        const char *xn[5] = { "q_proj.bias", "k_proj.bias", "v_proj.bias", "q_norm.weight", "k_norm.weight" };
        uint64_t xe[5] = { Q, KV, KV, (uint64_t)c->head_dim, (uint64_t)c->head_dim };
        for (int i = 0; i < 5; i++) {
            if (!(i < 3 ? c->qkv_bias : c->qk_norm)) continue;
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", su->layer, xn[i]);
            if (stored_dtype(c, st, n, &dt)) return -1;
            *bytes += xe[i] * dtype_size(dt);
        }
        return 0;
    }
    /* gate/up rows [c0, c1) and down columns [c0, c1), each in its stored dtype (load_unit) */
    static const char *const ffn_names[3] = { "gate_proj", "up_proj", "down_proj" };
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "model.layers.%d.mlp.%s.weight", su->layer, ffn_names[i]);
        if (stored_dtype(c, st, n, &dt)) return -1;
        *bytes += D * (uint64_t)(su->c1 - su->c0) * dtype_size(dt);
    }
    if (su->slice == 0) {
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", su->layer);
        if (stored_dtype(c, st, n, &dt)) return -1;
        *bytes += D * dtype_size(dt);
    }
    return 0;
}

int plan_rank_mem(const model_config *c, const st_model *st, const unit_plan *up, const stage_map *map,
                  int r, int seqlen, int chunk, rank_mem *m)
{
    memset(m, 0, sizeof *m);
    uint64_t D = (uint64_t)c->hidden, V = (uint64_t)c->vocab, KV = (uint64_t)c->n_kv_heads * c->head_dim;
    m->first_unit = map->first[r];
    m->last_unit = map->first[r + 1];
    m->has_embed = r == 0;
    m->has_head = r == map->nranks - 1;
    for (int u = m->first_unit; u < m->last_unit; u++) {
        const stage_unit *su = &up->u[u];
        uint64_t b;
        if (unit_stored(c, st, su, &b)) return -1;
        m->unit_bytes += b;
        if (su->slice < 0) m->attention_units++;
        else {
            if (su->c1 - su->c0 > m->ffn_width) m->ffn_width = su->c1 - su->c0;
            if (b > m->largest_ffn_bytes) m->largest_ffn_bytes = b;
        }
    }
    dtype_t dt;
    if (m->has_embed || (m->has_head && c->tie_embeddings)) {
        if (stored_dtype(c, st, "model.embed_tokens.weight", &dt)) return -1;
        m->embed_bytes = V * D * dtype_size(dt);
    }
    if (m->has_head) {
        if (stored_dtype(c, st, "model.norm.weight", &dt)) return -1;
        m->head_bytes = D * dtype_size(dt);
        if (!c->tie_embeddings) {
            if (stored_dtype(c, st, "lm_head.weight", &dt)) return -1;
            m->head_bytes += V * D * dtype_size(dt);
        }
    }
    m->stored_bytes = m->unit_bytes + m->embed_bytes + m->head_bytes;

    /* pipeline_init: the workspace with gate/up sized for the widest own slice (1 without one),
     * key/value caches for at least one attention unit, three [3, chunk, D] micro-batch buffers;
     * pipeline_run: the targets [chunk]; weights_load: an fp32 copy of every norm (and Qwen bias) it reads */
    fwd_ws_size ws = fwd_ws_bytes(c, seqlen, chunk, m->has_head, m->ffn_width > 0 ? m->ffn_width : 1);
    int natt = m->attention_units ? m->attention_units : 1;
    m->panel_bytes = ws.panel;
    m->activation_bytes = ws.acts + ws.operands + sizeof(float) * 9 * (uint64_t)chunk * D + sizeof(int32_t) * (uint64_t)chunk;
    m->kv_cache_bytes = sizeof(float) * 2 * KV * (uint64_t)seqlen * (uint64_t)natt;
    m->logits_bytes = ws.logits;
    uint64_t extras = (c->qkv_bias ? (uint64_t)c->n_heads * c->head_dim + 2 * KV : 0) + (c->qk_norm ? 2 * (uint64_t)c->head_dim : 0);
    m->table_bytes = ws.rope + sizeof(float) * D * (uint64_t)(m->last_unit - m->first_unit + m->has_head) +
                     sizeof(float) * extras * (uint64_t)m->attention_units;
    m->buffer_bytes = m->panel_bytes + m->activation_bytes + m->kv_cache_bytes + m->logits_bytes + m->table_bytes;

    m->margin_bytes = m->stored_bytes / 4 > m->largest_ffn_bytes ? m->stored_bytes / 4 : m->largest_ffn_bytes;
    m->request_bytes = m->stored_bytes + m->margin_bytes + m->buffer_bytes + PLAN_MEM_FIXED_BYTES;
    return 0;
}
