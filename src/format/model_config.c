/* model_config.c — parse and validate a Hugging Face config.json (LLaMA / Mistral / DeciLM, Qwen2,
 * Qwen3) with cJSON. */
#include "cfsp/format/model_config.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG (1LL << 30)

const char *const model_family_names[] = { "llama", "qwen2", "qwen3" };

/* model_type -> family; the types of other architectures get a line saying which are supported */
static int parse_family(const cJSON *root, const char *f, model_config *c)
{
    const char *mt = NULL;
    if (json_get_string(root, "model_type", f, 0, &mt)) return -1;
    snprintf(c->model_type, sizeof c->model_type, "%s", mt ? mt : "llama");
    static const struct { const char *type; model_family fam; } known[] = {
        { "llama", FAMILY_LLAMA }, { "mistral", FAMILY_LLAMA }, { "nemotron-nas", FAMILY_LLAMA }, { "deci", FAMILY_LLAMA },
        { "qwen2", FAMILY_QWEN2 }, { "qwen3", FAMILY_QWEN3 },
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(c->model_type, known[i].type)) { c->family = known[i].fam; return 0; }
    if (!strncmp(c->model_type, "qwen", 4) && strstr(c->model_type, "moe"))
        return FAIL("%s: field 'model_type' = \"%s\": mixture-of-experts blocks are not supported (dense qwen2 / qwen3 are)", f, mt);
    return FAIL("%s: field 'model_type' = \"%s\": expected llama, mistral, nemotron-nas, qwen2 or qwen3", f, mt);
}

/* attention extras, sliding windows and per-layer attention types, by family */
static int parse_attention(const cJSON *root, const char *f, model_config *c)
{
    int ab = 0, mb = 0, sw = 0;
    if (json_get_bool(root, "attention_bias", f, 0, &ab) || json_get_bool(root, "mlp_bias", f, 0, &mb)) return -1;
    if (mb) return FAIL("%s: field 'mlp_bias' = true: biases of gate/up/down_proj are not supported", f);
    /* Qwen2Attention has q/k/v biases whatever attention_bias says (transformers ignores the field);
     * a Nemotron-NAS / DeciLM config says so with qkv_bias (vLLM's nemotron_nas.py: qkv_bias sets the
     * q/k/v biases only, attention_bias those and o_proj's) */
    int qb = 0;
    if (json_get_bool(root, "qkv_bias", f, 0, &qb)) return -1;
    if (c->family == FAMILY_QWEN2) c->qkv_bias = 1;
    else if (qb && (!strcmp(c->model_type, "nemotron-nas") || !strcmp(c->model_type, "deci"))) c->qkv_bias = 1;
    else if (qb) return FAIL("%s: field 'qkv_bias' = true: only qwen2 and nemotron-nas configs have q/k/v biases", f);
    if (ab && c->family != FAMILY_QWEN2)
        return FAIL("%s: field 'attention_bias' = true: %s blocks with q/k/v/o_proj biases are not supported (the o_proj bias)", f, c->model_type);
    if (c->family == FAMILY_QWEN3) c->qk_norm = 1;
    if (json_get_bool(root, "use_sliding_window", f, 0, &sw)) return -1;
    if (sw)
        return FAIL("%s: field 'use_sliding_window' = true: sliding-window attention is not supported (set it false: the released Qwen checkpoints use full attention)", f);
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt)) return FAIL("%s: field 'layer_types': expected an array of strings", f);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, lt) {
            if (!cJSON_IsString(e)) return FAIL("%s: field 'layer_types[%d]': expected a string", f, i);
            if (strcmp(e->valuestring, "full_attention"))
                return FAIL("%s: field 'layer_types[%d]' = \"%.40s\": only \"full_attention\" is supported", f, i, e->valuestring);
            i++;
        }
    }
    /* Mistral v0.1 attends over a window of sliding_window positions; within one window it is
     * full attention, so the run refuses longer sequences (run.c). Qwen's sliding_window is read
     * only with use_sliding_window, which is refused above. */
    if (c->family == FAMILY_LLAMA) {
        int64_t w = 0;
        if (json_get_int(root, "sliding_window", f, 0, 1, BIG, &w)) return -1;
        c->sliding_window = (int)w;
    }
    int64_t mwl = 0;
    if (json_get_int(root, "max_window_layers", f, 0, 0, BIG, &mwl)) return -1;   /* used only with a sliding window */
    return 0;
}

static double yarn_mscale(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0; }

/* YaRN as transformers' _compute_yarn_parameters: factor (required), original_max_position_embeddings
 * (default max_position_embeddings), beta_fast 32, beta_slow 1, truncate true, attention_factor or
 * mscale / mscale_all_dim (default 0.1 ln(factor) + 1) */
static int parse_yarn(const cJSON *rs, const char *f, model_config *c)
{
    int64_t om = c->max_pos;
    double ms = 0, msa = 0, af = 0;
    int tr = 1;
    c->yarn_beta_fast = 32;
    c->yarn_beta_slow = 1;
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (!fa || cJSON_IsNull(fa)) return FAIL("%s: field 'rope_scaling.factor' is missing (yarn needs its scaling factor)", f);
    if (json_get_double(rs, "factor", f, 1, 1.0, 1e6, &c->yarn_factor) ||
        json_get_int(rs, "original_max_position_embeddings", f, 0, 1, BIG, &om) ||
        json_get_double(rs, "beta_fast", f, 0, 1e-6, 1e6, &c->yarn_beta_fast) ||
        json_get_double(rs, "beta_slow", f, 0, 1e-6, 1e6, &c->yarn_beta_slow) ||
        json_get_double(rs, "mscale", f, 0, 0, 1e6, &ms) || json_get_double(rs, "mscale_all_dim", f, 0, 0, 1e6, &msa) ||
        json_get_double(rs, "attention_factor", f, 0, 1e-6, 1e6, &af) || json_get_bool(rs, "truncate", f, 0, &tr))
        return -1;
    c->rope_yarn = 1;
    c->yarn_orig_max_pos = (int)om;
    c->yarn_truncate = tr;
    c->yarn_default_attn = !af && !(ms && msa);
    c->yarn_attn_factor = af ? af : (ms && msa) ? yarn_mscale(c->yarn_factor, ms) / yarn_mscale(c->yarn_factor, msa)
                                                : yarn_mscale(c->yarn_factor, 1.0);
    return 0;
}

static int parse_rope_scaling(const cJSON *root, const char *f, model_config *c)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) return FAIL("%s: field 'rope_scaling': expected null or an object", f);
    const char *type = NULL;
    if (json_get_string(rs, "rope_type", f, 0, &type)) return -1;
    if (!type && json_get_string(rs, "type", f, 0, &type)) return -1;
    if (!type) return FAIL("%s: field 'rope_scaling.rope_type' is missing", f);
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "yarn") == 0) return parse_yarn(rs, f, c);
    if (strcmp(type, "llama3") != 0)
        return FAIL("%s: field 'rope_scaling.rope_type' = \"%s\": only \"llama3\", \"yarn\" (or null) are supported", f, type);
    c->rope_llama3 = 1;
    c->rope_low_freq = 1.0;
    c->rope_high_freq = 4.0;
    int64_t om = 8192;
    if (json_get_double(rs, "factor", f, 1, 1e-6, 1e6, &c->rope_factor) ||
        json_get_double(rs, "low_freq_factor", f, 1, 1e-6, 1e6, &c->rope_low_freq) ||
        json_get_double(rs, "high_freq_factor", f, 1, 1e-6, 1e6, &c->rope_high_freq) ||
        json_get_int(rs, "original_max_position_embeddings", f, 1, 1, BIG, &om))
        return -1;
    if (c->rope_high_freq <= c->rope_low_freq)
        return FAIL("%s: field 'rope_scaling': high_freq_factor must exceed low_freq_factor", f);
    c->rope_orig_max_pos = (int)om;
    return 0;
}

int64_t nas_ffn_mult_size(double ffn_mult, int hidden, int round6)
{
    volatile double x = ffn_mult, t;
    if (round6) {                          /* Python's round(x, 6): correctly rounded, as printf's */
        char b[512];
        snprintf(b, sizeof b, "%.6f", ffn_mult);
        x = strtod(b, NULL);
    }
    t = 2.0 * x;                           /* 2 * ffn_mult * n_embd / 3, evaluated left to right */
    t = t * (double)hidden;
    t = t / 3.0;
    if (!(t >= 0) || t > 4e18) return -1;
    int64_t n = (int64_t)t;                /* int(): truncation */
    return n % 256 == 0 ? n : n + 256 - n % 256;
}

static int parse_block_configs(const cJSON *root, const char *f, model_config *c)
{
    const cJSON *bc = cJSON_GetObjectItemCaseSensitive(root, "block_configs");
    if (!bc || cJSON_IsNull(bc)) return 0;
    if (!cJSON_IsArray(bc)) return FAIL("%s: field 'block_configs': expected an array", f);
    if (cJSON_GetArraySize(bc) != c->n_layers)
        return FAIL("%s: field 'block_configs' has %d entries, expected num_hidden_layers = %d", f,
                    cJSON_GetArraySize(bc), c->n_layers);
    int l = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, bc) {
        char where[64];
        snprintf(where, sizeof where, "%s: block_configs[%d]", f, l);
        const cJSON *ffn = cJSON_GetObjectItemCaseSensitive(b, "ffn");
        if (!cJSON_IsObject(ffn)) return FAIL("%s: field 'ffn': expected an object", where);
        int64_t m = 0;
        /* intermediate_size (cfsp-mpi's exports with sizes of no multiple of 256), else the size the
         * Nemotron-NAS runtimes derive from ffn_mult (NVIDIA's checkpoints, cfsp-mpi's exports with
         * every size a multiple of 256) */
        if (cJSON_GetObjectItemCaseSensitive(ffn, "intermediate_size") || !cJSON_GetObjectItemCaseSensitive(ffn, "ffn_mult")) {
            if (json_get_int(ffn, "intermediate_size", where, 1, 1, BIG, &m)) return -1;
        } else {
            double mult = 0;
            if (json_get_double(ffn, "ffn_mult", where, 1, 1e-9, 1e9, &mult)) return -1;
            m = nas_ffn_mult_size(mult, c->hidden, 1);
            if (m < 1 || m > BIG) return FAIL("%s: field 'ffn.ffn_mult' = %g gives FFN size %lld (hidden_size %d)", where, mult, (long long)m, c->hidden);
        }
        const cJSON *att = cJSON_GetObjectItemCaseSensitive(b, "attention");
        if (att && cJSON_IsObject(att)) {
            int64_t g = c->n_heads / c->n_kv_heads;
            if (json_get_int(att, "n_heads_in_group", where, 0, 1, BIG, &g)) return -1;
            if (g * c->n_kv_heads != c->n_heads)
                return FAIL("%s: field 'attention.n_heads_in_group' = %lld: per-block attention sizes are not supported (expected %d)",
                            where, (long long)g, c->n_heads / c->n_kv_heads);
            int noop = 0;
            if (json_get_bool(att, "no_op", where, 0, &noop)) return -1;
            if (noop) return FAIL("%s: field 'attention.no_op': blocks without attention are not supported", where);
        }
        c->ffn[l++] = (int)m;
    }
    c->has_block_configs = 1;
    return 0;
}

int model_config_parse(const char *text, size_t len, const char *f, model_config *c)
{
    memset(c, 0, sizeof *c);
    cJSON *root = NULL;
    if (json_parse(text, len, f, &root)) return -1;
    int rc = -1;
    if (!cJSON_IsObject(root)) { FAIL("%s: expected a JSON object at the top level", f); goto out; }
    if (parse_family(root, f, c)) goto out;
    const char *act = NULL;
    if (json_get_string(root, "hidden_act", f, 0, &act)) goto out;
    if (act && strcmp(act, "silu")) { FAIL("%s: field 'hidden_act' = \"%s\": only silu is supported", f, act); goto out; }
    int64_t D = 0, L = 0, H = 0, K = 0, HD = 0, V = 0, M = 0, maxpos = 4096, bos = 1, eos = 2;
    if (json_get_int(root, "hidden_size", f, 1, 1, 1 << 20, &D) ||
        json_get_int(root, "num_hidden_layers", f, 1, 1, CFSP_MAX_LAYERS, &L) ||
        json_get_int(root, "num_attention_heads", f, 1, 1, 1 << 16, &H) ||
        json_get_int(root, "vocab_size", f, 1, 1, 1 << 26, &V) ||
        json_get_int(root, "max_position_embeddings", f, 0, 1, BIG, &maxpos))
        goto out;
    K = H;
    if (json_get_int(root, "num_key_value_heads", f, 0, 1, 1 << 16, &K)) goto out;
    int has_bc = cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "block_configs"));
    if (json_get_int(root, "intermediate_size", f, !has_bc, 1, BIG, &M)) goto out;
    if (H % K != 0) {
        FAIL("%s: field 'num_key_value_heads' = %lld does not divide num_attention_heads = %lld", f, (long long)K, (long long)H);
        goto out;
    }
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (hd && !cJSON_IsNull(hd)) {
        if (json_get_int(root, "head_dim", f, 1, 2, 1 << 16, &HD)) goto out;
    } else {
        if (D % H != 0) {
            FAIL("%s: field 'num_attention_heads' = %lld does not divide hidden_size = %lld (and no head_dim given)", f, (long long)H, (long long)D);
            goto out;
        }
        HD = D / H;
    }
    if (HD % 2 != 0) { FAIL("%s: field 'head_dim' = %lld: must be even for rotary embeddings", f, (long long)HD); goto out; }
    if (json_get_int(root, "bos_token_id", f, 0, 0, V - 1, &bos)) { cfsp_clear_error(); bos = 1; }
    if (json_get_int(root, "eos_token_id", f, 0, 0, V - 1, &eos)) { cfsp_clear_error(); eos = 2; }
    /* an explicit null: the model has no such token (Qwen configs may say so) */
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "bos_token_id"))) bos = -1;
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"))) eos = -1;
    /* the defaults 1 and 2 need not exist in a tiny vocabulary: -1 = no such token */
    if (bos >= V) bos = -1;
    if (eos >= V) eos = -1;
    c->hidden = (int)D; c->n_layers = (int)L; c->n_heads = (int)H; c->n_kv_heads = (int)K;
    c->head_dim = (int)HD; c->vocab = (int)V; c->ffn_default = (int)M; c->max_pos = (int)maxpos;
    c->bos_id = (int)bos; c->eos_id = (int)eos;
    c->eps = 1e-6;
    c->rope_theta = 10000.0;
    if (json_get_double(root, "rms_norm_eps", f, 0, 0.0, 1.0, &c->eps) ||
        json_get_double(root, "rope_theta", f, 0, 1e-6, 1e12, &c->rope_theta))
        goto out;
    if (c->eps <= 0) { FAIL("%s: field 'rms_norm_eps' = %g: expected > 0", f, c->eps); goto out; }
    c->tie_embeddings = 0;
    if (json_get_bool(root, "tie_word_embeddings", f, 0, &c->tie_embeddings)) goto out;
    const char *dt = "float32";
    if (json_get_string(root, "torch_dtype", f, 0, &dt)) goto out;
    if (strcmp(dt, "float32") && strcmp(dt, "float16") && strcmp(dt, "bfloat16")) {
        FAIL("%s: field 'torch_dtype' = \"%s\": expected float32, float16 or bfloat16", f, dt);
        goto out;
    }
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", dt);
    if (parse_attention(root, f, c)) goto out;
    if (parse_rope_scaling(root, f, c)) goto out;
    c->ffn = xmalloc(sizeof(int) * (size_t)L);
    for (int l = 0; l < L; l++) c->ffn[l] = (int)M;
    if (parse_block_configs(root, f, c)) goto out;
    if (!M) {
        for (int l = 0; l < L; l++) if (c->ffn[l] > M) M = c->ffn[l];
        c->ffn_default = (int)M;
    }
    c->source_json = xmalloc(len + 1);
    memcpy(c->source_json, text, len);
    c->source_json[len] = 0;
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc) { free(c->ffn); c->ffn = NULL; }
    return rc;
}

int model_config_load(const char *dir, model_config *c)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path) return FAIL("%s: path too long", dir);
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(path, 16u << 20, &text, &len)) return -1;
    int rc = model_config_parse(text, len, path, c);
    free(text);
    return rc;
}

void model_config_free(model_config *c)
{
    free(c->ffn);
    free(c->source_json);
    memset(c, 0, sizeof *c);
}

int64_t model_block_params(const model_config *c, int l)
{
    int64_t D = c->hidden, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t extra = (c->qkv_bias ? q + 2 * kv : 0) + (c->qk_norm ? 2 * (int64_t)c->head_dim : 0);
    return D * q * 2 + D * kv * 2 + 3 * D * (int64_t)c->ffn[l] + 2 * D + extra;
}
