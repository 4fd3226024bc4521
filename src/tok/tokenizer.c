/* tokenizer.c — the public tokenizer API (tokenizer.h): finding and loading a checkpoint's
 * tokenizer file, the BOS id, encoding a text or a whole file. */
#include "tok_internal.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENIZER_BYTES ((size_t)1 << 31)
#define MAX_TEXT_BYTES ((size_t)1 << 36)

static tokenizer *tok_new(int kind, const char *fname)
{
    tokenizer *t = xcalloc(1, sizeof *t);
    t->kind = kind;
    t->bos_id = -1;
    snprintf(t->source, sizeof t->source, "%s", fname);
    return t;
}

int tokenizer_from_spm(const void *data, size_t len, const char *fname, tokenizer **out)
{
    *out = NULL;
    tokenizer *t = tok_new(1, fname);
    if (spm_parse(data, len, fname, &t->spm)) { free(t); return -1; }
    t->bos_id = t->spm.bos_id;
    t->vocab_size = t->spm.npieces;
    snprintf(t->desc, sizeof t->desc, "sentencepiece %s, %d pieces%s", t->spm.model_type == SPM_BPE ? "BPE" : "unigram",
             t->spm.npieces, t->spm.byte_fallback ? ", byte fallback" : "");
    *out = t;
    return 0;
}

int tokenizer_from_hf_json(const char *json, size_t len, const char *fname, tokenizer **out)
{
    *out = NULL;
    tokenizer *t = tok_new(2, fname);
    if (hf_parse(json, len, fname, &t->hf)) { free(t); return -1; }
    t->bos_id = t->hf.bos_id;
    t->vocab_size = t->hf.vocab_size;
    snprintf(t->desc, sizeof t->desc, "tokenizer.json %sBPE, %d tokens, %zu merges, %d added tokens%s%s",
             t->hf.bytelevel ? "byte-level " : "", t->hf.vocab_size, t->hf.merges.n, t->hf.nadded,
             t->hf.byte_fallback ? ", byte fallback" : "", t->hf.unk_id >= 0 ? ", unk" : "");
    *out = t;
    return 0;
}

void tokenizer_free(tokenizer *t)
{
    if (!t) return;
    if (t->kind == 1) spm_free(&t->spm);
    else hf_free(&t->hf);
    free(t);
}

int tokenizer_bos_id(const tokenizer *t) { return t->bos_id; }
int tokenizer_vocab_size(const tokenizer *t) { return t->vocab_size; }
const char *tokenizer_describe(const tokenizer *t) { return t->desc; }

static int32_t token_id_of(const tokenizer *t, const char *s)
{
    if (t->kind == 2) return hf_token_id(&t->hf, s);
    int32_t id = strmap_get(&t->spm.reserved, s, strlen(s));
    return id >= 0 ? id : strmap_get(&t->spm.pieces, s, strlen(s));
}

/* BOS when the tokenizer file does not say: tokenizer_config.json, then config.json */
static int bos_fallback(tokenizer *t, const char *dir)
{
    char path[4200];
    char *text = NULL;
    size_t len = 0;
    cJSON *j = NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (path_exists(path)) {
        if (read_whole_file(path, 64u << 20, &text, &len) || json_parse(text, len, path, &j)) { free(text); return -1; }
        free(text);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "bos_token");
        if (cJSON_IsObject(b)) b = cJSON_GetObjectItemCaseSensitive(b, "content");
        if (cJSON_IsString(b)) {
            int32_t id = token_id_of(t, b->valuestring);
            if (id < 0) { cJSON_Delete(j); return FAIL("%s: bos_token: '%.60s' is not a token of the tokenizer", path, b->valuestring); }
            t->bos_id = id;
        }
        cJSON_Delete(j);
        if (t->bos_id >= 0) return 0;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (path_exists(path)) {
        if (read_whole_file(path, 64u << 20, &text, &len) || json_parse(text, len, path, &j)) { free(text); return -1; }
        free(text);
        int64_t id = -1;
        int rc = json_get_int(j, "bos_token_id", path, 0, 0, 2147483647, &id);
        cJSON_Delete(j);
        if (rc) return -1;
        t->bos_id = (int)id;
    }
    return 0;
}

int tokenizer_load(const char *dir, tokenizer **out)
{
    char path[4200];
    char *data = NULL;
    size_t len = 0;
    int rc;
    *out = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (path_exists(path)) {
        if (read_whole_file(path, MAX_TOKENIZER_BYTES, &data, &len)) return -1;
        rc = tokenizer_from_hf_json(data, len, path, out);
    } else {
        snprintf(path, sizeof path, "%s/tokenizer.model", dir);
        if (!path_exists(path))
            return FAIL("%s: no tokenizer.json or tokenizer.model in the model directory", dir);
        if (read_whole_file(path, MAX_TOKENIZER_BYTES, &data, &len)) return -1;
        rc = tokenizer_from_spm(data, len, path, out);
    }
    free(data);
    if (rc) return -1;
    if ((*out)->bos_id < 0 && bos_fallback(*out, dir)) { tokenizer_free(*out); *out = NULL; return -1; }
    return 0;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos, const char *what, uint32_t **ids, int64_t *n)
{
    idvec v = { 0 };
    *ids = NULL;
    *n = 0;
    if (add_bos) {
        if (t->bos_id < 0) return FAIL("%s: the tokenizer defines no BOS token (use --bos 0)", t->source);
        idvec_push(&v, (uint32_t)t->bos_id);
    }
    int rc = t->kind == 1 ? spm_encode(&t->spm, text, len, what, &v) : hf_encode(&t->hf, text, len, what, &v);
    if (rc) { free(v.v); return -1; }
    if (!v.v) v.v = xmalloc(4);
    *ids = v.v;
    *n = (int64_t)v.n;
    return 0;
}

int tokenize_file(const char *model_dir, const char *path, int add_bos, uint32_t **ids, int64_t *n)
{
    tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    *ids = NULL;
    *n = 0;
    if (tokenizer_load(model_dir, &t)) return -1;
    if (read_whole_file(path, MAX_TEXT_BYTES, &text, &len)) { tokenizer_free(t); return -1; }
    int rc = tokenizer_encode(t, text, len, add_bos, path, ids, n);
    free(text);
    tokenizer_free(t);
    return rc;
}

int tokenize_file_checked(const char *model_dir, const char *path, int vocab, uint32_t **ids, int64_t *n)
{
    double t0 = now_seconds();
    tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    *ids = NULL;
    *n = 0;
    if (tokenizer_load(model_dir, &t)) return -1;
    if (read_whole_file(path, MAX_TEXT_BYTES, &text, &len)) { tokenizer_free(t); return -1; }
    int rc = tokenizer_encode(t, text, len, 1, path, ids, n);
    free(text);
    for (int64_t i = 0; rc == 0 && i < *n; i++)
        if ((*ids)[i] >= (uint32_t)vocab)
            rc = FAIL("%s: token %lld has id %u from %s, not below the model's vocab_size %d", path, (long long)i, (*ids)[i], t->source, vocab);
    if (rc) { free(*ids); *ids = NULL; *n = 0; }
    else fprintf(stderr, "cfsp-mpi: tokenized %s: %zu bytes -> %lld tokens (%s) in %.2f s\n", path, len, (long long)*n, t->desc, now_seconds() - t0);
    tokenizer_free(t);
    return rc;
}
