/* tokenizer.h — the model's own tokenizer, in C: text -> token ids exactly as the checkpoint's
 * tokenizer produces them. Owns reading the tokenizer files of a checkpoint directory:
 *  - tokenizer.json (Hugging Face tokenizers): BPE with its normalizer chain (Prepend, Replace,
 *    Sequence) and pre-tokenizer chain (ByteLevel, Split with the GPT-2 / LLaMA-3 / Qwen2 regex,
 *    Metaspace, Sequence), added / special tokens (single_word, lstrip, rstrip, normalized),
 *    byte_fallback, unk (fused), ignore_merges;
 *  - tokenizer.model (sentencepiece ModelProto, read by a bounds-checked protobuf reader): BPE and
 *    unigram, normalizer flags add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces,
 *    precompiled charsmaps, user-defined symbols, byte fallback, unk runs merged.
 * tokenizer.json is preferred when both exist (as transformers' fast tokenizers do).
 * Parsers FAIL("file: field: problem") and return -1 (see err.h); nothing here needs MPI. */
#ifndef CFSP_TOKENIZER_H
#define CFSP_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct cfsp_tokenizer tokenizer;

/* DIR/tokenizer.json, else DIR/tokenizer.model. The BOS id comes from the tokenizer itself
 * (sentencepiece bos_id; tokenizer.json's TemplateProcessing), else tokenizer_config.json's
 * bos_token, else config.json's bos_token_id; -1 if none is known. */
int tokenizer_load(const char *model_dir, tokenizer **out);
/* from bytes in memory (fname only names the source in messages) */
int tokenizer_from_spm(const void *data, size_t len, const char *fname, tokenizer **out);
int tokenizer_from_hf_json(const char *json, size_t len, const char *fname, tokenizer **out);
void tokenizer_free(tokenizer *t);

int tokenizer_bos_id(const tokenizer *t);
int tokenizer_vocab_size(const tokenizer *t);          /* 1 + the largest id it can produce */
const char *tokenizer_describe(const tokenizer *t);    /* e.g. "sentencepiece BPE, 512 pieces" */

/* Encode text[0..len). add_bos: one BOS id first (FAIL if none is known). *ids is malloc'ed.
 * `what` names the text in messages (tokenizer.json needs valid UTF-8 and says where it is not). */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos, const char *what,
                     uint32_t **ids, int64_t *n);

/* Load DIR's tokenizer and encode the whole file at `path` (one BOS first if add_bos). */
int tokenize_file(const char *model_dir, const char *path, int add_bos, uint32_t **ids, int64_t *n);
/* The run's --calib-text / --eval-text (rank 0): tokenize_file with one BOS, every id checked to be
 * below the model's vocab_size; prints one line (bytes, tokens, seconds) to stderr. */
int tokenize_file_checked(const char *model_dir, const char *path, int vocab, uint32_t **ids, int64_t *n);
#endif
