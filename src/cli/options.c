/* options.c — the option table, the JSON run file and the command line (see options.h). */
#include "cfsp/cli/options.h"
#include "cfsp/util/err.h"
#include "cfsp/util/json_util.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { O_STR, O_INT, O_DBL, O_BOOL, O_RATIOS, O_METHODS, O_GMETRIC, O_LMETRIC, O_ALLOC, O_SAMPLING, O_WRITEIO } otype;

typedef struct {
    const char *name;
    otype type;
    size_t off;
    const char *def;
    const char *help;
} optdef;

#define OFF(f) offsetof(options, f)
static const optdef table[] = {
    { "model", O_STR, OFF(model), "", "Hugging Face LLaMA directory (config.json + safetensors)" },
    { "calib-tokens", O_STR, OFF(calib_tokens), "", "calibration token ids (uint32 little-endian file; FILE@START:END takes a slice)" },
    { "eval-tokens", O_STR, OFF(eval_tokens), "", "held-out token ids for perplexity (FILE@START:END takes a slice; empty: no evaluation)" },
    { "calib-text", O_STR, OFF(calib_text), "", "calibration text (UTF-8), tokenized on rank 0 with the model's own tokenizer, one BOS first (instead of --calib-tokens)" },
    { "eval-text", O_STR, OFF(eval_text), "", "held-out text for perplexity, used as is (e.g. rows joined with \\n\\n), tokenized once with one BOS first (instead of --eval-tokens)" },
    { "output-dir", O_STR, OFF(output_dir), "cfsp_out", "directory for results.json, stats.h5 and pruned models" },
    { "nsamples", O_INT, OFF(nsamples), "128", "calibration sequences N" },
    { "seqlen", O_INT, OFF(seqlen), "1024", "tokens per calibration sequence and per evaluation window T" },
    { "chunk", O_INT, OFF(chunk), "0", "tokens per pipeline micro-batch (divides seqlen; 0 = seqlen)" },
    { "ffn-slice", O_INT, OFF(ffn_slice), "4096", "FFN channels per pipeline stage unit (a block = attention + ceil(m/this) FFN slices; 0 = whole FFN); fixes the arithmetic, so keep it when comparing runs" },
    { "seed", O_INT, OFF(seed), "0", "seed of the random calibration offsets (Python random.seed)" },
    { "calib-sampling", O_SAMPLING, OFF(calib_random), "random", "random (reference) | consecutive" },
    { "eval-windows", O_INT, OFF(eval_windows), "0", "evaluate only the first K windows (0 = all)" },
    { "ratios", O_RATIOS, OFF(ratios), "", "pruning ratios, comma-separated, each in (0,1) (empty: dense only)" },
    { "method", O_METHODS, OFF(methods), "cfsp", "cfsp | wanda_sp | flap | mag_sp, comma-separated" },
    { "global-metric", O_GMETRIC, OFF(global_metric), "angular", "coarse block importance: angular | cosine | mse | mae" },
    { "local-metric", O_LMETRIC, OFF(local_metric), "three_w_one_wa",
      "fine channel score: three_w_one_wa | three_w_one_a | one_wa | one_a | wanda_base | mag_base | three_w_one_wa_rownorm" },
    { "a", O_DBL, OFF(a), "1", "sigmoid temperature of the block allocation" },
    { "b", O_DBL, OFF(b), "1", "activation exponent inside the weight term" },
    { "c", O_DBL, OFF(c), "1", "activation exponent of the channel score" },
    { "alloc-mode", O_ALLOC, OFF(alloc_reference), "default",
      "default (temperature scaled by 131072/(N*T), exact counts) | reference (the reference's constants and quirks)" },
    { "align", O_INT, OFF(align), "1", "round per-block channel counts to a multiple of this (1 = no rounding; e.g. 128)" },
    { "force", O_BOOL, OFF(force), "0", "overwrite existing outputs" },
    { "save-models", O_BOOL, OFF(save_models), "1", "write the pruned models (HDF5, one file per method and ratio)" },
    { "write-io", O_WRITEIO, OFF(write_io), "direct",
      "how each rank writes its tensor bytes into the HDF5 file HDF5 laid out: direct (O_DIRECT, buffered where the file system refuses it) | buffered | mpiio (H5Dwrite)" },
    { "save-stats", O_BOOL, OFF(save_stats), "1", "write the calibration statistics (stats.h5)" },
    { "eval-dense", O_BOOL, OFF(eval_dense), "1", "evaluate the dense model" },
    { "eval-pruned", O_BOOL, OFF(eval_pruned), "1", "evaluate every pruned model" },
    { "dump-logits", O_STR, OFF(dump_logits), "", "write the dense evaluation logits (float32 [windows, T, vocab]) here" },
    { "stats", O_STR, OFF(stats), "", "prune: statistics file of an earlier run (no forward pass)" },
    { "max-rank-memory", O_DBL, OFF(max_rank_memory_gb), "0", "refuse to start if a rank needs more GB than this (0 = MemAvailable / ranks)" },
};
#define NOPT (sizeof table / sizeof table[0])

static const optdef *find_opt(const char *name)
{
    for (size_t i = 0; i < NOPT; i++) if (!strcmp(table[i].name, name)) return &table[i];
    return NULL;
}

static int set_opt(options *o, const optdef *d, const char *v, const char *src)
{
    char *base = (char *)o + d->off;
    char *end = NULL;
    errno = 0;
    switch (d->type) {
    case O_STR:
        if (strlen(v) >= 4096) return FAIL("%s: --%s: value longer than 4095 bytes", src, d->name);
        strcpy(base, v);
        return 0;
    case O_INT: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno) return FAIL("%s: --%s = '%s': expected an integer", src, d->name, v);
        if (d->off == OFF(seed)) { if (x < 0) return FAIL("%s: --seed = %lld: expected >= 0", src, x); *(long long *)base = x; return 0; }
        if (x < -2147483647LL || x > 2147483647LL) return FAIL("%s: --%s = '%s': out of range", src, d->name, v);
        *(int *)base = (int)x;
        return 0;
    }
    case O_DBL: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) return FAIL("%s: --%s = '%s': expected a number", src, d->name, v);
        *(double *)base = x;
        return 0;
    }
    case O_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true")) *(int *)base = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) *(int *)base = 0;
        else return FAIL("%s: --%s = '%s': expected 0/1 or true/false", src, d->name, v);
        return 0;
    case O_RATIOS: {
        o->nratios = 0;
        const char *p = v;
        while (*p) {
            if (o->nratios >= MAX_RATIOS) return FAIL("%s: --ratios: more than %d ratios", src, MAX_RATIOS);
            double r = strtod(p, &end);
            if (end == p || (*end && *end != ',') || !(r > 0.0 && r < 1.0))
                return FAIL("%s: --ratios = '%s': each ratio must be a number in (0, 1)", src, v);
            o->ratios[o->nratios++] = r;
            p = *end ? end + 1 : end;
        }
        return 0;
    }
    case O_METHODS: {
        o->nmethods = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", v);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
            int m = prune_method_from_name(t);
            if (m < 0) return FAIL("%s: --method = '%s': expected cfsp, wanda_sp, flap or mag_sp", src, t);
            for (int i = 0; i < o->nmethods; i++) if (o->methods[i] == m) return FAIL("%s: --method: '%s' given twice", src, t);
            o->methods[o->nmethods++] = m;
        }
        if (!o->nmethods) return FAIL("%s: --method: empty", src);
        return 0;
    }
    case O_GMETRIC: {
        int m = global_metric_from_name(v);
        if (m < 0) return FAIL("%s: --global-metric = '%s': expected angular, cosine, mse or mae", src, v);
        *(int *)base = m;
        return 0;
    }
    case O_LMETRIC: {
        int m = local_metric_from_name(v);
        if (m < 0) return FAIL("%s: --local-metric = '%s': unknown (see --help)", src, v);
        *(int *)base = m;
        return 0;
    }
    case O_ALLOC:
        if (!strcmp(v, "reference")) *(int *)base = 1;
        else if (!strcmp(v, "default")) *(int *)base = 0;
        else return FAIL("%s: --alloc-mode = '%s': expected default or reference", src, v);
        return 0;
    case O_SAMPLING:
        if (!strcmp(v, "random")) *(int *)base = 1;
        else if (!strcmp(v, "consecutive")) *(int *)base = 0;
        else return FAIL("%s: --calib-sampling = '%s': expected random or consecutive", src, v);
        return 0;
    case O_WRITEIO:
        if (!strcmp(v, "direct")) *(int *)base = WRITE_IO_DIRECT;
        else if (!strcmp(v, "buffered")) *(int *)base = WRITE_IO_BUFFERED;
        else if (!strcmp(v, "mpiio")) *(int *)base = WRITE_IO_MPIIO;
        else return FAIL("%s: --write-io = '%s': expected direct, buffered or mpiio", src, v);
        return 0;
    }
    return FAIL("internal: option type");
}

static int json_value_string(const cJSON *v, char *out, size_t n)
{
    if (cJSON_IsString(v)) { if (strlen(v->valuestring) >= n) return -1; strcpy(out, v->valuestring); return 0; }
    if (cJSON_IsBool(v)) { snprintf(out, n, "%d", cJSON_IsTrue(v) ? 1 : 0); return 0; }
    if (cJSON_IsNumber(v)) { snprintf(out, n, "%.17g", v->valuedouble); return 0; }
    if (cJSON_IsArray(v)) {
        out[0] = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            char one[512];
            if (json_value_string(e, one, sizeof one) || strlen(out) + strlen(one) + 2 >= n) return -1;
            if (out[0]) strcat(out, ",");
            strcat(out, one);
        }
        return 0;
    }
    return -1;
}

static int load_config_file(options *o, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (read_whole_file(path, 1u << 20, &text, &len)) return -1;
    cJSON *root = NULL;
    int rc = json_parse(text, len, path, &root);
    free(text);
    if (rc) return -1;
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); return FAIL("%s: expected a JSON object of options", path); }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        char name[64];
        if (strlen(e->string) >= sizeof name) { cJSON_Delete(root); return FAIL("%s: unknown option '%.40s...'", path, e->string); }
        strcpy(name, e->string);
        if (name[0] == '_') continue;                    /* "_comment" keys */
        for (char *p = name; *p; p++) if (*p == '_') *p = '-';
        const optdef *d = find_opt(name);
        if (!d) { FAIL("%s: unknown option '%s' (see cfsp-mpi --help)", path, e->string); cJSON_Delete(root); return -1; }
        char val[4096];
        if (json_value_string(e, val, sizeof val)) { FAIL("%s: option '%s': unsupported value type", path, e->string); cJSON_Delete(root); return -1; }
        if (set_opt(o, d, val, path)) { cJSON_Delete(root); return -1; }
    }
    cJSON_Delete(root);
    return 0;
}

int options_parse(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    strcpy(o->command, "run");
    for (size_t i = 0; i < NOPT; i++) if (set_opt(o, &table[i], table[i].def, "defaults")) return -1;
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "run") && strcmp(argv[1], "prune") && strcmp(argv[1], "verify"))
            return FAIL("unknown command '%s' (expected run, prune or verify; see --help)", argv[1]);
        strcpy(o->command, argv[1]);
        i = 2;
    }
    if (!strcmp(o->command, "verify")) {
        if (argc != 3) return FAIL("usage: cfsp-mpi verify FILE.h5");
        snprintf(o->verify_file, sizeof o->verify_file, "%s", argv[2]);
        return 0;
    }
    /* the run file first, so that the command line overrides it */
    for (int k = i; k < argc; k++) {
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) { o->help = 1; return 0; }
        if (!strcmp(argv[k], "--config")) {
            if (k + 1 >= argc) return FAIL("--config: missing file name");
            snprintf(o->config_file, sizeof o->config_file, "%s", argv[k + 1]);
            if (load_config_file(o, argv[k + 1])) return -1;
        }
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) { i++; continue; }
        if (strncmp(a, "--", 2)) return FAIL("unexpected argument '%s' (options start with --)", a);
        char name[64];
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name) return FAIL("unknown option '%.40s'", a);
        memcpy(name, a + 2, nl);
        name[nl] = 0;
        for (char *p = name; *p; p++) if (*p == '_') *p = '-';
        const optdef *d = find_opt(name);
        if (!d) return FAIL("unknown option '--%s' (see cfsp-mpi --help)", name);
        const char *v;
        if (eq) v = eq + 1;
        else if (d->type == O_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))) v = "1";
        else if (i + 1 < argc) v = argv[++i];
        else return FAIL("--%s: missing value", name);
        if (set_opt(o, d, v, "command line")) return -1;
    }
    /* cross-field checks */
    const char *src = o->config_file[0] ? o->config_file : "command line";
    if (!strcmp(o->command, "prune") && !o->stats[0]) return FAIL("prune: --stats FILE is required");
    if (!o->model[0]) return FAIL("%s: --model is required", src);
    if (!o->stats[0] && !o->calib_tokens[0] && !o->calib_text[0]) return FAIL("%s: --calib-tokens (or --calib-text) is required", src);
    if (o->calib_tokens[0] && o->calib_text[0]) return FAIL("%s: --calib-tokens and --calib-text: give one of them", src);
    if (o->eval_tokens[0] && o->eval_text[0]) return FAIL("%s: --eval-tokens and --eval-text: give one of them", src);
    if (o->nsamples < 1) return FAIL("%s: --nsamples = %d: expected >= 1", src, o->nsamples);
    if (o->seqlen < 2) return FAIL("%s: --seqlen = %d: expected >= 2", src, o->seqlen);
    if (o->chunk == 0) o->chunk = o->seqlen;
    if (o->chunk < 1 || o->seqlen % o->chunk) return FAIL("%s: --chunk = %d: expected a divisor of seqlen = %d", src, o->chunk, o->seqlen);
    if (o->eval_windows < 0) return FAIL("%s: --eval-windows = %d: expected >= 0", src, o->eval_windows);
    if (o->ffn_slice < 0) return FAIL("%s: --ffn-slice = %d: expected >= 0", src, o->ffn_slice);
    if (o->align < 1) return FAIL("%s: --align = %d: expected a positive channel multiple (1 = no rounding)", src, o->align);
    if (o->max_rank_memory_gb < 0) return FAIL("%s: --max-rank-memory: expected >= 0", src);
    if (!(o->a > 0)) return FAIL("%s: --a = %g: expected > 0", src, o->a);
    return 0;
}

void options_print_help(void)
{
    printf("cfsp-mpi — CFSP structured pruning of LLaMA-family models with MPI\n\n"
           "usage: mpirun -n P cfsp-mpi [run] [--config RUN.json] [options]\n"
           "       mpirun -n P cfsp-mpi prune --stats STATS.h5 [options]\n"
           "       cfsp-mpi verify FILE.h5\n\n"
           "Every option may also be given in the JSON run file (key = option name, '-' or '_').\n\n");
    for (size_t i = 0; i < NOPT; i++)
        printf("  --%-16s %s (default: %s)\n", table[i].name, table[i].help, table[i].def[0] ? table[i].def : "none");
}

cJSON *options_to_json(const options *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "command", o->command);
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "calib_tokens", o->calib_tokens);
    cJSON_AddStringToObject(j, "eval_tokens", o->eval_tokens);
    cJSON_AddStringToObject(j, "calib_text", o->calib_text);
    cJSON_AddStringToObject(j, "eval_text", o->eval_text);
    cJSON_AddStringToObject(j, "stats", o->stats);
    cJSON_AddNumberToObject(j, "nsamples", o->nsamples);
    cJSON_AddNumberToObject(j, "seqlen", o->seqlen);
    cJSON_AddNumberToObject(j, "chunk", o->chunk);
    cJSON_AddNumberToObject(j, "ffn_slice", o->ffn_slice);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddStringToObject(j, "calib_sampling", o->calib_random ? "random" : "consecutive");
    cJSON_AddNumberToObject(j, "eval_windows", o->eval_windows);
    cJSON *r = cJSON_AddArrayToObject(j, "ratios");
    for (int i = 0; i < o->nratios; i++) cJSON_AddItemToArray(r, cJSON_CreateNumber(o->ratios[i]));
    cJSON *m = cJSON_AddArrayToObject(j, "method");
    for (int i = 0; i < o->nmethods; i++) cJSON_AddItemToArray(m, cJSON_CreateString(prune_method_names[o->methods[i]]));
    cJSON_AddStringToObject(j, "global_metric", global_metric_names[o->global_metric]);
    cJSON_AddStringToObject(j, "local_metric", local_metric_names[o->local_metric]);
    cJSON_AddNumberToObject(j, "a", o->a);
    cJSON_AddNumberToObject(j, "b", o->b);
    cJSON_AddNumberToObject(j, "c", o->c);
    cJSON_AddStringToObject(j, "alloc_mode", o->alloc_reference ? "reference" : "default");
    cJSON_AddNumberToObject(j, "align", o->align);
    return j;
}
