/* tok_tool.c — the tokenizer without MPI, for the tests and the benchmark:
 *   tok_tool encode DIR TEXTS       TEXTS holds NUL-terminated texts; prints one JSON array of ids
 *                                   (no BOS) per text, one per line; a failing text prints its
 *                                   one-line error instead ({"error": "..."})
 *   tok_tool split PATTERN TEXTS    the pre-tokenizer regex alone: PATTERN is a file holding a split
 *                                   pattern as written in tokenizer.json; prints, per text, the byte
 *                                   lengths of the pieces (matches and the gaps between them)
 *   tok_tool norm nfc|nfd TEXTS     tokenizer.json's NFC / NFD normalizer alone (uni_normalize):
 *                                   prints, per text, the normalized UTF-8 bytes in hex (one line;
 *                                   "error" for a text that is not valid UTF-8)
 *   tok_tool load DIR...            loads each DIR's tokenizer; prints per DIR one JSON object:
 *                                   {"ok": DESCRIPTION} or {"error": "its one-line message"}
 *                                   (the malformed-file test: many files in one process)
 *   tok_tool bench DIR TEXT [R] [EXPECTED.u32.bin]
 *                                   encodes TEXT once (checked against EXPECTED if given), then R
 *                                   more times; prints one JSON object with the wall and
 *                                   thread-CPU seconds of each run (mpi_scripts/bench_tokenizer.sh) */
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include "tok_internal.h"          /* src/tok: rx_compile, hf_regex_match (the split test), uni_normalize */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned char)*s);
        else putchar(*s);
    }
    putchar('"');
}

static int encode_many(tokenizer *t, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    if (read_whole_file(path, (size_t)1 << 32, &buf, &len)) return -1;
    size_t a = 0;
    while (a < len) {                                      /* each text ends with a NUL */
        size_t b = a;
        while (b < len && buf[b]) b++;
        uint32_t *ids = NULL;
        int64_t n = 0;
        cfsp_clear_error();
        if (tokenizer_encode(t, buf + a, b - a, 0, path, &ids, &n)) {
            printf("{\"error\": ");
            json_str(cfsp_last_error());
            printf("}\n");
        } else {
            putchar('[');
            for (int64_t i = 0; i < n; i++) printf(i ? ", %u" : "%u", ids[i]);
            printf("]\n");
        }
        free(ids);
        a = b + 1;
    }
    free(buf);
    return 0;
}

static int split_many(const char *pattern_file, const char *path)
{
    char *pat = NULL, *buf = NULL;
    size_t pl = 0, len = 0;
    rx_alt alt[RX_MAX_ALT];
    int nalt = 0;
    if (read_whole_file(pattern_file, 1 << 20, &pat, &pl)) return -1;
    int rc = rx_compile(pat, pattern_file, "pattern", alt, &nalt);
    free(pat);
    if (rc || read_whole_file(path, (size_t)1 << 32, &buf, &len)) return -1;
    size_t a = 0;
    while (a < len) {
        size_t b = a;
        while (b < len && buf[b]) b++;
        const char *s = buf + a;
        size_t n = b - a, i = 0, prev = 0;
        int first = 1;
        putchar('[');
        while (i < n) {
            size_t l = hf_regex_match(alt, nalt, s, n, i);
            if (!l) { i += (size_t)utf8_lead_len((unsigned char)s[i]); continue; }
            if (prev < i) { printf(first ? "%zu" : ", %zu", i - prev); first = 0; }
            printf(first ? "%zu" : ", %zu", l);
            first = 0;
            i += l;
            prev = i;
        }
        if (prev < n) printf(first ? "%zu" : ", %zu", n - prev);
        printf("]\n");
        a = b + 1;
    }
    free(buf);
    return 0;
}

static int norm_many(const char *form, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    if (read_whole_file(path, (size_t)1 << 32, &buf, &len)) return -1;
    bytevec out = { NULL, 0, 0 };
    size_t a = 0;
    while (a < len) {
        size_t b = a, bad = 0;
        while (b < len && buf[b]) b++;
        if (!utf8_valid(buf + a, b - a, &bad)) {
            printf("error\n");
        } else {
            uni_normalize(buf + a, b - a, !strcmp(form, "nfc"), &out);
            for (size_t i = 0; i < out.n; i++) printf("%02x", (unsigned char)out.v[i]);
            putchar('\n');
        }
        a = b + 1;
    }
    free(out.v);
    free(buf);
    return 0;
}

static void load_many(int ndir, char **dirs)
{
    for (int i = 0; i < ndir; i++) {
        tokenizer *t = NULL;
        cfsp_clear_error();
        if (tokenizer_load(dirs[i], &t)) {
            printf("{\"error\": ");
            json_str(cfsp_last_error()[0] ? cfsp_last_error() : "(no message)");
        } else {
            printf("{\"ok\": ");
            json_str(tokenizer_describe(t));
        }
        printf("}\n");
        tokenizer_free(t);
    }
}

static int bench(tokenizer *t, double load, int argc, char **argv)
{
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    if (reps < 1) reps = 1;
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(argv[3], (size_t)1 << 34, &text, &len)) return -1;
    uint32_t *ids = NULL;
    int64_t n = 0;
    if (tokenizer_encode(t, text, len, 1, argv[3], &ids, &n)) return -1;
    int equal = -1;
    if (argc > 5) {
        char *ref = NULL;
        size_t rl = 0;
        if (read_whole_file(argv[5], (size_t)1 << 34, &ref, &rl)) return -1;
        equal = rl == (size_t)n * 4;
        for (int64_t i = 0; equal && i < n; i++) {
            const unsigned char *p = (const unsigned char *)ref + 4 * i;
            equal = ids[i] == ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        }
        free(ref);
    }
    free(ids);
    printf("{\"tokenizer\": ");
    json_str(tokenizer_describe(t));
    printf(", \"bytes\": %zu, \"tokens\": %lld, \"load_s\": %.6f, \"equal\": %d, \"runs\": [", len, (long long)n, load, equal);
    for (int r = 0; r < reps; r++) {
        double w0 = now_seconds(), c0 = cpu_now();
        if (tokenizer_encode(t, text, len, 1, argv[3], &ids, &n)) return -1;
        double w = now_seconds() - w0, c = cpu_now() - c0;
        free(ids);
        printf("%s{\"wall_s\": %.6f, \"cpu_s\": %.6f}", r ? ", " : "", w, c);
    }
    printf("]}\n");
    free(text);
    return equal == 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "load")) {
        load_many(argc - 2, argv + 2);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "norm") && (!strcmp(argv[2], "nfc") || !strcmp(argv[2], "nfd"))) {
        if (norm_many(argv[2], argv[3])) { fprintf(stderr, "%s\n", cfsp_last_error()); return 1; }
        return 0;
    }
    if (argc < 4 || (strcmp(argv[1], "encode") && strcmp(argv[1], "bench") && strcmp(argv[1], "split"))) {
        fprintf(stderr, "usage: tok_tool encode DIR TEXTS | split PATTERN TEXTS | norm nfc|nfd TEXTS | load DIR... | bench DIR TEXT [R] [EXPECTED.u32.bin]\n");
        return 2;
    }
    if (!strcmp(argv[1], "split")) {
        if (split_many(argv[2], argv[3])) { fprintf(stderr, "%s\n", cfsp_last_error()); return 1; }
        return 0;
    }
    tokenizer *t = NULL;
    double l0 = now_seconds();
    if (tokenizer_load(argv[2], &t)) { fprintf(stderr, "%s\n", cfsp_last_error()); return 1; }
    double load = now_seconds() - l0;
    int rc = !strcmp(argv[1], "encode") ? encode_many(t, argv[3]) : bench(t, load, argc, argv);
    if (rc) fprintf(stderr, "%s\n", cfsp_last_error()[0] ? cfsp_last_error() : "tok_tool: ids differ from the expected file");
    tokenizer_free(t);
    return rc ? 1 : 0;
}
