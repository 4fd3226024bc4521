/* export.h — `cfsp-mpi export`: a pruned checkpoint (the HDF5 file of model_h5.h) or an unpruned
 * Hugging Face directory (ratio 0), written as
 *   - GGUF v3, architecture `deci` (llama.cpp's LLaMA variant with per-layer FFN sizes), q/k rows
 *     permuted to llama.cpp's interleaved rotary order as its convert_hf_to_gguf.py does, the
 *     tokenizer metadata taken from the source checkpoint's tokenizer.model / tokenizer.json;
 *   - a Hugging Face Nemotron-NAS / DeciLM directory: config.json with block_configs, safetensors
 *     shards of at most a given size with model.safetensors.index.json, tokenizer files copied.
 * Serial (rank 0), streaming: one row panel of one tensor in memory at a time. Outputs are
 * written under a temporary name and renamed when complete; never overwritten without --force.
 * Every input problem is a one-line FAIL naming the file and the field. */
#ifndef CFSP_EXPORT_H
#define CFSP_EXPORT_H
#include "cfsp/ckpt/reader.h"
#include "cfsp/format/model_config.h"
#include "cfsp/format/safetensors.h"
#include <stdint.h>

/* ---- the tensor source: the checkpoint reader (cfsp/ckpt/reader.h) ---------------------------
 * The exporters read a pruned HDF5 file, or the unpruned Hugging Face directory at ratio 0, through
 * ckpt_open / ckpt_open_dir, ckpt_find and ckpt_read_rows; they stream one row panel at a time. */
/* rows per streamed panel of t (at most EX_PANEL_BYTES, a multiple of `multiple` rows) */
#define EX_PANEL_BYTES (64u << 20)
int64_t ex_panel_rows(const ckpt_tensor *t, int64_t multiple);   /* export_panel.c */

/* ---- the tokenizer of the source checkpoint (export_tok.c) ----------------------------------- */
/* GGUF tokenizer metadata, built from what src/tok reads (cfsp/tok/tokenizer.h) */
typedef struct {
    char model[16];            /* tokenizer.ggml.model: "llama" (sentencepiece style) | "gpt2" (byte-level BPE) */
    char pre[32];              /* tokenizer.ggml.pre */
    char source[32];           /* the file it came from: tokenizer.model | tokenizer.json */
    int n;                     /* tokens (= the model's vocab_size) */
    char **tok;                /* token text (UTF-8 bytes, NUL-terminated; may contain no NUL) */
    uint32_t *len;
    float *score;              /* "llama" only */
    int32_t *type;             /* GGUF token types: tokenizer.h's TOK_NORMAL .. TOK_BYTE (llama_token_type) */
    char **merges;             /* "gpt2" only */
    int nmerges;
    int64_t bos, eos, unk, pad;       /* -1: not set */
    int add_bos, add_eos, add_space_prefix; /* -1: not set */
} ex_vocab;

/* tokenizer.model (sentencepiece) if present, else tokenizer.json, read by src/tok, with
 * tokenizer_config.json and config_text (config.json) for the special tokens; vocab padded to
 * cfg->vocab with [PADi] tokens as llama.cpp's converter does. */
int ex_vocab_load(const char *dir, const model_config *cfg, const char *config_text, ex_vocab *v);
void ex_vocab_free(ex_vocab *v);

/* ---- the writers ----------------------------------------------------------------------------- */
typedef struct {
    const char *out;           /* OUT.gguf or OUTDIR */
    int force;
    uint32_t alignment;        /* GGUF: general.alignment (power of two, default 32) */
    uint64_t shard_bytes;      /* HF: maximum bytes per safetensors file */
    const char *name;          /* general.name (default: the source directory's name) */
    int padded;                /* the uniform form: the model's own architecture, every FFN zero-padded
                                * to the widest block (ckpt_pad_ffn; exact) */
} ex_options;

int export_gguf(ckpt_source *s, const ex_options *o);
int export_hf(ckpt_source *s, const ex_options *o);
#endif
