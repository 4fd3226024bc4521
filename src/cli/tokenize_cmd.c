/* tokenize_cmd.c — `cfsp-mpi tokenize --model DIR IN.txt OUT.u32.bin [--bos 1|0] [--force]`: the
 * checkpoint's own tokenizer over a text file, written in the token-file format (uint32
 * little-endian ids, one BOS first by default) to OUT.tmp, then renamed. Rank 0 does the work. */
#include "cfsp/cli/commands.h"
#include "cfsp/util/err.h"
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *USAGE = "usage: cfsp-mpi tokenize --model DIR IN.txt OUT.u32.bin [--bos 1|0] [--force]";

static int write_ids(const char *out, const uint32_t *ids, int64_t n)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    cfsp_tmp_register(tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) { cfsp_tmp_unregister(tmp); return FAIL("%s: cannot create", tmp); }
    unsigned char buf[4096];
    size_t k = 0;
    int ok = 1;
    for (int64_t i = 0; i < n && ok; i++) {
        buf[k++] = (unsigned char)ids[i];
        buf[k++] = (unsigned char)(ids[i] >> 8);
        buf[k++] = (unsigned char)(ids[i] >> 16);
        buf[k++] = (unsigned char)(ids[i] >> 24);
        if (k == sizeof buf) { ok = fwrite(buf, 1, k, f) == k; k = 0; }
    }
    if (ok && k) ok = fwrite(buf, 1, k, f) == k;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, out) != 0) {
        unlink(tmp);
        cfsp_tmp_unregister(tmp);
        return FAIL("%s: cannot write the token file", out);
    }
    cfsp_tmp_unregister(tmp);
    return 0;
}

static int run_tokenize(int argc, char **argv)
{
    const char *model = NULL, *pos[2] = { NULL, NULL };
    int bos = 1, force = 0, npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model") || !strcmp(a, "--bos")) {
            if (i + 1 >= argc) return FAIL("tokenize: %s: missing value (%s)", a, USAGE);
            if (!strcmp(a, "--model")) model = argv[++i];
            else {
                const char *v = argv[++i];
                if (!strcmp(v, "1") || !strcmp(v, "true")) bos = 1;
                else if (!strcmp(v, "0") || !strcmp(v, "false")) bos = 0;
                else return FAIL("tokenize: --bos = '%s': expected 1 or 0", v);
            }
        } else if (!strncmp(a, "--model=", 8)) {
            model = a + 8;
        } else if (!strncmp(a, "--bos=", 6)) {
            if (!strcmp(a + 6, "1") || !strcmp(a + 6, "true")) bos = 1;
            else if (!strcmp(a + 6, "0") || !strcmp(a + 6, "false")) bos = 0;
            else return FAIL("tokenize: --bos = '%s': expected 1 or 0", a + 6);
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strncmp(a, "--", 2)) {
            return FAIL("tokenize: unknown option '%s' (%s)", a, USAGE);
        } else {
            if (npos == 2) return FAIL("tokenize: unexpected argument '%s' (%s)", a, USAGE);
            pos[npos++] = a;
        }
    }
    if (!model || npos != 2) return FAIL("tokenize: %s", USAGE);
    if (path_exists(pos[1]) && !force) return FAIL("%s: exists (use --force to overwrite)", pos[1]);
    double t0 = now_seconds();
    tokenizer *t = NULL;
    if (tokenizer_load(model, &t)) return -1;
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(pos[0], (size_t)1 << 36, &text, &len)) { tokenizer_free(t); return -1; }
    double t1 = now_seconds();
    uint32_t *ids = NULL;
    int64_t n = 0;
    int rc = tokenizer_encode(t, text, len, bos, pos[0], &ids, &n);
    double t2 = now_seconds();
    free(text);
    if (!rc) rc = write_ids(pos[1], ids, n);
    if (!rc) {
        double enc = t2 - t1 > 1e-9 ? t2 - t1 : 1e-9;
        fprintf(stderr, "cfsp-mpi: tokenized %s (%zu bytes) into %lld tokens with %s (%s): encode %.3f s (%.2f MB/s), load %.3f s\n",
                pos[0], len, (long long)n, tokenizer_describe(t), model, enc, (double)len / 1e6 / enc, t1 - t0);
    }
    free(ids);
    tokenizer_free(t);
    return rc;
}

int tokenize_command(int argc, char **argv)
{
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (cfsp_rank() == 0)
                printf("%s\n\nTokenizes IN.txt with the checkpoint's own tokenizer (DIR/tokenizer.json, else "
                       "DIR/tokenizer.model) and writes uint32 little-endian ids (one BOS first unless --bos 0).\n", USAGE);
            return 0;
        }
    return cfsp_rank() == 0 ? run_tokenize(argc, argv) : 0;
}
