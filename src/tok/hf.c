/* hf.c — Hugging Face tokenizer.json: reading the BPE model, normalizers, pre-tokenizers and added
 * tokens (cJSON, then our own hash tables; also what the vocabulary view of tokenizer.h reports:
 * the tokens as the file spells them, the merges in rank order, the decoder's steps, the template's
 * first special token), and encoding text through the same pipeline as the
 * tokenizers library: added tokens split off the raw text (leftmost-longest; single_word, lstrip,
 * rstrip), each remaining segment normalized, normalized added tokens split off, pre-tokenized into
 * words, each word BPE-encoded (tokenizers' BPE::merge_word + Word::merge_all). */
#include "tok_internal.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * GPT-2 byte <-> unicode alphabet (bytes_to_unicode) */
static void byte_alphabet(uint32_t b2u[256], int16_t u2b[512])
{
    int n = 0;
    for (int i = 0; i < 512; i++) u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) b2u[b] = (uint32_t)b;
        else b2u[b] = 256u + (uint32_t)n++;
        u2b[b2u[b]] = (int16_t)b;
    }
}

/* byte-level string -> raw bytes (out has room for strlen(s)); -1 if a char is outside the alphabet */
static int unbytelevel(const char *s, size_t n, const int16_t u2b[512], char *out, size_t *outn)
{
    size_t i = 0, k = 0;
    while (i < n) {
        int32_t cp;
        int l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cp < 0 || cp >= 512 || u2b[cp] < 0) return -1;
        out[k++] = (char)u2b[cp];
        i += (size_t)l;
    }
    *outn = k;
    return 0;
}

#define MAX_TOKEN_ID (1 << 28)

static const char *jtype(const cJSON *j)
{
    if (!j) return "missing";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsArray(j)) return "an array";
    return "an object";
}

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL; }

static int jbool(const cJSON *o, const char *k, int def, const char *fname, const char *path, int *out)
{
    const cJSON *v = jget(o, k);
    if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) return FAIL("%s: %s.%s: expected a boolean, got %s", fname, path, k, jtype(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

static int jstr(const cJSON *o, const char *k, const char *fname, const char *path, const char **out)
{
    const cJSON *v = jget(o, k);
    if (!cJSON_IsString(v)) return FAIL("%s: %s.%s: expected a string, got %s", fname, path, k, jtype(v));
    *out = v->valuestring;
    return 0;
}

static char *dupn(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* ---------------------------------------------------------------------------------------------
 * the normalizer and pre-tokenizer chains: null (none), one step, or {"type": "Sequence", LIST:
 * [...]} of chains; `step` reads one step of another type */
typedef int (*step_fn)(const cJSON *j, const char *type, const char *fname, const char *path, hf_model *m);

static int parse_chain(const cJSON *j, const char *list, const char *what, step_fn step, const char *fname,
                       const char *path, hf_model *m, int depth)
{
    if (!j || cJSON_IsNull(j)) return 0;
    if (depth > 8) return FAIL("%s: %s: %s nested too deeply", fname, path, what);
    if (!cJSON_IsObject(j)) return FAIL("%s: %s: expected an object or null, got %s", fname, path, jtype(j));
    const char *type = NULL;
    if (jstr(j, "type", fname, path, &type)) return -1;
    if (strcmp(type, "Sequence")) return step(j, type, fname, path, m);
    const cJSON *arr = jget(j, list);
    if (!cJSON_IsArray(arr)) return FAIL("%s: %s.%s: expected an array, got %s", fname, path, list, jtype(arr));
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        char p[256];
        snprintf(p, sizeof p, "%s.%s[%d]", path, list, i++);
        if (parse_chain(e, list, what, step, fname, p, m, depth + 1)) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * normalizers */
static int parse_normalizer(const cJSON *j, const char *type, const char *fname, const char *path, hf_model *m)
{
    hf_norm nm;
    memset(&nm, 0, sizeof nm);
    if (!strcmp(type, "Prepend")) {
        const char *s;
        if (jstr(j, "prepend", fname, path, &s)) return -1;
        nm.type = HN_PREPEND;
        nm.alen = strlen(s);
        nm.a = dupn(s, nm.alen);
    } else if (!strcmp(type, "Replace")) {
        const cJSON *pat = jget(j, "pattern");
        const cJSON *ps = jget(pat, "String");
        if (!cJSON_IsString(ps)) {
            if (jget(pat, "Regex")) return FAIL("%s: %s.pattern: Regex patterns are not supported in a Replace normalizer (only String)", fname, path);
            return FAIL("%s: %s.pattern: expected {\"String\": ...}", fname, path);
        }
        if (!ps->valuestring[0]) return FAIL("%s: %s.pattern.String: empty", fname, path);
        const char *c;
        if (jstr(j, "content", fname, path, &c)) return -1;
        nm.type = HN_REPLACE;
        nm.alen = strlen(ps->valuestring);
        nm.a = dupn(ps->valuestring, nm.alen);
        nm.blen = strlen(c);
        nm.b = dupn(c, nm.blen);
    } else if (!strcmp(type, "NFC") || !strcmp(type, "NFD")) {
        nm.type = type[2] == 'C' ? HN_NFC : HN_NFD;       /* tokenizers' Unicode 9.0.0 (tok_util.c) */
    } else {
        return FAIL("%s: %s.type: normalizer '%s' is not supported (supported: Sequence, Prepend, Replace, NFC, NFD)", fname, path, type);
    }
    m->norm = xrealloc(m->norm, sizeof *m->norm * (size_t)(m->nnorm + 1));
    m->norm[m->nnorm++] = nm;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * pre-tokenizers */
static const char *GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_behavior(const cJSON *j, const char *fname, const char *path, int *out)
{
    const char *b;
    if (jstr(j, "behavior", fname, path, &b)) return -1;
    if (!strcmp(b, "Removed")) *out = SB_REMOVED;
    else if (!strcmp(b, "Isolated")) *out = SB_ISOLATED;
    else if (!strcmp(b, "MergedWithPrevious")) *out = SB_MERGED_PREV;
    else if (!strcmp(b, "MergedWithNext")) *out = SB_MERGED_NEXT;
    else if (!strcmp(b, "Contiguous")) *out = SB_CONTIGUOUS;
    else return FAIL("%s: %s.behavior: unknown '%s'", fname, path, b);
    return 0;
}

static int parse_pretok(const cJSON *j, const char *type, const char *fname, const char *path, hf_model *m)
{
    hf_pretok pt;
    memset(&pt, 0, sizeof pt);
    char field[300];
    if (!strcmp(type, "ByteLevel")) {
        pt.type = HP_BYTELEVEL;
        if (jbool(j, "add_prefix_space", 1, fname, path, &pt.add_prefix_space)) return -1;
        if (jbool(j, "use_regex", 1, fname, path, &pt.use_regex)) return -1;
        snprintf(field, sizeof field, "%s (ByteLevel regex)", path);
        if (pt.use_regex && rx_compile(GPT2_PATTERN, fname, field, pt.alt, &pt.nalt)) return -1;
        m->bytelevel = 1;
    } else if (!strcmp(type, "Split")) {
        pt.type = HP_SPLIT;
        if (parse_behavior(j, fname, path, &pt.behavior)) return -1;     /* before anything is allocated */
        if (jbool(j, "invert", 0, fname, path, &pt.invert)) return -1;
        const cJSON *pat = jget(j, "pattern");
        const cJSON *rs = jget(pat, "Regex"), *ss = jget(pat, "String");
        snprintf(field, sizeof field, "%s.pattern.Regex", path);
        if (cJSON_IsString(rs)) {
            if (rx_compile(rs->valuestring, fname, field, pt.alt, &pt.nalt)) return -1;
        } else if (cJSON_IsString(ss)) {
            if (!ss->valuestring[0]) return FAIL("%s: %s.pattern.String: empty", fname, path);
            pt.slen = strlen(ss->valuestring);
            pt.str = dupn(ss->valuestring, pt.slen);
        } else {
            return FAIL("%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", fname, path);
        }
    } else if (!strcmp(type, "Metaspace")) {
        pt.type = HP_METASPACE;
        const char *rep = NULL;
        const cJSON *r = jget(j, "replacement");
        if (!r) r = jget(j, "str_rep");
        if (!cJSON_IsString(r) || !r->valuestring[0]) return FAIL("%s: %s.replacement: expected a one-character string", fname, path);
        rep = r->valuestring;
        int32_t cp;
        int l = utf8_decode((const unsigned char *)rep, strlen(rep), &cp);
        if (cp < 0 || rep[l]) return FAIL("%s: %s.replacement: expected a one-character string", fname, path);
        const cJSON *ps = jget(j, "prepend_scheme");
        if (cJSON_IsString(ps)) {
            if (!strcmp(ps->valuestring, "always")) pt.prepend = 2;
            else if (!strcmp(ps->valuestring, "first")) pt.prepend = 1;
            else if (!strcmp(ps->valuestring, "never")) pt.prepend = 0;
            else return FAIL("%s: %s.prepend_scheme: unknown '%s'", fname, path, ps->valuestring);
        } else {
            int aps;
            if (jbool(j, "add_prefix_space", 1, fname, path, &aps)) return -1;
            pt.prepend = aps ? 2 : 0;
        }
        if (jbool(j, "split", 1, fname, path, &pt.split)) return -1;
        pt.slen = strlen(rep);                 /* the last step: no failure after an allocation */
        pt.str = dupn(rep, pt.slen);
    } else {
        return FAIL("%s: %s.type: pre-tokenizer '%s' is not supported (supported: Sequence, ByteLevel, Split, Metaspace)", fname, path, type);
    }
    m->pre = xrealloc(m->pre, sizeof *m->pre * (size_t)(m->npre + 1));
    m->pre[m->npre++] = pt;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * the model */
static int vocab_id_of(const cJSON *v, const char *fname, const char *key, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= (double)MAX_TOKEN_ID || v->valuedouble != (double)(int64_t)v->valuedouble)
        return FAIL("%s: model.vocab['%.60s']: expected an integer id in [0, %d), got %s", fname, key, MAX_TOKEN_ID,
                    cJSON_IsNumber(v) ? "another number" : jtype(v));
    *id = (int32_t)v->valuedouble;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* every id of model.vocab names one token (an id is what a token decodes to) */
static int unique_ids(const strmap *tokens, const char *fname)
{
    uint64_t *k = xmalloc(sizeof *k * (tokens->n ? tokens->n : 1));      /* id << 32 | entry */
    for (size_t e = 0; e < tokens->n; e++) k[e] = (uint64_t)(uint32_t)tokens->val[e] << 32 | e;
    qsort(k, tokens->n, sizeof *k, cmp_u64);
    int rc = 0;
    for (size_t i = 1; i < tokens->n && !rc; i++)
        if (k[i] >> 32 == k[i - 1] >> 32) {
            size_t a = k[i - 1] & 0xFFFFFFFFu, b = k[i] & 0xFFFFFFFFu;
            rc = FAIL("%s: model.vocab['%.60s']: id %u is also the id of '%.60s'", fname, tokens->arena + tokens->koff[b],
                      (unsigned)(k[i] >> 32), tokens->arena + tokens->koff[a]);
        }
    free(k);
    return rc;
}

static int parse_model(const cJSON *model, const char *fname, hf_model *m)
{
    strmap *orig = &m->tokens;
    if (!cJSON_IsObject(model)) return FAIL("%s: model: expected an object, got %s", fname, jtype(model));
    const cJSON *t = jget(model, "type");
    if (t && !cJSON_IsString(t)) return FAIL("%s: model.type: expected a string, got %s", fname, jtype(t));
    if (t && strcmp(t->valuestring, "BPE"))
        return FAIL("%s: model.type: '%s' is not supported (only BPE)", fname, t->valuestring);
    const cJSON *vocab = jget(model, "vocab"), *merges = jget(model, "merges");
    if (!cJSON_IsObject(vocab)) return FAIL("%s: model.vocab: expected an object of token -> id, got %s", fname, jtype(vocab));
    if (!cJSON_IsArray(merges)) return FAIL("%s: model.merges: expected an array, got %s", fname, jtype(merges));
    const cJSON *d = jget(model, "dropout");
    if (d && !cJSON_IsNull(d) && !(cJSON_IsNumber(d) && d->valuedouble == 0))
        return FAIL("%s: model.dropout: BPE dropout is not supported (expected null)", fname);
    const char *keys[] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (int k = 0; k < 2; k++) {
        const cJSON *v = jget(model, keys[k]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return FAIL("%s: model.%s: not supported (expected null)", fname, keys[k]);
    }
    if (jbool(model, "fuse_unk", 0, fname, "model", &m->fuse_unk)) return -1;
    if (jbool(model, "byte_fallback", 0, fname, "model", &m->byte_fallback)) return -1;
    if (jbool(model, "ignore_merges", 0, fname, "model", &m->ignore_merges)) return -1;

    int nv = cJSON_GetArraySize(vocab);
    if (nv < 1) return FAIL("%s: model.vocab: empty", fname);
    strmap_init(orig, (size_t)nv);
    strmap_init(&m->vocab, (size_t)nv);
    uint32_t b2u[256];
    int16_t u2b[512];
    byte_alphabet(b2u, u2b);
    char *tmp = NULL;
    size_t tmpcap = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = 0;
        if (vocab_id_of(e, fname, e->string, &id)) { free(tmp); return -1; }
        size_t kl = strlen(e->string);
        if (!kl) { free(tmp); return FAIL("%s: model.vocab: empty token (id %d)", fname, (int)id); }
        if (strmap_put(orig, e->string, kl, id) >= 0) { free(tmp); return FAIL("%s: model.vocab: token '%.60s' listed twice", fname, e->string); }
        if (id + 1 > m->vocab_size) m->vocab_size = id + 1;
        if (m->bytelevel) {
            if (kl > tmpcap) { tmpcap = kl * 2; tmp = xrealloc(tmp, tmpcap); }
            size_t rl;
            if (unbytelevel(e->string, kl, u2b, tmp, &rl) == 0) strmap_put(&m->vocab, tmp, rl, id);
        } else {
            strmap_put(&m->vocab, e->string, kl, id);
        }
        bytepairs_add(&m->pairs, e->string, kl);   /* non-bytelevel: the strings words are made of */
    }
    if (m->bytelevel) {   /* the pair table in raw-byte space */
        memset(&m->pairs, 0, sizeof m->pairs);
        for (size_t i = 0; i < m->vocab.n; i++) bytepairs_add(&m->pairs, m->vocab.arena + m->vocab.koff[i], m->vocab.klen[i]);
    }
    free(tmp);
    if (unique_ids(orig, fname)) return -1;

    const cJSON *unk = jget(model, "unk_token");
    m->unk_id = -1;
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) return FAIL("%s: model.unk_token: expected a string or null, got %s", fname, jtype(unk));
        m->unk_id = strmap_get(orig, unk->valuestring, strlen(unk->valuestring));
        if (m->unk_id < 0) return FAIL("%s: model.unk_token: '%.60s' is not in model.vocab", fname, unk->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        m->byte_id[b] = strmap_get(&m->vocab, code, 6);
        char one = (char)b;
        m->ascii_id[b] = (m->bytelevel || b < 0x80) ? strmap_get(&m->vocab, &one, 1) : -1;
    }

    int nm = cJSON_GetArraySize(merges);
    pairmap_init(&m->merges, (size_t)nm);
    m->merge_list = xmalloc(sizeof(uint32_t) * 3 * (size_t)(nm ? nm : 1));
    int rank = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ') || sp == s || !sp[1])
                return FAIL("%s: model.merges[%d]: '%.60s': expected two tokens separated by one space", fname, rank, s);
            a = s; al = (size_t)(sp - s); b = sp + 1; bl = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring; al = strlen(a);
            b = cJSON_GetArrayItem(e, 1)->valuestring; bl = strlen(b);
        } else {
            return FAIL("%s: model.merges[%d]: expected \"A B\" or [\"A\", \"B\"], got %s", fname, rank, jtype(e));
        }
        int32_t ia = strmap_get(orig, a, al), ib = strmap_get(orig, b, bl);
        if (ia < 0) return FAIL("%s: model.merges[%d]: token '%.*s' is not in model.vocab", fname, rank, (int)(al > 60 ? 60 : al), a);
        if (ib < 0) return FAIL("%s: model.merges[%d]: token '%.*s' is not in model.vocab", fname, rank, (int)(bl > 60 ? 60 : bl), b);
        char *ab = xmalloc(al + bl + 1);
        memcpy(ab, a, al);
        memcpy(ab + al, b, bl);
        int32_t iab = strmap_get(orig, ab, al + bl);
        if (iab < 0) {
            FAIL("%s: model.merges[%d]: the merged token '%.*s' is not in model.vocab", fname, rank, (int)(al + bl > 60 ? 60 : al + bl), ab);
            free(ab);
            return -1;
        }
        free(ab);
        pairmap_put(&m->merges, (uint32_t)ia, (uint32_t)ib, (uint32_t)rank, (uint32_t)iab);  /* a repeated pair keeps its first rank */
        uint32_t *ml = m->merge_list + 3 * (size_t)rank;
        ml[0] = (uint32_t)ia; ml[1] = (uint32_t)ib; ml[2] = (uint32_t)iab;
        m->nmerge_list = ++rank;
    }
    return 0;
}

static int parse_added(const cJSON *arr, const char *fname, hf_model *m)
{
    const strmap *orig = &m->tokens;
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return FAIL("%s: added_tokens: expected an array, got %s", fname, jtype(arr));
    int n = cJSON_GetArraySize(arr), i = 0;
    m->added = xcalloc((size_t)(n ? n : 1), sizeof *m->added);
    trie_init(&m->added_raw);
    trie_init(&m->added_norm);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%d]", i);
        if (!cJSON_IsObject(e)) return FAIL("%s: %s: expected an object, got %s", fname, path, jtype(e));
        const char *content = NULL;
        if (jstr(e, "content", fname, path, &content)) return -1;
        if (!content[0]) return FAIL("%s: %s.content: empty", fname, path);
        const cJSON *idj = jget(e, "id");
        if (!cJSON_IsNumber(idj) || idj->valuedouble < 0 || idj->valuedouble >= (double)MAX_TOKEN_ID || idj->valuedouble != (double)(int64_t)idj->valuedouble)
            return FAIL("%s: %s.id: expected an integer in [0, %d), got %s", fname, path, MAX_TOKEN_ID, cJSON_IsNumber(idj) ? "another number" : jtype(idj));
        int special = 0, sw = 0, ls = 0, rs = 0, norm = 0;
        if (jbool(e, "special", 0, fname, path, &special) || jbool(e, "single_word", 0, fname, path, &sw) ||
            jbool(e, "lstrip", 0, fname, path, &ls) || jbool(e, "rstrip", 0, fname, path, &rs) ||
            jbool(e, "normalized", !special, fname, path, &norm))
            return -1;
        hf_added *a = &m->added[m->nadded];
        a->len = strlen(content);
        a->s = dupn(content, a->len);
        /* tokenizers gives an added token the model's id when the model knows the content */
        int32_t vid = strmap_get(orig, content, a->len);
        a->id = vid >= 0 ? (uint32_t)vid : (uint32_t)idj->valuedouble;
        a->single_word = (uint8_t)sw; a->lstrip = (uint8_t)ls; a->rstrip = (uint8_t)rs; a->normalized = (uint8_t)norm;
        a->special = (uint8_t)special;
        if ((int)a->id + 1 > m->vocab_size) m->vocab_size = (int)a->id + 1;
        trie_insert(norm ? &m->added_norm : &m->added_raw, a->s, a->len, m->nadded);
        m->nadded++;
        i++;
    }
    return 0;
}

int hf_added_id(const hf_model *m, const char *s)
{
    for (int i = 0; i < m->nadded; i++) if (!strcmp(m->added[i].s, s)) return (int)m->added[i].id;
    return -1;
}

/* added tokens, then model.vocab as the file spells it */
static int32_t lookup_token(const hf_model *m, const char *s)
{
    int id = hf_added_id(m, s);
    return id >= 0 ? id : strmap_get(&m->tokens, s, strlen(s));
}

/* BOS: the special token that TemplateProcessing puts before sequence A */
static int find_bos(const cJSON *pp, const hf_model *m)
{
    if (!cJSON_IsObject(pp)) return -1;
    const cJSON *t = jget(pp, "type");
    if (cJSON_IsString(t) && !strcmp(t->valuestring, "Sequence")) {
        const cJSON *e, *arr = jget(pp, "processors");
        cJSON_ArrayForEach(e, arr) {
            int b = find_bos(e, m);
            if (b >= 0) return b;
        }
        return -1;
    }
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "TemplateProcessing")) return -1;
    const cJSON *single = jget(pp, "single");
    const cJSON *first = cJSON_IsArray(single) ? cJSON_GetArrayItem(single, 0) : NULL;
    const cJSON *st = jget(first, "SpecialToken");
    const cJSON *name = jget(st, "id");
    if (!cJSON_IsString(name)) return -1;
    const cJSON *sp = jget(jget(jget(pp, "special_tokens"), name->valuestring), "ids");
    const cJSON *id0 = cJSON_IsArray(sp) ? cJSON_GetArrayItem(sp, 0) : NULL;
    if (cJSON_IsNumber(id0) && id0->valuedouble >= 0 && id0->valuedouble < (double)MAX_TOKEN_ID) return (int)id0->valuedouble;
    return lookup_token(m, name->valuestring);
}

/* the HD_* steps a decoder has (a step or a Sequence of "decoders"); decoders are not read otherwise */
static int decoder_steps(const cJSON *d)
{
    const cJSON *t = jget(d, "type"), *e, *arr = jget(d, "decoders");
    int k = 0;
    if (cJSON_IsString(t)) {
        if (!strcmp(t->valuestring, "Metaspace")) k |= HD_METASPACE;
        else if (!strcmp(t->valuestring, "ByteFallback")) k |= HD_BYTEFALLBACK;
        else if (!strcmp(t->valuestring, "ByteLevel")) k |= HD_BYTELEVEL;
    }
    if (cJSON_IsArray(arr)) cJSON_ArrayForEach(e, arr) k |= decoder_steps(e);
    return k;
}

/* a top-level TemplateProcessing's `single` template of two or more items: its first special token */
static char *template_first(const cJSON *pp)
{
    const cJSON *t = jget(pp, "type"), *single = jget(pp, "single");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "TemplateProcessing") || !cJSON_IsArray(single) || cJSON_GetArraySize(single) < 2)
        return NULL;
    const cJSON *id = jget(jget(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
    return cJSON_IsString(id) ? dupn(id->valuestring, strlen(id->valuestring)) : NULL;
}

int hf_parse(const char *json, size_t len, const char *fname, hf_model *m)
{
    memset(m, 0, sizeof *m);
    m->unk_id = -1;
    m->bos_id = -1;
    cJSON *root = NULL;
    if (json_parse(json, len, fname, &root)) return -1;
    int rc = -1;
    if (!cJSON_IsObject(root)) { FAIL("%s: expected a JSON object (a Hugging Face tokenizer.json)", fname); goto out; }
    if (!jget(root, "model")) { FAIL("%s: model: missing (not a Hugging Face tokenizer.json?)", fname); goto out; }
    if (parse_chain(jget(root, "normalizer"), "normalizers", "normalizers", parse_normalizer, fname, "normalizer", m, 0)) goto out;
    const cJSON *pre = jget(root, "pre_tokenizer");
    if (parse_chain(pre, "pretokenizers", "pre-tokenizers", parse_pretok, fname, "pre_tokenizer", m, 0)) goto out;
    if (parse_model(jget(root, "model"), fname, m)) goto out;
    if (parse_added(jget(root, "added_tokens"), fname, m)) goto out;
    if (!m->added) { trie_init(&m->added_raw); trie_init(&m->added_norm); }
    const cJSON *pp = jget(root, "post_processor");
    m->bos_id = find_bos(pp, m);
    m->decoder = decoder_steps(jget(root, "decoder"));
    const cJSON *pt = jget(pre, "type");
    m->pre_gpt2 = cJSON_IsString(pt) && !strcmp(pt->valuestring, "ByteLevel") && m->pre[0].use_regex;
    m->template_first = template_first(pp);
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc) hf_free(m);
    return rc;
}

int hf_token_id(const hf_model *m, const char *s)
{
    int id = hf_added_id(m, s);
    return id >= 0 ? id : strmap_get(&m->vocab, s, strlen(s));
}

void hf_free(hf_model *m)
{
    for (int i = 0; i < m->nnorm; i++) { free(m->norm[i].a); free(m->norm[i].b); }
    free(m->norm);
    for (int i = 0; i < m->npre; i++) free(m->pre[i].str);
    free(m->pre);
    for (int i = 0; i < m->nadded; i++) free(m->added[i].s);
    free(m->added);
    if (m->added_raw.key) trie_free(&m->added_raw);
    if (m->added_norm.key) trie_free(&m->added_norm);
    strmap_free(&m->tokens);
    strmap_free(&m->vocab);
    if (m->merges.slot) pairmap_free(&m->merges);
    free(m->merge_list);
    free(m->template_first);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------------------------------------
 * encoding */
typedef struct { size_t off, len; int32_t id; } seg;      /* id >= 0: an added token */
typedef struct { seg *v; size_t n, cap; } segvec;

static void seg_push(segvec *s, size_t off, size_t len, int32_t id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n].off = off;
    s->v[s->n].len = len;
    s->v[s->n].id = id;
    s->n++;
}

static int is_word_char(int32_t c) { return c == '_' || uni_is_letter(c) || uni_is_number(c); }

static int32_t last_cp(const char *s, size_t n)
{
    if (!n) return -1;
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    int32_t cp;
    utf8_decode((const unsigned char *)s + i, n - i, &cp);
    return cp;
}

/* tokenizers' AddedVocabulary::find_matches: leftmost-longest matches, then the token options */
static void find_added(const hf_model *m, const trie *t, const char *s, size_t n, segvec *out)
{
    out->n = 0;
    size_t start_offset = 0, i = 0;
    if (t->nnode <= 1) { if (n) seg_push(out, 0, n, -1); return; }
    uint64_t first[4] = { 0, 0, 0, 0 };     /* bytes that start an added token of this trie */
    for (int k = 0; k < m->nadded; k++) {
        unsigned char c0 = (unsigned char)m->added[k].s[0];
        if ((t == &m->added_norm) == (m->added[k].normalized != 0)) first[c0 >> 6] |= 1ULL << (c0 & 63);
    }
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (!(first[c >> 6] >> (c & 63) & 1)) { i++; continue; }
        int32_t v = -1;
        size_t l = trie_longest(t, s + i, n - i, &v);
        if (!l) { i++; continue; }
        size_t start = i, stop = i + l;
        i = stop;
        const hf_added *a = &m->added[v];
        if (a->single_word) {
            int32_t before = last_cp(s, start), after = -1;
            if (stop < n) utf8_decode((const unsigned char *)s + stop, n - stop, &after);
            int start_space = start == 0 || !is_word_char(before);
            int stop_space = stop == n || !is_word_char(after);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t p = ns - 1;
                while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
                int32_t cp;
                utf8_decode((const unsigned char *)s + p, n - p, &cp);
                if (!uni_is_space(cp)) break;
                ns = p;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int32_t cp;
                int cl = utf8_decode((const unsigned char *)s + stop, n - stop, &cp);
                if (!uni_is_space(cp)) break;
                stop += (size_t)cl;
            }
            i = stop;
        }
        if (start < start_offset) continue;
        if (start_offset < start) seg_push(out, start_offset, start - start_offset, -1);
        seg_push(out, start, stop - start, (int32_t)a->id);
        start_offset = stop;
    }
    if (start_offset < n) seg_push(out, start_offset, n - start_offset, -1);
}

static void normalize(const hf_model *m, const char *s, size_t n, bytevec *out, bytevec *tmp)
{
    out->n = 0;
    bytevec_append(out, s, n);
    for (int k = 0; k < m->nnorm; k++) {
        const hf_norm *nm = &m->norm[k];
        if (nm->type == HN_PREPEND) {
            if (!out->n) continue;
            tmp->n = 0;
            bytevec_append(tmp, nm->a, nm->alen);
            bytevec_append(tmp, out->v, out->n);
        } else if (nm->type == HN_NFC || nm->type == HN_NFD) {
            uni_normalize(out->v, out->n, nm->type == HN_NFC, tmp);   /* the text was validated */
        } else {
            tmp->n = 0;
            size_t i = 0;
            while (i < out->n) {
                const char *hit = out->n - i >= nm->alen ? memmem(out->v + i, out->n - i, nm->a, nm->alen) : NULL;
                if (!hit) { bytevec_append(tmp, out->v + i, out->n - i); break; }
                bytevec_append(tmp, out->v + i, (size_t)(hit - (out->v + i)));
                bytevec_append(tmp, nm->b, nm->blen);
                i = (size_t)(hit - out->v) + nm->alen;
            }
        }
        bytevec t = *out; *out = *tmp; *tmp = t;
    }
}

/* words of the pre-tokenizer chain: slices of one buffer */
typedef struct { size_t off, len; int first; } word;
typedef struct { word *v; size_t n, cap; } wordvec;

static void word_push(wordvec *w, size_t off, size_t len, int first)
{
    if (!len) return;                       /* tokenizers drops empty splits */
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 256;
        w->v = xrealloc(w->v, w->cap * sizeof *w->v);
    }
    w->v[w->n].off = off;
    w->v[w->n].len = len;
    w->v[w->n].first = first;
    w->n++;
}

typedef struct { size_t a, b; int match; } span;
typedef struct { span *v; size_t n, cap; } spanvec;

static void span_push(spanvec *s, size_t a, size_t b, int match)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n].a = a;
    s->v[s->n].b = b;
    s->v[s->n].match = match;
    s->n++;
}

/* tokenizers' NormalizedString::split: matches (covering the word) -> pieces by behavior */
static void apply_behavior(const spanvec *sp, int behavior, size_t base, int first, wordvec *out, const char *buf, bytevec *ob)
{
    /* the kept pieces are copied into ob (the next step's buffer) */
    span *v = sp->v;
    size_t n = sp->n;
    /* build (a, b, remove) list */
    size_t m = 0;
    span *r = xmalloc((n ? n : 1) * sizeof *r);
    if (behavior == SB_ISOLATED) {
        for (size_t i = 0; i < n; i++) { r[m] = v[i]; r[m].match = 0; m++; }
    } else if (behavior == SB_REMOVED) {
        for (size_t i = 0; i < n; i++) r[m++] = v[i];
    } else if (behavior == SB_CONTIGUOUS) {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].match == prev && m) r[m - 1].b = v[i].b;
            else { r[m] = v[i]; r[m].match = 0; m++; }
            prev = v[i].match;
        }
    } else if (behavior == SB_MERGED_PREV) {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].match && !prev && m) r[m - 1].b = v[i].b;
            else { r[m] = v[i]; r[m].match = 0; m++; }
            prev = v[i].match;
        }
    } else {   /* merged with next: fold from the right */
        int prev = 0;
        for (size_t i = n; i-- > 0;) {
            if (v[i].match && !prev && m) r[m - 1].a = v[i].a;
            else { r[m] = v[i]; r[m].match = 0; m++; }
            prev = v[i].match;
        }
        for (size_t i = 0; i < m / 2; i++) { span t = r[i]; r[i] = r[m - 1 - i]; r[m - 1 - i] = t; }
    }
    for (size_t i = 0; i < m; i++) {
        if (r[i].match) continue;   /* removed */
        size_t off = ob->n;
        bytevec_append(ob, buf + base + r[i].a, r[i].b - r[i].a);
        word_push(out, off, r[i].b - r[i].a, first && r[i].a == 0);
    }
    free(r);
}

static void regex_spans(const rx_alt *alt, int nalt, const char *s, size_t n, spanvec *sp)
{
    sp->n = 0;
    size_t prev = 0, i = 0;
    while (i < n) {
        size_t l = hf_regex_match(alt, nalt, s, n, i);
        if (l) {
            if (prev < i) span_push(sp, prev, i, 0);
            span_push(sp, i, i + l, 1);
            i += l;
            prev = i;
        } else {
            i += (size_t)utf8_lead_len((unsigned char)s[i]);
        }
    }
    if (prev < n) span_push(sp, prev, n, 0);
}

static void string_spans(const char *pat, size_t pl, const char *s, size_t n, spanvec *sp)
{
    sp->n = 0;
    size_t prev = 0, i = 0;
    while (i + pl <= n) {
        const char *hit = memmem(s + i, n - i, pat, pl);
        if (!hit) break;
        size_t a = (size_t)(hit - s);
        if (prev < a) span_push(sp, prev, a, 0);
        span_push(sp, a, a + pl, 1);
        i = prev = a + pl;
    }
    if (prev < n) span_push(sp, prev, n, 0);
}

typedef struct {
    bytevec nbuf, tmp, wa, wb, scratch, scratch2;
    segvec raw, nsegs;
    wordvec w1, w2;
    spanvec sp;
    bpe_sym *sym;
    size_t symcap;
    unsigned char *plain;     /* per symbol: 1 if a plain vocab unit (chunk boundaries) */
    uint8_t *lastb, *firstb;
    bpe_heap heap;
    uint32_t cache_key[256];
    int32_t cache_id[256];
} hf_work;

static void work_free(hf_work *w)
{
    free(w->nbuf.v); free(w->tmp.v); free(w->wa.v); free(w->wb.v); free(w->scratch.v); free(w->scratch2.v);
    free(w->raw.v); free(w->nsegs.v); free(w->w1.v); free(w->w2.v); free(w->sp.v);
    free(w->sym); free(w->plain); free(w->lastb); free(w->firstb); free(w->heap.h);
}

static void add_sym(hf_work *w, int32_t *n, uint32_t id, uint32_t len, int plain, uint8_t fb, uint8_t lb)
{
    if ((size_t)*n == w->symcap) {
        w->symcap = w->symcap ? w->symcap * 2 : 1024;
        w->sym = xrealloc(w->sym, w->symcap * sizeof *w->sym);
        w->plain = xrealloc(w->plain, w->symcap);
        w->firstb = xrealloc(w->firstb, w->symcap);
        w->lastb = xrealloc(w->lastb, w->symcap);
    }
    int32_t i = (*n)++;
    w->sym[i].id = id;
    w->sym[i].len = len;
    w->plain[i] = (unsigned char)plain;
    w->firstb[i] = fb;
    w->lastb[i] = lb;
}

/* one word: tokenizers' BPE::merge_word then merge_all (in independent chunks, see below) */
static void bpe_word(const hf_model *m, const char *s, size_t n, hf_work *w, idvec *out)
{
    if (m->ignore_merges) {
        int32_t id = strmap_get(&m->vocab, s, n);
        if (id >= 0) { idvec_push(out, (uint32_t)id); return; }
    }
    int32_t ns = 0;
    int have_unk = 0;
    uint32_t unk_len = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t ul = m->bytelevel ? 1 : (size_t)utf8_lead_len(c);
        if (i + ul > n) ul = n - i;
        int32_t id;
        if (ul == 1 && (m->bytelevel || c < 0x80)) id = m->ascii_id[c];
        else {                               /* a small cache of multi-byte characters */
            uint32_t key = 0;
            memcpy(&key, s + i, ul);
            size_t slot = (key * 2654435761u) >> 24;
            if (w->cache_key[slot] == key && key) id = w->cache_id[slot];
            else {
                id = strmap_get(&m->vocab, s + i, ul);
                w->cache_key[slot] = key;
                w->cache_id[slot] = id;
            }
        }
        if (id >= 0) {
            if (have_unk) { add_sym(w, &ns, (uint32_t)m->unk_id, unk_len, 0, 0, 0); have_unk = 0; }
            add_sym(w, &ns, (uint32_t)id, (uint32_t)ul, 1, c, (uint8_t)s[i + ul - 1]);
        } else {
            int done = 0;
            if (m->byte_fallback) {
                size_t k;
                for (k = 0; k < ul && m->byte_id[(unsigned char)s[i + k]] >= 0; k++) {}
                if (k == ul) {
                    for (k = 0; k < ul; k++) add_sym(w, &ns, (uint32_t)m->byte_id[(unsigned char)s[i + k]], 1, 0, 0, 0);
                    done = 1;
                }
            }
            if (!done && m->unk_id >= 0) {
                if (have_unk && m->fuse_unk) unk_len += (uint32_t)ul;
                else {
                    if (have_unk) add_sym(w, &ns, (uint32_t)m->unk_id, unk_len, 0, 0, 0);
                    have_unk = 1;
                    unk_len = (uint32_t)ul;
                }
            }
        }
        i += ul;
    }
    if (have_unk) add_sym(w, &ns, (uint32_t)m->unk_id, unk_len, 0, 0, 0);
    /* Independent chunks: a merge across the boundary between two plain symbols would create a
     * vocab token containing the boundary's byte pair; when no vocab token contains that pair,
     * no merge ever crosses it, and the merges on each side happen in the same relative
     * (rank, position) order as in one heap — so cutting there gives the same result. */
    int32_t a = 0;
    while (a < ns) {
        int32_t b = a + 1;
        while (b < ns && !(w->plain[b - 1] && w->plain[b] && !bytepairs_has(&m->pairs, w->lastb[b - 1], w->firstb[b]))) b++;
        bpe_sym *s0 = w->sym + a;
        int32_t cn = b - a;
        for (int32_t k = 0; k < cn; k++) { s0[k].prev = k - 1; s0[k].next = k + 1 < cn ? k + 1 : -1; }
        if (cn > 1) hf_merge_all(&m->merges, s0, cn, &w->heap);
        for (int32_t k = 0; k < cn; k++) if (s0[k].len) idvec_push(out, s0[k].id);
        a = b;
    }
}

static void pretokenize_and_encode(const hf_model *m, const char *s, size_t n, int first, hf_work *w, idvec *out)
{
    wordvec wv[2] = { w->w1, w->w2 };
    bytevec bv[2] = { w->wa, w->wb };
    int c = 0;                              /* current: wv[c], bv[c]; next: the other one */
    wv[c].n = 0;
    bv[c].n = 0;
    bytevec_append(&bv[c], s, n);
    word_push(&wv[c], 0, n, first);
    for (int k = 0; k < m->npre; k++) {
        const hf_pretok *p = &m->pre[k];
        wordvec *cur = &wv[c], *nxt = &wv[1 - c];
        bytevec *cb = &bv[c], *nb = &bv[1 - c];
        nxt->n = 0;
        nb->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            word wd = cur->v[i];
            const char *ws = cb->v + wd.off;
            if (p->type == HP_SPLIT) {
                if (p->nalt) regex_spans(p->alt, p->nalt, ws, wd.len, &w->sp);
                else string_spans(p->str, p->slen, ws, wd.len, &w->sp);
                if (p->invert) for (size_t q = 0; q < w->sp.n; q++) w->sp.v[q].match = !w->sp.v[q].match;
                apply_behavior(&w->sp, p->behavior, wd.off, wd.first, nxt, cb->v, nb);
                continue;
            }
            bytevec *t = &w->scratch;
            t->n = 0;
            if (p->type == HP_BYTELEVEL) {
                if (p->add_prefix_space && ws[0] != ' ') bytevec_append(t, " ", 1);
                bytevec_append(t, ws, wd.len);
                if (p->use_regex) {
                    regex_spans(p->alt, p->nalt, t->v, t->n, &w->sp);
                    apply_behavior(&w->sp, SB_ISOLATED, 0, wd.first, nxt, t->v, nb);
                } else {
                    size_t off = nb->n;
                    bytevec_append(nb, t->v, t->n);
                    word_push(nxt, off, t->n, wd.first);
                }
            } else {   /* Metaspace: replace ' ', then prepend by the scheme, then split */
                bytevec *r = &w->scratch2;
                r->n = 0;
                for (size_t q = 0; q < wd.len; q++) {
                    if (ws[q] == ' ') bytevec_append(r, p->str, p->slen);
                    else bytevec_append(r, ws + q, 1);
                }
                int starts = r->n >= p->slen && !memcmp(r->v, p->str, p->slen);
                if ((p->prepend == 2 || (p->prepend == 1 && wd.first)) && !starts) bytevec_append(t, p->str, p->slen);
                bytevec_append(t, r->v, r->n);
                if (p->split) {
                    string_spans(p->str, p->slen, t->v, t->n, &w->sp);   /* every occurrence is a match */
                    apply_behavior(&w->sp, SB_MERGED_NEXT, 0, wd.first, nxt, t->v, nb);
                } else {
                    size_t off = nb->n;
                    bytevec_append(nb, t->v, t->n);
                    word_push(nxt, off, t->n, wd.first);
                }
            }
        }
        c = 1 - c;
    }
    for (size_t i = 0; i < wv[c].n; i++) bpe_word(m, bv[c].v + wv[c].v[i].off, wv[c].v[i].len, w, out);
    w->w1 = wv[0]; w->w2 = wv[1];
    w->wa = bv[0]; w->wb = bv[1];
}

int hf_encode(const hf_model *m, const char *text, size_t len, const char *what, idvec *out)
{
    size_t bad = 0;
    if (!utf8_valid(text, len, &bad))
        return FAIL("%s: invalid UTF-8 at byte %zu (a tokenizer.json tokenizer reads UTF-8 text)", what, bad);
    hf_work w;
    memset(&w, 0, sizeof w);
    find_added(m, &m->added_raw, text, len, &w.raw);
    segvec raw = w.raw;
    w.raw.v = NULL; w.raw.n = w.raw.cap = 0;
    for (size_t r = 0; r < raw.n; r++) {
        if (raw.v[r].id >= 0) { idvec_push(out, (uint32_t)raw.v[r].id); continue; }
        normalize(m, text + raw.v[r].off, raw.v[r].len, &w.nbuf, &w.tmp);
        find_added(m, &m->added_norm, w.nbuf.v, w.nbuf.n, &w.nsegs);
        for (size_t q = 0; q < w.nsegs.n; q++) {
            const seg *sg = &w.nsegs.v[q];
            if (sg->id >= 0) { idvec_push(out, (uint32_t)sg->id); continue; }
            if (m->npre == 0) {
                bpe_word(m, w.nbuf.v + sg->off, sg->len, &w, out);
                continue;
            }
            pretokenize_and_encode(m, w.nbuf.v + sg->off, sg->len, raw.v[r].off == 0 && sg->off == 0, &w, out);
        }
    }
    free(raw.v);
    work_free(&w);
    return 0;
}
