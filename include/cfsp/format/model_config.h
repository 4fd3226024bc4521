/* model_config.h — the architecture of a checkpoint, read from its config.json: the LLaMA family
 * (Hugging Face LlamaConfig / MistralConfig, plus Nemotron-NAS/DeciLM block_configs for per-block
 * FFN sizes) and the Qwen family (Qwen2Config: q/k/v biases; Qwen3Config: per-head RMSNorm of q and
 * k before RoPE, head_dim given explicitly). Every field the forward pass would have to honour and
 * cannot is refused with one line naming the field. */
#ifndef CFSP_MODEL_CONFIG_H
#define CFSP_MODEL_CONFIG_H
#include <stddef.h>
#include <stdint.h>

#define CFSP_MAX_LAYERS 4096

/* the model families: what a block holds beyond the LLaMA block */
typedef enum {
    FAMILY_LLAMA = 0,      /* llama, mistral, nemotron-nas / deci */
    FAMILY_QWEN2 = 1,      /* qwen2 (Qwen2, Qwen2.5): q/k/v projections with biases */
    FAMILY_QWEN3 = 2       /* qwen3: q_norm / k_norm [head_dim] on every head of q and k */
} model_family;
extern const char *const model_family_names[];   /* "llama", "qwen2", "qwen3" */

typedef struct {
    int hidden;            /* D */
    int n_layers;          /* L */
    int n_heads, n_kv_heads, head_dim;
    int vocab;
    int ffn_default;       /* intermediate_size */
    int *ffn;              /* per-block FFN size m_l (block_configs, or all ffn_default) */
    double eps, rope_theta;
    int rope_llama3;       /* rope_scaling.rope_type == "llama3" */
    double rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_max_pos;
    int rope_yarn;         /* rope_scaling.rope_type == "yarn" (transformers' _compute_yarn_parameters) */
    double yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_attn_factor;
    int yarn_orig_max_pos, yarn_truncate;
    int yarn_default_attn; /* yarn_attn_factor is 0.1 ln(factor) + 1 (no attention_factor / mscale given) */
    int tie_embeddings;
    int max_pos;
    int bos_id, eos_id;
    char torch_dtype[16];
    int has_block_configs;
    model_family family;
    char model_type[32];   /* as config.json says ("llama" when absent) */
    int qkv_bias;          /* blocks have self_attn.{q,k,v}_proj.bias (Qwen2) */
    int qk_norm;           /* blocks have self_attn.{q,k}_norm.weight (Qwen3) */
    int sliding_window;    /* Mistral's sliding_window (0: none): sequences must not exceed it */
    char *source_json;     /* the config.json text as read (for provenance in outputs) */
} model_config;

int model_config_parse(const char *text, size_t len, const char *fname, model_config *c);
int model_config_load(const char *model_dir, model_config *c);
void model_config_free(model_config *c);
/* parameters of block l (weights only), used for stage balancing and memory estimates */
int64_t model_block_params(const model_config *c, int l);
/* Nemotron-NAS / DeciLM: the FFN size the runtimes derive from block_configs[i].ffn.ffn_mult and
 * hidden_size: int(2 * ffn_mult * hidden / 3) (double arithmetic, left to right, truncated), rounded
 * up to a multiple of 256; with round6, ffn_mult is first rounded to 6 decimals as NVIDIA's
 * block_config.py and mlx-lm's FFNConfig do. -1 when out of range. */
int64_t nas_ffn_mult_size(double ffn_mult, int hidden, int round6);
#endif
