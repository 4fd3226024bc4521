/* opts.h — the one option parser of every cfsp-mpi command (run/prune, recover, plan, export,
 * tokenize, cfsp-mpi-mkmodel): a command describes its options in a table (name, kind, offset into
 * the command's struct, default, range, help); opts_parse applies the defaults, then every
 * `--config FILE.json` (an object whose keys are option names, '-' or '_'; keys starting with '_'
 * are comments), then the command line (`--name value`, `--name=value`, positional arguments), and
 * checks kinds, ranges and names. `--help` / `-h` prints the table in one format.
 *
 * Errors (FAIL, one line) name where the value came from and the option:
 *   "recover: --steps = 'x': expected an integer >= 0"        (the command line)
 *   "run.json: nsamples = 'x': expected an integer >= 1"      (the run file, the key as written)
 *   "plan: unknown option '--rank' (see cfsp-mpi plan --help)", "tokenize: --model: missing value",
 *   "export: --format is required", "run.json: unknown option 'ratioz' (see ...)". */
#ifndef CFSP_OPTS_H
#define CFSP_OPTS_H
#include <stddef.h>

typedef enum {
    OPT_STR,       /* char[size]; flag OPT_NONEMPTY refuses "" */
    OPT_INT,       /* int, decimal, within range */
    OPT_I64,       /* int64_t (or uint64_t with a range >= 0), decimal, within range */
    OPT_DBL,       /* double, finite, within range */
    OPT_BOOL,      /* int 0/1: 1|0|true|false; alone on the command line it means 1 */
    OPT_ENUM,      /* int: the index of the value in names[nnames] (or values[index] if values) */
    OPT_ENUM_LIST, /* int[]: comma-separated names (their indexes), each once, at least one; count at count_off */
    OPT_DBL_LIST,  /* double[]: comma-separated numbers within range, possibly none; count at count_off */
    OPT_SIZE,      /* uint64_t bytes > 0: a number with an optional unit (KB MB GB TB = 1e3.., KiB MiB GiB TiB, K M G) */
} opt_kind;

enum {
    OPT_REQUIRED = 1,    /* must be given (STR: non-empty) */
    OPT_NONEMPTY = 2,    /* STR: "" is refused */
    OPT_POSITIONAL = 4,  /* STR: the next bare argument of the command line, in table order (not an option, not a run-file key) */
    OPT_AUTO = 8,        /* DBL: the word "auto" is accepted too and stored as NaN */
};

typedef struct {
    const char *name;            /* "calib-tokens": --calib-tokens, run-file key calib-tokens or calib_tokens */
    opt_kind kind;
    size_t off;                  /* offset of the field in the command's struct */
    size_t size;                 /* sizeof the field (STR: buffer bytes; lists: the array's bytes) */
    const char *def;             /* default as command-line text; NULL: none (field stays zero) */
    const char *range;           /* INT/I64/DBL/DBL_LIST: ">= 0", "> 0", "<= 1", "[1, 65536]", "(0, 1)", "[0, 1)"; NULL: any */
    const char *help;
    int flags;                   /* OPT_REQUIRED | OPT_NONEMPTY | OPT_POSITIONAL */
    const char *const *names;    /* ENUM, ENUM_LIST: the accepted names */
    int nnames;
    const int *values;           /* ENUM: stored values of names[i] (NULL: the index i) */
    size_t count_off;            /* lists: offset of the int element count */
} opt_def;

typedef struct {
    const char *prog;            /* "recover": prefix of the errors about the command line */
    const char *cmd;             /* "cfsp-mpi recover": named in "(see cfsp-mpi recover --help)" */
    const char *usage;           /* the usage line(s) printed by --help, without "usage: " (the first
                                  * line is also quoted by the errors about positional arguments) */
    const char *about;           /* a paragraph printed by --help before the usage (may be NULL) */
    const opt_def *opt;
    size_t n;
} opt_table;

/* One table entry for field f of struct type: OPT(type, kind, f, "name", default, range, "help"
 * [, .flags = ..., .names = ..., .nnames = ..., .values = ..., .count_off = ...]). */
#define OPT(type, kind_, f, name_, def_, range_, ...) \
    { .name = name_, .kind = kind_, .off = offsetof(type, f), .size = sizeof(((type *)0)->f), .def = def_, .range = range_, .help = __VA_ARGS__ }

typedef struct {
    const char *config[8];       /* the --config files applied, in order */
    int nconfig;
    int npos;                    /* positional arguments given on the command line */
    unsigned char given[128];    /* given[i]: 0 option i kept its default, 1 the command line set it,
                                  * 2 or 3 a run file (its key written with '-' or with '_') */
    unsigned char file_of[128];  /* the run file (index into config) that set option i last */
} opt_result;

/* Parse argv[first..argc-1] into the struct at dst. Returns 0, 1 after printing --help (on rank 0,
 * or without MPI), or -1 with a FAIL message. res (may be NULL) receives what was given. */
int opts_parse(const opt_table *t, int argc, char **argv, int first, void *dst, opt_result *res);
/* the --help text: about, usage, the positional arguments, one line per option (its help, an
 * enum's names from the table, its default) */
void opts_print_help(const opt_table *t);
/* prefix for a later check of option name: "run.json: align" if the value came from a run file,
 * "recover: --align" otherwise (the command line or the default); returns buf */
const char *opts_where(const opt_table *t, const opt_result *res, const char *name, char *buf, size_t n);
#endif
