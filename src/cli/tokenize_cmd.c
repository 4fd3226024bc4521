/* tokenize_cmd.c — `cfsp-mpi tokenize --model DIR IN.txt OUT.u32.bin [--bos auto|1|0] [--force]`:
 * the checkpoint's own tokenizer over a text file, written in the token-file format (uint32
 * little-endian ids; one BOS first if the model's Hugging Face tokenizer adds one, by default) to
 * OUT.tmp, then renamed. Rank 0 does the work. */
#include "cfsp/cli/commands.h"
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include "cfsp/util/util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    if (ok) ok = fflush(f) == 0 && fsync(fileno(f)) == 0;   /* on the device before the rename */
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, out) != 0) {
        unlink(tmp);
        cfsp_tmp_unregister(tmp);
        return FAIL("%s: cannot write the token file", out);
    }
    cfsp_tmp_unregister(tmp);
    return 0;
}

typedef struct {
    char model[4096], in[4096], out[4096];
    int bos, force;
} tok_opts;

#define O(...) OPT(tok_opts, __VA_ARGS__)
static const char *const bos_names[] = { "auto", "1", "0" };
static const int bos_values[] = { TOK_BOS_AUTO, 1, 0 };
static const opt_def tok_table[] = {
    O(OPT_STR, in, "IN.txt", NULL, NULL, "UTF-8 text", .flags = OPT_POSITIONAL | OPT_REQUIRED),
    O(OPT_STR, out, "OUT.u32.bin", NULL, NULL, "the token file written (through OUT.u32.bin.tmp)", .flags = OPT_POSITIONAL | OPT_REQUIRED),
    O(OPT_STR, model, "model", NULL, NULL, "the checkpoint directory: DIR/tokenizer.json, else DIR/tokenizer.model", .flags = OPT_REQUIRED),
    O(OPT_ENUM, bos, "bos", "auto", NULL, "one BOS id first: auto = as the model's Hugging Face tokenizer does (tokenizer_config.json add_bos_token, else a TemplateProcessing that starts with BOS, or a sentencepiece BOS piece; Qwen: none), 1 = always (an error if the tokenizer has no BOS), 0 = never",
      .names = bos_names, .nnames = 3, .values = bos_values),
    O(OPT_BOOL, force, "force", "0", NULL, "overwrite an existing OUT.u32.bin"),
};
static const opt_table tok_opt_table = {
    "tokenize", "cfsp-mpi tokenize", "cfsp-mpi tokenize --model DIR IN.txt OUT.u32.bin [--bos auto|1|0] [--force]",
    "cfsp-mpi tokenize — IN.txt with the checkpoint's own tokenizer (DIR/tokenizer.json, else DIR/tokenizer.model), "
    "written as uint32 little-endian ids (one BOS first if the model's tokenizer adds one, see --bos)", tok_table, sizeof tok_table / sizeof tok_table[0] };

/* rank 0: 0, 1 after --help, or -1 (FAIL) */
static int run_tokenize(int argc, char **argv)
{
    tok_opts o;
    memset(&o, 0, sizeof o);
    int prc = opts_parse(&tok_opt_table, argc, argv, 2, &o, NULL);
    if (prc) return prc;
    const char *model = o.model, *pos[2] = { o.in, o.out };
    int bos = o.bos;
    if (path_exists(pos[1]) && !o.force) return FAIL("%s: exists (use --force to overwrite)", pos[1]);
    double t0 = now_seconds();
    tokenizer *t = NULL;
    if (tokenizer_load(model, &t)) return -1;
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(pos[0], (size_t)1 << 36, &text, &len)) { tokenizer_free(t); return -1; }
    double t1 = now_seconds();
    uint32_t *ids = NULL;
    int64_t n = 0;
    int rc = tokenizer_check_text(pos[0], text, len) ? -1 : tokenizer_encode(t, text, len, bos, pos[0], &ids, &n);
    double t2 = now_seconds();
    if (bos == TOK_BOS_AUTO) bos = tokenizer_adds_bos(t);
    free(text);
    if (!rc) rc = write_ids(pos[1], ids, n);
    if (!rc) {
        double enc = t2 - t1 > 1e-9 ? t2 - t1 : 1e-9;
        fprintf(stderr, "cfsp-mpi: tokenized %s (%zu bytes) into %lld tokens, %s, with %s (%s): encode %.3f s (%.2f MB/s), load %.3f s\n",
                pos[0], len, (long long)n, bos ? "BOS first" : "no BOS", tokenizer_describe(t), model, enc, (double)len / 1e6 / enc, t1 - t0);
    }
    free(ids);
    tokenizer_free(t);
    return rc;
}

int tokenize_command(int argc, char **argv)
{
    int rc = cfsp_rank() == 0 ? run_tokenize(argc, argv) : 0;
    return rc < 0 ? -1 : 0;                           /* 1: rank 0 printed --help */
}
