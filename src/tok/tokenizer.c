/* tokenizer.c — the public tokenizer API (tokenizer.h): finding and loading a checkpoint's
 * tokenizer file, the BOS id, encoding a text or a whole file; the view of what the file declares
 * (entries, merges, flags) and the reader of tokenizer_config.json / config.json's token ids.
 *
 * "Adds BOS" (tokenizer_adds_bos, the default of `cfsp-mpi tokenize` and of --calib-text /
 * --eval-text) is what the Hugging Face tokenizer does on encode(add_special_tokens=True): an
 * add_bos_token boolean in tokenizer_config.json decides (transformers' LLaMA tokenizers rebuild
 * their post-processor from it); without one, a tokenizer.json adds what its TemplateProcessing
 * puts first (LLaMA-2 / LLaMA-3 yes; Qwen2/Qwen3's ByteLevel post-processor no), a sentencepiece
 * model its BOS piece if it has one (LlamaTokenizer's add_bos_token defaults to true). */
#include "tok_internal.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <ctype.h>
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
    tokenizer *t = tok_new(TOK_FILE_SPM, fname);
    if (spm_parse(data, len, fname, &t->spm)) { free(t); return -1; }
    t->bos_id = t->spm.bos_id;
    t->adds_bos = t->bos_id >= 0;
    t->vocab_size = t->spm.npieces;
    snprintf(t->desc, sizeof t->desc, "sentencepiece %s, %d pieces%s", t->spm.model_type == SPM_BPE ? "BPE" : "unigram",
             t->spm.npieces, t->spm.byte_fallback ? ", byte fallback" : "");
    *out = t;
    return 0;
}

int tokenizer_from_hf_json(const char *json, size_t len, const char *fname, tokenizer **out)
{
    *out = NULL;
    tokenizer *t = tok_new(TOK_FILE_HF, fname);
    if (hf_parse(json, len, fname, &t->hf)) { free(t); return -1; }
    t->bos_id = t->hf.bos_id;            /* TemplateProcessing's first special token */
    t->adds_bos = t->bos_id >= 0;
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
    if (t->kind == TOK_FILE_SPM) spm_free(&t->spm);
    else hf_free(&t->hf);
    free(t);
}

int tokenizer_vocab_size(const tokenizer *t) { return t->vocab_size; }
int tokenizer_adds_bos(const tokenizer *t) { return t->adds_bos; }
const char *tokenizer_describe(const tokenizer *t) { return t->desc; }

static int32_t token_id_of(const tokenizer *t, const char *s)
{
    if (t->kind == TOK_FILE_HF) return hf_token_id(&t->hf, s);
    int32_t id = strmap_get(&t->spm.reserved, s, strlen(s));
    return id >= 0 ? id : strmap_get(&t->spm.pieces, s, strlen(s));
}

int tokenizer_read_file(const char *path, int file, tokenizer **out)
{
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    if (read_whole_file(path, MAX_TOKENIZER_BYTES, &data, &len)) return -1;
    int rc = file == TOK_FILE_HF ? tokenizer_from_hf_json(data, len, path, out) : tokenizer_from_spm(data, len, path, out);
    free(data);
    return rc;
}

/* what tokenizer_config.json / config.json add to the tokenizer file: the BOS when the file does
 * not say (tokenizer_config.json's bos_token, then config.json's bos_token_id unless bos_token is
 * null there), and add_bos_token */
static int apply_config(tokenizer *t, const char *dir)
{
    tok_config c;
    if (tok_config_read(dir, NULL, &c)) return -1;
    int rc = 0;
    if (t->bos_id < 0 && c.token[TOK_BOS]) {
        int32_t id = token_id_of(t, c.token[TOK_BOS]);
        if (id < 0) rc = FAIL("%s/tokenizer_config.json: bos_token: '%.60s' is not a token of the tokenizer", dir, c.token[TOK_BOS]);
        t->bos_id = id;
    } else if (t->bos_id < 0 && !c.token_null[TOK_BOS] && c.token_id[TOK_BOS] >= 0 && c.token_id[TOK_BOS] <= INT32_MAX) {
        t->bos_id = (int)c.token_id[TOK_BOS];
    }
    if (c.add_bos >= 0) t->adds_bos = c.add_bos;
    tok_config_free(&c);
    return rc;
}

int tokenizer_load(const char *dir, tokenizer **out)
{
    char path[4200];
    *out = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int file = TOK_FILE_HF;
    if (!path_exists(path)) {
        snprintf(path, sizeof path, "%s/tokenizer.model", dir);
        if (!path_exists(path))
            return FAIL("%s: no tokenizer.json or tokenizer.model in the model directory", dir);
        file = TOK_FILE_SPM;
    }
    if (tokenizer_read_file(path, file, out)) return -1;
    if (apply_config(*out, dir)) { tokenizer_free(*out); *out = NULL; return -1; }
    return 0;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos, const char *what, uint32_t **ids, int64_t *n)
{
    idvec v = { 0 };
    *ids = NULL;
    *n = 0;
    if (add_bos == TOK_BOS_AUTO) {
        add_bos = t->adds_bos;
        if (add_bos && t->bos_id < 0) return FAIL("%s: tokenizer_config.json says add_bos_token true, but the tokenizer defines no BOS token", t->source);
    }
    if (add_bos) {
        if (t->bos_id < 0) return FAIL("%s: the tokenizer defines no BOS token (use --bos 0)", t->source);
        idvec_push(&v, (uint32_t)t->bos_id);
    }
    int rc = t->kind == TOK_FILE_SPM ? spm_encode(&t->spm, text, len, what, &v) : hf_encode(&t->hf, text, len, what, &v);
    if (rc) { free(v.v); return -1; }
    if (!v.v) v.v = xmalloc(4);
    *ids = v.v;
    *n = (int64_t)v.n;
    return 0;
}

int tokenizer_check_text(const char *what, const char *text, size_t len)
{
    size_t bad = 0;
    if (!utf8_valid(text, len, &bad))
        return FAIL("%s: invalid UTF-8 at byte %zu (text files are read as UTF-8)", what, bad);
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
    int rc = tokenizer_check_text(path, text, len) ? -1 : tokenizer_encode(t, text, len, add_bos, path, ids, n);
    free(text);
    tokenizer_free(t);
    return rc;
}

int tokenize_file_checked(const char *model_dir, const char *path, int vocab, int add_bos, uint32_t **ids, int64_t *n)
{
    double t0 = now_seconds();
    tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    *ids = NULL;
    *n = 0;
    if (tokenizer_load(model_dir, &t)) return -1;
    if (read_whole_file(path, MAX_TEXT_BYTES, &text, &len)) { tokenizer_free(t); return -1; }
    int rc = tokenizer_check_text(path, text, len) ? -1 : tokenizer_encode(t, text, len, add_bos, path, ids, n);
    if (add_bos == TOK_BOS_AUTO) add_bos = t->adds_bos;
    free(text);
    for (int64_t i = 0; rc == 0 && i < *n; i++)
        if ((*ids)[i] >= (uint32_t)vocab)
            rc = FAIL("%s: token %lld has id %u from %s, not below the model's vocab_size %d", path, (long long)i, (*ids)[i], t->source, vocab);
    if (rc) { free(*ids); *ids = NULL; *n = 0; }
    else fprintf(stderr, "cfsp-mpi: tokenized %s: %zu bytes -> %lld tokens, %s (%s) in %.2f s\n", path, len, (long long)*n,
                 add_bos ? "BOS first" : "no BOS", t->desc, now_seconds() - t0);
    tokenizer_free(t);
    return rc;
}

/* ---- what the file declares ---------------------------------------------------------------- */
void tokenizer_info(const tokenizer *t, tok_info *x)
{
    memset(x, 0, sizeof *x);
    x->file = t->kind;
    if (t->kind == TOK_FILE_SPM) {
        const spm_model *m = &t->spm;
        x->nentries = m->npieces;
        x->unk_id = m->unk_id;
        x->add_dummy_prefix = m->add_dummy_prefix;
        x->byte_fallback = m->byte_fallback;
        return;
    }
    const hf_model *m = &t->hf;
    x->nentries = (int)m->tokens.n + m->nadded;
    x->nmerges = m->nmerge_list;
    x->unk_id = m->unk_id;
    x->add_dummy_prefix = -1;
    x->byte_fallback = m->byte_fallback;
    int u2581 = 0;                                    /* a normalizer string that is U+2581 */
    for (int i = 0; i < m->nnorm; i++)
        for (int k = 0; k < 2; k++) {
            const char *s = k ? m->norm[i].b : m->norm[i].a;
            if (s && !strcmp(s, "\xe2\x96\x81")) u2581 = 1;
        }
    int metaspace_pre = 0;
    for (int i = 0; i < m->npre; i++) metaspace_pre |= m->pre[i].type == HP_METASPACE;
    x->metaspace = m->byte_fallback || u2581 || metaspace_pre || (m->decoder & (HD_METASPACE | HD_BYTEFALLBACK));
    x->byte_level = m->bytelevel || (m->decoder & HD_BYTELEVEL);
    x->gpt2_regex = m->pre_gpt2;
    x->template_first = m->template_first;
}

static int is_byte_token(const char *s, uint32_t n)
{
    return n == 6 && !memcmp(s, "<0x", 3) && isxdigit((unsigned char)s[3]) && isxdigit((unsigned char)s[4]) && s[5] == '>';
}

void tokenizer_entry(const tokenizer *t, int i, tok_entry *e)
{
    memset(e, 0, sizeof *e);
    if (t->kind == TOK_FILE_SPM) {
        const spm_model *m = &t->spm;
        e->text = m->piece[i]; e->len = m->plen[i]; e->id = i; e->type = m->type[i]; e->score = m->score[i];
        return;
    }
    const hf_model *m = &t->hf;
    if ((size_t)i < m->tokens.n) {
        const strmap *v = &m->tokens;
        e->text = v->arena + v->koff[i]; e->len = v->klen[i]; e->id = v->val[i];
        e->type = is_byte_token(e->text, e->len) ? TOK_BYTE : TOK_NORMAL;
        return;
    }
    const hf_added *a = &m->added[(size_t)i - m->tokens.n];
    e->text = a->s; e->len = (uint32_t)a->len; e->id = (int)a->id;
    e->type = a->special ? TOK_CONTROL : TOK_USER_DEFINED;
}

void tokenizer_merge(const tokenizer *t, int r, int ids[3])
{
    const uint32_t *ml = t->hf.merge_list + 3 * (size_t)r;
    for (int k = 0; k < 3; k++) ids[k] = (int)ml[k];
}

int tokenizer_added_id(const tokenizer *t, const char *content)
{
    return t->kind == TOK_FILE_HF ? hf_added_id(&t->hf, content) : -1;
}

/* ---- tokenizer_config.json, config.json ---------------------------------------------------- */
static int read_json(const char *path, const char *text, cJSON **out)
{
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    if (!text) {
        if (!path_exists(path)) return 0;
        if (read_whole_file(path, 64u << 20, &buf, &len)) return -1;
        text = buf;
    } else {
        len = strlen(text);
    }
    int rc = json_parse(text, len, path, out);
    free(buf);
    return rc;
}

int tok_config_read(const char *dir, const char *config_json, tok_config *c)
{
    static const char *kind[4] = { "bos", "eos", "unk", "pad" };
    memset(c, 0, sizeof *c);
    c->add_bos = c->add_eos = -1;
    for (int k = 0; k < 4; k++) c->token_id[k] = -1;
    char path[4200];
    cJSON *j = NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (read_json(path, NULL, &j)) return -1;
    for (int k = 0; k < 4 && j; k++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token", kind[k]);
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
        c->token_null[k] = cJSON_IsNull(x);
        if (cJSON_IsObject(x)) x = cJSON_GetObjectItemCaseSensitive(x, "content");
        if (cJSON_IsString(x)) c->token[k] = xstrdup(x->valuestring);
    }
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(j, "add_bos_token"), *ae = cJSON_GetObjectItemCaseSensitive(j, "add_eos_token");
    if (cJSON_IsBool(ab)) c->add_bos = cJSON_IsTrue(ab);
    if (cJSON_IsBool(ae)) c->add_eos = cJSON_IsTrue(ae);
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(j, "added_tokens_decoder"), *e;
    if (cJSON_IsObject(atd)) {
        c->added = xcalloc((size_t)cJSON_GetArraySize(atd) + 1, sizeof *c->added);
        cJSON_ArrayForEach(e, atd) {
            char *end = NULL;
            long id = strtol(e->string, &end, 10);
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (*end || !cJSON_IsString(content)) continue;
            tok_decl *d = &c->added[c->nadded++];
            d->id = id;
            d->content = xstrdup(content->valuestring);
            d->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        }
    }
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (read_json(path, config_json, &j)) { tok_config_free(c); return -1; }
    for (int k = 0; k < 4 && j; k++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", kind[k]);
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
        if (cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble < 9.2e18) c->token_id[k] = (int64_t)x->valuedouble;
    }
    cJSON_Delete(j);
    return 0;
}

void tok_config_free(tok_config *c)
{
    for (int k = 0; k < 4; k++) free(c->token[k]);
    for (int i = 0; i < c->nadded; i++) free(c->added[i].content);
    free(c->added);
    memset(c, 0, sizeof *c);
}
