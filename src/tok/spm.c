/* spm.c — sentencepiece tokenizer.model: the ModelProto read by a small bounds-checked protobuf
 * reader, and encoding exactly as SentencePieceProcessor::Encode does: the normalizer
 * (precompiled charsmap, user-defined symbols, add_dummy_prefix, remove_extra_whitespaces,
 * escape_whitespaces, treat_whitespace_as_suffix), then the BPE model (score-ordered pair merges,
 * unused pieces re-segmented) or the unigram model (the optimized Viterbi), then unknown runs merged
 * or decomposed into <0xXX> byte pieces (byte_fallback). */
#include "tok_internal.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * protobuf wire format */
typedef struct { const unsigned char *p, *end; } pbuf;

static int pb_varint(pbuf *b, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->p >= b->end) return -1;
        unsigned c = *b->p++;
        if (shift == 63 && (c & 0x7E)) return -1;        /* more than 64 bits */
        r |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) { *v = r; return 0; }
    }
    return -1;
}

typedef struct {
    uint32_t field;
    int wt;
    uint64_t v;                    /* varint, fixed64, fixed32 */
    const unsigned char *data;     /* length-delimited */
    size_t len;
} pb_field;

/* reads one field; msg names the message in errors. 1 = field read, 0 = end, -1 = error */
static int pb_next(pbuf *b, pb_field *f, const char *fname, const char *msg)
{
    if (b->p >= b->end) return 0;
    uint64_t key;
    size_t at = 0;
    (void)at;
    if (pb_varint(b, &key)) return FAIL("%s: %s: truncated or overlong field key", fname, msg);
    f->field = (uint32_t)(key >> 3);
    f->wt = (int)(key & 7);
    if (key >> 3 == 0 || key >> 3 > 536870911u) return FAIL("%s: %s: invalid field number %llu", fname, msg, (unsigned long long)(key >> 3));
    switch (f->wt) {
    case 0:
        if (pb_varint(b, &f->v)) return FAIL("%s: %s: field %u: truncated varint", fname, msg, f->field);
        return 1;
    case 1:
        if (b->end - b->p < 8) return FAIL("%s: %s: field %u: truncated fixed64", fname, msg, f->field);
        f->v = 0;
        for (int i = 0; i < 8; i++) f->v |= (uint64_t)b->p[i] << (8 * i);
        b->p += 8;
        return 1;
    case 5:
        if (b->end - b->p < 4) return FAIL("%s: %s: field %u: truncated fixed32", fname, msg, f->field);
        f->v = (uint64_t)b->p[0] | (uint64_t)b->p[1] << 8 | (uint64_t)b->p[2] << 16 | (uint64_t)b->p[3] << 24;
        b->p += 4;
        return 1;
    case 2: {
        uint64_t l;
        if (pb_varint(b, &l)) return FAIL("%s: %s: field %u: truncated length", fname, msg, f->field);
        if (l > (uint64_t)(b->end - b->p))
            return FAIL("%s: %s: field %u: length %llu exceeds the %zu bytes left", fname, msg, f->field,
                        (unsigned long long)l, (size_t)(b->end - b->p));
        f->data = b->p;
        f->len = (size_t)l;
        b->p += l;
        return 1;
    }
    default:
        return FAIL("%s: %s: field %u: unsupported wire type %d", fname, msg, f->field, f->wt);
    }
}

static int want_wt(const pb_field *f, int wt, const char *fname, const char *msg, const char *name)
{
    if (f->wt != wt) return FAIL("%s: %s.%s (field %u): wire type %d, expected %d", fname, msg, name, f->field, f->wt, wt);
    return 0;
}

static float f32_of(uint64_t v)
{
    uint32_t u = (uint32_t)v;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* ---------------------------------------------------------------------------------------------
 * parsing */
static int parse_piece(const unsigned char *d, size_t n, int idx, const char *fname, spm_model *m)
{
    char msg[64];
    snprintf(msg, sizeof msg, "pieces[%d]", idx);
    pbuf b = { d, d + n };
    pb_field f;
    int r, have_piece = 0;
    m->type[idx] = TOK_NORMAL;
    m->score[idx] = 0;
    while ((r = pb_next(&b, &f, fname, msg)) == 1) {
        if (f.field == 1) {
            if (want_wt(&f, 2, fname, msg, "piece")) return -1;
            free(m->piece[idx]);
            m->piece[idx] = xmalloc(f.len + 1);
            memcpy(m->piece[idx], f.data, f.len);
            m->piece[idx][f.len] = 0;
            m->plen[idx] = (uint32_t)f.len;
            have_piece = 1;
        } else if (f.field == 2) {
            if (want_wt(&f, 5, fname, msg, "score")) return -1;
            m->score[idx] = f32_of(f.v);
        } else if (f.field == 3) {
            if (want_wt(&f, 0, fname, msg, "type")) return -1;
            if (f.v < 1 || f.v > 6) return FAIL("%s: %s.type: %llu is not a piece type (1..6)", fname, msg, (unsigned long long)f.v);
            m->type[idx] = (uint8_t)f.v;
        }
    }
    if (r < 0) return -1;
    if (!have_piece || m->plen[idx] == 0) return FAIL("%s: %s.piece: missing or empty", fname, msg);
    if (memchr(m->piece[idx], 0, m->plen[idx])) return FAIL("%s: %s.piece: contains a NUL byte", fname, msg);
    return 0;
}

typedef struct { int model_type, byte_fallback, ws_suffix; char bos_piece[64]; } trainer;

static int parse_trainer(const unsigned char *d, size_t n, const char *fname, trainer *t)
{
    pbuf b = { d, d + n };
    pb_field f;
    int r;
    while ((r = pb_next(&b, &f, fname, "trainer_spec")) == 1) {
        if (f.field == 3) {
            if (want_wt(&f, 0, fname, "trainer_spec", "model_type")) return -1;
            t->model_type = (int)(f.v > 100 ? 100 : f.v);
        } else if (f.field == 35) {
            if (want_wt(&f, 0, fname, "trainer_spec", "byte_fallback")) return -1;
            t->byte_fallback = f.v != 0;
        } else if (f.field == 24) {
            if (want_wt(&f, 0, fname, "trainer_spec", "treat_whitespace_as_suffix")) return -1;
            t->ws_suffix = f.v != 0;
        } else if (f.field == 46) {
            if (want_wt(&f, 2, fname, "trainer_spec", "bos_piece")) return -1;
            if (f.len >= sizeof t->bos_piece) return FAIL("%s: trainer_spec.bos_piece: longer than %zu bytes", fname, sizeof t->bos_piece - 1);
            memcpy(t->bos_piece, f.data, f.len);
            t->bos_piece[f.len] = 0;
        }
    }
    return r < 0 ? -1 : 0;
}

static int parse_normalizer(const unsigned char *d, size_t n, const char *fname, spm_model *m)
{
    pbuf b = { d, d + n };
    pb_field f;
    int r;
    while ((r = pb_next(&b, &f, fname, "normalizer_spec")) == 1) {
        if (f.field == 2) {
            if (want_wt(&f, 2, fname, "normalizer_spec", "precompiled_charsmap")) return -1;
            free(m->cm_units); free(m->cm_norm);
            m->cm_units = NULL; m->cm_norm = NULL; m->cm_nunits = m->cm_norm_len = 0;
            if (f.len == 0) continue;
            if (f.len < 4) return FAIL("%s: normalizer_spec.precompiled_charsmap: %zu bytes, too short", fname, f.len);
            uint32_t tsize = (uint32_t)f.data[0] | (uint32_t)f.data[1] << 8 | (uint32_t)f.data[2] << 16 | (uint32_t)f.data[3] << 24;
            if (tsize > f.len - 4 || tsize % 4 || tsize == 0)
                return FAIL("%s: normalizer_spec.precompiled_charsmap: trie size %u does not fit the %zu bytes", fname, tsize, f.len);
            m->cm_nunits = tsize / 4;
            m->cm_units = xmalloc(tsize);
            for (size_t i = 0; i < m->cm_nunits; i++) {
                const unsigned char *u = f.data + 4 + 4 * i;
                m->cm_units[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
            }
            m->cm_norm_len = f.len - 4 - tsize;
            m->cm_norm = xmalloc(m->cm_norm_len + 1);
            memcpy(m->cm_norm, f.data + 4 + tsize, m->cm_norm_len);
            m->cm_norm[m->cm_norm_len] = 0;
        } else if (f.field == 3 || f.field == 4 || f.field == 5) {
            const char *nm = f.field == 3 ? "add_dummy_prefix" : f.field == 4 ? "remove_extra_whitespaces" : "escape_whitespaces";
            if (want_wt(&f, 0, fname, "normalizer_spec", nm)) return -1;
            int v = f.v != 0;
            if (f.field == 3) m->add_dummy_prefix = v;
            else if (f.field == 4) m->remove_extra_ws = v;
            else m->escape_ws = v;
        }
    }
    return r < 0 ? -1 : 0;
}

static int piece_to_byte(const char *p, uint32_t len)
{
    if (len != 6 || memcmp(p, "<0x", 3) || p[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

int spm_parse(const unsigned char *data, size_t len, const char *fname, spm_model *m)
{
    memset(m, 0, sizeof *m);
    m->add_dummy_prefix = m->remove_extra_ws = m->escape_ws = 1;
    m->unk_id = m->bos_id = m->eos_id = -1;
    trainer tr = { SPM_UNIGRAM, 0, 0, "<s>" };
    if (len == 0) return FAIL("%s: empty file (expected a sentencepiece ModelProto)", fname);
    /* count the pieces first */
    pbuf b = { data, data + len };
    pb_field f;
    int r, np = 0;
    while ((r = pb_next(&b, &f, fname, "ModelProto")) == 1) {
        if (f.field == 1) {
            if (want_wt(&f, 2, fname, "ModelProto", "pieces")) return -1;
            if (np == INT32_MAX / 2) return FAIL("%s: ModelProto.pieces: too many", fname);
            np++;
        }
    }
    if (r < 0) return -1;
    if (np == 0) return FAIL("%s: ModelProto.pieces: none (not a sentencepiece model?)", fname);
    m->npieces = np;
    m->piece = xcalloc((size_t)np, sizeof *m->piece);
    m->plen = xcalloc((size_t)np, sizeof *m->plen);
    m->score = xcalloc((size_t)np, sizeof *m->score);
    m->type = xcalloc((size_t)np, sizeof *m->type);
    b.p = data;
    int idx = 0;
    while ((r = pb_next(&b, &f, fname, "ModelProto")) == 1) {
        if (f.field == 1) {
            if (parse_piece(f.data, f.len, idx, fname, m)) goto fail;
            idx++;
        } else if (f.field == 2) {
            if (want_wt(&f, 2, fname, "ModelProto", "trainer_spec") || parse_trainer(f.data, f.len, fname, &tr)) goto fail;
        } else if (f.field == 3) {
            if (want_wt(&f, 2, fname, "ModelProto", "normalizer_spec") || parse_normalizer(f.data, f.len, fname, m)) goto fail;
        }
    }
    if (r < 0) goto fail;
    if (tr.model_type != SPM_BPE && tr.model_type != SPM_UNIGRAM) {
        FAIL("%s: trainer_spec.model_type: %d is not supported (1 = unigram, 2 = BPE)", fname, tr.model_type);
        goto fail;
    }
    m->model_type = tr.model_type;
    m->byte_fallback = tr.byte_fallback;
    m->treat_ws_suffix = tr.ws_suffix;
    strmap_init(&m->pieces, (size_t)np);
    strmap_init(&m->reserved, 16);
    trie_init(&m->user_trie);
    trie_init(&m->vocab_trie);
    for (int i = 0; i < 256; i++) m->byte_id[i] = -1;
    m->min_score = FLT_MAX;
    m->max_score = FLT_MIN;
    for (int i = 0; i < np; i++) {
        int t = m->type[i];
        int normal = t == TOK_NORMAL || t == TOK_USER_DEFINED || t == TOK_UNUSED;
        if (strmap_put(normal ? &m->pieces : &m->reserved, m->piece[i], m->plen[i], i) >= 0) {
            FAIL("%s: pieces[%d].piece: '%.60s' is already defined", fname, i, m->piece[i]);
            goto fail;
        }
        if (normal) {
            bytepairs_add(&m->pairs, m->piece[i], m->plen[i]);
            trie_insert(&m->vocab_trie, m->piece[i], m->plen[i], i);
        }
        if (t == TOK_USER_DEFINED) { trie_insert(&m->user_trie, m->piece[i], m->plen[i], i); m->nuser++; }
        if (t == TOK_UNKNOWN) {
            if (m->unk_id >= 0) { FAIL("%s: pieces[%d]: a second unknown piece (the first is %d)", fname, i, m->unk_id); goto fail; }
            m->unk_id = i;
        }
        if (t == TOK_BYTE) {
            if (!m->byte_fallback) { FAIL("%s: pieces[%d]: byte piece '%.20s' although trainer_spec.byte_fallback is false", fname, i, m->piece[i]); goto fail; }
            int byte = piece_to_byte(m->piece[i], m->plen[i]);
            if (byte < 0) { FAIL("%s: pieces[%d]: byte piece '%.20s' is not <0xXX>", fname, i, m->piece[i]); goto fail; }
            m->byte_id[byte] = i;
        }
        if (t == TOK_NORMAL) {
            if (!(m->score[i] == m->score[i]) || m->score[i] > FLT_MAX || m->score[i] < -FLT_MAX) {
                FAIL("%s: pieces[%d].score: not a finite number", fname, i);
                goto fail;
            }
            if (m->score[i] < m->min_score) m->min_score = m->score[i];
            if (m->score[i] > m->max_score) m->max_score = m->score[i];
        }
    }
    if (m->min_score == FLT_MAX) m->min_score = 0;
    if (m->max_score == FLT_MIN) m->max_score = 0;
    if (m->unk_id < 0) { FAIL("%s: pieces: no piece of type UNKNOWN (unk is not defined)", fname); goto fail; }
    for (int i = 0; i < 256; i++) if (m->byte_id[i] < 0) m->byte_id[i] = m->unk_id;   /* PieceToId of a missing piece */
    int32_t bos = strmap_get(&m->reserved, tr.bos_piece, strlen(tr.bos_piece));
    m->bos_id = bos >= 0 && m->type[bos] == TOK_CONTROL ? bos : -1;
    return 0;
fail:
    spm_free(m);
    return -1;
}

void spm_free(spm_model *m)
{
    for (int i = 0; i < m->npieces; i++) free(m->piece ? m->piece[i] : NULL);
    free(m->piece); free(m->plen); free(m->score); free(m->type);
    strmap_free(&m->pieces);
    strmap_free(&m->reserved);
    if (m->vocab_trie.key) trie_free(&m->vocab_trie);
    if (m->user_trie.key) trie_free(&m->user_trie);
    free(m->cm_units); free(m->cm_norm);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------------------------------------
 * the normalizer */

/* darts-clone commonPrefixSearch, keeping the longest match (Normalizer::NormalizePrefix keeps
 * the longest of the first 32 results). Every index is bounds-checked. */
static size_t charsmap_longest(const spm_model *m, const unsigned char *s, size_t n, uint32_t *value)
{
    const uint32_t *a = m->cm_units;
    size_t na = m->cm_nunits, best = 0, found = 0;
#define OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))
#define LABEL(u) ((u) & ((1u << 31) | 0xFFu))
#define HAS_LEAF(u) (((u) >> 8) & 1u)
    size_t pos = 0;
    uint32_t unit = a[0];
    pos ^= OFFSET(unit);
    for (size_t i = 0; i < n; i++) {
        pos ^= s[i];
        if (pos >= na) return best;
        unit = a[pos];
        if (LABEL(unit) != s[i]) return best;
        pos ^= OFFSET(unit);
        if (pos >= na) return best;
        if (HAS_LEAF(unit)) {
            if (found++ < 32) { best = i + 1; *value = a[pos] & 0x7FFFFFFFu; }
        }
    }
#undef OFFSET
#undef LABEL
#undef HAS_LEAF
    return best;
}

/* one normalized prefix: *out (outn bytes) replaces the first *consumed bytes of s */
static int normalize_prefix(const spm_model *m, const char *s, size_t n, const char **out, size_t *outn, size_t *consumed)
{
    if (m->nuser) {
        int32_t v;
        size_t l = trie_longest(&m->user_trie, s, n, &v);
        if (l) { *out = s; *outn = l; *consumed = l; return 0; }
    }
    if (m->cm_nunits) {
        uint32_t val = 0;
        size_t l = charsmap_longest(m, (const unsigned char *)s, n, &val);
        if (l) {
            if (val >= m->cm_norm_len) return -1;
            *out = m->cm_norm + val;
            *outn = strlen(m->cm_norm + val);     /* the blob is NUL-terminated by us */
            *consumed = l;
            return 0;
        }
    }
    int32_t cp;
    int l = utf8_decode((const unsigned char *)s, n, &cp);
    if (cp < 0) { *out = "\xEF\xBF\xBD"; *outn = 3; *consumed = 1; return 0; }
    *out = s; *outn = (size_t)l; *consumed = (size_t)l;
    return 0;
}

#define SPACE_SYM "\xE2\x96\x81"

static int spm_normalize(const spm_model *m, const char *in, size_t n, const char *what, bytevec *out)
{
    out->n = 0;
    size_t i = 0;
    const char *p;
    size_t pl, c;
    if (m->remove_extra_ws) {
        while (i < n) {
            if (normalize_prefix(m, in + i, n - i, &p, &pl, &c)) goto bad;
            if (!(pl == 1 && p[0] == ' ')) break;
            i += c;
        }
    }
    if (i == n) return 0;
    const char *ws = m->escape_ws ? SPACE_SYM : " ";
    size_t wsl = m->escape_ws ? 3 : 1;
    if (!m->treat_ws_suffix && m->add_dummy_prefix) bytevec_append(out, ws, wsl);
    int prev_space = m->remove_extra_ws;
    while (i < n) {
        if (normalize_prefix(m, in + i, n - i, &p, &pl, &c)) goto bad;
        if (prev_space) while (pl && p[0] == ' ') { p++; pl--; }
        if (pl) {
            size_t a = 0;
            for (size_t k = 0; k < pl; k++) {
                if (m->escape_ws && p[k] == ' ') {
                    bytevec_append(out, p + a, k - a);
                    bytevec_append(out, SPACE_SYM, 3);
                    a = k + 1;
                }
            }
            bytevec_append(out, p + a, pl - a);
            prev_space = p[pl - 1] == ' ';
        }
        i += c;
        if (!m->remove_extra_ws) prev_space = 0;
    }
    if (m->remove_extra_ws)
        while (out->n >= wsl && !memcmp(out->v + out->n - wsl, ws, wsl)) out->n -= wsl;
    if (m->treat_ws_suffix && m->add_dummy_prefix) bytevec_append(out, ws, wsl);
    return 0;
bad:
    return FAIL("%s: the tokenizer's precompiled_charsmap points outside its replacement strings", what);
}

/* ---------------------------------------------------------------------------------------------
 * BPE (bpe_model.cc) */
typedef struct { size_t start; uint32_t len; int32_t prev, next; int freeze; } spm_sym;
typedef struct { float score; int32_t left, right; uint32_t size; } spm_pair;
typedef struct { spm_pair *h; size_t n, cap; } spm_heap;

static inline int pair_before(const spm_pair *a, const spm_pair *b)   /* a pops before b */
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

TOK_HEAP(sh, spm_heap, spm_pair, pair_before)

/* rev_merge for unused pieces: piece string -> its last recorded (left length) split */
typedef struct { strmap map; size_t *left_len; size_t n, cap; } revmerge;

typedef struct { const char *text; spm_sym *s; spm_heap heap; revmerge rev; } spm_bpe;

static void maybe_add_pair(const spm_model *m, spm_bpe *w, int32_t left, int32_t right)
{
    if (left < 0 || right < 0 || w->s[left].freeze || w->s[right].freeze) return;
    size_t start = w->s[left].start;
    uint32_t size = w->s[left].len + w->s[right].len;
    int32_t id = strmap_get(&m->pieces, w->text + start, size);
    if (id < 0) return;
    spm_pair p = { m->score[id], left, right, size };
    sh_push(&w->heap, p);
    if (m->type[id] == TOK_UNUSED) {
        int32_t e = strmap_get(&w->rev.map, w->text + start, size);
        if (e < 0) {
            e = (int32_t)w->rev.n;
            strmap_put(&w->rev.map, w->text + start, size, e);
            if (w->rev.n == w->rev.cap) { w->rev.cap = w->rev.cap ? 2 * w->rev.cap : 16; w->rev.left_len = xrealloc(w->rev.left_len, w->rev.cap * sizeof(size_t)); }
            w->rev.n++;
        }
        w->rev.left_len[e] = w->s[left].len;
    }
}

static int32_t piece_to_id(const spm_model *m, const char *p, size_t n)
{
    int32_t id = strmap_get(&m->reserved, p, n);
    if (id >= 0) return id;
    id = strmap_get(&m->pieces, p, n);
    return id >= 0 ? id : m->unk_id;
}

typedef struct { size_t start, len; int32_t id; } spm_out;
typedef struct { spm_out *v; size_t n, cap; } outvec;

static void out_push(outvec *o, size_t start, size_t len, int32_t id)
{
    if (o->n == o->cap) { o->cap = o->cap ? o->cap * 2 : 1024; o->v = xrealloc(o->v, o->cap * sizeof *o->v); }
    o->v[o->n].start = start;
    o->v[o->n].len = len;
    o->v[o->n].id = id;
    o->n++;
}

static void resegment(const spm_model *m, const spm_bpe *w, size_t start, size_t len, outvec *o, int depth)
{
    int32_t id = piece_to_id(m, w->text + start, len);
    if (id < 0 || m->type[id] != TOK_UNUSED || depth > 64) { out_push(o, start, len, id); return; }
    int32_t e = strmap_get(&w->rev.map, w->text + start, len);
    if (e < 0) { out_push(o, start, len, id); return; }
    size_t ll = w->rev.left_len[e];
    resegment(m, w, start, ll, o, depth + 1);
    resegment(m, w, start + ll, len - ll, o, depth + 1);
}

static void spm_bpe_encode(const spm_model *m, const char *t, size_t n, outvec *o)
{
    spm_bpe w;
    memset(&w, 0, sizeof w);
    w.text = t;
    strmap_init(&w.rev.map, 16);
    size_t cap = 1024, ns = 0;
    w.s = xmalloc(cap * sizeof *w.s);
    size_t i = 0;
    while (i < n) {
        int32_t v;
        size_t l = m->nuser ? trie_longest(&m->user_trie, t + i, n - i, &v) : 0;
        int freeze = l > 0;
        if (!l) { l = (size_t)utf8_lead_len((unsigned char)t[i]); if (l > n - i) l = n - i; }
        if (ns == cap) { cap *= 2; w.s = xrealloc(w.s, cap * sizeof *w.s); }
        w.s[ns].start = i;
        w.s[ns].len = (uint32_t)l;
        w.s[ns].freeze = freeze;
        ns++;
        i += l;
    }
    /* independent chunks: cut where no piece contains the boundary's byte pair (see bpe.c) */
    size_t a = 0;
    while (a < ns) {
        size_t b = a + 1;
        while (b < ns && bytepairs_has(&m->pairs, (unsigned char)t[w.s[b].start - 1], (unsigned char)t[w.s[b].start])) b++;
        for (size_t k = a; k < b; k++) {
            w.s[k].prev = k == a ? -1 : (int32_t)k - 1;
            w.s[k].next = k + 1 < b ? (int32_t)k + 1 : -1;
        }
        w.heap.n = 0;
        for (size_t k = a + 1; k < b; k++) maybe_add_pair(m, &w, (int32_t)k - 1, (int32_t)k);
        while (w.heap.n) {
            spm_pair top = sh_pop(&w.heap);
            spm_sym *L = &w.s[top.left], *R = &w.s[top.right];
            if (L->len == 0 || R->len == 0 || L->len + R->len != top.size) continue;
            L->len += R->len;
            L->next = R->next;
            if (R->next >= 0) w.s[R->next].prev = top.left;
            R->len = 0;
            maybe_add_pair(m, &w, L->prev, top.left);
            maybe_add_pair(m, &w, top.left, L->next);
        }
        for (size_t k = a; k < b; k++)
            if (w.s[k].len) resegment(m, &w, w.s[k].start, w.s[k].len, o, 0);
        a = b;
    }
    free(w.s);
    free(w.heap.h);
    strmap_free(&w.rev.map);
    free(w.rev.left_len);
}

/* ---------------------------------------------------------------------------------------------
 * unigram (unigram_model.cc, EncodeOptimized) */
typedef struct { int32_t id; float score; int64_t starts_at; } best_node;

static void spm_unigram_encode(const spm_model *m, const char *t, size_t n, outvec *o)
{
    best_node *best = xmalloc((n + 1) * sizeof *best);
    for (size_t i = 0; i <= n; i++) { best[i].id = -1; best[i].score = 0; best[i].starts_at = -1; }
    const float unk_score = m->min_score - 10.0f;
    size_t start = 0;
    while (start < n) {
        const float till_here = best[start].score;
        int has_single = 0;
        size_t mblen = (size_t)utf8_lead_len((unsigned char)t[start]);
        if (mblen > n - start) mblen = n - start;
        int32_t node = 0;
        for (size_t k = start; k < n; k++) {
            node = trie_step(&m->vocab_trie, node, (unsigned char)t[k]);
            if (node < 0) break;
            int32_t id = m->vocab_trie.val[node];
            if (id < 0 || m->type[id] == TOK_UNUSED) continue;
            size_t length = k + 1 - start;
            double score = m->type[id] == TOK_USER_DEFINED ? (double)((float)length * m->max_score) - 0.1 : (double)m->score[id];
            double cand = score + (double)till_here;
            best_node *tn = &best[k + 1];
            if (tn->starts_at == -1 || cand > (double)tn->score) {
                tn->score = (float)cand;
                tn->starts_at = (int64_t)start;
                tn->id = id;
            }
            if (!has_single && length == mblen) has_single = 1;
        }
        if (!has_single) {
            best_node *tn = &best[start + mblen];
            float cand = unk_score + till_here;
            if (tn->starts_at == -1 || cand > tn->score) {
                tn->score = cand;
                tn->starts_at = (int64_t)start;
                tn->id = m->unk_id;
            }
        }
        start += mblen;
    }
    /* backtrack, then reverse */
    size_t first = o->n;
    size_t end = n;
    while (end > 0) {
        const best_node *b = &best[end];
        out_push(o, (size_t)b->starts_at, end - (size_t)b->starts_at, b->id);
        end = (size_t)b->starts_at;
    }
    for (size_t i = first, j = o->n - 1; i < j; i++, j--) { spm_out x = o->v[i]; o->v[i] = o->v[j]; o->v[j] = x; }
    free(best);
}

int spm_encode(const spm_model *m, const char *text, size_t len, const char *what, idvec *ids)
{
    bytevec nb = { 0 };
    if (spm_normalize(m, text, len, what, &nb)) { free(nb.v); return -1; }
    outvec o = { 0 };
    if (nb.n) {
        if (m->model_type == SPM_BPE) spm_bpe_encode(m, nb.v, nb.n, &o);
        else spm_unigram_encode(m, nb.v, nb.n, &o);
    }
    int prev_unk = 0;
    for (size_t i = 0; i < o.n; i++) {
        int32_t id = o.v[i].id;
        int is_unk = id == m->unk_id;
        if (is_unk && m->byte_fallback) {
            for (size_t k = 0; k < o.v[i].len; k++) idvec_push(ids, (uint32_t)m->byte_id[(unsigned char)nb.v[o.v[i].start + k]]);
        } else if (!(is_unk && prev_unk)) {
            idvec_push(ids, (uint32_t)id);
        }
        prev_unk = is_unk;
    }
    free(o.v);
    free(nb.v);
    return 0;
}
