/* options.h — the options of run / prune and of verify, from their tables (src/cli/options.c)
 * parsed by util/opts.h: defaults, then the JSON run file (--config; keys are the option names, '-'
 * or '_'), then the command line. `cfsp-mpi --help` prints the list of commands and the run table. */
#ifndef CFSP_OPTIONS_H
#define CFSP_OPTIONS_H
#include "cfsp/prune/prune.h"

#define MAX_RATIOS 64
#define KL_AUTO 2                /* options.kl: 0 off, 1 on (an error if the scratch file does not fit), auto */

typedef struct {
    char command[16];            /* run | prune | verify */
    char config_file[4096];
    char model[4096], calib_tokens[4096], eval_tokens[4096], output_dir[4096], dump_logits[4096];
    char calib_text[4096], eval_text[4096];   /* text, tokenized by the model's own tokenizer */
    char stats[4096];            /* prune --stats FILE */
    char kl_dir[4096];           /* --kl-dir: the dense logits' scratch file (default: output_dir) */
    char verify_file[4096];      /* verify FILE.h5 */
    int nsamples, seqlen, chunk, eval_windows, eval_score_from, calib_random, ffn_slice;
    long long seed;
    double ratios[MAX_RATIOS];
    int nratios;
    int methods[PM_COUNT];
    int nmethods;
    int global_metric, local_metric;
    double a, b, c;              /* a: NaN for --a auto (a_auto) */
    int a_auto, a_select;        /* a_select: 0 kl, 1 ppl */
    double a_margin;             /* --a auto: standard errors within which a smaller temperature is preferred */
    double a_grid[16];
    int na_grid;
    char select_tokens[4096];
    int select_windows;
    int alloc_reference, align, force, save_models, save_stats, eval_pruned, eval_dense, kl;
    double max_rank_memory_gb;
    int write_io;                /* WRITE_IO_* of ckpt/model_h5.h (options.c maps the names) */
    int compute;                 /* compute_mode of model/matmul.h: auto | fp32 | bf16 */
    int help;
} options;

/* parse argv (and the --config files); FAIL with the option or file/field named; --help: prints
 * the table (rank 0) and sets o->help */
int options_parse(int argc, char **argv, options *o);
/* JSON object of the effective options (caller frees with cJSON_Delete) */
struct cJSON *options_to_json(const options *o);
#endif
