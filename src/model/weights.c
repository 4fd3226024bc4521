/* weights.c — map a rank's tensors (or tensor slices) from safetensors and check names, shapes
 * and dtypes. */
#include "cfsp/model/weights.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t wmat_bytes(const wmat *m) { return (size_t)m->rows * (size_t)m->cols * dtype_size(m->dtype); }

/* bf16 -> f32 is the upper half of the f32 bits. With SSE2 (every x86-64) interleaving zero
 * halves below 8 bf16 values widens them in two instructions; the scalar loop GCC -O2 emits
 * instead moved one element per cycle (measured: 5.9% of a 7B-shape calibration). f16 uses the
 * F16C conversion instruction when the CPU has it. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
static void bf16_row_to_f32(const uint16_t *restrict s, float *restrict d, size_t n)
{
    size_t i = 0;
    const __m128i zero = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        _mm_storeu_si128((__m128i *)(d + i), _mm_unpacklo_epi16(zero, v));
        _mm_storeu_si128((__m128i *)(d + i + 4), _mm_unpackhi_epi16(zero, v));
    }
    for (; i < n; i++) d[i] = bf16_to_f32(s[i]);
}
__attribute__((target("avx,f16c"))) static void f16_row_to_f32_f16c(const uint16_t *restrict s, float *restrict d, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) d[i] = f16_to_f32(s[i]);
}
static int have_f16c(void)
{
    static int v = -1;
    if (v < 0) {   /* F16C from CPUID.1:ECX (clang 14's __builtin_cpu_supports does not know "f16c") */
        unsigned a, b, c = 0, d;
        __builtin_cpu_init();
        v = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx");
    }
    return v;
}
#else
static void bf16_row_to_f32(const uint16_t *restrict s, float *restrict d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = bf16_to_f32(s[i]);
}
static int have_f16c(void) { return 0; }
static void f16_row_to_f32_f16c(const uint16_t *s, float *d, size_t n) { (void)s; (void)d; (void)n; }
#endif

void convert_to_f32(dtype_t dt, const void *src, float *dst, size_t n)
{
    if (dt == DT_F32) { memcpy(dst, src, n * 4); return; }
    const uint16_t *s = src;
    if (dt == DT_BF16) bf16_row_to_f32(s, dst, n);
    else if (have_f16c()) f16_row_to_f32_f16c(s, dst, n);
    else for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
}

void wmat_row_f32(const wmat *m, int64_t r, float *out)
{
    const char *p = (const char *)m->data + (size_t)r * (size_t)m->ld * dtype_size(m->dtype);
    convert_to_f32(m->dtype, p, out, (size_t)m->cols);
}

/* map a tensor; misaligned data (a header not padded to the dtype size) gets an aligned copy
 * unless raw_ok, in which case the caller copies only the part it uses (compact_copy) */
static int get_tensor_raw(st_model *st, const char *name, int64_t rows, int64_t cols, wmat *out, int raw_ok);
static int get_tensor(st_model *st, const char *name, int64_t rows, int64_t cols, wmat *out)
{
    return get_tensor_raw(st, name, rows, cols, out, 0);
}

static int get_tensor_raw(st_model *st, const char *name, int64_t rows, int64_t cols, wmat *out, int raw_ok)
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
    out->ld = out->cols;
    if (st_map(st, t, &out->data)) return -1;
    if (!raw_ok && (uintptr_t)out->data % dtype_size(t->dtype) != 0) {   /* misaligned data: keep an aligned copy */
        out->owned = xmalloc(st_nbytes(t));
        memcpy(out->owned, out->data, st_nbytes(t));
        out->data = out->owned;
    }
    return 0;
}

static int get_norm(st_model *st, const char *name, int64_t n, float **out, dtype_t *dt)
{
    wmat m;
    if (get_tensor(st, name, n, 0, &m)) return -1;
    *dt = m.dtype;
    *out = xmalloc(sizeof(float) * (size_t)n);
    convert_to_f32(m.dtype, m.data, *out, (size_t)n);
    free(m.owned);
    return 0;
}

/* rows [r0, r1) of m as a view */
static wmat row_view(const wmat *m, int64_t r0, int64_t r1)
{
    wmat v = *m;
    v.owned = NULL;
    v.rows = r1 - r0;
    v.data = (const char *)m->data + (size_t)r0 * (size_t)m->ld * dtype_size(m->dtype);
    return v;
}

/* columns [c0, c1) of m as a strided view */
static wmat col_view(const wmat *m, int64_t c0, int64_t c1)
{
    wmat v = *m;
    v.owned = NULL;
    v.cols = c1 - c0;
    v.data = (const char *)m->data + (size_t)c0 * dtype_size(m->dtype);
    return v;
}

/* an owned, aligned, compact copy of a (possibly strided, possibly misaligned) view */
static void compact_copy(wmat *v)
{
    size_t es = dtype_size(v->dtype), rb = (size_t)v->cols * es;
    char *d = xmalloc(rb * (size_t)(v->rows ? v->rows : 1));
    for (int64_t r = 0; r < v->rows; r++) memcpy(d + rb * (size_t)r, (const char *)v->data + (size_t)r * (size_t)v->ld * es, rb);
    v->owned = d;
    v->data = d;
    v->ld = v->cols;
}

static int load_unit(st_model *st, model_config *c, const stage_unit *su, unit_weights *u)
{
    int l = su->layer;
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim, M = c->ffn[l];
    char n[256];
    memset(u, 0, sizeof *u);
    u->layer = l;
    u->slice = su->slice;
    u->nslices = su->nslices;
    u->c0 = su->c0;
    u->c1 = su->c1;
    u->k = su->c1 - su->c0;
    if (su->slice < 0) {
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        if (get_norm(st, n, D, &u->ln, &u->ln_dtype)) return -1;
        wmat *dst[4] = { &u->q, &u->k_proj, &u->v, &u->o };
        const char *names[4] = { "q_proj", "k_proj", "v_proj", "o_proj" };
        int64_t rows[4] = { Q, KV, KV, D }, cols[4] = { D, D, D, Q };
        for (int i = 0; i < 4; i++) {
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.weight", l, names[i]);
            if (get_tensor(st, n, rows[i], cols[i], dst[i])) return -1;
            u->bytes += wmat_bytes(dst[i]);
        }
        u->bytes += (uint64_t)D * dtype_size(u->ln_dtype);
        /* Qwen2 biases, Qwen3 q/k norms: 1-D, kept in fp32 beside their stored dtype */
        float **xdst[5] = { &u->qb, &u->kb, &u->vb, &u->qn, &u->kn };
        const char *xnames[5] = { "q_proj.bias", "k_proj.bias", "v_proj.bias", "q_norm.weight", "k_norm.weight" };
        int64_t xlen[5] = { Q, KV, KV, c->head_dim, c->head_dim };
        for (int i = 0; i < 5; i++) {
            if (!(i < 3 ? c->qkv_bias : c->qk_norm)) continue;
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", l, xnames[i]);
            if (get_norm(st, n, xlen[i], xdst[i], &u->extra_dtype[i])) return -1;
            u->bytes += (uint64_t)xlen[i] * dtype_size(u->extra_dtype[i]);
        }
        return 0;
    }
    snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
    if (get_norm(st, n, D, &u->ln, &u->ln_dtype)) return -1;
    wmat full[3];
    const char *names[3] = { "gate_proj", "up_proj", "down_proj" };
    int64_t rows[3] = { M, M, D }, cols[3] = { D, D, M };
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "model.layers.%d.mlp.%s.weight", l, names[i]);
        if (get_tensor_raw(st, n, rows[i], cols[i], &full[i], 1)) return -1;
    }
    u->gate = row_view(&full[0], su->c0, su->c1);
    u->up = row_view(&full[1], su->c0, su->c1);
    u->down = col_view(&full[2], su->c0, su->c1);
    wmat *views[3] = { &u->gate, &u->up, &u->down };
    for (int i = 0; i < 3; i++)
        if ((uintptr_t)full[i].data % dtype_size(full[i].dtype) != 0) compact_copy(views[i]);
    u->bytes = (uint64_t)D * (uint64_t)u->k * (dtype_size(full[0].dtype) + dtype_size(full[1].dtype) + dtype_size(full[2].dtype));
    if (su->slice == 0) u->bytes += (uint64_t)D * dtype_size(u->ln_dtype);
    return 0;
}

int weights_load(st_model *st, model_config *c, const unit_plan *plan, int first, int last,
                 int has_embed, int has_head, rank_weights *w)
{
    memset(w, 0, sizeof *w);
    w->cfg = c;
    w->first_unit = first;
    w->last_unit = last;
    w->has_embed = has_embed;
    w->has_head = has_head;
    int n = last - first;
    w->units = xcalloc((size_t)(n ? n : 1), sizeof(unit_weights));
    int64_t D = c->hidden;
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
        if (load_unit(st, c, &plan->u[first + i], &w->units[i])) return -1;
        bytes += w->units[i].bytes;
    }
    int need_embed = has_embed || (has_head && c->tie_embeddings);
    if (need_embed) {
        if (get_tensor(st, "model.embed_tokens.weight", c->vocab, D, &w->embed)) return -1;
        bytes += wmat_bytes(&w->embed);
    }
    if (has_head) {
        if (get_norm(st, "model.norm.weight", D, &w->final_norm, &w->final_norm_dtype)) return -1;
        bytes += (uint64_t)D * dtype_size(w->final_norm_dtype);
        if (c->tie_embeddings) {            /* as transformers does: a tied head is embed_tokens */
            w->lm_head = w->embed;
            w->lm_head.owned = NULL;
        } else if (st_find(st, "lm_head.weight")) {
            if (get_tensor(st, "lm_head.weight", c->vocab, D, &w->lm_head)) return -1;
            bytes += wmat_bytes(&w->lm_head);
        } else {
            return FAIL("%s: tensor 'lm_head.weight' is missing (and tie_word_embeddings is false)", st->files[0].path);
        }
    }
    w->bytes_expected = bytes;
    return 0;
}

void wmat_release_pages(const wmat *m)
{
    if (m->owned || !m->data || m->rows == 0) return;          /* only views into the mmap */
    size_t es = dtype_size(m->dtype), page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = (uintptr_t)m->data, e = b + ((size_t)(m->rows - 1) * (size_t)m->ld + (size_t)m->cols) * es;
    b = (b + page - 1) & ~(uintptr_t)(page - 1);               /* whole pages inside the view only */
    e &= ~(uintptr_t)(page - 1);
    if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);       /* advice: failure changes nothing */
}

void unit_weights_free_owned(unit_weights *u)
{
    wmat *ms[] = { &u->q, &u->k_proj, &u->v, &u->o, &u->gate, &u->up, &u->down };
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) { free(ms[i]->owned); ms[i]->owned = NULL; }
    free(u->bias);
    u->bias = NULL;
}

void weights_free(rank_weights *w)
{
    for (int i = 0; i < w->last_unit - w->first_unit; i++) {
        unit_weights_free_owned(&w->units[i]);
        free(w->units[i].ln);
        float *x[5] = { w->units[i].qb, w->units[i].kb, w->units[i].vb, w->units[i].qn, w->units[i].kn };
        for (int j = 0; j < 5; j++) free(x[j]);
    }
    free(w->units);
    free(w->embed.owned);
    free(w->lm_head.owned);
    free(w->final_norm);
    memset(w, 0, sizeof *w);
}

int weights_check_unused(const st_model *st, const model_config *c);
int weights_check_biases(const st_model *st, const model_config *c)
{
    for (int i = 0; i < st->nt; i++) {
        const char *n = st->t[i].name, *b = strstr(n, ".bias");
        int l0, k0 = 0;
        char nm[16];
        if (!c->qk_norm && sscanf(n, "model.layers.%d.self_attn.%15[qk_norm].weight%n", &l0, nm, &k0) == 2 && !n[k0] &&
            (!strcmp(nm, "q_norm") || !strcmp(nm, "k_norm")))
            return FAIL("%s: tensor '%s': q/k norms the %s architecture does not have (a qwen3 checkpoint has model_type qwen3)",
                        st->files[st->t[i].file].path, n, c->model_type);
        if (!b || b[5]) continue;
        int l, k = 0;
        char rest[64];
        int used = c->qkv_bias && sscanf(n, "model.layers.%d.self_attn.%63[a-z_].bias%n", &l, rest, &k) == 2 && !n[k] &&
                   (!strcmp(rest, "q_proj") || !strcmp(rest, "k_proj") || !strcmp(rest, "v_proj"));
        if (!used)
            return FAIL("%s: tensor '%s': a bias the %s architecture does not have (its config.json would have to say so)",
                        st->files[st->t[i].file].path, n, c->model_type);
    }
    return weights_check_unused(st, c);
}

/* the tensor names of one block that the forward pass reads (the checkpoint's own spelling) */
static int block_name_used(const char *rest, const model_config *c)
{
    static const char *const always[] = {
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
        "self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight" };
    static const char *const bias[] = { "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias" };
    static const char *const norm[] = { "self_attn.q_norm.weight", "self_attn.k_norm.weight" };
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) if (!strcmp(rest, always[i])) return 1;
    for (size_t i = 0; c->qkv_bias && i < 3; i++) if (!strcmp(rest, bias[i])) return 1;
    for (size_t i = 0; c->qk_norm && i < 2; i++) if (!strcmp(rest, norm[i])) return 1;
    return 0;
}

int weights_check_unused(const st_model *st, const model_config *c)
{
    /* every tensor the model reads is there (as weights_load would find, but for every rank's units) */
    char nm[256];
    static const char *const top[] = { "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight" };
    for (int i = 0; i < (c->tie_embeddings ? 2 : 3); i++)
        if (!st_find(st, top[i]))
            return FAIL("%s: tensor '%s' is missing%s", st->files[0].path, top[i], i == 2 ? " (and tie_word_embeddings is false)" : "");
    static const char *const blk[] = {
        "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
        "self_attn.q_norm.weight", "self_attn.k_norm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
        "mlp.up_proj.weight", "mlp.down_proj.weight" };
    for (int l = 0; l < c->n_layers; l++)
        for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++) {
            if (!block_name_used(blk[i], c)) continue;
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, blk[i]);
            if (!st_find(st, nm)) return FAIL("%s: tensor '%s' is missing", st->files[0].path, nm);
        }
    int nwarn = 0;
    char warn[600] = "";
    for (int i = 0; i < st->nt; i++) {
        const char *n = st->t[i].name, *path = st->files[st->t[i].file].path;
        if (!strncmp(n, "model.layers.", 13)) {
            const char *p = n + 13;
            long l = 0;
            int digits = 0;
            while (*p >= '0' && *p <= '9' && digits < 9) { l = l * 10 + (*p++ - '0'); digits++; }
            if (!digits || *p != '.' || (digits > 1 && n[13] == '0'))
                return FAIL("%s: tensor '%s': not a tensor of the %s architecture (model.layers.N.* with N a layer number)", path, n, c->model_type);
            if (l >= c->n_layers)
                return FAIL("%s: tensor '%s': layer %ld, but config.json says num_hidden_layers = %d (a checkpoint with more layers than its config?)",
                            path, n, l, c->n_layers);
            if (block_name_used(p + 1, c)) continue;
            if (strcmp(p + 1, "self_attn.rotary_emb.inv_freq") != 0)   /* a weight this forward pass has no place for */
                return FAIL("%s: tensor '%s': a tensor of layer %ld the %s architecture does not use (another architecture, or a quantized checkpoint?)",
                            path, n, l, c->model_type);
        } else if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "model.norm.weight") ||
                   (!strcmp(n, "lm_head.weight") && !c->tie_embeddings)) {
            continue;
        }
        /* read by nothing, but changing nothing either: old LLaMA checkpoints' rotary inv_freq buffers
         * (recomputed from rope_theta, as transformers does), a tied model's copy of the head
         * (tie_word_embeddings: the head is embed_tokens), or other extras */
        if (nwarn < 3) snprintf(warn + strlen(warn), sizeof warn - strlen(warn), "%s'%.120s'", nwarn ? ", " : "", n);
        nwarn++;
    }
    if (st->holes) return FAIL("%s", st->holes);
    if (nwarn && cfsp_rank() <= 0)
        fprintf(stderr, "cfsp-mpi: warning: %s: %d tensor%s the model does not read, ignored: %s%s%s\n", st->files[0].path, nwarn,
                nwarn == 1 ? "" : "s", warn, nwarn > 3 ? ", ..." : "",
                c->tie_embeddings && st_find(st, "lm_head.weight") ? " (tie_word_embeddings is true: the head is model.embed_tokens.weight)" : "");
    return 0;
}
