/* hf_regex.c — the pre-tokenizer split patterns of GPT-2, LLaMA-3 (cl100k) and Qwen2, matched by
 * hand over UTF-8 code points with the Unicode classes \p{L}, \p{N} and \s (White_Space).
 *
 * A pattern is accepted when each of its top-level alternatives is one of the known fragments
 * below (or a literal such as 's, or a case-insensitive group of literals (?i:'s|'t|...)); the
 * matcher then tries the alternatives in order at each position, as a backtracking engine
 * (Oniguruma, used by tokenizers) does — every fragment's own greedy/backtracking result is
 * computed directly:
 *   [^\r\n\p{L}\p{N}]?\p{L}+    one optional non-letter/number/CR/LF, then letters
 *    ?\p{L}+   ?\p{N}+          optional space, then letters / numbers
 *   \p{N}{1,3}  \p{N}  \p{N}+   1..k numbers
 *    ?[^\s\p{L}\p{N}]+[\r\n]*   optional space, other symbols, then CR/LF run
 *    ?[^\s\p{L}\p{N}]+          optional space, other symbols
 *   \s*[\r\n]+                  whitespace up to and including the run's last CR/LF
 *   \s+(?!\S)                   whitespace not followed by a non-space (all but the last char
 *                               of a run that precedes a non-space)
 *   \s+                         whitespace run */
#include "tok_internal.h"
#include "cfsp/util/err.h"
#include <string.h>

static const struct { const char *text; int kind, maxrep; } fragments[] = {
    { "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+", RX_LETTERS_OPT_PREFIX, 0 },
    { " ?\\p{L}+", RX_SPACE_LETTERS, 0 },
    { "\\p{N}{1,3}", RX_NUMBERS, 3 },
    { "\\p{N}{1,2}", RX_NUMBERS, 2 },
    { "\\p{N}", RX_NUMBERS, 1 },
    { "\\p{N}+", RX_NUMBERS, 0 },
    { " ?\\p{N}+", RX_SPACE_NUMBERS, 0 },
    { " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*", RX_SPACE_OTHER_NL, 0 },
    { " ?[^\\s\\p{L}\\p{N}]+", RX_SPACE_OTHER, 0 },
    { "\\s*[\\r\\n]+", RX_WS_NEWLINES, 0 },
    { "\\s+(?!\\S)", RX_WS_NOT_BEFORE_NONWS, 0 },
    { "\\s+", RX_WS, 0 },
};

static int is_literal(const char *s, size_t n)
{
    if (n == 0 || n >= sizeof(((rx_alt *)0)->lit)) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || c < 0x20 || strchr("\\.*+?()[]{}|^$", c)) return 0;
    }
    return 1;
}

static int add_literal(const char *s, size_t n, int ci, const char *fname, const char *field, rx_alt *alt, int *nalt)
{
    if (*nalt >= RX_MAX_ALT) return FAIL("%s: %s: more than %d alternatives", fname, field, RX_MAX_ALT);
    rx_alt *a = &alt[(*nalt)++];
    memset(a, 0, sizeof *a);
    a->kind = RX_LITERAL;
    memcpy(a->lit, s, n);
    a->litlen = (int)n;
    a->ci = ci;
    return 0;
}

/* split s[0..n) at top-level '|' (outside (), [] and escapes); calls back with each piece */
static int split_alts(const char *s, size_t n, size_t *starts, size_t *lens, int max, int *count)
{
    int depth = 0, in_class = 0, k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            char c = s[i];
            if (c == '\\') { i++; continue; }
            if (in_class) { if (c == ']') in_class = 0; continue; }
            if (c == '[') { in_class = 1; continue; }
            if (c == '(') { depth++; continue; }
            if (c == ')') { depth--; continue; }
            if (c != '|' || depth != 0) continue;
        }
        if (k >= max) return -1;
        starts[k] = start;
        lens[k] = i - start;
        k++;
        start = i + 1;
    }
    *count = k;
    return depth == 0 && !in_class ? 0 : -1;
}

int rx_compile(const char *pat, const char *fname, const char *field, rx_alt *alt, int *nalt)
{
    size_t st[RX_MAX_ALT], ln[RX_MAX_ALT];
    int k = 0;
    size_t n = strlen(pat);
    *nalt = 0;
    if (split_alts(pat, n, st, ln, RX_MAX_ALT, &k))
        return FAIL("%s: %s: cannot split the pattern into alternatives (unbalanced or more than %d)", fname, field, RX_MAX_ALT);
    for (int i = 0; i < k; i++) {
        const char *a = pat + st[i];
        size_t l = ln[i];
        if (l > 5 && !strncmp(a, "(?i:", 4) && a[l - 1] == ')') {
            size_t s2[RX_MAX_ALT], l2[RX_MAX_ALT];
            int k2 = 0;
            if (split_alts(a + 4, l - 5, s2, l2, RX_MAX_ALT, &k2))
                return FAIL("%s: %s: cannot split the group '%.*s'", fname, field, (int)l, a);
            for (int j = 0; j < k2; j++) {
                if (!is_literal(a + 4 + s2[j], l2[j]))
                    return FAIL("%s: %s: unsupported alternative '%.*s' inside '%.*s' (only literals)", fname, field,
                                (int)l2[j], a + 4 + s2[j], (int)l, a);
                if (add_literal(a + 4 + s2[j], l2[j], 1, fname, field, alt, nalt)) return -1;
            }
            continue;
        }
        if (is_literal(a, l)) {
            if (add_literal(a, l, 0, fname, field, alt, nalt)) return -1;
            continue;
        }
        int found = 0;
        for (size_t f = 0; f < sizeof fragments / sizeof fragments[0]; f++)
            if (strlen(fragments[f].text) == l && !memcmp(fragments[f].text, a, l)) {
                if (*nalt >= RX_MAX_ALT) return FAIL("%s: %s: more than %d alternatives", fname, field, RX_MAX_ALT);
                rx_alt *r = &alt[(*nalt)++];
                memset(r, 0, sizeof *r);
                r->kind = fragments[f].kind;
                r->maxrep = fragments[f].maxrep;
                found = 1;
                break;
            }
        if (!found)
            return FAIL("%s: %s: unsupported regex alternative '%.*s' (the GPT-2, LLaMA-3 and Qwen2 split patterns are supported)",
                        fname, field, (int)l, a);
    }
    if (*nalt == 0) return FAIL("%s: %s: empty pattern", fname, field);
    return 0;
}

/* ---- matching (text is valid UTF-8) ---- */
static inline int32_t cp_at(const char *s, size_t n, size_t i, int *len)
{
    if (i >= n) { *len = 0; return -1; }
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) { *len = 1; return c; }
    int32_t cp;
    *len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
    return cp;
}

#define IS_L(c) uni_is_letter(c)
#define IS_N(c) uni_is_number(c)
#define IS_S(c) ((c) >= 0 && uni_is_space(c))
#define IS_OTHER(c) ((c) >= 0 && !IS_S(c) && !IS_L(c) && !IS_N(c))
#define IS_CRLF(c) ((c) == '\r' || (c) == '\n')

static size_t run_of(const char *s, size_t n, size_t i, int cls, int max)
{
    size_t j = i;
    int count = 0, l;
    while (j < n && (max == 0 || count < max)) {
        int32_t c = cp_at(s, n, j, &l);
        int ok = cls == 0 ? IS_L(c) : cls == 1 ? IS_N(c) : cls == 2 ? IS_S(c) : cls == 3 ? IS_OTHER(c) : IS_CRLF(c);
        if (!ok) break;
        j += (size_t)l;
        count++;
    }
    return j - i;
}

static int32_t fold(int32_t c)
{
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';          /* LATIN SMALL LETTER LONG S folds to s */
    if (c == 0x212A) return 'k';         /* KELVIN SIGN folds to k */
    return c;
}

static size_t match_one(const rx_alt *a, const char *s, size_t n, size_t i)
{
    int l0, l1;
    int32_t c0 = cp_at(s, n, i, &l0);
    switch (a->kind) {
    case RX_LITERAL: {
        size_t j = i;
        for (int k = 0; k < a->litlen; k++) {
            int l;
            int32_t c = cp_at(s, n, j, &l);
            if (c < 0) return 0;
            if (a->ci ? fold(c) != fold((unsigned char)a->lit[k]) : c != (unsigned char)a->lit[k]) return 0;
            j += (size_t)l;
        }
        return j - i;
    }
    case RX_LETTERS_OPT_PREFIX:
        if (IS_L(c0)) return run_of(s, n, i, 0, 0);
        if (c0 >= 0 && !IS_CRLF(c0) && !IS_N(c0)) {
            size_t r = run_of(s, n, i + (size_t)l0, 0, 0);
            if (r) return (size_t)l0 + r;
        }
        return 0;
    case RX_SPACE_LETTERS:
    case RX_SPACE_NUMBERS: {
        int cls = a->kind == RX_SPACE_LETTERS ? 0 : 1;
        if (c0 == ' ') {
            size_t r = run_of(s, n, i + 1, cls, 0);
            if (r) return 1 + r;
            return 0;
        }
        return run_of(s, n, i, cls, 0);
    }
    case RX_NUMBERS:
        return run_of(s, n, i, 1, a->maxrep);
    case RX_SPACE_OTHER_NL:
    case RX_SPACE_OTHER: {
        size_t j = i;
        if (c0 == ' ') {
            int32_t c1 = cp_at(s, n, i + 1, &l1);
            if (IS_OTHER(c1)) j = i + 1;
        }
        size_t r = run_of(s, n, j, 3, 0);
        if (!r) return 0;
        j += r;
        if (a->kind == RX_SPACE_OTHER_NL) j += run_of(s, n, j, 4, 0);
        return j - i;
    }
    case RX_WS_NEWLINES: {
        if (!IS_S(c0)) return 0;
        size_t j = i, end = 0;
        int l;
        while (j < n) {
            int32_t c = cp_at(s, n, j, &l);
            if (!IS_S(c)) break;
            j += (size_t)l;
            if (IS_CRLF(c)) end = j;
        }
        return end ? end - i : 0;
    }
    case RX_WS_NOT_BEFORE_NONWS: {
        if (!IS_S(c0)) return 0;
        size_t j = i, last = i;
        int l;
        while (j < n) {
            int32_t c = cp_at(s, n, j, &l);
            if (!IS_S(c)) break;
            last = j;
            j += (size_t)l;
        }
        if (j >= n) return j - i;
        return last - i;       /* 0 if the run is one character */
    }
    case RX_WS:
        return run_of(s, n, i, 2, 0);
    }
    return 0;
}

size_t hf_regex_match(const rx_alt *alt, int nalt, const char *s, size_t n, size_t i)
{
    for (int k = 0; k < nalt; k++) {
        size_t m = match_one(&alt[k], s, n, i);
        if (m) return m;
    }
    return 0;
}
