/* export_tok.c — the source checkpoint's tokenizer as GGUF tokenizer metadata (see export.h).
 *
 * sentencepiece tokenizer.model: a protobuf ModelProto read by a minimal, bounds-checked wire
 * reader: pieces (1) = {piece (1), score (2), type (3)}, trainer_spec (2) = {model_type (3),
 * unk_id (40), bos_id (41), eos_id (42), pad_id (43)}, normalizer_spec (3) = {add_dummy_prefix (3)}.
 * Tokens, scores and types go to GGUF as llama.cpp's converter writes them (model "llama").
 *
 * Hugging Face tokenizer.json (model type BPE):
 *  - sentencepiece-style (byte_fallback, or a normalizer / pre-tokenizer producing U+2581 "▁"):
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
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
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

/* grow (or check) the vocabulary to the model's vocab_size, padding as the converter does */
static int fit_vocab(ex_vocab *v, int want, const char *fname)
{
    if (v->n > want) return FAIL("%s: %d tokens, more than the model's vocab_size = %d", fname, v->n, want);
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
    return 0;
}

/* ---- protobuf wire format -------------------------------------------------------------------- */
typedef struct { const unsigned char *p, *end; } pb;

static int pb_varint(pb *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return -1;
        unsigned char b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -1;
}

/* one field: number, wire type, scalar value (varint / fixed32 / fixed64) or bytes */
typedef struct { uint32_t num; int wt; uint64_t v; const unsigned char *data; size_t len; } pb_field;

static int pb_next(pb *r, pb_field *f)
{
    uint64_t key;
    if (pb_varint(r, &key)) return -1;
    f->num = (uint32_t)(key >> 3);
    f->wt = (int)(key & 7);
    if (f->num == 0 || key >> 32) return -1;
    switch (f->wt) {
    case 0: return pb_varint(r, &f->v);
    case 1:
        if (r->end - r->p < 8) return -1;
        f->v = 0;
        for (int i = 7; i >= 0; i--) f->v = (f->v << 8) | r->p[i];
        r->p += 8;
        return 0;
    case 2: {
        uint64_t n;
        if (pb_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 0;
    }
    case 5:
        if (r->end - r->p < 4) return -1;
        f->v = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 | (uint64_t)r->p[3] << 24;
        r->p += 4;
        return 0;
    default: return -1;          /* groups (3, 4) and reserved types are not in sentencepiece */
    }
}

static int64_t pb_int32(uint64_t v) { return (int64_t)(int32_t)(uint32_t)v; }   /* negative int32 are 10-byte varints */

int ex_spm_parse(const unsigned char *buf, size_t n, const char *fname, ex_vocab *v)
{
    memset(v, 0, sizeof *v);
    int cap = 0, np = 0;
    char **tok = NULL;
    uint32_t *len = NULL;
    float *score = NULL;
    int32_t *type = NULL;
    int64_t unk = 0, bos = 1, eos = 2, pad = -1, model_type = 1;
    int dummy_prefix = 1;
    pb r = { buf, buf + n };
    pb_field f;
    int rc = 0;
    while (r.p < r.end && !rc) {
        if (pb_next(&r, &f)) { rc = FAIL("%s: not a sentencepiece model (bad protobuf at byte %zu)", fname, (size_t)(r.p - buf)); break; }
        if (f.num == 1 && f.wt == 2) {                       /* SentencePiece */
            pb s = { f.data, f.data + f.len };
            pb_field g;
            const unsigned char *piece = NULL;
            size_t plen = 0;
            float sc = 0;
            int64_t ty = TOK_NORMAL;
            int have_piece = 0;
            while (s.p < s.end) {
                if (pb_next(&s, &g)) { rc = FAIL("%s: piece %d: bad protobuf", fname, np); break; }
                if (g.num == 1 && g.wt == 2) { piece = g.data; plen = g.len; have_piece = 1; }
                else if (g.num == 2 && g.wt == 5) { uint32_t u = (uint32_t)g.v; memcpy(&sc, &u, 4); }
                else if (g.num == 3 && g.wt == 0) ty = (int64_t)g.v;
            }
            if (rc) break;
            if (!have_piece) { rc = FAIL("%s: piece %d has no text", fname, np); break; }
            if (ty < 1 || ty > 6) { rc = FAIL("%s: piece %d has type %lld, expected 1..6", fname, np, (long long)ty); break; }
            if (memchr(piece, 0, plen)) { rc = FAIL("%s: piece %d contains a NUL byte", fname, np); break; }
            if (np == cap) {
                cap = cap ? 2 * cap : 1024;
                tok = xrealloc(tok, sizeof(char *) * (size_t)cap);
                len = xrealloc(len, sizeof(uint32_t) * (size_t)cap);
                score = xrealloc(score, sizeof(float) * (size_t)cap);
                type = xrealloc(type, sizeof(int32_t) * (size_t)cap);
            }
            tok[np] = xmalloc(plen + 1);
            memcpy(tok[np], piece, plen);
            tok[np][plen] = 0;
            len[np] = (uint32_t)plen;
            score[np] = sc;
            type[np] = (int32_t)ty;
            np++;
            if (np > (1 << 26)) { rc = FAIL("%s: more than 2^26 pieces", fname); break; }
        } else if (f.num == 2 && f.wt == 2) {                /* TrainerSpec */
            pb s = { f.data, f.data + f.len };
            pb_field g;
            while (s.p < s.end) {
                if (pb_next(&s, &g)) { rc = FAIL("%s: trainer_spec: bad protobuf", fname); break; }
                if (g.wt != 0) continue;
                if (g.num == 3) model_type = (int64_t)g.v;
                else if (g.num == 40) unk = pb_int32(g.v);
                else if (g.num == 41) bos = pb_int32(g.v);
                else if (g.num == 42) eos = pb_int32(g.v);
                else if (g.num == 43) pad = pb_int32(g.v);
            }
        } else if (f.num == 3 && f.wt == 2) {                /* NormalizerSpec */
            pb s = { f.data, f.data + f.len };
            pb_field g;
            while (s.p < s.end) {
                if (pb_next(&s, &g)) { rc = FAIL("%s: normalizer_spec: bad protobuf", fname); break; }
                if (g.num == 3 && g.wt == 0) dummy_prefix = g.v != 0;
            }
        }
    }
    if (!rc && np == 0) rc = FAIL("%s: not a sentencepiece model (no pieces)", fname);
    if (!rc && model_type != 1 && model_type != 2)
        rc = FAIL("%s: trainer_spec.model_type = %lld: only unigram (1) and BPE (2) sentencepiece models are supported", fname, (long long)model_type);
    if (rc) {
        for (int i = 0; i < np; i++) free(tok[i]);
        free(tok); free(len); free(score); free(type);
        return -1;
    }
    v->n = np;
    v->tok = tok; v->len = len; v->score = score; v->type = type;
    snprintf(v->model, sizeof v->model, "llama");
    snprintf(v->pre, sizeof v->pre, "default");
    snprintf(v->source, sizeof v->source, "tokenizer.model");
    v->bos = v->eos = v->pad = -1;
    v->unk = unk >= 0 && unk < np ? unk : -1;
    (void)bos; (void)eos;                                    /* the converter takes these from config.json */
    v->add_bos = v->add_eos = -1;
    v->add_space_prefix = dummy_prefix;
    (void)pad;
    return 0;
}

/* ---- JSON helpers ---------------------------------------------------------------------------- */
static const cJSON *jget(const cJSON *o, const char *k) { return o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL; }
static const char *jstr(const cJSON *o, const char *k) { const cJSON *x = jget(o, k); return cJSON_IsString(x) ? x->valuestring : NULL; }

/* "type" of o, or of any member of a {"type": "Sequence", <list>: [...]} */
static int has_type(const cJSON *o, const char *type)
{
    if (!cJSON_IsObject(o)) return 0;
    const char *t = jstr(o, "type");
    if (t && !strcmp(t, type)) return 1;
    const char *lists[] = { "normalizers", "pretokenizers", "decoders", "processors" };
    for (int i = 0; i < 4; i++) {
        const cJSON *a = jget(o, lists[i]), *e;
        if (cJSON_IsArray(a)) cJSON_ArrayForEach(e, a) if (has_type(e, type)) return 1;
    }
    return 0;
}

/* does any string value inside o equal s? (e.g. a Replace normalizer producing "▁") */
static int has_string(const cJSON *o, const char *s)
{
    if (!o) return 0;
    if (cJSON_IsString(o)) return !strcmp(o->valuestring, s);
    const cJSON *e;
    if (cJSON_IsArray(o) || cJSON_IsObject(o)) cJSON_ArrayForEach(e, o) if (has_string(e, s)) return 1;
    return 0;
}

static int utf8_codepoints(const char *s)
{
    int n = 0;
    for (; *s; s++) if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return n;
}

static int is_byte_token(const char *s)
{
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && strchr("0123456789ABCDEFabcdef", s[3]) && strchr("0123456789ABCDEFabcdef", s[4]) && s[5] == '>';
}

/* open-addressing map token text -> id over v->tok */
typedef struct { int *slot; int cap; } tokmap;

static uint64_t hstr(const char *s, size_t n) { return fnv1a64(FNV1A64_INIT, s, n); }

static void tokmap_build(tokmap *m, const ex_vocab *v)
{
    m->cap = 16;
    while (m->cap < 2 * v->n + 16) m->cap *= 2;
    m->slot = xmalloc(sizeof(int) * (size_t)m->cap);
    for (int i = 0; i < m->cap; i++) m->slot[i] = -1;
    for (int i = 0; i < v->n; i++) {
        if (!v->tok[i]) continue;
        size_t h = (size_t)(hstr(v->tok[i], v->len[i]) & (uint64_t)(m->cap - 1));
        while (m->slot[h] >= 0) {
            if (v->len[m->slot[h]] == v->len[i] && !memcmp(v->tok[m->slot[h]], v->tok[i], v->len[i])) break;   /* keep the first */
            h = (h + 1) & (size_t)(m->cap - 1);
        }
        if (m->slot[h] < 0) m->slot[h] = i;
    }
}

static int tokmap_find(const tokmap *m, const ex_vocab *v, const char *s, size_t n)
{
    size_t h = (size_t)(hstr(s, n) & (uint64_t)(m->cap - 1));
    while (m->slot[h] >= 0) {
        int i = m->slot[h];
        if (v->len[i] == n && !memcmp(v->tok[i], s, n)) return i;
        h = (h + 1) & (size_t)(m->cap - 1);
    }
    return -1;
}

/* a merge entry as its two parts: "a b" (split at the first space) or ["a", "b"] */
static int merge_parts(const cJSON *e, const char **a, size_t *na, const char **b, size_t *nb)
{
    if (cJSON_IsString(e)) {
        const char *s = e->valuestring, *sp = strchr(s, ' ');
        if (!sp) return -1;
        *a = s; *na = (size_t)(sp - s); *b = sp + 1; *nb = strlen(sp + 1);
        return 0;
    }
    if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) && cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
        *a = cJSON_GetArrayItem(e, 0)->valuestring; *na = strlen(*a);
        *b = cJSON_GetArrayItem(e, 1)->valuestring; *nb = strlen(*b);
        return 0;
    }
    return -1;
}

/* a string with ' ' written as U+0120 (the converter's encoding of spaces inside merge parts) */
static size_t enc_spaces(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { out[k++] = (char)0xc4; out[k++] = (char)0xa0; }
        else out[k++] = s[i];
    }
    return k;
}

static int load_tokenizer_json(const char *path, ex_vocab *v, cJSON **root_out)
{
    char *text = NULL;
    size_t tl = 0;
    if (read_whole_file(path, 1u << 30, &text, &tl)) return -1;
    cJSON *root = NULL;
    int rc = json_parse(text, tl, path, &root);
    free(text);
    if (rc) return -1;
    *root_out = root;
    const cJSON *model = jget(root, "model");
    const char *mtype = jstr(model, "type");
    if (!cJSON_IsObject(model)) return FAIL("%s: field 'model': expected an object", path);
    if (!mtype || strcmp(mtype, "BPE"))
        return FAIL("%s: field 'model.type' = \"%s\": only BPE tokenizers are supported", path, mtype ? mtype : "(missing)");
    const cJSON *vocab = jget(model, "vocab"), *added = jget(root, "added_tokens"), *merges = jget(model, "merges");
    if (!cJSON_IsObject(vocab)) return FAIL("%s: field 'model.vocab': expected an object", path);
    if (merges && !cJSON_IsArray(merges)) return FAIL("%s: field 'model.merges': expected an array", path);
    /* style */
    const cJSON *bf = jget(model, "byte_fallback");
    int llama = cJSON_IsTrue(bf) || has_string(jget(root, "normalizer"), "\xe2\x96\x81") || has_type(jget(root, "pre_tokenizer"), "Metaspace") ||
                has_type(jget(root, "decoder"), "Metaspace") || has_type(jget(root, "decoder"), "ByteFallback");
    int gpt2 = has_type(jget(root, "pre_tokenizer"), "ByteLevel") || has_type(jget(root, "decoder"), "ByteLevel");
    if (!llama && !gpt2)
        return FAIL("%s: a BPE tokenizer that is neither sentencepiece-style (byte_fallback / U+2581) nor byte-level: no GGUF tokenizer model for it", path);
    /* size: the largest id + 1 */
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 26) || e->valuedouble != (int)e->valuedouble)
            return FAIL("%s: field 'model.vocab' entry '%s': expected an id in [0, 2^26)", path, e->string);
        if ((int)e->valuedouble + 1 > n) n = (int)e->valuedouble + 1;
    }
    if (cJSON_IsArray(added)) cJSON_ArrayForEach(e, added) {
        const cJSON *id = jget(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 26) || !jstr(e, "content"))
            return FAIL("%s: field 'added_tokens': entries need an 'id' in [0, 2^26) and a 'content'", path);
        if ((int)id->valuedouble + 1 > n) n = (int)id->valuedouble + 1;
    }
    vocab_init(v, n, llama);
    snprintf(v->model, sizeof v->model, "%s", llama ? "llama" : "gpt2");
    snprintf(v->source, sizeof v->source, "tokenizer.json");
    cJSON_ArrayForEach(e, vocab) {
        int id = (int)e->valuedouble;
        if (v->tok[id]) return FAIL("%s: field 'model.vocab': id %d is given twice", path, id);
        set_tok(v, id, e->string, strlen(e->string));
        v->type[id] = is_byte_token(e->string) ? TOK_BYTE : TOK_NORMAL;
    }
    if (cJSON_IsArray(added)) cJSON_ArrayForEach(e, added) {
        int id = (int)jget(e, "id")->valuedouble;
        const char *c = jstr(e, "content");
        set_tok(v, id, c, strlen(c));
        v->type[id] = cJSON_IsTrue(jget(e, "special")) ? TOK_CONTROL : TOK_USER_DEFINED;
    }
    const char *unk = jstr(model, "unk_token");
    for (int i = 0; unk && i < n; i++) if (v->tok[i] && !strcmp(v->tok[i], unk)) { v->unk = i; v->type[i] = TOK_UNKNOWN; break; }
    if (llama) {
        snprintf(v->pre, sizeof v->pre, "default");
        tokmap m;
        tokmap_build(&m, v);
        for (int i = 0; i < n; i++) {
            if (!v->tok[i]) continue;
            v->score[i] = (v->type[i] == TOK_NORMAL && utf8_codepoints(v->tok[i]) > 1) ? -1e9f : 0.0f;
        }
        int rank = 0;
        char *buf = NULL;
        size_t bcap = 0;
        if (merges) cJSON_ArrayForEach(e, merges) {
            const char *a, *b;
            size_t na, nb;
            if (merge_parts(e, &a, &na, &b, &nb)) { free(buf); free(m.slot); return FAIL("%s: field 'model.merges' entry %d: expected \"a b\" or [\"a\", \"b\"]", path, rank); }
            if (na + nb + 1 > bcap) { bcap = 2 * (na + nb + 1); buf = xrealloc(buf, bcap); }
            memcpy(buf, a, na);
            memcpy(buf + na, b, nb);
            int id = tokmap_find(&m, v, buf, na + nb);
            if (id >= 0 && v->type[id] == TOK_NORMAL && v->score[id] == -1e9f) v->score[id] = -(float)(rank + 1);
            rank++;
        }
        free(buf);
        free(m.slot);
    } else {
        /* the pre-tokenizer regex llama.cpp should use: GPT-2's for a plain ByteLevel one */
        const cJSON *pt = jget(root, "pre_tokenizer");
        const char *t = jstr(pt, "type");
        snprintf(v->pre, sizeof v->pre, "%s", t && !strcmp(t, "ByteLevel") && !cJSON_IsFalse(jget(pt, "use_regex")) ? "gpt-2" : "default");
        if (!strcmp(v->pre, "default"))
            fprintf(stderr, "cfsp-mpi: export: %s: byte-level pre-tokenizer not recognised; tokenizer.ggml.pre = \"default\"\n", path);
        int nm = merges ? cJSON_GetArraySize(merges) : 0;
        v->merges = xcalloc((size_t)(nm ? nm : 1), sizeof(char *));
        cJSON_ArrayForEach(e, merges) {
            const char *a, *b;
            size_t na, nb;
            if (merge_parts(e, &a, &na, &b, &nb)) return FAIL("%s: field 'model.merges' entry %d: expected \"a b\" or [\"a\", \"b\"]", path, v->nmerges);
            char *s = xmalloc(2 * (na + nb) + 2);
            size_t k = cJSON_IsString(e) ? (memcpy(s, a, na), na) : enc_spaces(a, na, s);
            s[k++] = ' ';
            k += cJSON_IsString(e) ? (memcpy(s + k, b, nb), nb) : enc_spaces(b, nb, s + k);
            s[k] = 0;
            v->merges[v->nmerges++] = s;
        }
    }
    return 0;
}

/* content of a tokenizer_config.json *_token entry: "text" or {"content": "text"} */
static const char *token_content(const cJSON *x)
{
    if (cJSON_IsString(x)) return x->valuestring;
    if (cJSON_IsObject(x)) return jstr(x, "content");
    return NULL;
}

int ex_vocab_load(const char *dir, const model_config *cfg, const char *config_text, ex_vocab *v)
{
    memset(v, 0, sizeof *v);
    char spm[4200], tj[4200], tc[4200];
    snprintf(spm, sizeof spm, "%s/tokenizer.model", dir);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    cJSON *tok_json = NULL, *tok_cfg = NULL, *conf = NULL;
    int rc = 0;
    const char *src = NULL;
    if (path_exists(spm)) {
        char *buf = NULL;
        size_t n = 0;
        src = spm;
        rc = read_whole_file(spm, 1u << 30, &buf, &n);
        if (!rc) rc = ex_spm_parse((const unsigned char *)buf, n, spm, v);
        free(buf);
    } else if (path_exists(tj)) {
        src = tj;
        rc = load_tokenizer_json(tj, v, &tok_json);
    } else {
        return FAIL("%s: no tokenizer.model or tokenizer.json: the GGUF file needs the source checkpoint's tokenizer (give it with --model DIR)", dir);
    }
    if (!rc && path_exists(tc)) {
        char *text = NULL;
        size_t n = 0;
        rc = read_whole_file(tc, 64u << 20, &text, &n);
        if (!rc) rc = json_parse(text, n, tc, &tok_cfg);
        free(text);
    }
    if (!rc && config_text) conf = cJSON_Parse(config_text);
    /* tokenizer_config.json added_tokens_decoder (the converter's sentencepiece path) */
    if (!rc && tok_cfg && !tok_json && v->score) {
        const cJSON *atd = jget(tok_cfg, "added_tokens_decoder"), *e;
        if (cJSON_IsObject(atd)) cJSON_ArrayForEach(e, atd) {
            char *end = NULL;
            long id = strtol(e->string, &end, 10);
            const char *c = jstr(e, "content");
            if (*end || id < 0 || id >= v->n || !c) continue;
            set_tok(v, (int)id, c, strlen(c));
            v->type[id] = cJSON_IsTrue(jget(e, "special")) ? TOK_CONTROL : TOK_USER_DEFINED;
            v->score[id] = -1000.0f;
        }
    }
    if (!rc) rc = fit_vocab(v, cfg->vocab, src);
    if (rc) { ex_vocab_free(v); cJSON_Delete(tok_json); cJSON_Delete(tok_cfg); cJSON_Delete(conf); return -1; }
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

    /* special tokens: tokenizer_config contents matched against added tokens, then config.json */
    const char *kinds[4] = { "bos", "eos", "unk", "pad" };
    int64_t *ids[4] = { &v->bos, &v->eos, &v->unk, &v->pad };
    for (int k = 0; k < 4; k++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token", kinds[k]);
        const char *c = tok_cfg ? token_content(jget(tok_cfg, key)) : NULL;
        const cJSON *added = jget(tok_json, "added_tokens"), *e;
        if (c && cJSON_IsArray(added)) cJSON_ArrayForEach(e, added)
            if (jstr(e, "content") && !strcmp(jstr(e, "content"), c)) { *ids[k] = (int64_t)jget(e, "id")->valuedouble; break; }
        snprintf(key, sizeof key, "%s_token_id", kinds[k]);
        const cJSON *x = jget(conf, key);
        if (*ids[k] < 0 && cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble < v->n) *ids[k] = (int64_t)x->valuedouble;
    }
    if (tok_cfg) {
        const cJSON *ab = jget(tok_cfg, "add_bos_token"), *ae = jget(tok_cfg, "add_eos_token");
        if (cJSON_IsBool(ab)) v->add_bos = cJSON_IsTrue(ab);
        if (cJSON_IsBool(ae)) v->add_eos = cJSON_IsTrue(ae);
    }
    if (v->add_bos < 0 && tok_json) {     /* TemplateProcessing: single = [bos, $A, ...] */
        const cJSON *pp = jget(tok_json, "post_processor");
        const cJSON *single = jstr(pp, "type") && !strcmp(jstr(pp, "type"), "TemplateProcessing") ? jget(pp, "single") : NULL;
        if (cJSON_IsArray(single) && cJSON_GetArraySize(single) > 1) {
            const char *first = jstr(jget(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
            if (first && v->bos >= 0) v->add_bos = !strcmp(first, v->tok[v->bos]);
        }
    }
    cJSON_Delete(tok_json);
    cJSON_Delete(tok_cfg);
    cJSON_Delete(conf);
    (void)TOK_USER_DEFINED;
    return 0;
}
