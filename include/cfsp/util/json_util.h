/* json_util.h — typed, checked field access on cJSON objects. Every getter FAILs with
 * "<file>: <field>: expected ..." so errors name the file and the field. */
#ifndef CFSP_JSON_UTIL_H
#define CFSP_JSON_UTIL_H
#include <cjson/cJSON.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 64
/* parse text (len bytes, not necessarily NUL-terminated); checks UTF-8 and nesting depth */
int json_parse(const char *text, size_t len, const char *fname, cJSON **out);
/* json_parse, then only spaces (0x20) after the value if spaces_only (a safetensors header's padding),
 * any JSON whitespace otherwise; every object's keys distinct, UTF-8 in shortest forms, no surrogates */
int json_parse_padded(const char *text, size_t len, const char *fname, int spaces_only, cJSON **out);
/* required=1: missing field is an error; otherwise *out keeps its default */
int json_get_int(const cJSON *o, const char *key, const char *fname, int required, int64_t lo, int64_t hi, int64_t *out);
int json_get_double(const cJSON *o, const char *key, const char *fname, int required, double lo, double hi, double *out);
int json_get_bool(const cJSON *o, const char *key, const char *fname, int required, int *out);
int json_get_string(const cJSON *o, const char *key, const char *fname, int required, const char **out);
#endif
