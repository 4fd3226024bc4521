/* tokenizer.h — the model's own tokenizer, in C: text -> token ids exactly as the checkpoint's
 * tokenizer produces them, and what its files declare (vocabulary, scores, types, merges, special
 * tokens) for writing it in another format (the GGUF exporter). Owns reading the tokenizer files of
 * a checkpoint directory (nothing else in cfsp-mpi parses them):
 *  - tokenizer.json (Hugging Face tokenizers): BPE with its normalizer chain (Prepend, Replace,
 *    Sequence) and pre-tokenizer chain (ByteLevel, Split with the GPT-2 / LLaMA-3 / Qwen2 regex,
 *    Metaspace, Sequence), added / special tokens (single_word, lstrip, rstrip, normalized),
 *    byte_fallback, unk (fused), ignore_merges;
 *  - tokenizer.model (sentencepiece ModelProto, read by a bounds-checked protobuf reader): BPE and
 *    unigram, normalizer flags add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces,
 *    precompiled charsmaps, user-defined symbols, byte fallback, unk runs merged;
 *  - tokenizer_config.json (transformers): bos/eos/unk/pad_token, add_bos/eos_token,
 *    added_tokens_decoder; with config.json's *_token_id.
 * tokenizer.json is preferred when both exist (as transformers' fast tokenizers do).
 * Parsers FAIL("file: field: problem") and return -1 (see err.h); nothing here needs MPI. */
#ifndef CFSP_TOKENIZER_H
#define CFSP_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct cfsp_tokenizer tokenizer;

/* DIR/tokenizer.json, else DIR/tokenizer.model. The BOS id comes from the tokenizer itself
 * (sentencepiece bos_id; tokenizer.json's TemplateProcessing), else tokenizer_config.json's
 * bos_token, else config.json's bos_token_id unless tokenizer_config.json says "bos_token": null
 * (Qwen: config.json's bos_token_id is <|endoftext|>, which its tokenizer never prepends); -1 if
 * none is known. Whether encoding adds it (tokenizer_adds_bos): tokenizer_config.json's
 * add_bos_token when it is a boolean, else the files' own rule. */
int tokenizer_load(const char *model_dir, tokenizer **out);
/* one file, tokenizer.model (TOK_FILE_SPM) or tokenizer.json (TOK_FILE_HF); BOS only from the file */
enum { TOK_FILE_SPM = 1, TOK_FILE_HF = 2 };
int tokenizer_read_file(const char *path, int file, tokenizer **out);
/* from bytes in memory (fname only names the source in messages) */
int tokenizer_from_spm(const void *data, size_t len, const char *fname, tokenizer **out);
int tokenizer_from_hf_json(const char *json, size_t len, const char *fname, tokenizer **out);
void tokenizer_free(tokenizer *t);

int tokenizer_vocab_size(const tokenizer *t);          /* 1 + the largest id it can produce */
const char *tokenizer_describe(const tokenizer *t);    /* e.g. "sentencepiece BPE, 512 pieces" */

/* Whether the Hugging Face tokenizer puts a BOS first (encode with add_special_tokens=True):
 * tokenizer_config.json's add_bos_token if it is a boolean (tokenizer_load only); else
 * tokenizer.json: a TemplateProcessing post-processor (alone or in a Sequence) whose `single`
 * template starts with a special token (LLaMA-2 / LLaMA-3; Qwen's ByteLevel post-processor: no);
 * sentencepiece: the model has a BOS (control) piece. 1 or 0. */
int tokenizer_adds_bos(const tokenizer *t);

/* Encode text[0..len). add_bos: 1 one BOS id first (FAIL if none is known), 0 none, TOK_BOS_AUTO
 * as tokenizer_adds_bos says. *ids is malloc'ed. `what` names the text in messages (tokenizer.json
 * needs valid UTF-8 and says where it is not). */
enum { TOK_BOS_AUTO = -1 };
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos, const char *what,
                     uint32_t **ids, int64_t *n);

/* FAIL("WHAT: invalid UTF-8 at byte N") unless text is UTF-8 (shortest forms, no surrogates):
 * every text file (--calib-text, --eval-text, `cfsp-mpi tokenize`) is checked before encoding */
int tokenizer_check_text(const char *what, const char *text, size_t len);
/* Load DIR's tokenizer and encode the whole file at `path` (add_bos as for tokenizer_encode). */
int tokenize_file(const char *model_dir, const char *path, int add_bos, uint32_t **ids, int64_t *n);
/* The run's --calib-text / --eval-text (rank 0): tokenize_file (add_bos as for tokenizer_encode),
 * every id checked to be below the model's vocab_size; prints one line (bytes, tokens, "BOS first"
 * or "no BOS", seconds) to stderr. */
int tokenize_file_checked(const char *model_dir, const char *path, int vocab, int add_bos, uint32_t **ids, int64_t *n);

/* ---- what the file declares (for writers of other formats) ------------------------------------ */
/* token types: sentencepiece's piece types (llama.cpp's llama_token_type has the same values) */
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };

typedef struct {
    int file;                  /* TOK_FILE_SPM | TOK_FILE_HF */
    int nentries;              /* tokenizer_entry 0..nentries-1 */
    int nmerges;               /* tokenizer.json: model.merges, tokenizer_merge 0..nmerges-1 (rank order) */
    int unk_id;                /* sentencepiece: the UNKNOWN piece; tokenizer.json: model.unk_token; -1 */
    int add_dummy_prefix;      /* sentencepiece: normalizer_spec.add_dummy_prefix; tokenizer.json: -1 */
    int byte_fallback;         /* trainer_spec.byte_fallback / model.byte_fallback */
    /* tokenizer.json only (0 for sentencepiece): */
    int metaspace;             /* sentencepiece-style: byte_fallback, a normalizer string that is U+2581,
                                  a Metaspace pre-tokenizer or decoder, or a ByteFallback decoder */
    int byte_level;            /* a ByteLevel pre-tokenizer or decoder */
    int gpt2_regex;            /* pre_tokenizer is one ByteLevel splitting with the GPT-2 regex */
    const char *template_first; /* a TemplateProcessing post_processor's first special token (the
                                  `single` template of two or more items), else NULL */
} tok_info;

typedef struct {
    const char *text;          /* as the file spells it (byte-level vocabularies in the GPT-2 alphabet),
                                  NUL-terminated, no NUL inside */
    uint32_t len;
    int id;
    int type;                  /* sentencepiece: the piece type; tokenizer.json: TOK_BYTE for <0xXX> and
                                  TOK_NORMAL for the rest of model.vocab, TOK_CONTROL (special) or
                                  TOK_USER_DEFINED for added_tokens */
    float score;               /* sentencepiece: the piece score; tokenizer.json: 0 */
} tok_entry;

void tokenizer_info(const tokenizer *t, tok_info *info);
/* Entry i: sentencepiece: piece i (id i); tokenizer.json: model.vocab in file order, then
 * added_tokens in file order (an added token has the vocab's id when the vocab has its content;
 * where two entries have one id, the later one is what the id decodes to). */
void tokenizer_entry(const tokenizer *t, int i, tok_entry *e);
/* tokenizer.json merge of rank r: ids[0] + ids[1] -> ids[2] (all three in model.vocab) */
void tokenizer_merge(const tokenizer *t, int r, int ids[3]);
/* tokenizer.json: the id of the added token with this content, else -1 (sentencepiece: -1) */
int tokenizer_added_id(const tokenizer *t, const char *content);

/* DIR/tokenizer_config.json (absent: nothing set) and the model's config.json: `config_json` (its
 * text), or NULL to read DIR/config.json if present. Invalid JSON is an error naming the file. */
enum { TOK_BOS, TOK_EOS, TOK_UNK, TOK_PAD };
typedef struct { long id; char *content; int special; } tok_decl;
typedef struct {
    char *token[4];            /* bos_token, eos_token, unk_token, pad_token: "text" or {"content": "text"}; NULL */
    int token_null[4];         /* 1 where tokenizer_config.json has that key with the value null */
    int add_bos, add_eos;      /* add_bos_token, add_eos_token: booleans, -1 if absent */
    tok_decl *added;           /* added_tokens_decoder entries with a decimal key and a string content, */
    int nadded;                /*   in file order */
    int64_t token_id[4];       /* config.json bos/eos/unk/pad_token_id: a number >= 0 (truncated), else -1 */
} tok_config;
int tok_config_read(const char *dir, const char *config_json, tok_config *c);
void tok_config_free(tok_config *c);
#endif
