/* export_gguf.c — GGUF v3 writer for llama.cpp's `deci` architecture, and for the padded uniform
 * form its `llama`, `qwen2` and `qwen3` architectures (see export.h).
 *
 * Layout (GGUF spec): "GGUF", version 3, tensor count (u64), key/value count (u64), the key/values,
 * the tensor infos (name, n_dims, ne[] innermost first, ggml type, offset relative to the data
 * section), zero padding to general.alignment, then every tensor's data, each padded to the
 * alignment (offsets are the running sum of padded sizes, as ggml's gguf reader requires).
 *
 * What llama.cpp expects, taken from its loader (src/models/deci.cpp, llama-model.cpp) and
 * converter (conversion/deci.py, base.py): per-layer feed_forward_length / head_count /
 * head_count_kv as INT32 arrays (get_key_or_arr accepts arrays of INT32/UINT32), scalars as
 * UINT32 / FLOAT32; norms and other 1-D tensors as F32; other tensors in their stored dtype; q and
 * k rows permuted from Hugging Face's rotate_half order to interleaved pairs per head
 * (DeciModel.permute: reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)), k with n_head_kv;
 * no output.weight for tied embeddings (llama.cpp then uses token_embd); llama3 rope scaling as
 * the rope_freqs.weight tensor of per-frequency factors (DeciModel.generate_extra_tensors).
 * flap's down_proj bias goes to blk.N.ffn_down.bias (F32 [D]): the deci loader creates that
 * optional tensor and its graph adds it after ffn_down (build_ffn), exactly as cfsp-mpi does. */
#include "cfsp/export/export.h"
#include "cfsp/model/weights.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { GG_UINT32 = 4, GG_INT32 = 5, GG_FLOAT32 = 6, GG_BOOL = 7, GG_STRING = 8, GG_ARRAY = 9 };
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_BF16 = 30 };

typedef struct { unsigned char *p; size_t n, cap; } bbuf;

static void bb_put(bbuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
/* little-endian scalars (the hosts cfsp-mpi runs on are little-endian; HDF5/safetensors data too) */
static void bb_u32(bbuf *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bbuf *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_f32(bbuf *b, float v) { bb_put(b, &v, 4); }
static void bb_str(bbuf *b, const char *s, size_t n) { bb_u64(b, n); bb_put(b, s, n); }

typedef struct { bbuf b; uint64_t count; } kvs;

static void kv_key(kvs *k, const char *key, uint32_t type) { bb_str(&k->b, key, strlen(key)); bb_u32(&k->b, type); k->count++; }
static void kv_string(kvs *k, const char *key, const char *v) { kv_key(k, key, GG_STRING); bb_str(&k->b, v, strlen(v)); }
static void kv_u32(kvs *k, const char *key, uint32_t v) { kv_key(k, key, GG_UINT32); bb_u32(&k->b, v); }
static void kv_f32(kvs *k, const char *key, float v) { kv_key(k, key, GG_FLOAT32); bb_f32(&k->b, v); }
static void kv_bool(kvs *k, const char *key, int v) { kv_key(k, key, GG_BOOL); unsigned char c = v ? 1 : 0; bb_put(&k->b, &c, 1); }
static void kv_arr_i32(kvs *k, const char *key, const int32_t *v, uint64_t n)
{
    kv_key(k, key, GG_ARRAY); bb_u32(&k->b, GG_INT32); bb_u64(&k->b, n); bb_put(&k->b, v, 4 * n);
}
static void kv_arr_f32(kvs *k, const char *key, const float *v, uint64_t n)
{
    kv_key(k, key, GG_ARRAY); bb_u32(&k->b, GG_FLOAT32); bb_u64(&k->b, n); bb_put(&k->b, v, 4 * n);
}
static void kv_arr_str(kvs *k, const char *key, char *const *s, const uint32_t *len, uint64_t n)
{
    kv_key(k, key, GG_ARRAY); bb_u32(&k->b, GG_STRING); bb_u64(&k->b, n);
    for (uint64_t i = 0; i < n; i++) bb_str(&k->b, s[i], len ? len[i] : strlen(s[i]));
}

enum { K_COPY, K_NORM, K_PERMUTE, K_ROPE };

typedef struct {
    char name[96];
    const ckpt_tensor *src;      /* NULL for rope_freqs */
    int kind;
    int permute_heads;         /* K_PERMUTE: n_head (q) or n_head_kv (k) */
    uint32_t type;
    int nd;
    int64_t ne0, ne1;
    uint64_t nbytes, offset;
} gtensor;

static uint32_t ggml_type_of(dtype_t d) { return d == DT_F32 ? GGML_F32 : d == DT_F16 ? GGML_F16 : GGML_BF16; }
static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static int gguf_name(const char *hf, char *out, size_t n)
{
    int l;
    char rest[96];
    if (!strcmp(hf, "model.embed_tokens.weight")) { snprintf(out, n, "token_embd.weight"); return 0; }
    if (!strcmp(hf, "model.norm.weight")) { snprintf(out, n, "output_norm.weight"); return 0; }
    if (!strcmp(hf, "lm_head.weight")) { snprintf(out, n, "output.weight"); return 0; }
    if (sscanf(hf, "model.layers.%d.%95s", &l, rest) != 2) return -1;
    static const char *map[][2] = {
        { "input_layernorm.weight", "attn_norm.weight" }, { "self_attn.q_proj.weight", "attn_q.weight" },
        { "self_attn.k_proj.weight", "attn_k.weight" },   { "self_attn.v_proj.weight", "attn_v.weight" },
        { "self_attn.o_proj.weight", "attn_output.weight" }, { "post_attention_layernorm.weight", "ffn_norm.weight" },
        { "mlp.gate_proj.weight", "ffn_gate.weight" },    { "mlp.up_proj.weight", "ffn_up.weight" },
        { "mlp.down_proj.weight", "ffn_down.weight" },  { "mlp.down_proj.bias", "ffn_down.bias" },
        { "self_attn.q_proj.bias", "attn_q.bias" },       { "self_attn.k_proj.bias", "attn_k.bias" },
        { "self_attn.v_proj.bias", "attn_v.bias" },       { "self_attn.q_norm.weight", "attn_q_norm.weight" },
        { "self_attn.k_norm.weight", "attn_k_norm.weight" },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(rest, map[i][0])) { snprintf(out, n, "blk.%d.%s", l, map[i][1]); return 0; }
    return -1;
}

/* llama3 rope factors per frequency, as DeciModel.generate_extra_tensors (float32 arithmetic) */
static void llama3_factors(const model_config *c, float *out)
{
    int dim = c->head_dim;
    float base = (float)c->rope_theta, factor = (float)c->rope_factor, lo = (float)c->rope_low_freq, hi = (float)c->rope_high_freq;
    float old = (float)c->rope_orig_max_pos;
    float low_wl = old / lo, high_wl = old / hi;
    for (int i = 0; i < dim / 2; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        float wl = 2.0f * (float)M_PI / freq;
        if (wl < high_wl) out[i] = 1.0f;
        else if (wl > low_wl) out[i] = factor;
        else {
            float smooth = (old / wl - lo) / (hi - lo);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}

/* rows of a [n_head * hd, cols] panel (whole heads): out row h*hd + 2i + j = in row h*hd + j*hd/2 + i */
static void permute_rows(const unsigned char *in, unsigned char *out, int64_t rows, int hd, size_t rowbytes)
{
    int half = hd / 2;
    for (int64_t h = 0; h < rows / hd; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(out + (size_t)(h * hd + 2 * i + j) * rowbytes, in + (size_t)(h * hd + j * half + i) * rowbytes, rowbytes);
}

static int write_all(FILE *f, const void *p, size_t n, const char *path)
{
    if (n && fwrite(p, 1, n, f) != n) return FAIL("%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_pad(FILE *f, uint64_t at, uint32_t align, const char *path)
{
    static const unsigned char z[256];
    uint64_t n = pad_to(at, align) - at;
    while (n) {
        size_t k = n < sizeof z ? (size_t)n : sizeof z;
        if (write_all(f, z, k, path)) return -1;
        n -= k;
    }
    return 0;
}

static int stream_tensor(ckpt_source *s, const gtensor *g, FILE *f, const char *path, const float *rope)
{
    if (g->kind == K_ROPE) return write_all(f, rope, (size_t)g->nbytes, path);
    const ckpt_tensor *t = g->src;
    size_t rowb = (size_t)t->cols * dtype_size(t->dtype);
    int hd = s->cfg.head_dim;
    if (t->ndim == 1) {                  /* norms and biases: F32; a q/k bias permuted like its rows */
        void *raw = xmalloc((size_t)ckpt_tensor_bytes(t));
        float *v = xmalloc(sizeof(float) * (size_t)t->rows), *pv = g->kind == K_PERMUTE ? xmalloc(sizeof(float) * (size_t)t->rows) : NULL;
        int rc = ckpt_read_rows(s, t, 0, t->rows, raw);
        if (!rc) {
            convert_to_f32(t->dtype, raw, v, (size_t)t->rows);
            if (pv) permute_rows((const unsigned char *)v, (unsigned char *)pv, t->rows, hd, sizeof(float));
            rc = write_all(f, pv ? pv : v, sizeof(float) * (size_t)t->rows, path);
        }
        free(raw); free(v); free(pv);
        return rc;
    }
    int64_t panel = ex_panel_rows(t, g->kind == K_PERMUTE ? hd : 1);
    unsigned char *in = xmalloc((size_t)panel * rowb), *out = g->kind == K_PERMUTE ? xmalloc((size_t)panel * rowb) : NULL;
    int rc = 0;
    for (int64_t r = 0; r < t->rows && !rc; r += panel) {
        int64_t n = t->rows - r < panel ? t->rows - r : panel;
        rc = ckpt_read_rows(s, t, r, n, in);
        if (rc) break;
        if (out) permute_rows(in, out, n, hd, rowb);
        rc = write_all(f, out ? out : in, (size_t)n * rowb, path);
    }
    free(in); free(out);
    return rc;
}

int export_gguf(ckpt_source *s, const ex_options *o)
{
    const model_config *c = &s->cfg;
    int L = c->n_layers;
    uint32_t align = o->alignment ? o->alignment : 32;
    if (align & (align - 1)) return FAIL("--alignment %u: must be a power of two", align);
    if (path_exists(o->out) && !o->force) return FAIL("%s: output exists (use --force to overwrite)", o->out);
    /* the architecture: deci (per-block FFN sizes, LLaMA attention with optional q/k/v biases), or
     * for the padded form (and an unpruned or one-size qwen3) the model's own uniform one */
    int uniform = 1;
    for (int l = 1; l < L; l++) uniform &= c->ffn[l] == c->ffn[0];
    const char *A = "deci";
    if (o->padded) A = c->family == FAMILY_QWEN2 ? "qwen2" : c->family == FAMILY_QWEN3 ? "qwen3" : "llama";
    else if (c->family == FAMILY_QWEN3) {
        if (!uniform)
            return FAIL("%s: a qwen3 model with per-block FFN sizes: llama.cpp's deci graph has no q_norm / k_norm and its qwen3 graph one FFN size; "
                        "export it with --format gguf-padded (every FFN zero-padded to the widest block, %lld channels: exact, saves less)",
                        s->in_path[0] ? s->in_path : s->src_dir, (long long)ckpt_max_ffn(s));
        A = "qwen3";
    }
    if (c->rope_yarn && (!c->yarn_default_attn || c->yarn_beta_fast != 32 || c->yarn_beta_slow != 1 || !c->yarn_truncate))
        return FAIL("%s: rope_scaling yarn with attention_factor / mscale / beta_fast / beta_slow / truncate other than the defaults: "
                    "the GGUF export writes only llama.cpp's yarn factor and original context length",
                    s->in_path[0] ? s->in_path : s->src_dir);
    if (c->rope_llama3 && (!strcmp(A, "qwen2") || !strcmp(A, "qwen3")))
        return FAIL("%s: llama3 rope scaling on a %s model: llama.cpp's %s graph has no rope_freqs tensor", s->in_path[0] ? s->in_path : s->src_dir,
                    c->model_type, A);
    if (c->qkv_bias && (long long)c->n_heads * c->head_dim != c->hidden && !strcmp(A, "deci"))
        return FAIL("%s: q/k/v biases with heads x head_dim = %lld != hidden_size %d: llama.cpp's deci graph takes biases of hidden_size elements",
                    s->in_path[0] ? s->in_path : s->src_dir, (long long)c->n_heads * c->head_dim, c->hidden);
    int per_layer = !strcmp(A, "deci");
    int permute = per_layer || !strcmp(A, "llama");     /* llama.cpp's NORM rope; qwen2/qwen3 are NEOX: as stored */
    if (s->has_bias && !per_layer)
        return FAIL("%s: block %d carries mlp.down_proj.bias (flap's bias compensation), which llama.cpp's %s graph does not add; export it with --format gguf (deci)",
                    s->in_path, s->bias_layer, A);
    if (per_layer) {
        int z = ckpt_pad_empty_ffn(s);
        if (z) fprintf(stderr, "cfsp-mpi: export: %d block%s without FFN channels get one zero channel (llama.cpp's deci graph skips a block with n_ff 0, its attention too)\n", z, z == 1 ? "" : "s");
    }
    ex_vocab voc;
    if (ex_vocab_load(s->src_dir, c, s->config_text, &voc)) return -1;

    /* tensors */
    int nt = s->nt + (c->rope_llama3 ? 1 : 0);
    gtensor *g = xcalloc((size_t)nt, sizeof(gtensor));
    int k = 0, n2[3] = { 0, 0, 0 };
    float *rope = NULL;
    if (c->rope_llama3) {
        rope = xmalloc(sizeof(float) * (size_t)(c->head_dim / 2));
        llama3_factors(c, rope);
        snprintf(g[k].name, sizeof g[k].name, "rope_freqs.weight");
        g[k].kind = K_ROPE; g[k].type = GGML_F32; g[k].nd = 1; g[k].ne0 = c->head_dim / 2; g[k].ne1 = 1;
        g[k].nbytes = 4 * (uint64_t)(c->head_dim / 2);
        k++;
    }
    for (int i = 0; i < s->nt; i++, k++) {
        const ckpt_tensor *t = &s->t[i];
        gtensor *x = &g[k];
        if (gguf_name(t->name, x->name, sizeof x->name)) DIE("no GGUF name for %s", t->name);
        x->src = t;
        x->nd = t->ndim;
        x->ne0 = t->ndim == 2 ? t->cols : t->rows;
        x->ne1 = t->ndim == 2 ? t->rows : 1;
        if (t->ndim == 1) { x->kind = K_NORM; x->type = GGML_F32; }
        else {
            x->type = ggml_type_of(t->dtype);
            n2[t->dtype]++;
            x->kind = K_COPY;
        }
        if (permute && strstr(t->name, "self_attn.q_proj.")) { x->kind = K_PERMUTE; x->permute_heads = c->n_heads; }
        if (permute && strstr(t->name, "self_attn.k_proj.")) { x->kind = K_PERMUTE; x->permute_heads = c->n_kv_heads; }
        x->nbytes = (uint64_t)x->ne0 * (uint64_t)x->ne1 * (x->type == GGML_F32 ? 4 : 2);
    }
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) { g[i].offset = off; off += pad_to(g[i].nbytes, align); }
    int major = n2[DT_BF16] > n2[DT_F32] && n2[DT_BF16] >= n2[DT_F16] ? DT_BF16 : n2[DT_F16] > n2[DT_F32] ? DT_F16 : DT_F32;
    uint32_t ftype = major == DT_F32 ? 0 : major == DT_F16 ? 1 : 32;   /* LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_BF16 */

    /* key/values */
    kvs kv = { { 0 }, 0 };
    char key[128];
    kv_string(&kv, "general.architecture", A);
    kv_string(&kv, "general.type", "model");
    const char *base = strrchr(s->src_dir, '/');
    char nm[4400];
    if (o->name && o->name[0]) snprintf(nm, sizeof nm, "%s", o->name);
    else {
        snprintf(nm, sizeof nm, "%s", base && base[1] ? base + 1 : s->src_dir);
        if (s->in_path[0]) snprintf(nm + strlen(nm), sizeof nm - strlen(nm), " %s r%g", s->method, s->ratio);
    }
    kv_string(&kv, "general.name", nm);
    kv_u32(&kv, "general.alignment", align);
    kv_u32(&kv, "general.file_type", ftype);
    kv_string(&kv, "cfsp.method", s->method);
    kv_f32(&kv, "cfsp.ratio", (float)s->ratio);
#define K(fmt) (snprintf(key, sizeof key, fmt, A), key)
    kv_u32(&kv, K("%s.block_count"), (uint32_t)L);
    kv_u32(&kv, K("%s.context_length"), (uint32_t)c->max_pos);
    kv_u32(&kv, K("%s.embedding_length"), (uint32_t)c->hidden);
    if (per_layer) {
        int32_t *arr = xmalloc(sizeof(int32_t) * (size_t)L);
        for (int l = 0; l < L; l++) arr[l] = c->ffn[l];
        kv_arr_i32(&kv, K("%s.feed_forward_length"), arr, (uint64_t)L);
        for (int l = 0; l < L; l++) arr[l] = c->n_heads;
        kv_arr_i32(&kv, K("%s.attention.head_count"), arr, (uint64_t)L);
        for (int l = 0; l < L; l++) arr[l] = c->n_kv_heads;
        kv_arr_i32(&kv, K("%s.attention.head_count_kv"), arr, (uint64_t)L);
        free(arr);
    } else {
        kv_u32(&kv, K("%s.feed_forward_length"), (uint32_t)c->ffn[0]);
        kv_u32(&kv, K("%s.attention.head_count"), (uint32_t)c->n_heads);
        kv_u32(&kv, K("%s.attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    }
    if (o->padded) {                          /* what each block really keeps */
        int32_t *arr = xmalloc(sizeof(int32_t) * (size_t)L);
        for (int l = 0; l < L; l++) arr[l] = ckpt_stored_ffn(s, l);
        kv_arr_i32(&kv, "cfsp.kept_feed_forward_length", arr, (uint64_t)L);
        free(arr);
    }
    kv_u32(&kv, K("%s.attention.key_length"), (uint32_t)c->head_dim);
    kv_u32(&kv, K("%s.attention.value_length"), (uint32_t)c->head_dim);
    kv_f32(&kv, K("%s.attention.layer_norm_rms_epsilon"), (float)c->eps);
    kv_u32(&kv, K("%s.rope.dimension_count"), (uint32_t)c->head_dim);
    kv_f32(&kv, K("%s.rope.freq_base"), (float)c->rope_theta);
    if (c->rope_yarn) {       /* llama.cpp: corr dims floor/ceil at n_ctx_orig, ext_factor 1, mscale 0.1 ln(factor) + 1 */
        kv_string(&kv, K("%s.rope.scaling.type"), "yarn");
        kv_f32(&kv, K("%s.rope.scaling.factor"), (float)c->yarn_factor);
        kv_u32(&kv, K("%s.rope.scaling.original_context_length"), (uint32_t)c->yarn_orig_max_pos);
    }
    kv_u32(&kv, K("%s.vocab_size"), (uint32_t)c->vocab);
#undef K
    kv_string(&kv, "tokenizer.ggml.model", voc.model);
    kv_string(&kv, "tokenizer.ggml.pre", voc.pre);
    kv_arr_str(&kv, "tokenizer.ggml.tokens", voc.tok, voc.len, (uint64_t)voc.n);
    if (voc.score) kv_arr_f32(&kv, "tokenizer.ggml.scores", voc.score, (uint64_t)voc.n);
    kv_arr_i32(&kv, "tokenizer.ggml.token_type", voc.type, (uint64_t)voc.n);
    if (voc.nmerges) kv_arr_str(&kv, "tokenizer.ggml.merges", voc.merges, NULL, (uint64_t)voc.nmerges);
    if (voc.bos >= 0) kv_u32(&kv, "tokenizer.ggml.bos_token_id", (uint32_t)voc.bos);
    if (voc.eos >= 0) kv_u32(&kv, "tokenizer.ggml.eos_token_id", (uint32_t)voc.eos);
    if (voc.unk >= 0) kv_u32(&kv, "tokenizer.ggml.unknown_token_id", (uint32_t)voc.unk);
    if (voc.pad >= 0) kv_u32(&kv, "tokenizer.ggml.padding_token_id", (uint32_t)voc.pad);
    if (voc.add_bos >= 0) kv_bool(&kv, "tokenizer.ggml.add_bos_token", voc.add_bos);
    if (voc.add_eos >= 0) kv_bool(&kv, "tokenizer.ggml.add_eos_token", voc.add_eos);
    if (voc.add_space_prefix >= 0) kv_bool(&kv, "tokenizer.ggml.add_space_prefix", voc.add_space_prefix);

    /* header + key/values + tensor infos */
    bbuf h = { 0 };
    bb_put(&h, "GGUF", 4);
    bb_u32(&h, 3);
    bb_u64(&h, (uint64_t)nt);
    bb_u64(&h, kv.count);
    bb_put(&h, kv.b.p, kv.b.n);
    for (int i = 0; i < nt; i++) {
        bb_str(&h, g[i].name, strlen(g[i].name));
        bb_u32(&h, (uint32_t)g[i].nd);
        bb_u64(&h, (uint64_t)g[i].ne0);
        if (g[i].nd == 2) bb_u64(&h, (uint64_t)g[i].ne1);
        bb_u32(&h, g[i].type);
        bb_u64(&h, g[i].offset);
    }

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", o->out);
    int rc = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) rc = FAIL("%s: cannot create: %s", tmp, strerror(errno));
    else {
        cfsp_tmp_register(tmp);
        setvbuf(f, NULL, _IOFBF, 1 << 20);
        rc = write_all(f, h.p, h.n, tmp);
        if (!rc) rc = write_pad(f, h.n, align, tmp);
        for (int i = 0; i < nt && !rc; i++) {
            rc = stream_tensor(s, &g[i], f, tmp, rope);
            if (!rc) rc = write_pad(f, g[i].nbytes, align, tmp);
        }
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) { if (!rc) rc = FAIL("%s: write failed: %s", tmp, strerror(errno)); }
        if (fclose(f) != 0 && !rc) rc = FAIL("%s: write failed: %s", tmp, strerror(errno));
        if (!rc && rename(tmp, o->out) != 0) rc = FAIL("cannot rename %s to %s: %s", tmp, o->out, strerror(errno));
        if (rc) unlink(tmp);
        cfsp_tmp_unregister(tmp);
    }
    if (!rc)
        printf("%s: GGUF v3, architecture %s, %d tensors, %llu key/values, %llu bytes; tokenizer %s (%s, %d tokens); FFN sizes",
               o->out, A, nt, (unsigned long long)kv.count, (unsigned long long)(pad_to(h.n, align) + off), voc.model, voc.source, voc.n);
    for (int l = 0; !rc && l < L; l++) printf(" %d", ckpt_stored_ffn(s, l));
    if (!rc && o->padded) printf(", zero-padded to %d", c->ffn[0]);
    if (!rc) printf("\n");
    free(h.p); free(kv.b.p); free(g); free(rope);
    ex_vocab_free(&voc);
    return rc;
}
