/* weights.c — map a rank's tensors from safetensors and check names, shapes and dtypes. */
#include "cfsp/weights.h"
#include "cfsp/err.h"
#include "cfsp/util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t wmat_bytes(const wmat *m) { return (size_t)m->rows * (size_t)m->cols * dtype_size(m->dtype); }

void convert_to_f32(dtype_t dt, const void *src, float *dst, size_t n)
{
    if (dt == DT_F32) { memcpy(dst, src, n * 4); return; }
    const uint16_t *s = src;
    if (dt == DT_BF16) for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
    else for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
}

void wmat_row_f32(const wmat *m, int64_t r, float *out)
{
    const char *p = (const char *)m->data + (size_t)r * (size_t)m->cols * dtype_size(m->dtype);
    convert_to_f32(m->dtype, p, out, (size_t)m->cols);
}

static int get_tensor(st_model *st, const char *name, int64_t rows, int64_t cols, uint64_t *bytes, wmat *out)
{
    const st_tensor *t = st_find(st, name);
    if (!t) return FAIL("%s: tensor '%s' is missing", st->files[0].path, name);
    const char *path = st->files[t->file].path;
    int ok = cols > 0 ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                      : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128] = "";
        for (int d = 0; d < t->ndim; d++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "", (long long)t->shape[d]);
        if (cols > 0) return FAIL("%s: tensor '%s' has shape [%s], expected [%lld,%lld]", path, name, got, (long long)rows, (long long)cols);
        return FAIL("%s: tensor '%s' has shape [%s], expected [%lld]", path, name, got, (long long)rows);
    }
    memset(out, 0, sizeof *out);
    out->dtype = t->dtype;
    out->rows = rows;
    out->cols = cols > 0 ? cols : 1;
    if (st_map(st, t, &out->data)) return -1;
    if ((uintptr_t)out->data % dtype_size(t->dtype) != 0) {   /* misaligned data: keep an aligned copy */
        out->owned = xmalloc(st_nbytes(t));
        memcpy(out->owned, out->data, st_nbytes(t));
        out->data = out->owned;
    }
    *bytes += st_nbytes(t);
    return 0;
}

static int get_norm(st_model *st, const char *name, int64_t n, uint64_t *bytes, float **out, dtype_t *dt)
{
    wmat m;
    if (get_tensor(st, name, n, 0, bytes, &m)) return -1;
    *dt = m.dtype;
    *out = xmalloc(sizeof(float) * (size_t)n);
    convert_to_f32(m.dtype, m.data, *out, (size_t)n);
    free(m.owned);
    return 0;
}

int weights_load(st_model *st, model_config *c, int first, int last, int has_embed, int has_head, rank_weights *w)
{
    memset(w, 0, sizeof *w);
    w->cfg = c;
    w->first_block = first;
    w->last_block = last;
    w->has_embed = has_embed;
    w->has_head = has_head;
    w->blocks = xcalloc((size_t)(last - first), sizeof(block_weights));
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    uint64_t bytes = 0;
    char n[256];
    for (int l = first; l < last; l++) {
        block_weights *b = &w->blocks[l - first];
        int64_t M = c->ffn[l];
        b->layer = l;
        b->ffn = (int)M;
#define T2(field, suffix, r, cc) snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix); \
        if (get_tensor(st, n, r, cc, &bytes, &b->field)) return -1;
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        if (get_norm(st, n, D, &bytes, &b->ln1, &b->ln_dtype)) return -1;
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        if (get_norm(st, n, D, &bytes, &b->ln2, &b->ln_dtype)) return -1;
        T2(q, "self_attn.q_proj.weight", Q, D);
        T2(k, "self_attn.k_proj.weight", KV, D);
        T2(v, "self_attn.v_proj.weight", KV, D);
        T2(o, "self_attn.o_proj.weight", D, Q);
        T2(gate, "mlp.gate_proj.weight", M, D);
        T2(up, "mlp.up_proj.weight", M, D);
        T2(down, "mlp.down_proj.weight", D, M);
#undef T2
    }
    int need_embed = has_embed || (has_head && c->tie_embeddings);
    if (need_embed && get_tensor(st, "model.embed_tokens.weight", c->vocab, D, &bytes, &w->embed)) return -1;
    if (has_head) {
        if (get_norm(st, "model.norm.weight", D, &bytes, &w->final_norm, &w->final_norm_dtype)) return -1;
        if (c->tie_embeddings) {            /* as transformers does: a tied head is embed_tokens */
            w->lm_head = w->embed;
            w->lm_head.owned = NULL;
        } else if (st_find(st, "lm_head.weight")) {
            if (get_tensor(st, "lm_head.weight", c->vocab, D, &bytes, &w->lm_head)) return -1;
        } else {
            return FAIL("%s: tensor 'lm_head.weight' is missing (and tie_word_embeddings is false)", st->files[0].path);
        }
    }
    w->bytes_expected = bytes;
    return 0;
}

void block_weights_free(block_weights *b)
{
    free(b->ln1); free(b->ln2); free(b->down_bias);
    wmat *ms[] = { &b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down };
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) free(ms[i]->owned);
    memset(b, 0, sizeof *b);
}

void weights_free(rank_weights *w)
{
    for (int i = 0; i < w->last_block - w->first_block; i++) block_weights_free(&w->blocks[i]);
    free(w->blocks);
    free(w->embed.owned);
    free(w->lm_head.owned);
    free(w->final_norm);
    memset(w, 0, sizeof *w);
}
