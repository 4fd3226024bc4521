/* options.c — the option tables of run / prune and of verify, the cross-field checks, the
 * top-level --help (the subcommands), and the options object of results.json (see options.h); the
 * parsing itself is util/opts.c. */
#include "cfsp/cli/options.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define O(...) OPT(options, __VA_ARGS__)
static const char *const alloc_names[] = { "default", "reference" };
static const char *const a_select_names[] = { "kl", "ppl" };
static const char *const kl_names[] = { "auto", "1", "0", "true", "false" };
static const int kl_values[] = { KL_AUTO, 1, 0, 1, 0 };
static const char *const sampling_names[] = { "random", "consecutive" };
static const int sampling_values[] = { 1, 0 };          /* calib_random */
static const char *const write_io_names[] = { "direct", "buffered", "mpiio" };
static const int write_io_values[] = { WRITE_IO_DIRECT, WRITE_IO_BUFFERED, WRITE_IO_MPIIO };
static const opt_def table[] = {
    O(OPT_STR, model, "model", "", NULL, "Hugging Face model directory (config.json + safetensors): LLaMA, Mistral, DeciLM, Qwen2, Qwen3", .flags = OPT_REQUIRED),
    O(OPT_STR, calib_tokens, "calib-tokens", "", NULL, "calibration token ids (uint32 little-endian file; FILE@START:END takes a slice)"),
    O(OPT_STR, eval_tokens, "eval-tokens", "", NULL, "held-out token ids for perplexity (FILE@START:END takes a slice; empty: no evaluation)"),
    O(OPT_STR, calib_text, "calib-text", "", NULL, "calibration text (UTF-8), tokenized on rank 0 with the model's own tokenizer, one BOS first if that tokenizer adds one, as tokenize --bos auto: LLaMA yes, Qwen no (instead of --calib-tokens)"),
    O(OPT_STR, eval_text, "eval-text", "", NULL, "held-out text for perplexity, used as is (e.g. rows joined with \\n\\n), tokenized once, one BOS first if the tokenizer adds one, as --calib-text (instead of --eval-tokens)"),
    O(OPT_STR, output_dir, "output-dir", "cfsp_out", NULL, "directory for results.json, stats.h5 and pruned models"),
    O(OPT_INT, nsamples, "nsamples", "128", ">= 1", "calibration sequences N"),
    O(OPT_INT, seqlen, "seqlen", "1024", ">= 2", "tokens per calibration sequence and per evaluation window T"),
    O(OPT_INT, chunk, "chunk", "0", ">= 0", "tokens per pipeline micro-batch (divides seqlen; 0 = seqlen)"),
    O(OPT_ENUM, compute, "compute", "auto", NULL, "matrix products: bf16 (oneDNN; operands rounded to bf16, fp32 accumulation), fp32 (OpenBLAS sgemm), or auto = bf16 when the CPU multiplies bf16 natively (AMX-BF16 / AVX512-BF16) and the checkpoint stores bf16", .names = compute_names, .nnames = 3),
    O(OPT_INT, ffn_slice, "ffn-slice", "4096", ">= 0", "FFN channels per pipeline stage unit (a block = attention + ceil(m/this) FFN slices; 0 = whole FFN); fixes the arithmetic, so keep it when comparing runs"),
    O(OPT_I64, seed, "seed", "0", ">= 0", "seed of the random calibration offsets (Python random.seed)"),
    O(OPT_ENUM, calib_random, "calib-sampling", "random", NULL, "calibration sequences at random offsets (as the reference) or consecutive", .names = sampling_names, .nnames = 2, .values = sampling_values),
    O(OPT_INT, eval_windows, "eval-windows", "0", ">= 0", "evaluate only the first K windows (0 = all)"),
    O(OPT_INT, eval_score_from, "eval-score-from", "0", ">= 0", "score only the logits at positions P..seqlen-2 of every evaluation window (perplexity and --kl; at most seqlen - 2): seqlen/2 scores the second half, as llama.cpp's llama-perplexity and its --kl-divergence do; 0 = every position"),
    O(OPT_DBL_LIST, ratios, "ratios", "", "(0, 1)", "pruning ratios, comma-separated, each in (0,1) (empty: dense only)",
      .count_off = offsetof(options, nratios)),
    O(OPT_ENUM_LIST, methods, "method", "cfsp", NULL, "pruning methods, comma-separated",
      .names = prune_method_names, .nnames = PM_COUNT, .count_off = offsetof(options, nmethods)),
    O(OPT_ENUM, global_metric, "global-metric", "angular", NULL, "coarse block importance", .names = global_metric_names, .nnames = GM_COUNT),
    O(OPT_ENUM, local_metric, "local-metric", "three_w_one_wa", NULL, "fine channel score", .names = local_metric_names, .nnames = LM_COUNT),
    O(OPT_DBL, a, "a", "1", "> 0", "sigmoid temperature of the block allocation (cfsp); auto: chosen per ratio from --a-grid by --a-select on held-out selection windows", .flags = OPT_AUTO),
    O(OPT_DBL_LIST, a_grid, "a-grid", "0,0.25,0.5,1,2,4,8", ">= 0", "--a auto: the candidate temperatures (0 = uniform); the default mode's 1 and the reference's effective value (its a = 1 in this --alloc-mode's units) are always added",
      .count_off = offsetof(options, na_grid)),
    O(OPT_ENUM, a_select, "a-select", "kl", NULL, "--a auto: the selection metric on the selection windows: mean KL(dense || pruned) or perplexity", .names = a_select_names, .nnames = 2),
    O(OPT_DBL, a_margin, "a-margin", "0", ">= 0", "--a auto: 0: the lowest value wins (ties to the smaller temperature); z > 0: the smallest temperature whose paired per-window difference from the lowest value is at most z standard errors"),
    O(OPT_STR, select_tokens, "select-tokens", "", NULL, "--a auto: token ids of the selection windows (FILE@START:END takes a slice; keep it disjoint from the evaluation tokens); default (run only): windows of the calibration tokens that no calibration sequence overlaps"),
    O(OPT_INT, select_windows, "select-windows", "8", ">= 1", "--a auto: selection windows of seqlen tokens (at most this many)"),
    O(OPT_DBL, b, "b", "1", NULL, "activation exponent inside the weight term"),
    O(OPT_DBL, c, "c", "1", NULL, "activation exponent of the channel score"),
    O(OPT_ENUM, alloc_reference, "alloc-mode", "default", NULL, "block allocation: default scales the temperature by 131072/(N*T) and keeps exact counts, reference has the reference's constants and quirks", .names = alloc_names, .nnames = 2),
    O(OPT_INT, align, "align", "1", ">= 1", "round per-block channel counts to a multiple of this (1 = no rounding; e.g. 128)"),
    O(OPT_BOOL, force, "force", "0", NULL, "overwrite existing outputs"),
    O(OPT_BOOL, save_models, "save-models", "1", NULL, "write the pruned models (HDF5, one file per method and ratio)"),
    O(OPT_ENUM, write_io, "write-io", "direct", NULL, "how each rank writes its tensor bytes into the HDF5 file HDF5 laid out: direct is O_DIRECT (buffered where the file system refuses it), mpiio is H5Dwrite", .names = write_io_names, .nnames = 3, .values = write_io_values),
    O(OPT_BOOL, save_stats, "save-stats", "1", NULL, "write the calibration statistics (stats.h5)"),
    O(OPT_BOOL, eval_dense, "eval-dense", "1", NULL, "evaluate the dense model"),
    O(OPT_BOOL, eval_pruned, "eval-pruned", "1", NULL, "evaluate every pruned model"),
    O(OPT_ENUM, kl, "kl", "auto", NULL, "compare every evaluated pruned model with the dense one on the same positions: KL(dense || pruned) mean / median / 99th percentile / max, top-1 agreement, perplexity ratio (needs --eval-dense; the last rank keeps the dense logits in a scratch file of windows x (seqlen - 1 - eval-score-from) x vocab x 4 bytes): 1 (an error if it does not fit), 0, or auto = 1 unless the file does not fit in --kl-dir (then a warning)", .names = kl_names, .nnames = 5, .values = kl_values),
    O(OPT_STR, kl_dir, "kl-dir", "", NULL, "directory of the last rank's scratch file of dense logits for --kl (default: --output-dir; a node-local disk is best); the file is unlinked at creation"),
    O(OPT_STR, dump_logits, "dump-logits", "", NULL, "write the dense evaluation logits (float32 [windows, T, vocab]) here"),
    O(OPT_STR, stats, "stats", "", NULL, "prune: statistics file of an earlier run (no forward pass)"),
    O(OPT_DBL, max_rank_memory_gb, "max-rank-memory", "0", ">= 0", "refuse to start if a rank needs more GB than this (0 = MemAvailable / ranks)"),
};
#define ABOUT "cfsp-mpi — CFSP structured pruning of LLaMA-family models with MPI"
static const opt_table run_table = {
    "run", "cfsp-mpi",  /* prog: replaced by the command (run | prune) */
    "mpirun -n P cfsp-mpi [run] [--config RUN.json] [options]\n"
    "       mpirun -n P cfsp-mpi prune --stats STATS.h5 [options]\n"
    "       cfsp-mpi verify FILE.h5 | --model DIR",
    ABOUT, table, sizeof table / sizeof table[0] };
/* `cfsp-mpi --help` (no command named): the run table after the list of commands */
static const char top_about[] = ABOUT "\n\n"
    "commands (cfsp-mpi COMMAND --help prints each one's options):\n"
    "  run       calibrate, prune by every --method and --ratios, evaluate, write (the default command)\n"
    "  prune     the same from the statistics file of an earlier run (--stats), without the forward pass\n"
    "  verify    recompute every tensor checksum of a pruned checkpoint (FILE.h5), or find NaN / Inf in a model (--model DIR)\n"
    "  plan      the pipeline simulator: stage map, per-rank memory and time (--json for the scripts)\n"
    "  export    a pruned checkpoint (or the dense model) to GGUF or Hugging Face safetensors\n"
    "  tokenize  a UTF-8 text file to token ids with the model's own tokenizer\n"
    "  recover   LoRA recovery fine-tuning of a pruned checkpoint";

static const opt_def verify_def[] = {
    O(OPT_STR, verify_file, "FILE.h5", NULL, NULL, "a pruned checkpoint of cfsp-mpi", .flags = OPT_POSITIONAL),
    O(OPT_STR, model, "model", "", NULL, "instead of FILE.h5: a Hugging Face model directory (safetensors) whose every value is tested for NaN / Inf"),
};
static const opt_table verify_table = {
    "verify", "cfsp-mpi verify", "cfsp-mpi verify FILE.h5\n       cfsp-mpi verify --model DIR",
    "cfsp-mpi verify — recomputes every tensor checksum of FILE.h5 and compares it with the stored one; with --model DIR, "
    "scans every tensor of a safetensors checkpoint (BF16, F16, F32) and names each one holding a NaN or Inf, with the first one's element index",
    verify_def, sizeof verify_def / sizeof verify_def[0] };

/* the shortest decimal that reads back as v (as the user most likely wrote it) */
static void shortest(double v, char *out, size_t n)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(out, n, "%.*g", p, v);
        if (strtod(out, NULL) == v) return;
    }
}

int options_parse(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    strcpy(o->command, "run");
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "run") && strcmp(argv[1], "prune") && strcmp(argv[1], "verify"))
            return FAIL("unknown command '%s' (expected run, prune, verify, recover, export, tokenize or plan; see cfsp-mpi --help)", argv[1]);
        strcpy(o->command, argv[1]);
        first = 2;
    }
    int verify = !strcmp(o->command, "verify");
    opt_table t = verify ? verify_table : run_table;
    if (!verify) t.prog = o->command;
    if (first == 1) t.about = top_about;
    opt_result res;
    int rc = opts_parse(&t, argc, argv, first, o, &res);
    if (rc) { o->help = rc == 1; return rc < 0 ? -1 : 0; }
    if (verify) {
        if (!o->verify_file[0] == !o->model[0])
            return FAIL("verify: give FILE.h5 (a pruned checkpoint) or --model DIR (a safetensors checkpoint), one of them (usage: cfsp-mpi verify FILE.h5 | --model DIR)");
        return 0;
    }
    if (res.nconfig) snprintf(o->config_file, sizeof o->config_file, "%s", res.config[res.nconfig - 1]);
    /* cross-field checks, naming where the value came from */
    char w[4200];
#define WHERE(name) opts_where(&t, &res, name, w, sizeof w)
    if (!strcmp(o->command, "prune") && !o->stats[0]) return FAIL("prune: --stats is required (the statistics file of an earlier run)");
    if (!o->stats[0] && !o->calib_tokens[0] && !o->calib_text[0]) return FAIL("%s: --calib-tokens (or --calib-text) is required", t.prog);
    if (o->calib_tokens[0] && o->calib_text[0]) return FAIL("%s: --calib-tokens and --calib-text: give one of them", t.prog);
    if (o->eval_tokens[0] && o->eval_text[0]) return FAIL("%s: --eval-tokens and --eval-text: give one of them", t.prog);
    if (o->chunk == 0) o->chunk = o->seqlen;
    o->a_auto = isnan(o->a);
    if (o->a_auto) {
        int cfsp = 0;
        for (int m = 0; m < o->nmethods; m++) cfsp |= o->methods[m] == PM_CFSP;
        if (!cfsp) return FAIL("%s = 'auto': only the cfsp method allocates by a temperature (--method has no cfsp)", WHERE("a"));
        if (o->stats[0] && !o->select_tokens[0])
            return FAIL("%s = 'auto' with prune --stats: give --select-tokens (the calibration windows of the statistics are not known here)", WHERE("a"));
        if (o->na_grid == 0) return FAIL("%s: no candidate temperature (give at least one value >= 0)", WHERE("a-grid"));
    }
    if (o->seqlen % o->chunk) return FAIL("%s = '%d': expected a divisor of seqlen = %d", WHERE("chunk"), o->chunk, o->seqlen);
    if (o->eval_score_from > o->seqlen - 2)
        return FAIL("%s = '%d': expected at most seqlen - 2 = %d (the last scored logits predict the window's last token)",
                    WHERE("eval-score-from"), o->eval_score_from, o->seqlen - 2);
    /* one output file per (method, ratio), named with %g (run.c): two ratios that print the same
     * (the same value twice, or 0.3 and 0.30000001) would name one file; refused, never merged
     * (a method given twice the option parser refuses) */
    for (int a = 0; a < o->nratios; a++)
        for (int b = a + 1; b < o->nratios; b++) {
            char ra[64], rb[64];
            snprintf(ra, sizeof ra, "%g", o->ratios[a]);
            snprintf(rb, sizeof rb, "%g", o->ratios[b]);
            if (strcmp(ra, rb)) continue;
            char va[64], vb[64];
            shortest(o->ratios[a], va, sizeof va);
            shortest(o->ratios[b], vb, sizeof vb);
            if (o->ratios[a] == o->ratios[b])
                return FAIL("%s: the ratio %s is given twice (items %d and %d), both would write %s_r%s.h5 (give each ratio once)",
                            WHERE("ratios"), ra, a + 1, b + 1, prune_method_names[o->methods[0]], ra);
            return FAIL("%s: the ratios %s and %s (items %d and %d) print the same, both would write %s_r%s.h5 (ratios must "
                        "differ in their first 6 significant digits)", WHERE("ratios"), va, vb, a + 1, b + 1,
                        prune_method_names[o->methods[0]], ra);
        }
#undef WHERE
    return 0;
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
    cJSON_AddStringToObject(j, "compute", compute_names[o->compute]);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddStringToObject(j, "calib_sampling", o->calib_random ? "random" : "consecutive");
    cJSON_AddNumberToObject(j, "eval_windows", o->eval_windows);
    cJSON_AddNumberToObject(j, "eval_score_from", o->eval_score_from);
    cJSON *r = cJSON_AddArrayToObject(j, "ratios");
    for (int i = 0; i < o->nratios; i++) cJSON_AddItemToArray(r, cJSON_CreateNumber(o->ratios[i]));
    cJSON *m = cJSON_AddArrayToObject(j, "method");
    for (int i = 0; i < o->nmethods; i++) cJSON_AddItemToArray(m, cJSON_CreateString(prune_method_names[o->methods[i]]));
    cJSON_AddStringToObject(j, "global_metric", global_metric_names[o->global_metric]);
    cJSON_AddStringToObject(j, "local_metric", local_metric_names[o->local_metric]);
    if (o->a_auto) {
        cJSON_AddStringToObject(j, "a", "auto");
        cJSON *g = cJSON_AddArrayToObject(j, "a_grid");
        for (int i = 0; i < o->na_grid; i++) cJSON_AddItemToArray(g, cJSON_CreateNumber(o->a_grid[i]));
        cJSON_AddStringToObject(j, "a_select", a_select_names[o->a_select]);
        cJSON_AddNumberToObject(j, "a_margin", o->a_margin);
        cJSON_AddStringToObject(j, "select_tokens", o->select_tokens);
        cJSON_AddNumberToObject(j, "select_windows", o->select_windows);
    } else cJSON_AddNumberToObject(j, "a", o->a);
    cJSON_AddNumberToObject(j, "b", o->b);
    cJSON_AddNumberToObject(j, "c", o->c);
    cJSON_AddStringToObject(j, "alloc_mode", o->alloc_reference ? "reference" : "default");
    cJSON_AddNumberToObject(j, "align", o->align);
    cJSON_AddStringToObject(j, "kl", o->kl == KL_AUTO ? "auto" : o->kl ? "1" : "0");
    return j;
}
