/* export_tok.c — the source checkpoint's tokenizer as GGUF tokenizer metadata (see export.h),
 * written from what src/tok reads (tokenizer.h: tokenizer_info / tokenizer_entry / tokenizer_merge,
 * tok_config_read); nothing here parses a file.
 *
 * sentencepiece tokenizer.model: pieces, scores and types go to GGUF as llama.cpp's converter
 * writes them (model "llama"); add_space_prefix is normalizer_spec.add_dummy_prefix.
 *
 * Hugging Face tokenizer.json (model type BPE):
 *  - sentencepiece-style (byte_fallback, or a normalizer / pre-tokenizer / decoder of U+2581 "▁"):
 *    GGUF model "llama" (llama.cpp's SPM tokenizer). llama.cpp's SPM merges the adjacent pair
 *    whose concatenation is the highest-scoring token, so the score of a token is minus the rank
 *    of the BPE merge that produces it (-(rank+1)); tokens no merge produces: 0 for single
 *    characters and <0xXX> bytes, -1e9 otherwise. (llama.cpp's converter writes a placeholder
 *    -1000 for every token here, which makes its SPM tokenizer merge left to right instead of in
 *    merge order.)
 *  - byte-level (ByteLevel pre-tokenizer / decoder): GGUF model "gpt2" with the merges.
 * Special token ids as the converter's SpecialVocab finds them: tokenizer_config.json contents
 * matched against added tokens, then config.json *_token_id; add_bos/add_eos from
 * tokenizer_config.json (or a TemplateProcessing post-processor that starts with the BOS token). */
#include "cfsp/export/export.h"
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ex_vocab_free(ex_vocab *v)
{
    for (int i = 0; i < v->n; i++) free(v->tok[i]);
    for (int i = 0; i < v->nmerges; i++) free(v->merges[i]);
    free(v->tok); free(v->len); free(v->score); free(v->type); free(v->merges);
    memset(v, 0, sizeof *v);
}

static void vocab_init(ex_vocab *v, int n, int with_scores)
{
    v->n = n;
    v->tok = xcalloc((size_t)n, sizeof(char *));
    v->len = xcalloc((size_t)n, sizeof(uint32_t));
    v->score = with_scores ? xcalloc((size_t)n, sizeof(float)) : NULL;
    v->type = xcalloc((size_t)n, sizeof(int32_t));
    v->bos = v->eos = v->unk = v->pad = -1;
    v->add_bos = v->add_eos = v->add_space_prefix = -1;
}

static void set_tok(ex_vocab *v, int id, const char *s, size_t n)
{
    free(v->tok[id]);
    v->tok[id] = xmalloc(n + 1);
    memcpy(v->tok[id], s, n);
    v->tok[id][n] = 0;
    v->len[id] = (uint32_t)n;
}

/* grow the vocabulary to the model's vocab_size (at least v->n), padding as the converter does */
static void fit_vocab(ex_vocab *v, int want)
{
    int old = v->n;
    if (want > old) {
        v->tok = xrealloc(v->tok, sizeof(char *) * (size_t)want);
        v->len = xrealloc(v->len, sizeof(uint32_t) * (size_t)want);
        v->type = xrealloc(v->type, sizeof(int32_t) * (size_t)want);
        if (v->score) v->score = xrealloc(v->score, sizeof(float) * (size_t)want);
        for (int i = old; i < want; i++) { v->tok[i] = NULL; v->len[i] = 0; v->type[i] = 0; if (v->score) v->score[i] = 0; }
        v->n = want;
    }
    for (int i = 0; i < v->n; i++)
        if (!v->tok[i]) {
            char b[32];
            int k = snprintf(b, sizeof b, "[PAD%d]", i);
            set_tok(v, i, b, (size_t)k);
            v->type[i] = TOK_UNUSED;
            if (v->score) v->score[i] = -10000.0f;
        }
}

static int utf8_codepoints(const char *s)
{
    int n = 0;
    for (; *s; s++) if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return n;
}

/* the tokenizer's entries at their ids (a later entry replaces an earlier one of the same id) */
static void vocab_from_entries(const tokenizer *t, const tok_info *ti, ex_vocab *v, int with_scores)
{
    vocab_init(v, tokenizer_vocab_size(t), with_scores);
    for (int i = 0; i < ti->nentries; i++) {
        tok_entry e;
        tokenizer_entry(t, i, &e);
        set_tok(v, e.id, e.text, e.len);
        v->type[e.id] = e.type;
        if (with_scores) v->score[e.id] = e.score;
    }
}

/* a merge part with ' ' written as U+0120 (the converter's spelling of spaces inside merge parts) */
static size_t enc_spaces(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { out[k++] = (char)0xc4; out[k++] = (char)0xa0; }
        else out[k++] = s[i];
    }
    return k;
}

/* The Split regex of tokenizer.json's pre_tokenizer (alone or first in a Sequence) when it is
 * Qwen2's or LLaMA-3's, as llama.cpp's pre-tokenizer type; NULL otherwise. */
static const char *split_pattern_kind(const char *path)
{
    static const char *const qwen2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static const char *const llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(path, 1u << 30, &text, &len)) { cfsp_clear_error(); return NULL; }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), *sp = pt;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(pt, "type");
    if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "Sequence")) sp = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers"), 0);
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(sp, "pattern"), "Regex");
    const char *kind = NULL;
    if (cJSON_IsString(re)) kind = !strcmp(re->valuestring, qwen2) ? "qwen2" : !strcmp(re->valuestring, llama3) ? "llama-bpe" : NULL;
    cJSON_Delete(j);
    return kind;
}

/* tokenizer.json: GGUF model "llama" with merge-rank scores, or "gpt2" with the merges */
static int hf_vocab(const tokenizer *t, const tok_info *ti, const char *path, ex_vocab *v)
{
    int llama = ti->metaspace, gpt2 = ti->byte_level;
    if (!llama && !gpt2)
        return FAIL("%s: a BPE tokenizer that is neither sentencepiece-style (byte_fallback / U+2581) nor byte-level: no GGUF tokenizer model for it", path);
    vocab_from_entries(t, ti, v, llama);
    snprintf(v->model, sizeof v->model, "%s", llama ? "llama" : "gpt2");
    snprintf(v->source, sizeof v->source, "tokenizer.json");
    if (ti->unk_id >= 0) { v->unk = ti->unk_id; v->type[ti->unk_id] = TOK_UNKNOWN; }
    if (llama) {
        snprintf(v->pre, sizeof v->pre, "default");
        for (int i = 0; i < v->n; i++)
            if (v->tok[i]) v->score[i] = (v->type[i] == TOK_NORMAL && utf8_codepoints(v->tok[i]) > 1) ? -1e9f : 0.0f;
        for (int r = 0; r < ti->nmerges; r++) {
            int ids[3];
            tokenizer_merge(t, r, ids);
            if (v->type[ids[2]] == TOK_NORMAL && v->score[ids[2]] == -1e9f) v->score[ids[2]] = -(float)(r + 1);
        }
        return 0;
    }
    /* the pre-tokenizer regex llama.cpp should use: GPT-2's for a plain ByteLevel one, Qwen2's or
     * LLaMA-3's for their Split patterns (llama.cpp's pre types "qwen2" / "llama-bpe") */
    const char *split = split_pattern_kind(path);
    snprintf(v->pre, sizeof v->pre, "%s", ti->gpt2_regex ? "gpt-2" : split ? split : "default");
    if (!ti->gpt2_regex && !split)
        fprintf(stderr, "cfsp-mpi: export: %s: byte-level pre-tokenizer not recognised; tokenizer.ggml.pre = \"default\"\n", path);
    v->merges = xcalloc((size_t)(ti->nmerges ? ti->nmerges : 1), sizeof(char *));
    for (int r = 0; r < ti->nmerges; r++) {
        int ids[3];
        tokenizer_merge(t, r, ids);
        size_t na = v->len[ids[0]], nb = v->len[ids[1]];
        char *s = xmalloc(2 * (na + nb) + 2);
        size_t k = enc_spaces(v->tok[ids[0]], na, s);
        s[k++] = ' ';
        k += enc_spaces(v->tok[ids[1]], nb, s + k);
        s[k] = 0;
        v->merges[v->nmerges++] = s;
    }
    return 0;
}

/* the converter's special tokens and flags (gguf-py SpecialVocab): tokenizer_config.json's
 * *_token matched against tokenizer.json's added tokens, else config.json's *_token_id below n;
 * add_bos / add_eos from tokenizer_config.json, else (add_bos) whether a TemplateProcessing
 * post-processor starts with the BOS token */
static void special_tokens(const tokenizer *t, const tok_info *ti, const tok_config *tc, ex_vocab *v)
{
    int64_t *ids[4] = { &v->bos, &v->eos, &v->unk, &v->pad };
    for (int k = 0; k < 4; k++) {
        int id = tc->token[k] ? tokenizer_added_id(t, tc->token[k]) : -1;
        if (id >= 0) *ids[k] = id;
        if (*ids[k] < 0 && tc->token_id[k] >= 0 && tc->token_id[k] < v->n) *ids[k] = tc->token_id[k];
    }
    v->add_bos = tc->add_bos;
    v->add_eos = tc->add_eos;
    if (v->add_bos < 0 && ti->template_first && v->bos >= 0) v->add_bos = !strcmp(ti->template_first, v->tok[v->bos]);
}

int ex_vocab_load(const char *dir, const model_config *cfg, const char *config_text, ex_vocab *v)
{
    memset(v, 0, sizeof *v);
    char spm[4200], tj[4200];
    snprintf(spm, sizeof spm, "%s/tokenizer.model", dir);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    const char *src = path_exists(spm) ? spm : path_exists(tj) ? tj : NULL;
    if (!src)
        return FAIL("%s: no tokenizer.model or tokenizer.json: the GGUF file needs the source checkpoint's tokenizer (give it with --model DIR)", dir);
    tokenizer *t = NULL;
    if (tokenizer_read_file(src, src == spm ? TOK_FILE_SPM : TOK_FILE_HF, &t)) return -1;
    tok_info ti;
    tokenizer_info(t, &ti);
    tok_config tc;
    int rc = 0;
    if (tokenizer_vocab_size(t) > cfg->vocab)
        rc = FAIL("%s: %d tokens, more than the model's vocab_size = %d", src, tokenizer_vocab_size(t), cfg->vocab);
    else if (ti.file == TOK_FILE_HF)
        rc = hf_vocab(t, &ti, src, v);
    else {
        vocab_from_entries(t, &ti, v, 1);
        snprintf(v->model, sizeof v->model, "llama");
        snprintf(v->pre, sizeof v->pre, "default");
        snprintf(v->source, sizeof v->source, "tokenizer.model");
        v->unk = ti.unk_id;
        v->add_space_prefix = ti.add_dummy_prefix;
    }
    if (!rc) rc = tok_config_read(dir, config_text, &tc);
    if (rc) { ex_vocab_free(v); tokenizer_free(t); return -1; }
    /* tokenizer_config.json added_tokens_decoder (the converter's sentencepiece path) */
    for (int i = 0; ti.file == TOK_FILE_SPM && i < tc.nadded; i++) {
        const tok_decl *d = &tc.added[i];
        if (d->id < 0 || d->id >= v->n) continue;
        set_tok(v, (int)d->id, d->content, strlen(d->content));
        v->type[d->id] = d->special ? TOK_CONTROL : TOK_USER_DEFINED;
        v->score[d->id] = -1000.0f;
    }
    fit_vocab(v, cfg->vocab);
    if (!strcmp(v->model, "llama")) {
        /* llama.cpp's sentencepiece-style tokenizer spells a character that is not a token as <0xXX>
         * byte tokens and aborts (std::out_of_range in llama_vocab::byte_to_token) when there are none;
         * Hugging Face and sentencepiece give <unk>. Found with llama-tokenize on tinystories656K. */
        int nbyte = 0, nchar = 0;
        for (int i = 0; i < v->n; i++) {
            if (v->type[i] == TOK_BYTE) nbyte++;
            if (v->type[i] == TOK_NORMAL && utf8_codepoints(v->tok[i]) == 1) nchar++;
        }
        if (!nbyte)
            fprintf(stderr, "cfsp-mpi: export: %s: no <0xXX> byte tokens: llama.cpp aborts on text with a character that is not "
                            "one of the %d single-character tokens (Hugging Face and sentencepiece give <unk>)\n", src, nchar);
    }
    special_tokens(t, &ti, &tc, v);
    tok_config_free(&tc);
    tokenizer_free(t);
    return 0;
}
