/* json_util.c — checked JSON parsing (UTF-8, depth) and typed getters with file/field errors. */
#include "cfsp/util/json_util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* RFC 3629: shortest forms only (no overlong C0/C1, E0 80..9F, F0 80..8F), no UTF-16 surrogates
 * (ED A0..BF = U+D800..DFFF), nothing above U+10FFFF (F4 90.., F5..FF) */
static int utf8_valid(const unsigned char *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;         /* the allowed range of the second byte */
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) { k = 2; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 3; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
        else { *bad = i; return 0; }
        if (i + k >= n || s[i + 1] < lo || s[i + 1] > hi) { *bad = i; return 0; }
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) { *bad = i; return 0; }
        i += k + 1;
    }
    return 1;
}

static int nesting_ok(const char *s, size_t n, int max_depth)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '{' || c == '[') { if (++depth > max_depth) return 0; }
        else if (c == '}' || c == ']') depth--;
    }
    return 1;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* JSON (RFC 8259) leaves duplicate object keys open and cJSON keeps both, its lookups finding the
 * first while Python's json and serde keep the last: a file that means different things to
 * different readers. Every object at any depth must have distinct (decoded) keys. Sorting finds
 * them in O(n log n). Returns the first duplicate key or NULL. */
static const char *dup_key(const cJSON *o, int depth)
{
    if (depth > JSON_MAX_DEPTH + 1) return NULL;
    const cJSON *e;
    if (cJSON_IsObject(o)) {
        int n = 0;
        cJSON_ArrayForEach(e, o) n++;
        if (n > 1) {
            const char **k = xmalloc(sizeof(char *) * (size_t)n);
            int i = 0;
            cJSON_ArrayForEach(e, o) k[i++] = e->string ? e->string : "";
            qsort(k, (size_t)n, sizeof *k, cmp_key);
            const char *d = NULL;
            for (i = 1; i < n && !d; i++) if (!strcmp(k[i - 1], k[i])) d = k[i];
            free(k);
            if (d) return d;
        }
    }
    if (cJSON_IsObject(o) || cJSON_IsArray(o))
        cJSON_ArrayForEach(e, o) {
            const char *d = dup_key(e, depth + 1);
            if (d) return d;
        }
    return NULL;
}

int json_parse_padded(const char *text, size_t len, const char *fname, int spaces_only, cJSON **out)
{
    size_t bad = 0;
    if (!utf8_valid((const unsigned char *)text, len, &bad))
        return FAIL("%s: invalid UTF-8 at byte %zu", fname, bad);
    if (!nesting_ok(text, len, JSON_MAX_DEPTH))
        return FAIL("%s: JSON nested deeper than %d levels", fname, JSON_MAX_DEPTH);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        size_t at = end ? (size_t)(end - text) : 0;
        return FAIL("%s: not valid JSON (near byte %zu)", fname, at);
    }
    /* one value, then only JSON whitespace (cJSON stops after the first value and ignores the rest) */
    size_t at = end ? (size_t)(end - text) : len;
    while (at < len && (text[at] == ' ' || (!spaces_only && (text[at] == '\t' || text[at] == '\n' || text[at] == '\r')))) at++;
    if (at < len) {
        cJSON_Delete(j);
        if (spaces_only)
            return FAIL("%s: safetensors header: byte %zu after the JSON object is 0x%02x (only spaces, 0x20, may pad the header)",
                        fname, at, (unsigned char)text[at]);
        return FAIL("%s: not valid JSON: bytes after the JSON value at byte %zu", fname, at);
    }
    const char *d = dup_key(j, 0);
    if (d) {
        int rc = FAIL("%s: JSON key '%.200s' appears twice in one object (duplicate keys are ambiguous)", fname, d);
        cJSON_Delete(j);
        return rc;
    }
    *out = j;
    return 0;
}

int json_parse(const char *text, size_t len, const char *fname, cJSON **out)
{
    return json_parse_padded(text, len, fname, 0, out);
}

static const cJSON *field(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

int json_get_int(const cJSON *o, const char *key, const char *fname, int required, int64_t lo, int64_t hi, int64_t *out)
{
    const cJSON *f = field(o, key);
    if (!f || cJSON_IsNull(f)) {
        if (required) return FAIL("%s: field '%s' is missing", fname, key);
        return 0;
    }
    if (!cJSON_IsNumber(f)) return FAIL("%s: field '%s': expected an integer", fname, key);
    double v = f->valuedouble;
    if (!isfinite(v) || v != floor(v)) return FAIL("%s: field '%s': expected an integer, got %g", fname, key, v);
    if (v < (double)lo || v > (double)hi)
        return FAIL("%s: field '%s' = %.17g: expected %lld..%lld", fname, key, v, (long long)lo, (long long)hi);
    *out = (int64_t)v;
    return 0;
}

int json_get_double(const cJSON *o, const char *key, const char *fname, int required, double lo, double hi, double *out)
{
    const cJSON *f = field(o, key);
    if (!f || cJSON_IsNull(f)) {
        if (required) return FAIL("%s: field '%s' is missing", fname, key);
        return 0;
    }
    if (!cJSON_IsNumber(f)) return FAIL("%s: field '%s': expected a number", fname, key);
    double v = f->valuedouble;
    if (!isfinite(v) || v < lo || v > hi)
        return FAIL("%s: field '%s' = %g: expected a number in [%g, %g]", fname, key, v, lo, hi);
    *out = v;
    return 0;
}

int json_get_bool(const cJSON *o, const char *key, const char *fname, int required, int *out)
{
    const cJSON *f = field(o, key);
    if (!f || cJSON_IsNull(f)) {
        if (required) return FAIL("%s: field '%s' is missing", fname, key);
        return 0;
    }
    if (!cJSON_IsBool(f)) return FAIL("%s: field '%s': expected true or false", fname, key);
    *out = cJSON_IsTrue(f);
    return 0;
}

int json_get_string(const cJSON *o, const char *key, const char *fname, int required, const char **out)
{
    const cJSON *f = field(o, key);
    if (!f || cJSON_IsNull(f)) {
        if (required) return FAIL("%s: field '%s' is missing", fname, key);
        return 0;
    }
    if (!cJSON_IsString(f)) return FAIL("%s: field '%s': expected a string", fname, key);
    *out = f->valuestring;
    return 0;
}
