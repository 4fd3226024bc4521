/* tok_internal.h — what the tokenizer sources (src/tok/) share and nothing else sees: growable id
 * vectors, the hash tables for vocabularies (bytes -> id) and merge ranks ((id, id) -> rank, new id),
 * a byte trie (prefix matching of pieces / added tokens), UTF-8 and Unicode class helpers, the heap
 * of the merge loops, the two model descriptions (sentencepiece ModelProto, Hugging Face
 * tokenizer.json) and the merge loops. */
#ifndef CFSP_TOK_INTERNAL_H
#define CFSP_TOK_INTERNAL_H
#include "cfsp/tok/tokenizer.h"
#include <stddef.h>
#include <stdint.h>

/* ---- growable vectors ---- */
typedef struct { uint32_t *v; size_t n, cap; } idvec;
void idvec_push(idvec *a, uint32_t x);
typedef struct { char *v; size_t n, cap; } bytevec;
void bytevec_append(bytevec *b, const void *p, size_t n);

/* ---- bytes -> int32 (open addressing, FNV-1a; keys copied into an arena, each NUL-terminated;
 * entries in insertion order) ---- */
typedef struct {
    uint64_t *slot;            /* 0 = empty, else (entry index + 1) */
    uint32_t *hash;            /* per entry */
    int32_t *val;
    size_t *koff;              /* per entry: key offset in arena */
    uint32_t *klen;
    char *arena;
    size_t n, cap, mask, arena_n, arena_cap, ecap;
} strmap;
void strmap_init(strmap *m, size_t expected);
void strmap_free(strmap *m);
/* returns the old value if present (and leaves it), else inserts and returns -1 */
int32_t strmap_put(strmap *m, const char *k, size_t len, int32_t v);
int32_t strmap_get(const strmap *m, const char *k, size_t len);   /* -1 if absent */
uint32_t tok_hash(const char *k, size_t len);

/* ---- (a, b) -> (rank, new id): one slot = key and value together (one cache line per probe) ---- */
typedef struct { uint64_t key; uint32_t rank, nid; } pair_slot;
typedef struct { pair_slot *slot; size_t n, mask; } pairmap;
void pairmap_init(pairmap *m, size_t expected);
void pairmap_free(pairmap *m);
int pairmap_put(pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t nid);  /* 1 if already present */
static inline int pairmap_get(const pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *nid)
{
    uint64_t k = (uint64_t)a << 32 | b, h = k * 0x9E3779B97F4A7C15ULL;
    for (size_t i = (size_t)(h >> 40) & m->mask;; i = (i + 1) & m->mask) {
        const pair_slot *s = &m->slot[i];
        if (s->key == k) { *rank = s->rank; *nid = s->nid; return 1; }
        if (s->key == UINT64_MAX) return 0;
    }
}

/* ---- byte trie: node 0 is the root; value -1 = no key ends here ---- */
typedef struct { uint64_t *key; int32_t *child; size_t mask, nedge; int32_t *val; size_t nnode, capnode; } trie;
void trie_init(trie *t);
void trie_free(trie *t);
void trie_insert(trie *t, const char *k, size_t len, int32_t v);
static inline int32_t trie_step(const trie *t, int32_t node, unsigned char c)
{
    uint64_t k = (uint64_t)(uint32_t)node << 8 | c, h = (k + 1) * 0x9E3779B97F4A7C15ULL;
    for (size_t i = (size_t)(h >> 40) & t->mask;; i = (i + 1) & t->mask) {
        if (t->key[i] == k) return t->child[i];
        if (t->key[i] == UINT64_MAX) return -1;
    }
}
/* longest key that is a prefix of s[0..n): its length (0 if none) and value */
size_t trie_longest(const trie *t, const char *s, size_t n, int32_t *val);

/* ---- UTF-8 and Unicode classes ---- */
/* length of the UTF-8 sequence at s (n > 0 bytes available), 1..4; *cp = code point, or -1 if the
 * bytes are not valid UTF-8 (then the length is 1) */
int utf8_decode(const unsigned char *s, size_t n, int32_t *cp);
/* sentencepiece's OneCharLen: from the lead byte alone */
static inline int utf8_lead_len(unsigned char c) { return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4]; }
int uni_is_letter(int32_t cp);      /* general category L* */
int uni_is_number(int32_t cp);      /* general category N* */
int uni_is_space(int32_t cp);       /* White_Space (what \s matches in Oniguruma / Rust is_whitespace) */
int utf8_valid(const char *s, size_t n, size_t *bad_at);
/* out = s[0..n) (valid UTF-8) in NFC (compose 1) or NFD (compose 0), exactly as Hugging Face
 * tokenizers' NFC / NFD normalizers (Unicode 9.0.0 data, unicode_tables.h); out is overwritten */
void uni_normalize(const char *s, size_t n, int compose, bytevec *out);

/* ---- the pair-crossing table: bit (a << 8 | b) set if bytes a, b are adjacent in some vocab
 * string. A boundary whose bytes are not is never crossed by any merge (see bpe.c). ---- */
typedef struct { uint64_t bits[1024]; } bytepairs;
void bytepairs_add(bytepairs *p, const char *s, size_t n);
static inline int bytepairs_has(const bytepairs *p, unsigned char a, unsigned char b)
{
    unsigned k = (unsigned)a << 8 | b;
    return (int)(p->bits[k >> 6] >> (k & 63) & 1);
}

/* ---- a binary min-heap in a growable array (HEAP: { T *h; size_t n, cap; }); BEFORE(a, b) on two
 * T pointers is true when a pops first. Expands to static NAME_push and NAME_pop (pop needs n > 0):
 * the heaps of bpe.c (merges by rank, position) and spm.c (piece pairs by score, position). Users
 * include cfsp/util/util.h (xrealloc). ---- */
#define TOK_HEAP(NAME, HEAP, T, BEFORE)                                                                \
    static void NAME##_push(HEAP *h, T it)                                                             \
    {                                                                                                  \
        if (h->n == h->cap) {                                                                          \
            h->cap = h->cap ? h->cap * 2 : 256;                                                        \
            h->h = xrealloc(h->h, h->cap * sizeof *h->h);                                              \
        }                                                                                              \
        size_t i = h->n++;                                                                             \
        while (i > 0) {                                                                                \
            size_t p = (i - 1) / 2;                                                                    \
            if (!BEFORE(&it, &h->h[p])) break;                                                         \
            h->h[i] = h->h[p];                                                                         \
            i = p;                                                                                     \
        }                                                                                              \
        h->h[i] = it;                                                                                  \
    }                                                                                                  \
    static T NAME##_pop(HEAP *h)                                                                       \
    {                                                                                                  \
        T top = h->h[0], last = h->h[--h->n];                                                          \
        size_t i = 0, n = h->n;                                                                        \
        for (;;) {                                                                                     \
            size_t c = 2 * i + 1;                                                                      \
            if (c >= n) break;                                                                         \
            if (c + 1 < n && BEFORE(&h->h[c + 1], &h->h[c])) c++;                                      \
            if (!BEFORE(&h->h[c], &last)) break;                                                       \
            h->h[i] = h->h[c];                                                                         \
            i = c;                                                                                     \
        }                                                                                              \
        if (n) h->h[i] = last;                                                                         \
        return top;                                                                                    \
    }

/* ---- Hugging Face rank-ordered BPE over initial symbols (ids with byte lengths) ----
 * Exactly the merge loop of tokenizers' Word::merge_all without dropout: a min-heap of
 * (rank, position), stale entries skipped by re-checking the pair's new id. */
typedef struct { uint32_t id; uint32_t len; int32_t prev, next; } bpe_sym;
typedef struct { uint32_t rank, pos, nid; } bpe_item;
typedef struct { bpe_item *h; size_t n, cap; } bpe_heap;
void hf_merge_all(const pairmap *merges, bpe_sym *s, int32_t n, bpe_heap *heap);

/* ---- sentencepiece ---- */
enum { SPM_UNIGRAM = 1, SPM_BPE = 2, SPM_WORD = 3, SPM_CHAR = 4 };
typedef struct {
    int npieces;
    char **piece;
    uint32_t *plen;
    float *score;
    uint8_t *type;             /* TOK_NORMAL .. TOK_BYTE (tokenizer.h) */
    int model_type, byte_fallback, unk_id, bos_id, eos_id, treat_ws_suffix;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    int32_t byte_id[256];
    float min_score, max_score;
    strmap pieces;             /* NORMAL, USER_DEFINED, UNUSED */
    strmap reserved;           /* CONTROL, UNKNOWN, BYTE */
    trie vocab_trie;           /* unigram: the pieces map as a trie */
    trie user_trie;            /* user-defined symbols (prefix matcher) */
    int nuser;
    bytepairs pairs;
    /* precompiled charsmap: darts-clone double array + NUL-separated replacements */
    uint32_t *cm_units;
    size_t cm_nunits;
    char *cm_norm;
    size_t cm_norm_len;
} spm_model;

int spm_parse(const unsigned char *data, size_t len, const char *fname, spm_model *m);
void spm_free(spm_model *m);
int spm_encode(const spm_model *m, const char *text, size_t len, const char *what, idvec *out);

/* ---- Hugging Face tokenizer.json ---- */
enum { HN_PREPEND = 1, HN_REPLACE, HN_NFC, HN_NFD };
typedef struct { int type; char *a, *b; size_t alen, blen; } hf_norm;
enum { HP_BYTELEVEL = 1, HP_SPLIT, HP_METASPACE };
enum { SB_REMOVED = 0, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS };
/* the alternatives of the GPT-2 / LLaMA-3 / Qwen2 split patterns, matched by hand (hf_regex.c) */
enum { RX_LITERAL = 1, RX_LETTERS_OPT_PREFIX, RX_SPACE_LETTERS, RX_NUMBERS, RX_SPACE_NUMBERS,
       RX_SPACE_OTHER_NL, RX_SPACE_OTHER, RX_WS_NEWLINES, RX_WS_NOT_BEFORE_NONWS, RX_WS };
typedef struct {
    int kind;
    int maxrep;                /* RX_NUMBERS: \p{N}{1,k}; 0 = unbounded (\p{N}+) */
    char lit[8];               /* RX_LITERAL: ASCII text, case-insensitive if ci */
    int litlen, ci;
} rx_alt;
#define RX_MAX_ALT 32
int rx_compile(const char *pattern, const char *fname, const char *field, rx_alt *alt, int *nalt);
typedef struct {
    int type;
    int add_prefix_space, use_regex;       /* ByteLevel */
    int nalt;                              /* Split with a regex: its alternatives */
    rx_alt alt[RX_MAX_ALT];
    char *str;                             /* Split with a string pattern, Metaspace replacement */
    size_t slen;
    int behavior, invert;
    int prepend;                           /* Metaspace: 0 never, 1 first, 2 always */
    int split;
} hf_pretok;
typedef struct { char *s; size_t len; uint32_t id; uint8_t single_word, lstrip, rstrip, normalized, special; } hf_added;
enum { HD_METASPACE = 1, HD_BYTEFALLBACK = 2, HD_BYTELEVEL = 4 };   /* decoder steps the vocabulary view notes */
typedef struct {
    hf_norm *norm;
    int nnorm;
    hf_pretok *pre;
    int npre;
    int bytelevel;                          /* words are bytes; vocab keys were mapped back to bytes */
    hf_added *added;
    int nadded;
    trie added_raw, added_norm;             /* value = index into added */
    strmap tokens;                          /* model.vocab as the file spells it -> id (file order) */
    strmap vocab;                           /* the same with byte-level keys mapped back to bytes */
    pairmap merges;
    uint32_t *merge_list;                   /* [nmerge_list][3]: model.merges in rank order: a, b -> ab */
    int nmerge_list;
    int32_t unk_id;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256];                   /* <0xXX> tokens, -1 if absent */
    int32_t ascii_id[256];                  /* single-unit tokens for bytes < 0x80 (or all bytes if bytelevel) */
    bytepairs pairs;
    int vocab_size;
    int bos_id;
    /* noted for the vocabulary view (tokenizer_info), not used for encoding */
    int decoder;                            /* HD_* steps the decoder has (through Sequence) */
    int pre_gpt2;                           /* pre_tokenizer is one ByteLevel with its regex */
    char *template_first;                   /* TemplateProcessing's first special token, or NULL */
} hf_model;

int hf_parse(const char *json, size_t len, const char *fname, hf_model *m);
void hf_free(hf_model *m);
int hf_token_id(const hf_model *m, const char *s);   /* added tokens, then the vocab; -1 */
int hf_added_id(const hf_model *m, const char *s);   /* added tokens only; -1 */
int hf_encode(const hf_model *m, const char *text, size_t len, const char *what, idvec *out);
/* the pre-tokenizer regex alternatives, exported for the unit test */
size_t hf_regex_match(const rx_alt *alt, int nalt, const char *s, size_t n, size_t i);

struct cfsp_tokenizer {
    int kind;                  /* TOK_FILE_SPM | TOK_FILE_HF */
    spm_model spm;
    hf_model hf;
    int bos_id;
    int adds_bos;              /* tokenizer_adds_bos */
    int vocab_size;
    char source[4096];
    char desc[256];
};
#endif
