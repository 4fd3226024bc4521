/* opts.c — the table-driven option parser of every command (see opts.h): defaults, run files
 * (--config FILE.json), the command line, range and name checks, --help, one error format. */
#include "cfsp/util/opts.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_OPTS (sizeof ((opt_result *)0)->given)
enum { SRC_DEFAULT, SRC_ARGV, SRC_FILE_DASH, SRC_FILE_UNDERSCORE };

/* ---- ranges: ">= 0", "> 0", "<= 1", "< 1", "[a, b]", "(a, b)", "[a, b)", "(a, b]" */
typedef struct { double lo, hi; int lo_open, hi_open; } range;

static range parse_range(const opt_def *d)
{
    range r = { -INFINITY, INFINITY, 0, 0 };
    const char *s = d->range;
    if (!s) return r;
    char *e = NULL;
    if (s[0] == '>' || s[0] == '<') {
        int open = s[1] != '=';
        double x = strtod(s + (open ? 1 : 2), &e);
        if (s[0] == '>') { r.lo = x; r.lo_open = open; } else { r.hi = x; r.hi_open = open; }
    } else if (s[0] == '[' || s[0] == '(') {
        r.lo_open = s[0] == '(';
        r.lo = strtod(s + 1, &e);
        if (*e == ',') r.hi = strtod(e + 1, &e);
        r.hi_open = *e == ')';
        if (*e == ')' || *e == ']') e++;
    }
    if (!e || *e) DIE("internal: option --%s: bad range '%s'", d->name, s);
    return r;
}

static int in_range(const range *r, double x)
{
    return (r->lo_open ? x > r->lo : x >= r->lo) && (r->hi_open ? x < r->hi : x <= r->hi);
}

/* "angular, cosine, mse or mae" */
static void join_names(const opt_def *d, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < d->nnames && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i == 0 ? "" : i + 1 == d->nnames ? " or " : ", ", d->names[i]);
}

/* what a value of d must be, for the error message */
static void expected(const opt_def *d, char *buf, size_t n)
{
    const char *r = d->range ? d->range : "";
    const char *in = r[0] == '[' || r[0] == '(' ? "in " : "";
    const char *sp = r[0] ? " " : "";
    char names[512];
    switch (d->kind) {
    case OPT_STR: snprintf(buf, n, "a non-empty text of at most %zu bytes", d->size - 1); return;
    case OPT_INT: case OPT_I64: snprintf(buf, n, "an integer%s%s%s", sp, in, r); return;
    case OPT_DBL: snprintf(buf, n, "a number%s%s%s%s", sp, in, r, d->flags & OPT_AUTO ? " or auto" : ""); return;
    case OPT_BOOL: snprintf(buf, n, "1, 0, true or false"); return;
    case OPT_ENUM: join_names(d, buf, n); return;
    case OPT_ENUM_LIST:
        join_names(d, names, sizeof names);
        snprintf(buf, n, "a comma-separated list of %s, each at most once", names);
        return;
    case OPT_DBL_LIST: snprintf(buf, n, "a comma-separated list of at most %zu numbers%s%s%s", d->size / sizeof(double), sp, in, r); return;
    case OPT_SIZE: snprintf(buf, n, "a positive size in bytes (units KB MB GB TB = 1e3.., KiB MiB GiB TiB)"); return;
    }
    snprintf(buf, n, "?");
}

/* the one error of a bad value: "<who> = '<text>': expected <what>" */
static int bad_value(const opt_def *d, const char *who, const char *v)
{
    char what[700];
    expected(d, what, sizeof what);
    return FAIL("%s = '%.200s%s': expected %s", who, v, strlen(v) > 200 ? "..." : "", what);
}

static int name_index(const opt_def *d, const char *s, size_t len)
{
    for (int i = 0; i < d->nnames; i++)
        if (strlen(d->names[i]) == len && !strncmp(d->names[i], s, len)) return i;
    return -1;
}

static int parse_ll(const char *v, long long *x)
{
    char *end = NULL;
    errno = 0;
    *x = strtoll(v, &end, 10);
    return *v && !*end && !errno;
}

static int parse_size(const char *v, uint64_t *out)
{
    static const struct { const char *suf; double mul; } u[] = {
        { "", 1 }, { "B", 1 }, { "KB", 1e3 }, { "MB", 1e6 }, { "GB", 1e9 }, { "TB", 1e12 }, { "K", 1e3 }, { "M", 1e6 },
        { "G", 1e9 }, { "KiB", 1024.0 }, { "MiB", 1048576.0 }, { "GiB", 1073741824.0 }, { "TiB", 1099511627776.0 } };
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || !(x > 0)) return -1;
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        if (!strcasecmp(end, u[i].suf)) {
            double b = x * u[i].mul;
            if (b > 1.8e19 || b < 1) return -1;
            *out = (uint64_t)b;
            return 0;
        }
    return -1;
}

/* Set option d of dst from text v; who names it in errors ("recover: --steps", "run.json: steps"). */
static int set_value(const opt_def *d, void *dst, const char *v, const char *who)
{
    char *p = (char *)dst + d->off;
    range r = parse_range(d);
    switch (d->kind) {
    case OPT_STR:
        if (strlen(v) >= d->size || (!v[0] && (d->flags & OPT_NONEMPTY))) return bad_value(d, who, v);
        memcpy(p, v, strlen(v) + 1);
        return 0;
    case OPT_INT: case OPT_I64: {
        long long x;
        if (!parse_ll(v, &x) || !in_range(&r, (double)x) || (d->kind == OPT_INT && (x < INT32_MIN || x > INT32_MAX)))
            return bad_value(d, who, v);
        if (d->kind == OPT_INT) { int i = (int)x; memcpy(p, &i, sizeof i); }
        else { int64_t i = x; memcpy(p, &i, sizeof i); }
        return 0;
    }
    case OPT_DBL: {
        char *end = NULL;
        if ((d->flags & OPT_AUTO) && !strcmp(v, "auto")) {
            double nan = NAN;
            memcpy(p, &nan, sizeof nan);
            return 0;
        }
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x) || !in_range(&r, x)) return bad_value(d, who, v);
        memcpy(p, &x, sizeof x);
        return 0;
    }
    case OPT_BOOL: {
        int b;
        if (!strcmp(v, "1") || !strcmp(v, "true")) b = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) b = 0;
        else return bad_value(d, who, v);
        memcpy(p, &b, sizeof b);
        return 0;
    }
    case OPT_ENUM: {
        int i = name_index(d, v, strlen(v));
        if (i < 0) return bad_value(d, who, v);
        int x = d->values ? d->values[i] : i;
        memcpy(p, &x, sizeof x);
        return 0;
    }
    case OPT_ENUM_LIST: case OPT_DBL_LIST: {
        int n = 0;
        size_t cap = d->size / (d->kind == OPT_ENUM_LIST ? sizeof(int) : sizeof(double));
        for (const char *s = v; *s;) {
            size_t len = strcspn(s, ",");
            if ((size_t)n >= cap) return bad_value(d, who, v);
            if (d->kind == OPT_ENUM_LIST) {
                int i = name_index(d, s, len);
                for (int k = 0; i >= 0 && k < n; k++) if (((int *)p)[k] == i) i = -1;
                if (i < 0) return bad_value(d, who, v);
                ((int *)p)[n++] = i;
            } else {
                char *end = NULL;
                double x = strtod(s, &end);
                if (end != s + len || len == 0 || !isfinite(x) || !in_range(&r, x)) return bad_value(d, who, v);
                ((double *)p)[n++] = x;
            }
            s += len;
            if (*s == ',' && !*++s) return bad_value(d, who, v);    /* a trailing comma */
        }
        if (d->kind == OPT_ENUM_LIST && n == 0) return bad_value(d, who, v);
        memcpy((char *)dst + d->count_off, &n, sizeof n);
        return 0;
    }
    case OPT_SIZE: {
        uint64_t b;
        if (parse_size(v, &b)) return bad_value(d, who, v);
        memcpy(p, &b, sizeof b);
        return 0;
    }
    }
    DIE("internal: option --%s: kind %d", d->name, (int)d->kind);
}

/* option called name ('_' read as '-'), not positional; -1 if none */
static int find(const opt_table *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->n; i++) {
        const char *a = t->opt[i].name;
        if (t->opt[i].flags & OPT_POSITIONAL || strlen(a) != len) continue;
        size_t k = 0;
        while (k < len && (a[k] == name[k] || (a[k] == '-' && name[k] == '_'))) k++;
        if (k == len) return (int)i;
    }
    return -1;
}

/* index of the option called name (DIE if the table has none: a programming error) */
static size_t opts_index(const opt_table *t, const char *name)
{
    int i = find(t, name, strlen(name));
    if (i < 0) DIE("internal: %s has no option --%s", t->prog, name);
    return (size_t)i;
}

/* a JSON value as option text: strings as they are, numbers (integers as such, others in the
 * shortest exact form), true/false as 1/0, arrays joined with commas */
static int json_text(const cJSON *v, char *out, size_t n)
{
    if (cJSON_IsString(v)) return snprintf(out, n, "%s", v->valuestring) >= (int)n ? -1 : 0;
    if (cJSON_IsBool(v)) { snprintf(out, n, "%d", cJSON_IsTrue(v) ? 1 : 0); return 0; }
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e18) {
            snprintf(out, n, "%.0f", v->valuedouble);            /* integers as integers */
            return 0;
        }
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, n, "%.*g", prec, v->valuedouble);
            if (strtod(out, NULL) == v->valuedouble) break;
        }
        return 0;
    }
    if (!cJSON_IsArray(v)) return -1;
    size_t k = 0;
    out[0] = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char one[512];
        if (cJSON_IsArray(e) || json_text(e, one, sizeof one) || k + strlen(one) + 2 >= n) return -1;
        k += (size_t)snprintf(out + k, n - k, "%s%s", k ? "," : "", one);
    }
    return 0;
}

static int load_file(const opt_table *t, const char *path, int file_no, void *dst, opt_result *res)
{
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(path, 1u << 20, &text, &len)) return -1;
    cJSON *root = NULL;
    int rc = json_parse(text, len, path, &root);
    free(text);
    if (rc) return -1;
    if (!cJSON_IsObject(root)) rc = FAIL("%s: expected a JSON object of options (see %s --help)", path, t->cmd);
    const cJSON *e;
    static char val[1 << 16];
    cJSON_ArrayForEach(e, root) {
        if (rc) break;
        if (e->string[0] == '_') continue;                      /* "_comment" keys */
        int i = find(t, e->string, strlen(e->string));
        char who[600];
        snprintf(who, sizeof who, "%s: %.300s", path, e->string);
        if (i < 0) rc = FAIL("%s: unknown option '%.300s' (see %s --help)", path, e->string, t->cmd);
        else if (json_text(e, val, sizeof val))
            rc = FAIL("%s: expected a string, number, true/false or a list of them", who);
        else if (!(rc = set_value(&t->opt[i], dst, val, who))) {
            res->given[i] = strchr(e->string, '_') ? SRC_FILE_UNDERSCORE : SRC_FILE_DASH;
            res->file_of[i] = (unsigned char)file_no;
        }
    }
    cJSON_Delete(root);
    return rc;
}

int opts_parse(const opt_table *t, int argc, char **argv, int first, void *dst, opt_result *out)
{
    opt_result local, *res = out ? out : &local;
    memset(res, 0, sizeof *res);
    if (t->n > MAX_OPTS) DIE("internal: %s: more than %zu options", t->prog, MAX_OPTS);
    for (size_t i = 0; i < t->n; i++) {
        const opt_def *d = &t->opt[i];
        parse_range(d);                                          /* a bad table dies here, always */
        if (d->def && set_value(d, dst, d->def, t->prog)) DIE("internal: default of --%s: %s", d->name, cfsp_last_error());
    }
    for (int k = first; k < argc; k++)
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
            if (cfsp_rank() == 0) opts_print_help(t);
            return 1;
        }
    /* run files first, in order, so that the command line overrides them */
    for (int k = first; k < argc; k++) {
        const char *f = NULL;
        if (!strcmp(argv[k], "--config")) {
            if (k + 1 >= argc || !strncmp(argv[k + 1], "--", 2)) return FAIL("%s: --config: missing value", t->prog);
            f = argv[++k];
        } else if (!strncmp(argv[k], "--config=", 9)) f = argv[k] + 9;
        if (!f) continue;
        if (res->nconfig == (int)(sizeof res->config / sizeof res->config[0])) return FAIL("%s: --config: more than %d files", t->prog, res->nconfig);
        res->config[res->nconfig] = f;
        if (load_file(t, f, res->nconfig, dst, res)) return -1;
        res->nconfig++;
    }
    size_t next_pos = 0;
    for (int k = first; k < argc; k++) {
        const char *a = argv[k];
        if (!strcmp(a, "--config")) { k++; continue; }
        if (!strncmp(a, "--config=", 9)) continue;
        if (strncmp(a, "--", 2)) {                               /* a positional argument */
            while (next_pos < t->n && !(t->opt[next_pos].flags & OPT_POSITIONAL)) next_pos++;
            if (next_pos == t->n)
                return FAIL("%s: unexpected argument '%.200s' (usage: %.*s)", t->prog, a, (int)strcspn(t->usage, "\n"), t->usage);
            char who[300];
            snprintf(who, sizeof who, "%s: %s", t->prog, t->opt[next_pos].name);
            if (set_value(&t->opt[next_pos], dst, a, who)) return -1;
            res->given[next_pos++] = SRC_ARGV;
            res->npos++;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        int i = find(t, a + 2, len);
        if (i < 0) return FAIL("%s: unknown option '%.*s' (see %s --help)", t->prog, (int)(len < 200 ? len + 2 : 202), a, t->cmd);
        const opt_def *d = &t->opt[i];
        const char *v;
        if (eq) v = eq + 1;
        else if (d->kind == OPT_BOOL) {
            const char *n = k + 1 < argc ? argv[k + 1] : "";
            v = !strcmp(n, "1") || !strcmp(n, "0") || !strcmp(n, "true") || !strcmp(n, "false") ? argv[++k] : "1";
        } else if (k + 1 < argc && strncmp(argv[k + 1], "--", 2)) v = argv[++k];
        else return FAIL("%s: --%s: missing value", t->prog, d->name);
        char who[300];
        snprintf(who, sizeof who, "%s: --%s", t->prog, d->name);
        if (set_value(d, dst, v, who)) return -1;
        res->given[i] = SRC_ARGV;
    }
    for (size_t i = 0; i < t->n; i++) {
        const opt_def *d = &t->opt[i];
        if (!(d->flags & OPT_REQUIRED)) continue;
        int empty = d->kind == OPT_STR && !((char *)dst + d->off)[0];
        if (res->given[i] && !empty) continue;
        if (d->flags & OPT_POSITIONAL) return FAIL("%s: missing %s (usage: %.*s)", t->prog, d->name, (int)strcspn(t->usage, "\n"), t->usage);
        return FAIL("%s: --%s is required (see %s --help)", t->prog, d->name, t->cmd);
    }
    return 0;
}

const char *opts_where(const opt_table *t, const opt_result *res, const char *name, char *buf, size_t n)
{
    size_t i = opts_index(t, name);
    int src = res->given[i];
    if (src == SRC_FILE_DASH || src == SRC_FILE_UNDERSCORE) {
        snprintf(buf, n, "%s: ", res->config[res->file_of[i]]);
        size_t k = strlen(buf);
        for (const char *p = name; *p && k + 1 < n; p++) buf[k++] = src == SRC_FILE_UNDERSCORE && *p == '-' ? '_' : *p;
        buf[k < n ? k : n - 1] = 0;
    } else snprintf(buf, n, "%s: --%s", t->prog, name);
    return buf;
}

void opts_print_help(const opt_table *t)
{
    if (t->about) printf("%s\n\n", t->about);
    printf("usage: %s\n\n", t->usage);
    int npos = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->opt[i].flags & OPT_POSITIONAL) printf("  %-18s %s\n", t->opt[i].name, t->opt[i].help), npos++;
    if (npos) printf("\n");
    printf("options (each also a key of the JSON file given with --config FILE.json: its name with '-' or '_';\n"
           "the command line overrides the file):\n");
    for (size_t i = 0; i < t->n; i++) {
        const opt_def *d = &t->opt[i];
        if (d->flags & OPT_POSITIONAL) continue;
        const char *def = d->flags & OPT_REQUIRED ? "required" : d->def && d->def[0] ? d->def : "none";
        char choices[512] = "";                                  /* an enum's names, from the table */
        for (int k = 0, n = 0; (d->kind == OPT_ENUM || d->kind == OPT_ENUM_LIST) && k < d->nnames && n < (int)sizeof choices; k++)
            n += snprintf(choices + n, sizeof choices - (size_t)n, "%s%s%s", k ? " | " : "", d->names[k], k + 1 == d->nnames ? "; " : "");
        printf("  --%-16s %s (%s%s%s)\n", d->name, d->help, choices, d->flags & OPT_REQUIRED ? "" : "default: ", def);
    }
    printf("  --%-16s %s\n", "config", "a JSON file of options (may be given more than once; applied in order)");
}
