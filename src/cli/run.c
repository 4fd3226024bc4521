/* run.c — the job of `run` and `prune`, phase by phase, as every rank executes it (cfsp_run):
 *   load       config, unit plan and stage map, outputs, tokens, weights (each step ends in
 *              cfsp_sync, so a failure on any rank ends the job cleanly on all)
 *   evaluate   the dense model through the pipeline
 *   calibrate  the single calibration pass (pipelined), or the statistics read from a file; the
 *              statistics reach the root, which saves them
 *   sweep      per method: scores on the owners, gathered at the root (prune/driver.h); per ratio:
 *              the root's selection broadcast, the owners slice their units, all write the HDF5
 *              checkpoint in parallel, the pruned model is evaluated through the same pipeline
 *   commit     the reports written under their temporary names, every output checked, then all
 *              renamed into place, results.json last; any failure removes what the job created */
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/cli/commands.h"
#include "cfsp/format/tokens.h"
#include "cfsp/model/matmul.h"
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/pipeline/plan_mem.h"
#include "cfsp/prune/driver.h"
#include "cfsp/prune/stats_h5.h"
#include "cfsp/report/results.h"
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/blas_env.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char tmp[4200], final[4200];
    int owner;                     /* the rank that checks and renames it */
} pending_file;

typedef struct {
    const options *o;
    model_config cfg;
    unit_plan plan;
    stage_map map;
    st_model st;
    rank_weights w;
    pipeline pl;
    int rank, P, L, nu;            /* nu: own unit count */
    int node_ranks;                /* ranks sharing this rank's node (MPI_COMM_TYPE_SHARED) */
    int first_unit, from_stats;
    token_file calib, eval;
    int64_t *calib_off, *eval_off;
    int nsamples, seqlen, nwin;
    uint64_t fingerprint;
    block_stats *stats;            /* [L]: entries of blocks this rank touches (root: all) */
    pipe_job cj;                   /* the calibration pass (its timings) */
    uint64_t resident;             /* weight bytes resident after the statistics phase (st_resident_bytes) */
    double t_start, t_setup, dense_secs, sweep_secs, score_secs;
    cJSON *res;                    /* root: results */
    eval_ref ref;                  /* last rank: the dense reference of the KL divergence (have_ref) */
    /* --a auto: the selection windows (held out from the statistics and from the evaluation) */
    token_file sel;                /* their token stream: --select-tokens, or the calibration's */
    int64_t *sel_off;
    int sel_nwin, have_sel_ref;
    const char *sel_source;        /* "--select-tokens" | "calibration" */
    int sel_owned;                 /* sel holds its own copy (--select-tokens), else it is calib */
    double cur_a;                  /* the temperature of the cut being written (cfsp) */
    eval_ref sel_ref;              /* last rank: the dense reference on them (--a-select kl) */
    int have_ref;                  /* every rank: the dense pass was recorded (--kl) */
    double dense_ppl;
    pending_file **pending;        /* outputs written under temporary names (each entry its own
                                    * allocation: the names handed out stay valid as the list grows) */
    int npending;
} job;

/* Every output of a run is written under NAME.tmp and renamed only when the whole job has
 * succeeded and every temporary file is there (commit_outputs), so a failed or killed job leaves no
 * file with a final name and the same command can simply be run again. Every rank keeps the list
 * and registers every temporary name (any rank's failure removes them all: all take part in
 * writing); the owner of an entry (rank 0; the last rank for the --dump-logits file it wrote)
 * checks and renames it. */
static const char *pending_output(job *j, const char *final, int owner)
{
    j->pending = xrealloc(j->pending, sizeof *j->pending * (size_t)(j->npending + 1));
    pending_file *e = j->pending[j->npending++] = xmalloc(sizeof *e);
    snprintf(e->final, sizeof e->final, "%s", final);
    snprintf(e->tmp, sizeof e->tmp, "%s.tmp", final);
    e->owner = owner;
    cfsp_tmp_register(e->tmp);
    return e->tmp;
}

/* a final name: absent, or (with --force) a file to replace; never a directory */
static int check_final_name(const char *p, int force)
{
    struct stat st;
    if (lstat(p, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) return FAIL("%s: a directory is in the way of this output (remove or rename it)", p);
    if (!force) return FAIL("%s: output exists (use --force to overwrite)", p);
    return 0;
}

/* before any rename: every temporary file this rank owns is there, complete (a regular file), and
 * its final name is still free (nothing appeared there during the job) */
static int commit_check(const job *j)
{
    for (int i = 0; i < j->npending; i++) {
        const pending_file *e = j->pending[i];
        if (e->owner != j->rank) continue;
        struct stat st;
        if (lstat(e->tmp, &st) != 0) return FAIL("%s: the temporary output is missing: %s", e->tmp, strerror(errno));
        if (!S_ISREG(st.st_mode)) return FAIL("%s: the temporary output is not a regular file", e->tmp);
        if (check_final_name(e->final, j->o->force)) return -1;
    }
    return 0;
}

/* the directory of a path (for its fsync) */
static void dir_of(const char *path, char *out, size_t n)
{
    snprintf(out, n, "%s", path);
    char *s = strrchr(out, '/');
    if (!s) snprintf(out, n, ".");
    else if (s == out) s[1] = 0;
    else *s = 0;
}

/* Collective. Every entry renamed by its owner, the last one (results.json) only after all others
 * are in place on every rank and their directories synced; if a rename or a sync fails on any
 * rank, every rank removes the final names it created (the rest go as temporary files) and the
 * job fails: no output under a final name. Test hook (err.h): CFSP_FAULT=erename:R:commit makes
 * rank R's second rename fail with EIO. */
static void commit_outputs(job *j)
{
    int n = j->npending, rc = 0, failed = 0, calls = 0;
    char *renamed = xcalloc((size_t)(n ? n : 1), 1), dir[4200], d2[4200];
    for (int stage = 0; stage < 2 && !failed; stage++) {
        int lo = stage ? n - 1 : 0, hi = stage ? n : n - 1;
        for (int i = lo; i < hi && !rc; i++) {
            pending_file *e = j->pending[i];
            if (e->owner != j->rank) continue;
            int e_no = 0;
            if (++calls == 2 && cfsp_fault("erename", "commit")) e_no = EIO;
            else if (rename(e->tmp, e->final) != 0) e_no = errno;
            if (e_no) rc = FAIL("cannot rename %s to %s: %s", e->tmp, e->final, strerror(e_no));
            else renamed[i] = 1;
        }
        /* the renames durable: each owner syncs every directory it renamed into (once) */
        for (int i = lo; i < hi && !rc; i++) {
            if (!renamed[i]) continue;
            dir_of(j->pending[i]->final, dir, sizeof dir);
            int seen = 0;
            for (int k = lo; k < i && !seen; k++) {
                dir_of(j->pending[k]->final, d2, sizeof d2);
                seen = renamed[k] && !strcmp(dir, d2);
            }
            if (!seen) rc = fsync_dir(dir);
        }
        int mine = rc != 0;
        MPI_CHECK(MPI_Allreduce(&mine, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    }
    for (int i = 0; i < n; i++) {
        if (failed && renamed[i]) unlink(j->pending[i]->final);     /* roll back */
        if (!failed) cfsp_tmp_unregister(j->pending[i]->tmp);
    }
    free(renamed);
    cfsp_sync(rc);
}

static void model_file_name(const job *j, int method, double ratio, char *out, size_t n)
{
    snprintf(out, n, "%s/%s_r%g.h5", j->o->output_dir, prune_method_names[method], ratio);
}

/* root: create the output directory, take its job lock, and refuse before any work: an output
 * that exists (without --force), a directory in the way of an output, two outputs of one name */
static int prepare_outputs(job *j)
{
    const options *o = j->o;
    if (mkdir_p(o->output_dir)) return -1;
    if (output_dir_lock(o->output_dir)) return -1;
    int n = 0, rc = 0;
    char (*name)[4200] = xmalloc(sizeof *name * (size_t)(5 + o->nmethods * o->nratios));
    const char *fixed[] = { "results.json", "results.md", "ppl_vs_ratio.svg", "stats.h5" };
    for (int i = 0; i < 4; i++) {
        if (i == 2 && !(o->nratios > 0 && o->nmethods > 0)) continue;
        if (i == 3 && (!o->save_stats || o->stats[0])) continue;
        snprintf(name[n++], 4200, "%s/%s", o->output_dir, fixed[i]);
    }
    if (o->save_models)
        for (int m = 0; m < o->nmethods; m++)
            for (int r = 0; r < o->nratios; r++) model_file_name(j, o->methods[m], o->ratios[r], name[n++], 4200);
    if (o->dump_logits[0]) {
        snprintf(name[n++], 4200, "%s", o->dump_logits);
        char d[4200];
        struct stat st;
        dir_of(o->dump_logits, d, sizeof d);
        if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) rc = FAIL("%s: --dump-logits: the directory %s does not exist", o->dump_logits, d);
    }
    for (int i = 0; i < n && !rc; i++) {
        rc = check_final_name(name[i], o->force);
        for (int k = 0; k < i && !rc; k++)
            if (!strcmp(name[i], name[k])) rc = FAIL("%s: --dump-logits names another output of the job", name[i]);
    }
    free(name);
    if (rc) return -1;
    /* enough disk for the pruned checkpoints? (each at most the dense model's size) */
    if (o->save_models && o->nratios) {
        uint64_t total = 0;
        for (int i = 0; i < j->st.nt; i++) total += st_nbytes(&j->st.t[i]);
        int64_t freeb = free_disk_bytes(o->output_dir);
        uint64_t need = total * (uint64_t)(o->nratios * o->nmethods);
        if (freeb >= 0 && (uint64_t)freeb < need)
            return FAIL("%s: %lld bytes free, the %d pruned checkpoints need up to %llu", o->output_dir, (long long)freeb,
                        o->nratios * o->nmethods, (unsigned long long)need);
    }
    return 0;
}

static void bcast_tokens(token_file *t)
{
    long long n = t->n;
    MPI_CHECK(MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD));
    if (cfsp_rank() != 0) { t->n = n; t->ids = n ? xmalloc(sizeof(uint32_t) * (size_t)n) : NULL; }
    for (long long off = 0; off < n; off += 1 << 28) {
        int cnt = (int)(n - off < (1 << 28) ? n - off : (1 << 28));
        MPI_CHECK(MPI_Bcast(t->ids + off, cnt, MPI_UINT32_T, 0, MPI_COMM_WORLD));
    }
}

static void load_tokens(job *j, int need_calib)
{
    const options *o = j->o;
    int rc = 0;
    j->seqlen = o->seqlen;
    j->nsamples = o->nsamples;
    if (j->rank == 0) {
        const char *cname = o->calib_text[0] ? o->calib_text : o->calib_tokens, *ename = o->eval_text[0] ? o->eval_text : o->eval_tokens;
        if (need_calib) rc = o->calib_text[0] ? tokenize_file_checked(o->model, o->calib_text, j->cfg.vocab, TOK_BOS_AUTO, &j->calib.ids, &j->calib.n)
                                              : tokens_read(o->calib_tokens, j->cfg.vocab, &j->calib);
        if (!rc && ename[0]) {
            rc = o->eval_text[0] ? tokenize_file_checked(o->model, o->eval_text, j->cfg.vocab, TOK_BOS_AUTO, &j->eval.ids, &j->eval.n)
                                 : tokens_read(o->eval_tokens, j->cfg.vocab, &j->eval);
            if (!rc && j->eval.n < o->seqlen)
                rc = FAIL("%s: %lld tokens, fewer than one evaluation window of seqlen = %d", ename, (long long)j->eval.n, o->seqlen);
        }
        if (!rc && need_calib) {
            j->calib_off = xmalloc(sizeof(int64_t) * (size_t)o->nsamples);
            rc = calib_offsets(j->calib.n, o->nsamples, o->seqlen, o->calib_random, (uint64_t)o->seed, cname, j->calib_off);
        }
    }
    cfsp_sync(rc);
    if (need_calib) {
        bcast_tokens(&j->calib);
        if (j->rank != 0) j->calib_off = xmalloc(sizeof(int64_t) * (size_t)o->nsamples);
        MPI_CHECK(MPI_Bcast(j->calib_off, o->nsamples, MPI_INT64_T, 0, MPI_COMM_WORLD));
    }
    if (o->eval_tokens[0] || o->eval_text[0]) {
        bcast_tokens(&j->eval);
        j->nwin = (int)(j->eval.n / o->seqlen);
        if (o->eval_windows > 0 && o->eval_windows < j->nwin) j->nwin = o->eval_windows;
        j->eval_off = xmalloc(sizeof(int64_t) * (size_t)j->nwin);
        for (int i = 0; i < j->nwin; i++) j->eval_off[i] = (int64_t)i * o->seqlen;
    }
}

/* estimated bytes this rank needs: its weights (mapped) + workspace + caches; rank-local (no
 * collective: the caller's cfsp_sync reports a failure on any rank) */
static int check_memory(job *j)
{
    /* the planner's model of this rank (pipeline/plan_mem.h, what `cfsp-mpi plan` prints): its
     * stored weights, which must be what weights_load mapped, plus the working buffers */
    rank_mem m;
    if (plan_rank_mem(&j->cfg, &j->st, &j->plan, &j->map, j->rank, j->o->seqlen, j->o->chunk, &m)) return -1;
    CHECK(m.stored_bytes == j->w.bytes_expected, "the memory plan counts %llu stored bytes, the weights %llu",
          (unsigned long long)m.stored_bytes, (unsigned long long)j->w.bytes_expected);
    double need = (double)m.stored_bytes + (double)m.buffer_bytes;
    double limit = j->o->max_rank_memory_gb * 1e9;
    if (limit <= 0) {
        FILE *f = fopen("/proc/meminfo", "r");
        char line[256];
        long long avail_kb = 0;
        while (f && fgets(line, sizeof line, f)) if (sscanf(line, "MemAvailable: %lld kB", &avail_kb) == 1) break;
        if (f) fclose(f);
        limit = avail_kb > 0 ? avail_kb * 1024.0 / j->node_ranks : 0;
    }
    if (limit > 0 && need > limit)
        return FAIL("rank %d needs about %.2f GB for its stage units (blocks %d-%d) but only %.2f GB are available to it (--max-rank-memory, or use more ranks)",
                    j->rank, need / 1e9, j->plan.u[j->w.first_unit].layer, j->plan.u[j->w.last_unit - 1].layer, limit / 1e9);
    return 0;
}

typedef struct { double ppl, nll, seconds; int64_t ntok; kl_summary kl; } eval_result;

/* one evaluation pass; ref_mode 0: none, 1: record the dense reference, 2: compare with it (the
 * figures in .kl on every rank); seq_nll: [nwin] each window's summed NLL on every rank, or NULL */
static eval_result run_eval_on(job *j, const unit_weights *units, const char *label, FILE *dump, int ref_mode,
                               const token_file *tok, const int64_t *off, int nwin, eval_ref *ref, double *seq_nll)
{
    int last = j->rank == j->P - 1;
    if (ref_mode && last) eval_ref_begin(ref, ref_mode == 2);
    pipe_job pj = { 0 };
    pj.tokens = tok->ids;
    pj.offsets = off;
    pj.nseq = nwin;
    pj.seqlen = j->o->seqlen;
    pj.chunk = j->o->chunk;
    pj.eval = 1;
    pj.score_from = tok == &j->eval ? j->o->eval_score_from : 0;   /* the selection windows: every position */
    pj.dump_logits = dump;
    pj.ref = ref_mode && last ? ref : NULL;
    pj.label = label;
    pj.seq_nll = seq_nll;
    pipeline_run(&j->pl, units, &pj);
    eval_result e = { exp(pj.nll_sum / (double)pj.ntok), pj.nll_sum, pj.seconds, pj.ntok, { NAN, NAN, NAN, NAN, NAN, 0, 0, NULL } };
    if (ref_mode) {
        cfsp_sync(last ? eval_ref_end(ref) : 0);
        if (ref_mode == 2) {                 /* the figures and the per-window means, on every rank */
            double b[7] = { 0 };
            kl_summary k = { 0 };
            if (last) {
                k = eval_ref_summary(ref);
                double v[7] = { k.mean, k.median, k.p99, k.max, k.top1, (double)k.n, (double)k.nwin };
                memcpy(b, v, sizeof b);
            }
            MPI_CHECK(MPI_Bcast(b, 7, MPI_DOUBLE, j->P - 1, MPI_COMM_WORLD));
            int nw = (int)b[6];
            double *win = last ? k.win : xcalloc((size_t)(nw ? nw : 1), sizeof(double));
            MPI_CHECK(MPI_Bcast(win, nw, MPI_DOUBLE, j->P - 1, MPI_COMM_WORLD));
            e.kl = (kl_summary){ b[0], b[1], b[2], b[3], b[4], (int64_t)b[5], nw, win };
        }
    }
    return e;
}

/* on the evaluation windows */
static eval_result run_eval(job *j, const unit_weights *units, const char *label, FILE *dump, int ref_mode)
{
    return run_eval_on(j, units, label, dump, ref_mode, &j->eval, j->eval_off, j->nwin, &j->ref, NULL);
}

static cJSON *doubles(const double *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *ints(const int *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static int64_t total_params(const model_config *c, const int *ffn)
{
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t p = (int64_t)c->vocab * D * (c->tie_embeddings ? 1 : 2) + D;
    for (int l = 0; l < c->n_layers; l++) p += 2 * D * Q + 2 * D * KV + 3 * D * (int64_t)ffn[l] + 2 * D;
    return p;
}

/* the matrix-product backend (model/matmul.h) from --compute and the stored dtype of the blocks'
 * matrices (every rank reads the same header entry, so every rank makes the same choice) */
static void choose_compute(job *j)
{
    const st_tensor *t = st_find(&j->st, "model.layers.0.mlp.gate_proj.weight");
    const char *warn = NULL;
    cfsp_sync(mm_configure((compute_mode)j->o->compute, t ? t->dtype : DT_F32, blas_threads(), NULL, &warn));
    if (warn && j->rank == 0) fprintf(stderr, "cfsp-mpi: warning: %s\n", warn);
}

/* load: everything the job needs, validated; each step ends in cfsp_sync */
static void load(job *j)
{
    const options *o = j->o;
    j->rank = cfsp_rank();
    j->P = cfsp_nranks();
    j->from_stats = o->stats[0] != 0;
    MPI_Comm node;                 /* the ranks of this node share its MemAvailable (check_memory) */
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_size(node, &j->node_ranks));
    MPI_CHECK(MPI_Comm_free(&node));
    cfsp_sync(model_config_load(o->model, &j->cfg));
    /* Mistral v0.1's sliding window: full attention up to its length, which this forward pass is */
    cfsp_sync(j->cfg.sliding_window > 0 && o->seqlen > j->cfg.sliding_window
                  ? FAIL("%s/config.json: field 'sliding_window' = %d: --seqlen %d is longer (sliding-window attention is not supported)",
                         o->model, j->cfg.sliding_window, o->seqlen)
                  : 0);
    j->L = j->cfg.n_layers;
    units_plan(&j->cfg, o->ffn_slice, o->seqlen, &j->plan);
    cfsp_sync(stages_plan(&j->plan, j->P, &j->map));
    int first = j->map.first[j->rank], last = j->map.first[j->rank + 1];
    j->first_unit = first;
    j->nu = last - first;
    cfsp_sync(st_open_dir(o->model, &j->st));
    cfsp_sync(weights_check_biases(&j->st, &j->cfg));
    cfsp_sync(j->rank == 0 ? prepare_outputs(j) : 0);
    load_tokens(j, !j->from_stats);
    choose_compute(j);
    cfsp_sync(weights_load(&j->st, &j->cfg, &j->plan, first, last, j->rank == 0, j->rank == j->P - 1, &j->w));
    cfsp_sync(check_memory(j));
    /* the model's identity: config, headers and samples of every tensor's data (root reads) */
    unsigned long long fp = 0;
    cfsp_sync(j->rank == 0 ? st_fingerprint(&j->st, j->cfg.source_json, &fp) : 0);
    MPI_CHECK(MPI_Bcast(&fp, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD));
    j->fingerprint = fp;
    pipeline_init(&j->pl, &j->cfg, &j->w, j->rank, j->P, o->seqlen, o->chunk);
    j->t_setup = now_seconds() - j->t_start;
}

/* root: the results' head — ranks, BLAS, model, options, unit plan */
static cJSON *results_begin(const job *j)
{
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "format", "cfsp-mpi-results/1");
    cJSON_AddNumberToObject(res, "nranks", j->P);
    char blas[256];
    blas_describe(blas, sizeof blas);
    cJSON_AddStringToObject(res, "blas", blas);
    fprintf(stderr, "cfsp-mpi: %d ranks, %s\n", j->P, blas);
    const mm_info *mi = mm_current();
    results_add_compute(res);
    fprintf(stderr, "cfsp-mpi: compute %s (%s)\n", compute_names[mi->mode], mi->reason);
    cJSON *m = cJSON_AddObjectToObject(res, "model");
    cJSON_AddStringToObject(m, "path", j->o->model);
    cJSON_AddNumberToObject(m, "hidden_size", j->cfg.hidden);
    cJSON_AddNumberToObject(m, "num_layers", j->L);
    cJSON_AddNumberToObject(m, "num_heads", j->cfg.n_heads);
    cJSON_AddNumberToObject(m, "num_kv_heads", j->cfg.n_kv_heads);
    cJSON_AddNumberToObject(m, "head_dim", j->cfg.head_dim);
    cJSON_AddNumberToObject(m, "vocab_size", j->cfg.vocab);
    cJSON_AddItemToObject(m, "intermediate_sizes", ints(j->cfg.ffn, j->L));
    cJSON_AddNumberToObject(m, "params", (double)total_params(&j->cfg, j->cfg.ffn));
    char fps[32];
    snprintf(fps, sizeof fps, "%016llx", (unsigned long long)j->fingerprint);
    cJSON_AddStringToObject(m, "fingerprint", fps);
    cJSON_AddItemToObject(res, "options", options_to_json(j->o));
    cJSON *units = cJSON_AddArrayToObject(res, "units");
    for (int u = 0; u < j->plan.n; u++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", j->plan.u[u].layer);
        cJSON_AddStringToObject(e, "kind", j->plan.u[u].slice < 0 ? "attention" : "ffn");
        cJSON_AddNumberToObject(e, "c0", j->plan.u[u].c0);
        cJSON_AddNumberToObject(e, "c1", j->plan.u[u].c1);
        cJSON_AddNumberToObject(e, "flops_per_token", j->plan.u[u].cost);
        cJSON_AddItemToArray(units, e);
    }
    return res;
}

/* evaluate: the dense model (and the --dump-logits file, written by the last stage) */
static void evaluate_dense(job *j)
{
    const options *o = j->o;
    if (!(o->eval_tokens[0] || o->eval_text[0]) || !o->eval_dense) return;
    FILE *dump = NULL;
    int rc = 0;
    if (o->dump_logits[0]) {              /* written by the last stage, renamed at the commit */
        const char *dtmp = pending_output(j, o->dump_logits, j->P - 1);
        if (j->rank == j->P - 1 && !(dump = fopen(dtmp, "wb"))) rc = FAIL("%s: cannot create the logits dump: %s", dtmp, strerror(errno));
    }
    /* the dense reference of the KL divergence: only when pruned models will be compared with it;
     * scored positions per window (--eval-score-from) */
    int scored = o->seqlen - 1 - o->eval_score_from;
    int ref = o->kl && o->eval_pruned && o->nratios > 0 && o->nmethods > 0 && j->nwin > 0;
    if (ref && o->kl == KL_AUTO) {        /* auto: skipped, with a warning, when the scratch file does not fit */
        double sp[2] = { 0, 0 };
        if (j->rank == j->P - 1)
            eval_ref_space(o->kl_dir[0] ? o->kl_dir : o->output_dir, j->cfg.vocab, (int64_t)j->nwin * scored, &sp[0], &sp[1]);
        MPI_CHECK(MPI_Bcast(sp, 2, MPI_DOUBLE, j->P - 1, MPI_COMM_WORLD));
        if (sp[1] >= 0 && sp[1] < sp[0]) {
            ref = 0;
            if (j->rank == 0)
                fprintf(stderr, "cfsp-mpi: warning: --kl auto: the dense logits need %.3g GB in %s, %.3g GB are free: no KL figures "
                        "(--kl-dir elsewhere, fewer --eval-windows; --kl 1 makes this an error)\n", sp[0] / 1e9,
                        o->kl_dir[0] ? o->kl_dir : o->output_dir, sp[1] / 1e9);
        }
    }
    if (!rc && ref && j->rank == j->P - 1)
        rc = eval_ref_open(&j->ref, o->kl_dir[0] ? o->kl_dir : o->output_dir, j->cfg.vocab, (int64_t)j->nwin * scored, scored);
    cfsp_sync(rc);
    j->have_ref = ref;
    eval_result e = run_eval(j, j->w.units, "eval dense", dump, ref);
    j->dense_secs = e.seconds;
    if (dump) {
        errno = 0;
        int ok = !ferror(dump) && fflush(dump) == 0 && fsync(fileno(dump)) == 0, e_no = errno;
        if (fclose(dump) != 0 && ok) { ok = 0; e_no = errno; }
        if (!ok) rc = FAIL("%s: cannot write the logits dump: %s", o->dump_logits, e_no ? strerror(e_no) : "write error");
    }
    cfsp_sync(rc);
    j->dense_ppl = e.ppl;
    if (j->rank == 0) {
        fprintf(stderr, "cfsp-mpi: dense perplexity %.4f over %lld tokens (%d windows of %d)\n", e.ppl, (long long)e.ntok, j->nwin, o->seqlen);
        cJSON *d = cJSON_AddObjectToObject(j->res, "dense");
        cJSON_AddNumberToObject(d, "ppl", e.ppl);
        cJSON_AddNumberToObject(d, "nll_sum", e.nll);
        cJSON_AddNumberToObject(d, "ntokens", (double)e.ntok);
        cJSON_AddNumberToObject(d, "windows", j->nwin);
        cJSON_AddNumberToObject(d, "seconds", e.seconds);
        cJSON_AddNumberToObject(d, "tokens_per_second", (double)j->nwin * o->seqlen / e.seconds);
    }
}

/* --a auto: the selection windows, the same list on every rank. From --select-tokens: its first
 * --select-windows windows of seqlen. Otherwise the windows of the calibration tokens, on the seqlen
 * grid from the start, that overlap no calibration sequence, --select-windows of them spread evenly
 * over those: text the statistics did not see. */
static void setup_selection(job *j)
{
    const options *o = j->o;
    if (!o->a_auto) return;
    int T = o->seqlen, K = o->select_windows, rc = 0;
    if (o->select_tokens[0]) {
        if (j->rank == 0) {
            rc = tokens_read(o->select_tokens, j->cfg.vocab, &j->sel);
            if (!rc && j->sel.n < T)
                rc = FAIL("%s: %lld tokens, fewer than one selection window of seqlen = %d", o->select_tokens, (long long)j->sel.n, T);
        }
        cfsp_sync(rc);
        bcast_tokens(&j->sel);
        j->sel_owned = 1;
        j->sel_source = "--select-tokens";
        j->sel_nwin = j->sel.n / T < K ? (int)(j->sel.n / T) : K;
        j->sel_off = xmalloc(sizeof(int64_t) * (size_t)j->sel_nwin);
        for (int i = 0; i < j->sel_nwin; i++) j->sel_off[i] = (int64_t)i * T;
    } else {
        int64_t nw = j->calib.n / T, nfree = 0;
        int64_t *fw = xmalloc(sizeof(int64_t) * (size_t)(nw ? nw : 1));
        for (int64_t w = 0; w < nw; w++) {
            int64_t p = w * T, hit = 0;
            for (int i = 0; i < j->nsamples && !hit; i++) hit = j->calib_off[i] < p + T && j->calib_off[i] + j->seqlen > p;
            if (!hit) fw[nfree++] = p;
        }
        if (nfree == 0)
            rc = FAIL("%s: --a auto: no window of %d tokens of the calibration tokens overlaps no calibration sequence (give --select-tokens)",
                      o->calib_text[0] ? o->calib_text : o->calib_tokens, T);
        cfsp_sync(rc);
        j->sel = j->calib;
        j->sel_source = "calibration";
        j->sel_nwin = nfree < K ? (int)nfree : K;
        j->sel_off = xmalloc(sizeof(int64_t) * (size_t)j->sel_nwin);
        for (int i = 0; i < j->sel_nwin; i++) j->sel_off[i] = fw[(int64_t)i * nfree / j->sel_nwin];
        free(fw);
    }
    /* the dense reference on them (--a-select kl) and the dense perplexity there */
    if (o->a_select == 0 && j->rank == j->P - 1)
        rc = eval_ref_open(&j->sel_ref, o->kl_dir[0] ? o->kl_dir : o->output_dir, j->cfg.vocab, (int64_t)j->sel_nwin * (T - 1), T - 1);
    cfsp_sync(rc);
    j->have_sel_ref = o->a_select == 0;
    eval_result e = run_eval_on(j, j->w.units, "select dense", NULL, j->have_sel_ref, &j->sel, j->sel_off, j->sel_nwin, &j->sel_ref, NULL);
    if (j->rank == 0) {
        fprintf(stderr, "cfsp-mpi: --a auto: %d selection windows of %d tokens from %s, dense perplexity there %.4f\n",
                j->sel_nwin, T, j->sel_source, e.ppl);
        cJSON *d = cJSON_AddObjectToObject(j->res, "selection");
        cJSON_AddStringToObject(d, "source", j->sel_source);
        cJSON_AddStringToObject(d, "metric", o->a_select ? "ppl" : "kl");
        cJSON_AddNumberToObject(d, "windows", j->sel_nwin);
        cJSON *offs = cJSON_AddArrayToObject(d, "offsets");
        for (int i = 0; i < j->sel_nwin; i++) cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)j->sel_off[i]));
        cJSON_AddNumberToObject(d, "dense_ppl", e.ppl);
        cJSON_AddNumberToObject(d, "dense_seconds", e.seconds);
    }
}

/* the statistics of the blocks this rank touches (root: all) */
static void stats_alloc(job *j)
{
    j->stats = xcalloc((size_t)j->L, sizeof(block_stats));
    for (int l = 0; l < j->L; l++) {
        int mine = j->rank == 0;
        for (int i = 0; i < j->nu && !mine; i++) mine = j->w.units[i].layer == l;
        if (mine) stats_init(&j->stats[l], l, j->cfg.ffn[l]);
    }
}

/* calibrate: one pipelined pass with the statistics hook; the statistics then reach the root */
static void calibrate(job *j)
{
    const options *o = j->o;
    stats_alloc(j);
    pipe_job *cj = &j->cj;
    cj->tokens = j->calib.ids;
    cj->offsets = j->calib_off;
    cj->nseq = o->nsamples;
    cj->seqlen = o->seqlen;
    cj->chunk = o->chunk;
    fwd_hook hook = stats_hook(j->stats);
    cj->hook = &hook;
    cj->label = "calibration";
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));   /* the phase's clock starts together on every rank */
    pipeline_run(&j->pl, j->w.units, cj);
    cj->hook = NULL;
    double wall = cj->seconds;       /* the phase ends when the last stage finishes */
    MPI_CHECK(MPI_Allreduce(&wall, &cj->seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    cj->rank_seconds = wall;
    /* non-finite activations (a NaN / Inf weight, an overflow) would give meaningless masks: each
     * rank checks the sums of its own units, in block order, so the lowest failing rank names the
     * first affected block */
    int bad = 0;
    for (int i = 0; i < j->nu && !bad; i++) {
        const unit_weights *u = &j->w.units[i];
        if (u->slice >= 0) bad = stats_check_finite(&j->stats[u->layer], u->c0, u->c1, u->slice == u->nslices - 1);
    }
    cfsp_sync(bad);
    for (int l = 0; l < j->L; l++) j->stats[l].ntok = (int64_t)o->nsamples * o->seqlen;
    prune_stats_move(&j->plan, &j->map, j->stats, 1);
}

/* save stats: the root writes stats.h5 (under its temporary name until commit) */
static void save_stats(job *j)
{
    int rc = 0;
    if (j->o->save_stats) {
        char p[4200];
        snprintf(p, sizeof p, "%s/stats.h5", j->o->output_dir);
        const char *tmp = pending_output(j, p, 0);
        if (j->rank == 0) rc = stats_h5_write(tmp, &j->cfg, j->stats, j->o->nsamples, j->o->seqlen, j->fingerprint);
        if (j->rank == 0 && !rc) {        /* on the device before it can be renamed into place */
            int fd = open(tmp, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || fsync(fd) != 0) rc = FAIL("%s: cannot fsync the statistics file: %s", tmp, strerror(errno));
            if (fd >= 0 && close(fd) != 0 && !rc) rc = FAIL("%s: cannot close the statistics file: %s", tmp, strerror(errno));
        }
    }
    cfsp_sync(rc);
}

/* prune --stats: the root reads the file (checked against the model), the owners get their shares */
static void read_stats(job *j)
{
    stats_alloc(j);
    int ns = 0, sl = 0;
    cfsp_sync(j->rank == 0 ? stats_h5_read(j->o->stats, &j->cfg, j->stats, &ns, &sl, j->fingerprint) : 0);
    int v[2] = { ns, sl };
    MPI_CHECK(MPI_Bcast(v, 2, MPI_INT, 0, MPI_COMM_WORLD));
    j->nsamples = v[0];
    j->seqlen = v[1];
    prune_stats_move(&j->plan, &j->map, j->stats, 0);
    for (int l = 0; l < j->L; l++) if (j->stats[l].sum) j->stats[l].ntok = (int64_t)j->nsamples * j->seqlen;
}

/* root: the calibration and every block's importances in the results */
static void record_stats(job *j)
{
    const options *o = j->o;
    cJSON *cal = cJSON_AddObjectToObject(j->res, "calibration");
    cJSON_AddNumberToObject(cal, "nsamples", j->nsamples);
    cJSON_AddNumberToObject(cal, "seqlen", j->seqlen);
    cJSON_AddNumberToObject(cal, "tokens", (double)j->stats[0].ntok);
    if (!j->from_stats) {
        cJSON *offs = cJSON_AddArrayToObject(cal, "offsets");
        for (int i = 0; i < o->nsamples; i++) cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)j->calib_off[i]));
        cJSON_AddNumberToObject(cal, "seconds", j->cj.seconds);
        cJSON_AddNumberToObject(cal, "tokens_per_second", (double)o->nsamples * o->seqlen / j->cj.seconds);
    } else cJSON_AddStringToObject(cal, "stats_file", o->stats);
    cJSON *imp = cJSON_AddObjectToObject(j->res, "importance");
    double *v = xmalloc(sizeof(double) * (size_t)j->L);
    for (int g = 0; g < GM_COUNT; g++) {
        for (int l = 0; l < j->L; l++) v[l] = j->stats[l].imp[g];
        cJSON_AddItemToObject(imp, global_metric_names[g], doubles(v, j->L));
    }
    free(v);
}

/* how one pruned checkpoint was written */
typedef struct {
    char path[4200];
    double seconds;
    char io[200];                  /* this rank's way ("direct", "buffered (why)", "mpiio") */
    uint64_t bytes;                /* root: tensor bytes of all ranks */
    int fallback_ranks;            /* root: ranks whose O_DIRECT was refused */
} written;

/* write: the pruned checkpoint, by all ranks in parallel, under its temporary name */
static void write_model(job *j, const prune_cut *cut, written *wr)
{
    const options *o = j->o;
    static int warned_io;                       /* one O_DIRECT fallback line per rank and job */
    model_file_name(j, cut->method, cut->ratio, wr->path, sizeof wr->path);
    double *imp = xmalloc(sizeof(double) * (size_t)j->L);
    for (int l = 0; l < j->L; l++) imp[l] = j->rank == 0 ? j->stats[l].imp[o->global_metric] : 0;
    cJSON *oj = options_to_json(o);
    if (o->a_auto && cut->method == PM_CFSP) {          /* the temperature this file was cut with */
        cJSON_ReplaceItemInObject(oj, "a", cJSON_CreateNumber(j->cur_a));
        cJSON_AddBoolToObject(oj, "a_auto", 1);
    }
    char *ojs = cJSON_PrintUnformatted(oj);
    model_out mo = { &j->cfg, &j->st, &j->w, cut->units, cut->counts, cut->kofs, cut->kept, cut->bias, imp, cut->keep,
                     cut->ratio, prune_method_names[cut->method], ojs, o->write_io };
    uint64_t bytes = model_h5_write(pending_output(j, wr->path, 0), &mo, &wr->seconds, wr->io, sizeof wr->io);
    MPI_CHECK(MPI_Reduce(&bytes, &wr->bytes, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
    int fell_back = !strncmp(wr->io, "buffered (", 10);
    if (fell_back && !warned_io) fprintf(stderr, "cfsp-mpi: rank %d: output written %s\n", j->rank, wr->io);
    warned_io |= fell_back;
    MPI_CHECK(MPI_Reduce(&fell_back, &wr->fallback_ranks, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD));
    free(ojs);
    cJSON_Delete(oj);
    free(imp);
}

/* root: one (method, ratio) in the log and the results */
static cJSON *record_pruned(const job *j, const prune_cut *cut, const written *wr, const eval_result *ev, double select_secs,
                            int64_t ffn_total, cJSON *list)
{
    int L = j->L;
    fprintf(stderr, "cfsp-mpi: %s ratio %g: FFN channels kept per block [", prune_method_names[cut->method], cut->ratio);
    for (int l = 0; l < L; l++) fprintf(stderr, "%s%d", l ? " " : "", cut->counts[l]);
    if (isfinite(ev->ppl) && ev->kl.n > 0)
        fprintf(stderr, "], perplexity %.4f, KL mean %.5f, top-1 agreement %.4f\n", ev->ppl, ev->kl.mean, ev->kl.top1);
    else if (isfinite(ev->ppl)) fprintf(stderr, "], perplexity %.4f\n", ev->ppl);
    else fprintf(stderr, "] (not evaluated: no --eval-tokens / --eval-text)\n");
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "ratio", cut->ratio);
    cJSON_AddStringToObject(e, "method", prune_method_names[cut->method]);
    cJSON_AddItemToObject(e, "keep_fraction", doubles(cut->keep, L));
    cJSON_AddItemToObject(e, "keep_counts", ints(cut->counts, L));
    cJSON_AddNumberToObject(e, "ffn_kept_fraction", (double)cut->nkept / (double)ffn_total);
    cJSON_AddNumberToObject(e, "params", (double)total_params(&j->cfg, cut->counts));
    if (isfinite(ev->ppl)) {
        cJSON_AddNumberToObject(e, "ppl", ev->ppl);
        cJSON_AddNumberToObject(e, "nll_sum", ev->nll);
        cJSON_AddNumberToObject(e, "ntokens", (double)ev->ntok);
    } else cJSON_AddNullToObject(e, "ppl");
    if (ev->kl.n > 0) {                  /* against the dense model, on the same positions */
        cJSON *k = cJSON_AddObjectToObject(e, "vs_dense");
        cJSON_AddNumberToObject(k, "kl_mean", ev->kl.mean);
        cJSON_AddNumberToObject(k, "kl_median", ev->kl.median);
        cJSON_AddNumberToObject(k, "kl_p99", ev->kl.p99);
        cJSON_AddNumberToObject(k, "kl_max", ev->kl.max);
        cJSON_AddNumberToObject(k, "top1_agreement", ev->kl.top1);
        cJSON_AddNumberToObject(k, "ppl_ratio", ev->ppl / j->dense_ppl);
        cJSON_AddNumberToObject(k, "positions", (double)ev->kl.n);
        /* the windows' mean KL, for paired comparisons of two pruned models (the noise of a difference) */
        double m = 0, v = 0;
        for (int w = 0; w < ev->kl.nwin; w++) m += ev->kl.win[w];
        m /= ev->kl.nwin > 0 ? ev->kl.nwin : 1;
        for (int w = 0; w < ev->kl.nwin; w++) v += (ev->kl.win[w] - m) * (ev->kl.win[w] - m);
        cJSON_AddNumberToObject(k, "kl_window_stderr", ev->kl.nwin > 1 ? sqrt(v / (ev->kl.nwin - 1) / ev->kl.nwin) : 0.0);
        cJSON_AddItemToObject(k, "kl_per_window", doubles(ev->kl.win, ev->kl.nwin));
    } else cJSON_AddNullToObject(e, "vs_dense");
    cJSON_AddStringToObject(e, "file", wr->path);
    cJSON_AddNumberToObject(e, "select_seconds", select_secs);          /* selection + slicing, split below */
    cJSON_AddNumberToObject(e, "selection_seconds", cut->select_seconds);
    cJSON_AddNumberToObject(e, "slice_seconds", cut->slice_seconds);
    cJSON_AddNumberToObject(e, "write_seconds", wr->seconds);
    cJSON_AddNumberToObject(e, "write_bytes", (double)wr->bytes);
    if (j->o->save_models) {
        cJSON_AddStringToObject(e, "write_io", wr->io);                          /* rank 0's */
        cJSON_AddNumberToObject(e, "write_io_fallback_ranks", wr->fallback_ranks); /* ranks refused O_DIRECT */
    }
    cJSON_AddNumberToObject(e, "eval_seconds", ev->seconds);
    cJSON_AddItemToArray(list, e);
    return e;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --a auto: the candidate temperatures, ascending, each once: --a-grid, this --alloc-mode's default
 * 1, and the other mode's a = 1 in this mode's units (the default mode scales the sigmoid's argument
 * by 131072 / (N*T), the reference mode does not: the reference's a = 1 is N*T / 131072 here) */
static int temperature_candidates(const job *j, double *cand)
{
    const options *o = j->o;
    double nt = (double)j->nsamples * j->seqlen;
    int n = 0;
    for (int i = 0; i < o->na_grid; i++) cand[n++] = o->a_grid[i];
    cand[n++] = 1.0;
    cand[n++] = o->alloc_reference ? 131072.0 / nt : nt / 131072.0;
    qsort(cand, (size_t)n, sizeof *cand, cmp_dbl);
    int k = 0;
    for (int i = 0; i < n; i++) if (!k || cand[i] != cand[k - 1]) cand[k++] = cand[i];
    return k;
}

/* the paired difference of two candidates on the selection windows: mean over windows of
 * x[w] - y[w] (*m) and its standard error sd / sqrt(n) (*se; 0 for one window) */
static void paired_diff(const double *x, const double *y, int n, double *m, double *se)
{
    double s = 0, v = 0;
    for (int w = 0; w < n; w++) s += x[w] - y[w];
    s /= n;
    for (int w = 0; w < n; w++) v += (x[w] - y[w] - s) * (x[w] - y[w] - s);
    *m = s;
    *se = n > 1 ? sqrt(v / (n - 1) / n) : 0.0;
}

/* --a auto, one ratio: every candidate's cut evaluated on the selection windows (a cut with the same
 * per-block counts as an earlier candidate keeps the same channels: its values are reused, not
 * evaluated again). The lowest mean KL (or perplexity) is the leader (ties to the smaller
 * temperature) and, with --a-margin 0 (the default), the choice; with a margin z > 0 the choice is
 * the smallest temperature whose per-window values are within z standard errors of the leader's:
 * the mean of the paired per-window differences (KL means, or mean NLL per token for perplexity)
 * at most z x their standard error. The leader's nearest rival (other counts) is recorded, and
 * named on stderr when it is within one standard error. Every rank computes the same figures from the same broadcast values and returns
 * the choice; the root gets the record of it in *info. */
static double choose_temperature(job *j, prune_ctx *px, const double *scores, double ratio, const double *cand, int nc,
                                 cJSON **info, double *secs)
{
    const options *o = j->o;
    int L = j->L, K = j->sel_nwin, li = -1, ci = -1;
    double *val = xmalloc(sizeof(double) * (size_t)nc), best = INFINITY, t0 = now_seconds();
    double *win = xcalloc((size_t)nc * (size_t)K, sizeof(double));        /* [nc, K] per-window values */
    double *dm = xmalloc(sizeof(double) * (size_t)nc), *dse = xmalloc(sizeof(double) * (size_t)nc);
    double *nll = xmalloc(sizeof(double) * (size_t)K);
    int *same = xmalloc(sizeof(int) * (size_t)nc), *counts = xmalloc(sizeof(int) * (size_t)nc * (size_t)L);
    for (int c = 0; c < nc; c++) {
        px->p.a = cand[c];
        prune_cut cut;
        prune_select(px, PM_CFSP, ratio, scores, &cut);
        memcpy(counts + (size_t)c * L, cut.counts, sizeof(int) * (size_t)L);
        same[c] = -1;
        for (int k = 0; k < c && same[c] < 0; k++)
            if (same[k] < 0 && !memcmp(counts + (size_t)k * L, cut.counts, sizeof(int) * (size_t)L)) same[c] = k;
        if (same[c] >= 0) {
            val[c] = val[same[c]];
            memcpy(win + (size_t)c * K, win + (size_t)same[c] * K, sizeof(double) * (size_t)K);
        } else {
            prune_slice(px, &cut);
            char label[96];
            snprintf(label, sizeof label, "select cfsp r=%g a=%g", ratio, cand[c]);
            eval_result e = run_eval_on(j, cut.units, label, NULL, j->have_sel_ref ? 2 : 0, &j->sel, j->sel_off, K, &j->sel_ref, nll);
            val[c] = o->a_select ? e.ppl : e.kl.mean;
            for (int w = 0; w < K; w++)           /* every window scores seqlen - 1 positions */
                win[(size_t)c * K + w] = o->a_select ? nll[w] / (o->seqlen - 1) : e.kl.win[w];
            free(e.kl.win);
        }
        prune_cut_free(px, &cut);
        if (val[c] < best) { best = val[c]; li = c; }
    }
    if (li < 0) li = 0;                           /* no finite value: the first candidate, as before */
    for (int c = 0; c < nc; c++) {
        paired_diff(win + (size_t)c * K, win + (size_t)li * K, K, &dm[c], &dse[c]);
        if (ci < 0 && isfinite(val[c]) && isfinite(dm[c]) && (c == li || (o->a_margin > 0 && dm[c] <= o->a_margin * dse[c]))) ci = c;
    }
    if (ci < 0) ci = li;
    /* the leader's nearest rival with other counts, by the paired difference in standard errors: a
     * rival within one standard error means the windows do not resolve the choice */
    int ri = -1;
    for (int c = 0; c < nc; c++) {
        if (!isfinite(dm[c]) || !memcmp(counts + (size_t)c * L, counts + (size_t)li * L, sizeof(int) * (size_t)L)) continue;
        double z = dse[c] > 0 ? dm[c] / dse[c] : (dm[c] > 0 ? INFINITY : 0);
        double zr = ri < 0 ? INFINITY : dse[ri] > 0 ? dm[ri] / dse[ri] : (dm[ri] > 0 ? INFINITY : 0);
        if (ri < 0 || z < zr) ri = c;
    }
    *secs = now_seconds() - t0;
    if (j->rank == 0) {
        cJSON *in = *info = cJSON_CreateObject();
        cJSON_AddStringToObject(in, "metric", o->a_select ? "ppl" : "kl_mean");
        cJSON_AddStringToObject(in, "diff_unit", o->a_select ? "nll_per_token" : "kl_mean");
        cJSON_AddNumberToObject(in, "margin", o->a_margin);
        cJSON *arr = cJSON_AddArrayToObject(in, "candidates");
        for (int c = 0; c < nc; c++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "a", cand[c]);
            if (isfinite(val[c])) cJSON_AddNumberToObject(e, "value", val[c]);
            else cJSON_AddNullToObject(e, "value");
            if (isfinite(dm[c]) && isfinite(dse[c])) {
                cJSON_AddNumberToObject(e, "diff_vs_lowest", dm[c]);
                cJSON_AddNumberToObject(e, "diff_stderr", dse[c]);
            } else {
                cJSON_AddNullToObject(e, "diff_vs_lowest");
                cJSON_AddNullToObject(e, "diff_stderr");
            }
            if (same[c] >= 0) cJSON_AddNumberToObject(e, "same_counts_as_a", cand[same[c]]);
            cJSON_AddItemToObject(e, "keep_counts", ints(counts + (size_t)c * L, L));
            cJSON_AddItemToArray(arr, e);
        }
        cJSON_AddNumberToObject(in, "lowest", cand[li]);
        cJSON_AddNumberToObject(in, "chosen", cand[ci]);
        if (ri >= 0) {
            cJSON *rv = cJSON_AddObjectToObject(in, "nearest_rival");
            cJSON_AddNumberToObject(rv, "a", cand[ri]);
            cJSON_AddNumberToObject(rv, "diff_vs_lowest", dm[ri]);
            cJSON_AddNumberToObject(rv, "diff_stderr", dse[ri]);
            cJSON_AddBoolToObject(rv, "within_one_stderr", dm[ri] <= dse[ri]);
        }
        cJSON_AddNumberToObject(in, "seconds", *secs);
        fprintf(stderr, "cfsp-mpi: --a auto, ratio %g: a = %g (%s %.5f on %d selection windows; lowest a = %g; candidates", ratio,
                cand[ci], o->a_select ? "perplexity" : "KL mean", val[ci], K, cand[li]);
        for (int c = 0; c < nc; c++) fprintf(stderr, " %g:%.5f", cand[c], val[c]);
        fprintf(stderr, ")\n");
        if (ri >= 0 && dm[ri] <= dse[ri])
            fprintf(stderr, "cfsp-mpi: --a auto, ratio %g: a = %g trails the lowest a = %g by %.3g, within one standard error (%.3g) "
                    "on %d selection windows: the windows do not resolve the choice (more --select-windows narrow the standard error)\n",
                    ratio, cand[ri], cand[li], dm[ri], dse[ri], K);
    }
    free(val);
    free(win);
    free(dm);
    free(dse);
    free(nll);
    free(same);
    free(counts);
    return cand[ci];
}

/* sweep: per method the scores, per ratio the cut (selection, slicing), its checkpoint, its
 * evaluation; the selection and slicing time counts as the sweep's (with --a auto, the choice of
 * the temperature too) */
static void sweep(job *j)
{
    const options *o = j->o;
    prune_params pp = { o->local_metric, o->global_metric, o->a, o->b, o->c, o->align, o->alloc_reference };
    prune_ctx px;
    prune_ctx_init(&px, &j->cfg, &j->plan, &j->map, &j->w, j->stats, j->nsamples, j->seqlen, &pp);
    cJSON *pruned = j->rank == 0 ? cJSON_AddArrayToObject(j->res, "pruned") : NULL;
    double cand[24];
    int nc = o->a_auto ? temperature_candidates(j, cand) : 0;
    for (int mi = 0; mi < o->nmethods && o->nratios > 0; mi++) {
        prune_method method = (prune_method)o->methods[mi];
        double ts = now_seconds();
        double *scores = prune_scores(&px, method);
        j->score_secs += now_seconds() - ts;
        j->sweep_secs += now_seconds() - ts;
        for (int r = 0; r < o->nratios; r++) {
            double t0 = now_seconds(), choose_secs = 0;
            cJSON *info = NULL;
            px.p.a = o->a;
            if (o->a_auto && method == PM_CFSP)
                px.p.a = choose_temperature(j, &px, scores, o->ratios[r], cand, nc, &info, &choose_secs);
            j->cur_a = px.p.a;
            prune_cut cut;
            prune_select(&px, method, o->ratios[r], scores, &cut);
            prune_slice(&px, &cut);
            double select_secs = now_seconds() - t0;
            j->sweep_secs += select_secs;
            written wr = { "", 0, "", 0, 0 };
            if (o->save_models) write_model(j, &cut, &wr);
            eval_result ev = { NAN, NAN, 0, 0, { NAN, NAN, NAN, NAN, NAN, 0, 0, NULL } };
            if (o->eval_pruned && j->nwin > 0) {
                char label[64];
                snprintf(label, sizeof label, "eval %s r=%g", prune_method_names[method], o->ratios[r]);
                ev = run_eval(j, cut.units, label, NULL, j->have_ref ? 2 : 0);
            }
            if (j->rank == 0) {
                cJSON *e = record_pruned(j, &cut, &wr, &ev, select_secs, px.total, pruned);
                if (method == PM_CFSP) cJSON_AddNumberToObject(e, "a", px.p.a);
                if (info) {
                    cJSON_AddItemToObject(e, "a_auto", info);
                    cJSON_AddNumberToObject(e, "a_choice_seconds", choose_secs);
                }
            }
            free(ev.kl.win);
            prune_cut_free(&px, &cut);
        }
        free(scores);
    }
}

/* commit: the per-rank figures and timings in the results, every output renamed into place,
 * results.json last (the job is complete) */
static void commit(job *j)
{
    int first = j->first_unit, last = first + j->nu;
    int lay0 = j->nu ? j->plan.u[first].layer : -1, lay1 = j->nu ? j->plan.u[last - 1].layer : -1;
    double mine[11] = { (double)first, (double)last, (double)lay0, (double)lay1, (double)j->w.bytes_expected, (double)j->resident,
                        (double)j->st.bytes_mapped, (double)vm_hwm_bytes(), j->cj.compute_seconds, j->cj.wait_seconds, j->cj.rank_seconds };
    double *allr = j->rank == 0 ? xmalloc(sizeof(double) * 11 * (size_t)j->P) : NULL;
    MPI_CHECK(MPI_Gather(mine, 11, MPI_DOUBLE, allr, 11, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    int rc = 0;
    if (j->rank == 0) {
        cJSON *stg = cJSON_AddArrayToObject(j->res, "stages");
        for (int r = 0; r < j->P; r++) {
            double *x = allr + 11 * r;
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "rank", r);
            cJSON_AddNumberToObject(s, "first_unit", x[0]);
            cJSON_AddNumberToObject(s, "last_unit", x[1] - 1);
            cJSON_AddNumberToObject(s, "first_block", x[2]);
            cJSON_AddNumberToObject(s, "last_block", x[3]);
            cJSON_AddNumberToObject(s, "weight_bytes_expected", x[4]);
            cJSON_AddNumberToObject(s, "weight_bytes_resident", x[5]);
            cJSON_AddNumberToObject(s, "weight_bytes_mapped", x[6]);
            cJSON_AddNumberToObject(s, "vmhwm_bytes", x[7]);
            cJSON_AddNumberToObject(s, "calib_compute_seconds", x[8]);
            cJSON_AddNumberToObject(s, "calib_wait_seconds", x[9]);
            cJSON_AddNumberToObject(s, "calib_seconds", x[10]);
            cJSON_AddItemToArray(stg, s);
        }
        cJSON *t = cJSON_AddObjectToObject(j->res, "timings");
        cJSON_AddNumberToObject(t, "setup_seconds", j->t_setup);
        cJSON_AddNumberToObject(t, "dense_eval_seconds", j->dense_secs);
        cJSON_AddNumberToObject(t, "calibration_seconds", j->cj.seconds);
        cJSON_AddNumberToObject(t, "sweep_seconds_excluding_eval_and_output", j->sweep_secs);
        cJSON_AddNumberToObject(t, "score_seconds", j->score_secs);            /* all methods */
        cJSON_AddNumberToObject(t, "total_seconds", now_seconds() - j->t_start);
        free(allr);
    }
    /* the reports under their temporary names (results.json the last entry: renamed last) */
    const options *o = j->o;
    char pmd[4200], psvg[4200], pjs[4200];
    snprintf(pmd, sizeof pmd, "%s/results.md", o->output_dir);
    snprintf(psvg, sizeof psvg, "%s/ppl_vs_ratio.svg", o->output_dir);
    snprintf(pjs, sizeof pjs, "%s/results.json", o->output_dir);
    const char *tmd = pending_output(j, pmd, 0);
    const char *tsvg = o->nratios > 0 && o->nmethods > 0 ? pending_output(j, psvg, 0) : NULL;
    const char *tjs = pending_output(j, pjs, 0);
    if (j->rank == 0) rc = results_write(j->res, tjs, tmd, tsvg);
    cfsp_sync(rc);
    cfsp_sync(commit_check(j));
    commit_outputs(j);
}

static void job_free(job *j)
{
    cJSON_Delete(j->res);
    for (int i = 0; i < j->npending; i++) free(j->pending[i]);
    free(j->pending);
    if (j->have_ref && j->rank == j->P - 1) eval_ref_close(&j->ref);
    if (j->have_sel_ref && j->rank == j->P - 1) eval_ref_close(&j->sel_ref);
    if (j->sel_owned) tokens_free(&j->sel);
    free(j->sel_off);
    pipeline_free(&j->pl);
    for (int l = 0; l < j->L; l++) if (j->stats[l].sum) stats_free(&j->stats[l]);
    free(j->stats);
    weights_free(&j->w);
    st_close(&j->st);
    tokens_free(&j->calib);
    tokens_free(&j->eval);
    free(j->calib_off);
    free(j->eval_off);
    stages_free(&j->map);
    units_free(&j->plan);
    model_config_free(&j->cfg);
}

int cfsp_run(const options *o)
{
    job J = { 0 }, *j = &J;
    j->o = o;
    j->t_start = now_seconds();
    load(j);
    if (j->rank == 0) j->res = results_begin(j);
    evaluate_dense(j);
    if (j->from_stats) read_stats(j);
    else {
        calibrate(j);
        save_stats(j);
    }
    setup_selection(j);
    j->resident = st_resident_bytes(&j->st);
    if (j->rank == 0) record_stats(j);
    sweep(j);
    commit(j);
    if (j->rank == 0) output_dir_unlock();
    job_free(j);
    return 0;
}
