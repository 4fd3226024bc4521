/* tok_util.c — the tokenizer's containers (id vectors, string and pair hash tables, byte trie),
 * UTF-8 decoding, the Unicode classes \p{L}, \p{N}, White_Space and the canonical normalization
 * forms NFC / NFD (see tok_internal.h). */
#include "tok_internal.h"
#include "cfsp/util/util.h"
#include "unicode_tables.h"
#include <stdlib.h>
#include <string.h>

void idvec_push(idvec *a, uint32_t x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 1024;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

void bytevec_append(bytevec *b, const void *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n + 1) c *= 2;
        b->v = xrealloc(b->v, c);
        b->cap = c;
    }
    if (n) memcpy(b->v + b->n, p, n);
    b->n += n;
    b->v[b->n] = 0;
}

uint32_t tok_hash(const char *k, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

/* ---- strmap ---- */
static size_t pow2_at_least(size_t x)
{
    size_t c = 16;
    while (c < x) c *= 2;
    return c;
}

void strmap_init(strmap *m, size_t expected)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 16);
    m->mask = m->cap - 1;
    m->slot = xcalloc(m->cap, sizeof *m->slot);
}

void strmap_free(strmap *m)
{
    free(m->slot); free(m->hash); free(m->val); free(m->koff); free(m->klen); free(m->arena);
    memset(m, 0, sizeof *m);
}

static void strmap_grow(strmap *m)
{
    size_t cap = m->cap * 2;
    uint64_t *slot = xcalloc(cap, sizeof *slot);
    for (size_t e = 0; e < m->n; e++) {
        size_t i = m->hash[e] & (cap - 1);
        while (slot[i]) i = (i + 1) & (cap - 1);
        slot[i] = e + 1;
    }
    free(m->slot);
    m->slot = slot;
    m->cap = cap;
    m->mask = cap - 1;
}

int32_t strmap_get(const strmap *m, const char *k, size_t len)
{
    if (!m->slot) return -1;
    uint32_t h = tok_hash(k, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slot[i];
        if (!s) return -1;
        size_t e = (size_t)s - 1;
        if (m->hash[e] == h && m->klen[e] == len && !memcmp(m->arena + m->koff[e], k, len)) return m->val[e];
    }
}

int32_t strmap_put(strmap *m, const char *k, size_t len, int32_t v)
{
    int32_t old = strmap_get(m, k, len);
    if (old >= 0) return old;
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    if (m->n == m->ecap) {
        m->ecap = m->ecap ? m->ecap * 2 : 256;
        m->hash = xrealloc(m->hash, m->ecap * sizeof *m->hash);
        m->val = xrealloc(m->val, m->ecap * sizeof *m->val);
        m->koff = xrealloc(m->koff, m->ecap * sizeof *m->koff);
        m->klen = xrealloc(m->klen, m->ecap * sizeof *m->klen);
    }
    if (m->arena_n + len + 1 > m->arena_cap) {
        size_t c = m->arena_cap ? m->arena_cap : 4096;
        while (c < m->arena_n + len + 1) c *= 2;
        m->arena = xrealloc(m->arena, c);
        m->arena_cap = c;
    }
    size_t e = m->n++;
    uint32_t h = tok_hash(k, len);
    m->hash[e] = h;
    m->val[e] = v;
    m->koff[e] = m->arena_n;
    m->klen[e] = (uint32_t)len;
    if (len) memcpy(m->arena + m->arena_n, k, len);
    m->arena[m->arena_n + len] = 0;                  /* keys are NUL-terminated in the arena */
    m->arena_n += len + 1;
    size_t i = h & m->mask;
    while (m->slot[i]) i = (i + 1) & m->mask;
    m->slot[i] = e + 1;
    return -1;
}

/* ---- pairmap ---- */
void pairmap_init(pairmap *m, size_t expected)
{
    size_t cap = pow2_at_least(expected * 2 + 16);
    m->slot = xmalloc(cap * sizeof *m->slot);
    for (size_t i = 0; i < cap; i++) { m->slot[i].key = UINT64_MAX; m->slot[i].rank = m->slot[i].nid = 0; }
    m->mask = cap - 1;
    m->n = 0;
}

void pairmap_free(pairmap *m)
{
    free(m->slot);
    memset(m, 0, sizeof *m);
}

int pairmap_put(pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t nid)
{
    uint64_t k = (uint64_t)a << 32 | b, h = k * 0x9E3779B97F4A7C15ULL;
    size_t i = (size_t)(h >> 40) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        if (m->slot[i].key == k) return 1;
        if (m->slot[i].key == UINT64_MAX) break;
    }
    if ((m->n + 1) * 2 > m->mask + 1) {       /* the caller sized it; grow anyway if needed */
        pairmap g;
        pairmap_init(&g, m->mask + 1);
        for (size_t j = 0; j <= m->mask; j++)
            if (m->slot[j].key != UINT64_MAX)
                pairmap_put(&g, (uint32_t)(m->slot[j].key >> 32), (uint32_t)m->slot[j].key, m->slot[j].rank, m->slot[j].nid);
        pairmap_free(m);
        *m = g;
        return pairmap_put(m, a, b, rank, nid);
    }
    m->slot[i].key = k;
    m->slot[i].rank = rank;
    m->slot[i].nid = nid;
    m->n++;
    return 0;
}

/* ---- trie: edges in one hash table keyed by (node << 8 | byte) ---- */
void trie_init(trie *t)
{
    memset(t, 0, sizeof *t);
    size_t cap = 64;
    t->key = xmalloc(cap * sizeof *t->key);
    for (size_t i = 0; i < cap; i++) t->key[i] = UINT64_MAX;
    t->child = xcalloc(cap, sizeof *t->child);
    t->mask = cap - 1;
    t->capnode = 64;
    t->val = xmalloc(t->capnode * sizeof *t->val);
    t->val[0] = -1;
    t->nnode = 1;
}

void trie_free(trie *t)
{
    free(t->key); free(t->child); free(t->val);
    memset(t, 0, sizeof *t);
}

static void trie_put_edge(trie *t, uint64_t k, int32_t child)
{
    uint64_t h = (k + 1) * 0x9E3779B97F4A7C15ULL;
    size_t i = (size_t)(h >> 40) & t->mask;
    while (t->key[i] != UINT64_MAX) i = (i + 1) & t->mask;
    t->key[i] = k;
    t->child[i] = child;
}

void trie_insert(trie *t, const char *k, size_t len, int32_t v)
{
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)k[i];
        int32_t nx = trie_step(t, node, c);
        if (nx < 0) {
            if ((t->nedge + 1) * 2 > t->mask + 1) {
                size_t cap = (t->mask + 1) * 2;
                uint64_t *ok = t->key;
                int32_t *oc = t->child;
                size_t om = t->mask;
                t->key = xmalloc(cap * sizeof *t->key);
                for (size_t j = 0; j < cap; j++) t->key[j] = UINT64_MAX;
                t->child = xcalloc(cap, sizeof *t->child);
                t->mask = cap - 1;
                for (size_t j = 0; j <= om; j++) if (ok[j] != UINT64_MAX) trie_put_edge(t, ok[j], oc[j]);
                free(ok); free(oc);
            }
            if (t->nnode == t->capnode) {
                t->capnode *= 2;
                t->val = xrealloc(t->val, t->capnode * sizeof *t->val);
            }
            nx = (int32_t)t->nnode++;
            t->val[nx] = -1;
            trie_put_edge(t, (uint64_t)(uint32_t)node << 8 | c, nx);
            t->nedge++;
        }
        node = nx;
    }
    if (t->val[node] < 0) t->val[node] = v;   /* the first insertion of a key wins */
}

size_t trie_longest(const trie *t, const char *s, size_t n, int32_t *val)
{
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        node = trie_step(t, node, (unsigned char)s[i]);
        if (node < 0) break;
        if (t->val[node] >= 0) { best = i + 1; *val = t->val[node]; }
    }
    return best;
}

/* ---- UTF-8 ---- */
int utf8_decode(const unsigned char *s, size_t n, int32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) { *cp = (int32_t)c; return 1; }
    int len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = -1; return 1; }
    if ((size_t)len > n) { *cp = -1; return 1; }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = -1; return 1; }
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = -1; return 1; }
    *cp = (int32_t)v;
    return len;
}

int utf8_valid(const char *s, size_t n, size_t *bad_at)
{
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) { i++; continue; }
        int32_t cp;
        int l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cp < 0) { *bad_at = i; return 0; }
        i += (size_t)l;
    }
    return 1;
}

/* ---- Unicode classes ---- */
/* the class (UNI_L, UNI_N) of the range of unicode_tables.h holding cp, 0 if none does */
static uint32_t uni_class(uint32_t cp)
{
    size_t lo = 0, hi = sizeof uni_ranges / sizeof uni_ranges[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_ranges[mid][0]) hi = mid;
        else if (cp > uni_ranges[mid][1]) lo = mid + 1;
        else return uni_ranges[mid][2];
    }
    return 0;
}

int uni_is_letter(int32_t cp)
{
    if (cp < 0) return 0;
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return uni_class((uint32_t)cp) == UNI_L;
}

int uni_is_number(int32_t cp)
{
    if (cp < 0) return 0;
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return uni_class((uint32_t)cp) == UNI_N;
}

int uni_is_space(int32_t cp)
{
    if (cp < 0x80) return (cp >= 9 && cp <= 13) || cp == 32;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

void bytepairs_add(bytepairs *p, const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        unsigned k = (unsigned)(unsigned char)s[i] << 8 | (unsigned char)s[i + 1];
        p->bits[k >> 6] |= 1ULL << (k & 63);
    }
}

/* ---- canonical normalization: tokenizer.json's NFC / NFD ----
 * Exactly tokenizers' NormalizedString::nfc / nfd (the crate unicode-normalization-alignments, Unicode
 * 9.0.0 tables; unicode_tables.h): full canonical decomposition (Hangul syllables algorithmically),
 * each run of non-starters stably sorted by combining class, then (NFC) the crate's composition loop:
 * a starter composes with a following code point it is not blocked from (no code point between them
 * with a class >= its class, or a starter), by the pair table or the Hangul L+V / LV+T arithmetic.
 * Text is normalized unit by unit between "quiet" code points (unicode_tables.h uni_busy: nothing
 * before one reorders or composes with it or past it); runs of quiet code points, ASCII first of all,
 * are copied as they are, and a unit starts at the quiet code point before its first busy one (which
 * may be the starter a mark composes with). */
enum { H_SBASE = 0xAC00, H_LBASE = 0x1100, H_VBASE = 0x1161, H_TBASE = 0x11A7,
       H_LCOUNT = 19, H_VCOUNT = 21, H_TCOUNT = 28, H_NCOUNT = 21 * 28, H_SCOUNT = 19 * 21 * 28 };

/* the row of a sorted {first, last, value} range table holding cp, or -1 */
static long range_find(const uint32_t (*t)[3], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < t[mid][0]) hi = mid;
        else if (cp > t[mid][1]) lo = mid + 1;
        else return (long)mid;
    }
    return -1;
}

static uint32_t norm_ccc(uint32_t cp)
{
    if (cp < 0x300) return 0;
    long r = range_find(uni_ccc, sizeof uni_ccc / sizeof uni_ccc[0], cp);
    return r < 0 ? 0 : uni_ccc[r][2];
}

static int norm_busy(uint32_t cp, uint32_t below, uint32_t flag)
{
    if (cp < below) return 0;
    long r = range_find(uni_busy, sizeof uni_busy / sizeof uni_busy[0], cp);
    return r >= 0 && (uni_busy[r][2] & flag);
}

static const uint32_t *norm_decomp(uint32_t cp)
{
    size_t lo = 0, hi = sizeof uni_decomp / sizeof uni_decomp[0];
    if (cp < uni_decomp[0][0]) return NULL;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_decomp[mid][0]) hi = mid;
        else if (cp > uni_decomp[mid][0]) lo = mid + 1;
        else return uni_decomp[mid];
    }
    return NULL;
}

/* a b -> the composite, or 0 */
static uint32_t norm_compose(uint32_t a, uint32_t b)
{
    if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE && b < H_VBASE + H_VCOUNT)
        return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) * H_TCOUNT;
    if (a >= H_SBASE && a < H_SBASE + H_SCOUNT && b > H_TBASE && b < H_TBASE + H_TCOUNT && (a - H_SBASE) % H_TCOUNT == 0)
        return a + (b - H_TBASE);
    size_t lo = 0, hi = sizeof uni_comp / sizeof uni_comp[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = uni_comp[mid];
        if (a < e[0] || (a == e[0] && b < e[1])) hi = mid;
        else if (a > e[0] || b > e[1]) lo = mid + 1;
        else return e[2];
    }
    return 0;
}

/* one unit's code points, each packed as class << 24 | cp; run = where the pending non-starters begin */
typedef struct { uint32_t *v; size_t n, cap, run; uint32_t local[128]; } normbuf;

static void nb_sort_run(normbuf *b)
{
    uint32_t *v = b->v + b->run;
    size_t n = b->n - b->run;
    if (n < 2) return;
    if (n <= 64) {                                    /* stable insertion sort by class */
        for (size_t i = 1; i < n; i++) {
            uint32_t x = v[i];
            size_t j = i;
            while (j > 0 && (v[j - 1] >> 24) > (x >> 24)) { v[j] = v[j - 1]; j--; }
            v[j] = x;
        }
        return;
    }
    size_t count[257] = { 0 };                        /* a long run: stable counting sort */
    for (size_t i = 0; i < n; i++) count[(v[i] >> 24) + 1]++;
    for (int c = 0; c < 256; c++) count[c + 1] += count[c];
    uint32_t *t = xmalloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) t[count[v[i] >> 24]++] = v[i];
    memcpy(v, t, n * sizeof *t);
    free(t);
}

static void nb_push(normbuf *b, uint32_t cp)
{
    uint32_t cc = norm_ccc(cp);
    if (cc == 0) nb_sort_run(b);
    if (b->n == b->cap) {
        size_t cap = b->cap * 2;
        if (b->v == b->local) {
            b->v = xmalloc(cap * sizeof *b->v);
            memcpy(b->v, b->local, b->n * sizeof *b->v);
        } else {
            b->v = xrealloc(b->v, cap * sizeof *b->v);
        }
        b->cap = cap;
    }
    b->v[b->n++] = cc << 24 | cp;
    if (cc == 0) b->run = b->n;
}

static void nb_decompose(normbuf *b, uint32_t cp)
{
    if (cp >= H_SBASE && cp < H_SBASE + H_SCOUNT) {
        uint32_t s = cp - H_SBASE;
        nb_push(b, H_LBASE + s / H_NCOUNT);
        nb_push(b, H_VBASE + s % H_NCOUNT / H_TCOUNT);
        if (s % H_TCOUNT) nb_push(b, H_TBASE + s % H_TCOUNT);
        return;
    }
    const uint32_t *d = norm_decomp(cp);
    if (!d) { nb_push(b, cp); return; }
    nb_decompose(b, d[1]);
    if (d[2]) nb_decompose(b, d[2]);
}

static void put_utf8(bytevec *out, uint32_t cp)
{
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (unsigned char)(0xC0 | cp >> 6); u[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | cp >> 12); u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | cp >> 18); u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)); u[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4;
    }
    bytevec_append(out, u, n);
}

/* one unit s[0..n) (valid UTF-8): decomposed, ordered, composed (NFC), appended to out */
static void norm_unit(const unsigned char *s, size_t n, int compose, normbuf *b, bytevec *out)
{
    b->n = b->run = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        i += (size_t)utf8_decode(s + i, n - i, &cp);
        nb_decompose(b, cp < 0 ? 0xFFFD : (uint32_t)cp);    /* (the caller passes valid UTF-8) */
    }
    nb_sort_run(b);
    size_t w = b->n;
    if (compose) {
        /* the crate's Recompositions: composee = the last starter kept (-1: none yet; leading
         * non-starters pass through), last = the class of the last code point kept after it (-1: none) */
        long starter = -1;
        int last = -1;
        w = 0;
        for (size_t r = 0; r < b->n; r++) {
            uint32_t x = b->v[r], cp = x & 0xFFFFFF;
            int cc = (int)(x >> 24);
            if (starter < 0) {
                b->v[w++] = x;
                if (cc == 0) { starter = (long)w - 1; last = -1; }
                continue;
            }
            if (last >= 0 && last >= cc) {             /* blocked from the composee */
                b->v[w++] = x;
                if (cc == 0) { starter = (long)w - 1; last = -1; }
                else last = cc;
                continue;
            }
            uint32_t c = norm_compose(b->v[starter] & 0xFFFFFF, cp);
            if (c) { b->v[starter] = c; continue; }   /* a composite's class is 0 (not read again) */
            b->v[w++] = x;
            if (cc == 0 && last < 0) { starter = (long)w - 1; }
            else last = cc;
        }
    }
    for (size_t k = 0; k < w; k++) put_utf8(out, b->v[k] & 0xFFFFFF);
}

void uni_normalize(const char *s, size_t n, int compose, bytevec *out)
{
    const unsigned char *u = (const unsigned char *)s;
    const uint32_t below = compose ? UNI_NFC_QUIET_BELOW : UNI_NFD_QUIET_BELOW;
    const uint32_t flag = compose ? UNI_NFC_BUSY : UNI_NFD_BUSY;
    normbuf b;
    b.v = b.local;
    b.cap = sizeof b.local / sizeof b.local[0];
    b.n = b.run = 0;
    out->n = 0;
    size_t done = 0, i = 0;                          /* s[0..done) is in out */
    while (i < n) {
        if (u[i] < 0x80) {
            uint64_t w8;
            while (i + 8 <= n && (memcpy(&w8, u + i, 8), !(w8 & 0x8080808080808080ULL))) i += 8;
            while (i < n && u[i] < 0x80) i++;
            continue;
        }
        int32_t cp;
        int l = utf8_decode(u + i, n - i, &cp);
        if (cp < 0 || !norm_busy((uint32_t)cp, below, flag)) { i += (size_t)l; continue; }
        size_t a = i;                                 /* the unit starts at the quiet code point before */
        if (a > done) { a--; while (a > done && (u[a] & 0xC0) == 0x80) a--; }
        size_t e = i + (size_t)l;                     /* and ends before the next quiet one */
        while (e < n && u[e] >= 0x80) {
            int32_t c2;
            int l2 = utf8_decode(u + e, n - e, &c2);
            if (c2 < 0 || !norm_busy((uint32_t)c2, below, flag)) break;
            e += (size_t)l2;
        }
        bytevec_append(out, s + done, a - done);
        norm_unit(u + a, e - a, compose, &b, out);
        done = i = e;
    }
    bytevec_append(out, s + done, n - done);
    if (b.v != b.local) free(b.v);
}
