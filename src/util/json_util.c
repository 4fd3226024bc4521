/* json_util.c — checked JSON parsing (UTF-8, depth) and typed getters with file/field errors. */
#include "cfsp/util/json_util.h"
#include "cfsp/util/err.h"
#include <math.h>
#include <string.h>

static int utf8_valid(const unsigned char *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0 && c >= 0xc2) k = 1;
        else if ((c & 0xf0) == 0xe0) k = 2;
        else if ((c & 0xf8) == 0xf0 && c <= 0xf4) k = 3;
        else { *bad = i; return 0; }
        for (size_t j = 1; j <= k; j++)
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80) { *bad = i; return 0; }
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

int json_parse(const char *text, size_t len, const char *fname, cJSON **out)
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
    *out = j;
    return 0;
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
