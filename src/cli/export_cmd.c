/* export_cmd.c — `cfsp-mpi export`: command line of the exporters (see export.h). Serial: main.c
 * runs it on rank 0 only, so it works with or without mpirun. */
#include "cfsp/cli/commands.h"
#include "cfsp/export/export.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage[] =
    "usage: cfsp-mpi export --format gguf|hf [options] IN.h5 OUT      a pruned checkpoint of cfsp-mpi\n"
    "       cfsp-mpi export --format gguf|hf --model DIR [options] OUT  the unpruned model (ratio 0)\n"
    "  gguf: OUT is a GGUF v3 file (llama.cpp architecture 'deci', per-layer FFN sizes)\n"
    "  hf:   OUT is a directory (DeciLMForCausalLM / nemotron-nas config.json with block_configs,\n"
    "        safetensors shards + model.safetensors.index.json, the tokenizer files)\n"
    "  --model DIR        the source checkpoint: tokenizer files (default: the model path recorded in IN.h5)\n"
    "  --shard-size BYTES hf: largest safetensors file (suffix KB/MB/GB = 1e3/1e6/1e9, KiB/MiB/GiB; default 5GB)\n"
    "  --alignment N      gguf: general.alignment, a power of two (default 32)\n"
    "  --name TEXT        gguf: general.name (default: the source directory's name, method and ratio)\n"
    "  --force            replace an existing OUT\n";

static int parse_size(const char *v, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || x <= 0) return FAIL("--shard-size '%s': expected a positive size in bytes", v);
    struct { const char *suf; double mul; } u[] = { { "", 1 }, { "B", 1 }, { "KB", 1e3 }, { "MB", 1e6 }, { "GB", 1e9 }, { "TB", 1e12 },
                                                    { "K", 1e3 }, { "M", 1e6 }, { "G", 1e9 }, { "KiB", 1024.0 }, { "MiB", 1048576.0 },
                                                    { "GiB", 1073741824.0 }, { "TiB", 1099511627776.0 } };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        if (!strcasecmp(end, u[i].suf)) {
            double b = x * u[i].mul;
            if (b > 1.8e19) return FAIL("--shard-size '%s': too large", v);
            *out = (uint64_t)b;
            return 0;
        }
    return FAIL("--shard-size '%s': unknown unit '%s' (use KB, MB, GB, KiB, MiB, GiB)", v, end);
}

int export_main(int argc, char **argv)
{
    const char *format = NULL, *model = NULL, *pos[3] = { NULL, NULL, NULL }, *name = NULL;
    int npos = 0, force = 0;
    uint64_t shard = 0, align = 32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 1; }
        if (strncmp(a, "--", 2)) {
            if (npos == 2) return FAIL("export: unexpected argument '%s' (expected [IN.h5] OUT)", a);
            pos[npos++] = a;
            continue;
        }
        if (!strcmp(a, "--force")) { force = 1; continue; }
        const char *eq = strchr(a, '=');
        char key[64];
        size_t kl = eq ? (size_t)(eq - a) : strlen(a);
        if (kl >= sizeof key) return FAIL("export: unknown option '%s'", a);
        memcpy(key, a, kl);
        key[kl] = 0;
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return FAIL("export: option %s needs a value", key);
        if (!strcmp(key, "--format")) format = v;
        else if (!strcmp(key, "--model")) model = v;
        else if (!strcmp(key, "--name")) name = v;
        else if (!strcmp(key, "--shard-size")) { if (parse_size(v, &shard)) return -1; }
        else if (!strcmp(key, "--alignment")) {
            char *end = NULL;
            unsigned long long x = strtoull(v, &end, 10);
            if (!*v || *end || x == 0 || x > (1u << 30) || (x & (x - 1))) return FAIL("export: --alignment '%s': expected a power of two", v);
            align = x;
        } else return FAIL("export: unknown option '%s' (cfsp-mpi export --help)", key);
    }
    if (!format) return FAIL("export: --format gguf|hf is required (cfsp-mpi export --help)");
    int gguf = !strcmp(format, "gguf");
    if (!gguf && strcmp(format, "hf")) return FAIL("export: --format '%s': expected gguf or hf", format);
    if (npos == 0) return FAIL("export: no output given (cfsp-mpi export --help)");
    if (npos == 1 && !model) return FAIL("export: one path given: export IN.h5 OUT, or the unpruned model with --model DIR OUT");
    const char *in = npos == 2 ? pos[0] : NULL, *out = pos[npos - 1];
    if (!out[0]) return FAIL("export: empty output path");
    if (!force && path_exists(out)) return FAIL("%s: output exists (use --force to overwrite)", out);
    ex_source s;
    int rc = in ? ex_source_open_h5(in, model, &s) : ex_source_open_dir(model, &s);
    ex_options o = { .out = out, .force = force, .alignment = (uint32_t)align, .shard_bytes = shard, .name = name };
    if (!rc) rc = gguf ? export_gguf(&s, &o) : export_hf(&s, &o);
    ex_source_close(&s);
    return rc;
}
