/* model_config.h — the architecture of a LLaMA-family checkpoint, read from its config.json
 * (Hugging Face LlamaConfig, plus Nemotron-NAS/DeciLM block_configs for per-block FFN sizes). */
#ifndef CFSP_MODEL_CONFIG_H
#define CFSP_MODEL_CONFIG_H
#include <stddef.h>
#include <stdint.h>

#define CFSP_MAX_LAYERS 4096

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
    int tie_embeddings;
    int max_pos;
    int bos_id, eos_id;
    char torch_dtype[16];
    int has_block_configs;
    char *source_json;     /* the config.json text as read (for provenance in outputs) */
} model_config;

int model_config_parse(const char *text, size_t len, const char *fname, model_config *c);
int model_config_load(const char *model_dir, model_config *c);
void model_config_free(model_config *c);
/* parameters of block l (weights only), used for stage balancing and memory estimates */
int64_t model_block_params(const model_config *c, int l);
#endif
