/* run.c — the job, phase by phase, as every rank executes it:
 *   1. validate config, unit plan and stage map, outputs, tokens, weights (each phase ends in
 *      cfsp_sync, so a failure on any rank ends the job cleanly on all)
 *   2. dense evaluation and the single calibration pass (pipelined), or load statistics
 *   3. statistics reach the root; scores are computed on the owners of the FFN slices and
 *      gathered; the root allocates the budget and selects every block's channels
 *   4. per method and ratio: the owners slice their units, all write the HDF5 checkpoint in
 *      parallel, the pruned model is evaluated through the same pipeline
 *   5. every output is renamed into place at once; the root writes results.json last */
#include "cfsp/cli/commands.h"
#include "cfsp/util/blas_env.h"
#include "cfsp/util/err.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/report/results.h"
#include "cfsp/prune/stats_h5.h"
#include "cfsp/tok/tokenizer.h"
#include "cfsp/format/tokens.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const options *o;
    model_config cfg;
    unit_plan plan;
    stage_map map;
    st_model st;
    rank_weights w;
    pipeline pl;
    int rank, P, L, nu;            /* nu: own unit count */
    int first_unit;
    token_file calib, eval;
    int64_t *calib_off, *eval_off;
    int nsamples, seqlen, nwin;
    uint64_t fingerprint;
    block_stats *stats;            /* [L]: entries of blocks this rank touches (root: all) */
    cJSON *res;                    /* root: results */
    char (*pending)[2][4200];      /* outputs written under temporary names: {tmp, final} */
    int npending;
} job;

/* Every output of a run is written under NAME.tmp and renamed only when the whole job has
 * succeeded (commit_outputs), so a failed or killed job leaves no file with a final name and the
 * same command can simply be run again. Every rank keeps the list (all take part in writing). */
static const char *pending_output(job *j, const char *final)
{
    j->pending = xrealloc(j->pending, sizeof *j->pending * (size_t)(j->npending + 1));
    snprintf(j->pending[j->npending][1], 4200, "%s", final);
    snprintf(j->pending[j->npending][0], 4200, "%s.tmp", final);
    cfsp_tmp_register(j->pending[j->npending][0]);
    return j->pending[j->npending++][0];
}

static int commit_outputs(job *j)
{
    int rc = 0;
    if (j->rank == 0) {
        for (int i = 0; i < j->npending && !rc; i++)
            if (rename(j->pending[i][0], j->pending[i][1]) != 0)
                rc = FAIL("cannot rename %s to %s", j->pending[i][0], j->pending[i][1]);
        if (!rc && j->npending) {         /* the renames themselves durable */
            int fd = open(j->o->output_dir, O_RDONLY | O_DIRECTORY);
            if (fd < 0 || fsync(fd) != 0) rc = FAIL("%s: cannot fsync the output directory", j->o->output_dir);
            if (fd >= 0) close(fd);
        }
    }
    for (int i = 0; i < j->npending; i++) cfsp_tmp_unregister(j->pending[i][0]);
    return rc;
}

static void model_file_name(const job *j, int method, double ratio, char *out, size_t n)
{
    snprintf(out, n, "%s/%s_r%g.h5", j->o->output_dir, prune_method_names[method], ratio);
}

/* root: create the output directory and refuse to overwrite without --force */
static int prepare_outputs(job *j)
{
    const options *o = j->o;
    if (mkdir_p(o->output_dir)) return -1;
    char p[4200];
    const char *fixed[] = { "results.json", "stats.h5" };
    for (int i = 0; i < 2; i++) {
        if (i == 1 && (!o->save_stats || o->stats[0])) continue;
        snprintf(p, sizeof p, "%s/%s", o->output_dir, fixed[i]);
        if (path_exists(p) && !o->force) return FAIL("%s: output exists (use --force to overwrite)", p);
    }
    if (o->save_models)
        for (int m = 0; m < o->nmethods; m++)
            for (int r = 0; r < o->nratios; r++) {
                model_file_name(j, o->methods[m], o->ratios[r], p, sizeof p);
                if (path_exists(p) && !o->force) return FAIL("%s: output exists (use --force to overwrite)", p);
            }
    if (o->dump_logits[0] && path_exists(o->dump_logits) && !o->force)
        return FAIL("%s: output exists (use --force to overwrite)", o->dump_logits);
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

static int load_tokens(job *j, int need_calib)
{
    const options *o = j->o;
    int rc = 0;
    j->seqlen = o->seqlen;
    j->nsamples = o->nsamples;
    if (j->rank == 0) {
        const char *cname = o->calib_text[0] ? o->calib_text : o->calib_tokens, *ename = o->eval_text[0] ? o->eval_text : o->eval_tokens;
        if (need_calib) rc = o->calib_text[0] ? tokenize_file_checked(o->model, o->calib_text, j->cfg.vocab, &j->calib.ids, &j->calib.n)
                                              : tokens_read(o->calib_tokens, j->cfg.vocab, &j->calib);
        if (!rc && ename[0]) {
            rc = o->eval_text[0] ? tokenize_file_checked(o->model, o->eval_text, j->cfg.vocab, &j->eval.ids, &j->eval.n)
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
    return 0;
}

/* estimated bytes this rank needs: its weights (mapped) + workspace + caches */
static int check_memory(job *j)
{
    const model_config *c = &j->cfg;
    int natt = 0;
    int width = 1;                      /* the widest FFN slice: the gate/up activations (pipeline.c) */
    for (int i = 0; i < j->nu; i++) {
        natt += j->w.units[i].slice < 0;
        if (j->w.units[i].slice >= 0 && j->w.units[i].c1 - j->w.units[i].c0 > width) width = j->w.units[i].c1 - j->w.units[i].c0;
    }
    double ws = 4.0 * j->o->chunk * ((double)c->hidden * 6 + (double)c->n_heads * c->head_dim * 2 + 2.0 * width + j->o->seqlen) +
                12.0 * j->o->chunk * c->hidden + 8.0 * c->n_kv_heads * c->head_dim * (double)j->o->seqlen * natt + (16 << 20);
    double need = (double)j->w.bytes_expected + ws;
    double limit = j->o->max_rank_memory_gb * 1e9;
    if (limit <= 0) {
        FILE *f = fopen("/proc/meminfo", "r");
        char line[256];
        long long avail_kb = 0;
        while (f && fgets(line, sizeof line, f)) if (sscanf(line, "MemAvailable: %lld kB", &avail_kb) == 1) break;
        if (f) fclose(f);
        int local = 1;  /* ranks sharing this node */
        MPI_Comm node;
        MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
        MPI_CHECK(MPI_Comm_size(node, &local));
        MPI_Comm_free(&node);
        limit = avail_kb > 0 ? avail_kb * 1024.0 / local : 0;
    }
    if (limit > 0 && need > limit)
        return FAIL("rank %d needs about %.2f GB for its stage units (blocks %d-%d) but only %.2f GB are available to it (--max-rank-memory, or use more ranks)",
                    j->rank, need / 1e9, j->plan.u[j->w.first_unit].layer, j->plan.u[j->w.last_unit - 1].layer, limit / 1e9);
    return 0;
}

static double run_eval(job *j, const unit_weights *units, const char *label, double *nll, int64_t *ntok, double *secs, FILE *dump)
{
    pipe_job pj = { 0 };
    pj.tokens = j->eval.ids;
    pj.offsets = j->eval_off;
    pj.nseq = j->nwin;
    pj.seqlen = j->o->seqlen;
    pj.chunk = j->o->chunk;
    pj.eval = 1;
    pj.dump_logits = dump;
    pj.label = label;
    pipeline_run(&j->pl, units, &pj);
    *nll = pj.nll_sum;
    *ntok = pj.ntok;
    if (secs) *secs = pj.seconds;
    return exp(pj.nll_sum / (double)pj.ntok);
}

/* move statistics between the owners of the FFN slices and the root, unit by unit:
 * gather=1 owner -> root (after calibration), gather=0 root -> owner (from a statistics file).
 * The block importances travel with the block's last slice (where they were computed). */
static void move_stats(job *j, int gather)
{
    for (int u = 0; u < j->plan.n; u++) {
        const stage_unit *su = &j->plan.u[u];
        if (su->slice < 0) continue;
        int o = stage_of_unit(&j->map, u), n = su->c1 - su->c0;
        if (o == 0 || (j->rank != o && j->rank != 0)) continue;
        block_stats *s = &j->stats[su->layer];
        double head[GM_COUNT + 1];
        int sender = gather ? o : 0, receiver = gather ? 0 : o, last = su->slice == su->nslices - 1;
        if (j->rank == sender) {
            memcpy(head, s->imp, sizeof s->imp);
            head[GM_COUNT] = (double)s->ntok;
            MPI_CHECK(MPI_Send(head, GM_COUNT + 1, MPI_DOUBLE, receiver, 200, MPI_COMM_WORLD));
            MPI_CHECK(MPI_Send(s->sum_sq + su->c0, n, MPI_DOUBLE, receiver, 201, MPI_COMM_WORLD));
            MPI_CHECK(MPI_Send(s->sum + su->c0, n, MPI_DOUBLE, receiver, 202, MPI_COMM_WORLD));
        } else {
            MPI_CHECK(MPI_Recv(head, GM_COUNT + 1, MPI_DOUBLE, sender, 200, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            if (last || !gather) memcpy(s->imp, head, sizeof s->imp);
            s->ntok = (int64_t)head[GM_COUNT];
            MPI_CHECK(MPI_Recv(s->sum_sq + su->c0, n, MPI_DOUBLE, sender, 201, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            MPI_CHECK(MPI_Recv(s->sum + su->c0, n, MPI_DOUBLE, sender, 202, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        }
    }
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

/* this rank's FFN slice scores, concatenated in unit order (= block and channel order) */
static double *own_scores(job *j, int method, int64_t *n_out)
{
    const options *o = j->o;
    int64_t n = 0;
    for (int i = 0; i < j->nu; i++) if (j->w.units[i].slice >= 0) n += j->w.units[i].k;
    double *sc = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    /* the row-normalised extension needs each block's row sums over all its slices: every
     * slice's share is gathered everywhere and summed in slice order (rank-count independent) */
    double *rows = NULL;
    int D = j->cfg.hidden;
    if (method == PM_CFSP && o->local_metric == LM_THREE_W_ONE_WA_ROWNORM) {
        int nsl = 0, mine = 0;
        for (int u = 0; u < j->plan.n; u++) nsl += j->plan.u[u].slice >= 0;
        double *part = xcalloc((size_t)3 * D * (size_t)(j->nu ? j->nu : 1), sizeof(double));
        for (int i = 0; i < j->nu; i++)
            if (j->w.units[i].slice >= 0)
                rowsum_slice(&j->w.units[i], &j->stats[j->w.units[i].layer], j->nsamples, o->b, part + (size_t)3 * D * mine++);
        double *all = xmalloc(sizeof(double) * (size_t)3 * D * (size_t)nsl);
        int *cnt = xmalloc(sizeof(int) * (size_t)j->P), *dsp = xmalloc(sizeof(int) * (size_t)j->P);
        for (int r = 0, d = 0; r < j->P; r++) {
            int k = 0;
            for (int u = j->map.first[r]; u < j->map.first[r + 1]; u++) k += j->plan.u[u].slice >= 0;
            cnt[r] = 3 * D * k; dsp[r] = d; d += cnt[r];
        }
        MPI_CHECK(MPI_Allgatherv(part, 3 * D * mine, MPI_DOUBLE, all, cnt, dsp, MPI_DOUBLE, MPI_COMM_WORLD));
        rows = xcalloc((size_t)3 * D * (size_t)j->L, sizeof(double));
        for (int u = 0, s = 0; u < j->plan.n; u++) {
            if (j->plan.u[u].slice < 0) continue;
            double *dst = rows + (size_t)3 * D * j->plan.u[u].layer;
            for (int x = 0; x < 3 * D; x++) dst[x] += all[(size_t)3 * D * s + x];
            s++;
        }
        free(part); free(all); free(cnt); free(dsp);
    }
    int64_t off = 0;
    for (int i = 0; i < j->nu; i++) {
        const unit_weights *u = &j->w.units[i];
        if (u->slice < 0) continue;
        score_slice(u, &j->stats[u->layer], j->nsamples, (prune_method)method, (local_metric)o->local_metric, o->b, o->c,
                    rows ? rows + (size_t)3 * D * u->layer : NULL, sc + off);
        off += u->k;
    }
    free(rows);
    *n_out = n;
    return sc;
}

/* root: from every block's scores, the kept channels (ascending block channel numbers) */
static void root_select(job *j, int method, double ratio, const double *scores, double *keep, int *counts, int64_t *kept)
{
    const options *o = j->o;
    int L = j->L, align = o->align > 1 ? o->align : 0;
    if (method == PM_CFSP) {
        double *imp = xmalloc(sizeof(double) * (size_t)L);
        for (int l = 0; l < L; l++) imp[l] = j->stats[l].imp[o->global_metric];
        double scale = o->alloc_reference ? 1.0 : 131072.0 / ((double)j->nsamples * j->seqlen);
        alloc_keep_fraction(imp, L, ratio, o->a, scale, keep);
        free(imp);
    } else if (method == PM_WANDA_SP || method == PM_FLAP) {
        alloc_global_threshold(scores, j->cfg.ffn, L, ratio, counts);
    } else {
        for (int l = 0; l < L; l++) counts[l] = default_count(j->cfg.ffn[l], 1.0 - ratio, align);
    }
    int64_t off = 0, koff = 0;
    for (int l = 0; l < L; l++) {
        int m = j->cfg.ffn[l];
        if (method == PM_CFSP) counts[l] = select_cfsp(scores + off, m, keep[l], o->alloc_reference, align, kept + koff);
        else {
            select_topk(scores + off, m, counts[l], kept + koff);
            keep[l] = (double)counts[l] / m;
        }
        off += m;
        koff += counts[l];
    }
}

/* one method at one ratio: selection, slicing, output, evaluation */
static void prune_one(job *j, int method, double ratio, const double *scores, cJSON *pruned_list, double *sweep_secs)
{
    const options *o = j->o;
    int L = j->L, nu = j->nu, D = j->cfg.hidden;
    double t0 = now_seconds();
    double *keep = xcalloc((size_t)L, sizeof(double));
    int *counts = xcalloc((size_t)L, sizeof(int));
    int64_t total = 0;
    for (int l = 0; l < L; l++) total += j->cfg.ffn[l];
    int64_t *kept = xmalloc(sizeof(int64_t) * (size_t)total);
    if (j->rank == 0) root_select(j, method, ratio, scores, keep, counts, kept);
    MPI_CHECK(MPI_Bcast(keep, L, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Bcast(counts, L, MPI_INT, 0, MPI_COMM_WORLD));
    int64_t nkept = 0;
    for (int l = 0; l < L; l++) nkept += counts[l];
    for (int64_t off = 0; off < nkept; off += 1 << 26) {
        int n = (int)(nkept - off < (1 << 26) ? nkept - off : (1 << 26));
        MPI_CHECK(MPI_Bcast(kept + off, n, MPI_INT64_T, 0, MPI_COMM_WORLD));
    }
    /* every rank: where each slice's kept channels start in its block, and its own slices */
    int *kofs = xcalloc((size_t)j->plan.n, sizeof(int));
    int64_t *block_start = xmalloc(sizeof(int64_t) * (size_t)L);
    for (int l = 0, acc = 0; l < L; l++) { block_start[l] = acc; acc += counts[l]; }
    for (int u = 0; u < j->plan.n; u++) {
        const stage_unit *su = &j->plan.u[u];
        if (su->slice < 0) continue;
        const int64_t *kl = kept + block_start[su->layer];
        int c = 0;
        while (c < counts[su->layer] && kl[c] < su->c0) c++;
        kofs[u] = c;
    }
    unit_weights *pu = xcalloc((size_t)(nu ? nu : 1), sizeof(unit_weights));
    int64_t **mykept = xcalloc((size_t)(nu ? nu : 1), sizeof(int64_t *));
    for (int i = 0; i < nu; i++) {
        const unit_weights *u = &j->w.units[i];
        if (u->slice < 0) { pu[i] = *u; continue; }
        const int64_t *kl = kept + block_start[u->layer] + kofs[j->first_unit + i];
        int k = 0;
        while (kofs[j->first_unit + i] + k < counts[u->layer] && kl[k] < u->c1) k++;
        mykept[i] = xmalloc(sizeof(int64_t) * (size_t)(k ? k : 1));
        memcpy(mykept[i], kl, sizeof(int64_t) * (size_t)k);
        double *mean = NULL;
        if (method == PM_FLAP) {
            const block_stats *st = &j->stats[u->layer];
            mean = xcalloc((size_t)j->cfg.ffn[u->layer], sizeof(double));
            for (int c = u->c0; c < u->c1; c++) mean[c] = st->sum[c] / (double)st->ntok;
        }
        slice_unit(u, mykept[i], k, mean, &pu[i]);
        free(mean);
    }
    /* flap: the root sums every block's bias shares in slice order */
    float *bias = NULL;
    if (method == PM_FLAP) {
        int mine = 0, nsl = 0;
        for (int u = 0; u < j->plan.n; u++) nsl += j->plan.u[u].slice >= 0;
        float *part = xmalloc(sizeof(float) * (size_t)D * (size_t)(nu ? nu : 1)), *all = NULL;
        for (int i = 0; i < nu; i++) if (pu[i].slice >= 0) memcpy(part + (size_t)D * mine++, pu[i].bias, sizeof(float) * (size_t)D);
        int *cnt = xmalloc(sizeof(int) * (size_t)j->P), *dsp = xmalloc(sizeof(int) * (size_t)j->P);
        for (int r = 0, d = 0; r < j->P; r++) {
            int k = 0;
            for (int u = j->map.first[r]; u < j->map.first[r + 1]; u++) k += j->plan.u[u].slice >= 0;
            cnt[r] = D * k; dsp[r] = d; d += cnt[r];
        }
        if (j->rank == 0) all = xmalloc(sizeof(float) * (size_t)D * (size_t)nsl);
        MPI_CHECK(MPI_Gatherv(part, D * mine, MPI_FLOAT, all, cnt, dsp, MPI_FLOAT, 0, MPI_COMM_WORLD));
        if (j->rank == 0) {
            bias = xcalloc((size_t)L * D, sizeof(float));
            for (int u = 0, s = 0; u < j->plan.n; u++) {
                if (j->plan.u[u].slice < 0) continue;
                float *b = bias + (size_t)D * j->plan.u[u].layer;
                for (int x = 0; x < D; x++) b[x] += all[(size_t)D * s + x];
                s++;
            }
        } else bias = xcalloc(1, sizeof(float));   /* non-NULL: tells the writer a bias exists */
        free(part); free(all); free(cnt); free(dsp);
    }
    double select_secs = now_seconds() - t0;
    *sweep_secs += select_secs;

    char path[4200] = "";
    double write_secs = 0;
    char write_io[200] = "";
    static int warned_io;                       /* one O_DIRECT fallback line per rank and job */
    int io_fallback_ranks = 0;
    uint64_t bytes = 0, all_bytes = 0;
    if (o->save_models) {
        model_file_name(j, method, ratio, path, sizeof path);
        double *imp = xmalloc(sizeof(double) * (size_t)L);
        for (int l = 0; l < L; l++) imp[l] = j->rank == 0 ? j->stats[l].imp[o->global_metric] : 0;
        cJSON *oj = options_to_json(o);
        char *ojs = cJSON_PrintUnformatted(oj);
        model_out mo = { &j->cfg, &j->st, &j->w, pu, counts, kofs, mykept, bias, imp, keep,
                         ratio, prune_method_names[method], ojs, o->write_io };
        bytes = model_h5_write(pending_output(j, path), &mo, &write_secs, write_io, sizeof write_io);
        MPI_CHECK(MPI_Reduce(&bytes, &all_bytes, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
        int fell_back = !strncmp(write_io, "buffered (", 10);
        if (fell_back && !warned_io) fprintf(stderr, "cfsp-mpi: rank %d: output written %s\n", j->rank, write_io);
        warned_io |= fell_back;
        MPI_CHECK(MPI_Reduce(&fell_back, &io_fallback_ranks, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD));
        free(ojs);
        cJSON_Delete(oj);
        free(imp);
    }
    double ppl = NAN, nll = NAN, eval_secs = 0;
    int64_t ntok = 0;
    if (o->eval_pruned && j->nwin > 0) {
        char label[64];
        snprintf(label, sizeof label, "eval %s r=%g", prune_method_names[method], ratio);
        ppl = run_eval(j, pu, label, &nll, &ntok, &eval_secs, NULL);
    }
    if (j->rank == 0) {
        fprintf(stderr, "cfsp-mpi: %s ratio %g: FFN channels kept per block [", prune_method_names[method], ratio);
        for (int l = 0; l < L; l++) fprintf(stderr, "%s%d", l ? " " : "", counts[l]);
        if (isfinite(ppl)) fprintf(stderr, "], perplexity %.4f\n", ppl);
        else fprintf(stderr, "] (not evaluated: no --eval-tokens / --eval-text)\n");
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "ratio", ratio);
        cJSON_AddStringToObject(e, "method", prune_method_names[method]);
        cJSON_AddItemToObject(e, "keep_fraction", doubles(keep, L));
        cJSON_AddItemToObject(e, "keep_counts", ints(counts, L));
        cJSON_AddNumberToObject(e, "ffn_kept_fraction", (double)nkept / (double)total);
        cJSON_AddNumberToObject(e, "params", (double)total_params(&j->cfg, counts));
        if (isfinite(ppl)) {
            cJSON_AddNumberToObject(e, "ppl", ppl);
            cJSON_AddNumberToObject(e, "nll_sum", nll);
            cJSON_AddNumberToObject(e, "ntokens", (double)ntok);
        } else cJSON_AddNullToObject(e, "ppl");
        cJSON_AddStringToObject(e, "file", path);
        cJSON_AddNumberToObject(e, "select_seconds", select_secs);
        cJSON_AddNumberToObject(e, "write_seconds", write_secs);
        cJSON_AddNumberToObject(e, "write_bytes", (double)all_bytes);
        if (o->save_models) {
            cJSON_AddStringToObject(e, "write_io", write_io);                     /* rank 0's */
            cJSON_AddNumberToObject(e, "write_io_fallback_ranks", io_fallback_ranks); /* ranks refused O_DIRECT */
        }
        cJSON_AddNumberToObject(e, "eval_seconds", eval_secs);
        cJSON_AddItemToArray(pruned_list, e);
    }
    for (int i = 0; i < nu; i++) { if (pu[i].slice >= 0) unit_weights_free_owned(&pu[i]); free(mykept[i]); }
    free(pu); free(mykept); free(kofs); free(block_start); free(kept); free(bias); free(keep); free(counts);
}

int cfsp_run(const options *o)
{
    job J = { 0 }, *j = &J;
    j->o = o;
    j->rank = cfsp_rank();
    j->P = cfsp_nranks();
    double t_start = now_seconds();
    int from_stats = o->stats[0] != 0;

    cfsp_sync(model_config_load(o->model, &j->cfg));
    j->L = j->cfg.n_layers;
    units_plan(&j->cfg, o->ffn_slice, o->seqlen, &j->plan);
    cfsp_sync(stages_plan(&j->plan, j->P, &j->map));
    int first = j->map.first[j->rank], last = j->map.first[j->rank + 1];
    j->first_unit = first;
    j->nu = last - first;
    int rc = st_open_dir(o->model, &j->st);
    cfsp_sync(rc);
    cfsp_sync(j->rank == 0 ? prepare_outputs(j) : 0);
    load_tokens(j, !from_stats);
    cfsp_sync(weights_load(&j->st, &j->cfg, &j->plan, first, last, j->rank == 0, j->rank == j->P - 1, &j->w));
    cfsp_sync(check_memory(j));
    /* the model's identity: config, headers and samples of every tensor's data (root reads) */
    unsigned long long fp = 0;
    rc = j->rank == 0 ? st_fingerprint(&j->st, j->cfg.source_json, &fp) : 0;
    cfsp_sync(rc);
    MPI_CHECK(MPI_Bcast(&fp, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD));
    j->fingerprint = fp;
    pipeline_init(&j->pl, &j->cfg, &j->w, j->rank, j->P, o->seqlen, o->chunk);
    double t_setup = now_seconds() - t_start;

    cJSON *res = NULL;
    if (j->rank == 0) {
        res = cJSON_CreateObject();
        cJSON_AddStringToObject(res, "format", "cfsp-mpi-results/1");
        cJSON_AddNumberToObject(res, "nranks", j->P);
        char blas[256];
        blas_describe(blas, sizeof blas);
        cJSON_AddStringToObject(res, "blas", blas);
        fprintf(stderr, "cfsp-mpi: %d ranks, %s\n", j->P, blas);
        cJSON *m = cJSON_AddObjectToObject(res, "model");
        cJSON_AddStringToObject(m, "path", o->model);
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
        cJSON_AddItemToObject(res, "options", options_to_json(o));
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
    }

    /* dense evaluation */
    double dense_secs = 0;
    if ((o->eval_tokens[0] || o->eval_text[0]) && o->eval_dense) {
        FILE *dump = NULL;
        char dtmp[4200];
        if (o->dump_logits[0] && j->rank == j->P - 1) {
            snprintf(dtmp, sizeof dtmp, "%s.tmp", o->dump_logits);
            cfsp_tmp_register(dtmp);
            dump = fopen(dtmp, "wb");
            if (!dump) DIE("%s: cannot create", dtmp);
        }
        double nll;
        int64_t ntok;
        double ppl = run_eval(j, j->w.units, "eval dense", &nll, &ntok, &dense_secs, dump);
        if (dump) {
            if (fclose(dump) != 0 || rename(dtmp, o->dump_logits) != 0) DIE("%s: cannot write the logits dump", o->dump_logits);
            cfsp_tmp_unregister(dtmp);
        }
        if (j->rank == 0) {
            fprintf(stderr, "cfsp-mpi: dense perplexity %.4f over %lld tokens (%d windows of %d)\n", ppl, (long long)ntok, j->nwin, o->seqlen);
            cJSON *d = cJSON_AddObjectToObject(res, "dense");
            cJSON_AddNumberToObject(d, "ppl", ppl);
            cJSON_AddNumberToObject(d, "nll_sum", nll);
            cJSON_AddNumberToObject(d, "ntokens", (double)ntok);
            cJSON_AddNumberToObject(d, "windows", j->nwin);
            cJSON_AddNumberToObject(d, "seconds", dense_secs);
            cJSON_AddNumberToObject(d, "tokens_per_second", (double)j->nwin * o->seqlen / dense_secs);
        }
    }

    /* statistics: one calibration pass, or a saved file */
    j->stats = xcalloc((size_t)j->L, sizeof(block_stats));
    for (int l = 0; l < j->L; l++) {
        int mine = j->rank == 0;
        for (int i = 0; i < j->nu && !mine; i++) mine = j->w.units[i].layer == l;
        if (mine) stats_init(&j->stats[l], l, j->cfg.ffn[l]);
    }
    pipe_job cj = { 0 };
    if (!from_stats) {
        cj.tokens = j->calib.ids;
        cj.offsets = j->calib_off;
        cj.nseq = o->nsamples;
        cj.seqlen = o->seqlen;
        cj.chunk = o->chunk;
        fwd_hook hook = stats_hook(j->stats);
        cj.hook = &hook;
        cj.label = "calibration";
        MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));   /* the phase's clock starts together on every rank */
        pipeline_run(&j->pl, j->w.units, &cj);
        double wall = cj.seconds;       /* the phase ends when the last stage finishes */
        MPI_CHECK(MPI_Allreduce(&wall, &cj.seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        cj.rank_seconds = wall;
        for (int l = 0; l < j->L; l++) j->stats[l].ntok = (int64_t)o->nsamples * o->seqlen;
        move_stats(j, 1);
        if (o->save_stats) {
            char p[4200];
            snprintf(p, sizeof p, "%s/stats.h5", o->output_dir);
            const char *tmp = pending_output(j, p);
            if (j->rank == 0) rc = stats_h5_write(tmp, &j->cfg, j->stats, o->nsamples, o->seqlen, j->fingerprint);
        }
        cfsp_sync(rc);
    } else {
        int ns = 0, sl = 0;
        rc = j->rank == 0 ? stats_h5_read(o->stats, &j->cfg, j->stats, &ns, &sl, j->fingerprint) : 0;
        cfsp_sync(rc);
        int v[2] = { ns, sl };
        MPI_CHECK(MPI_Bcast(v, 2, MPI_INT, 0, MPI_COMM_WORLD));
        j->nsamples = v[0];
        j->seqlen = v[1];
        move_stats(j, 0);
        for (int l = 0; l < j->L; l++) if (j->stats[l].sum) j->stats[l].ntok = (int64_t)j->nsamples * j->seqlen;
    }
    if (j->rank == 0) {
        cJSON *cal = cJSON_AddObjectToObject(res, "calibration");
        cJSON_AddNumberToObject(cal, "nsamples", j->nsamples);
        cJSON_AddNumberToObject(cal, "seqlen", j->seqlen);
        cJSON_AddNumberToObject(cal, "tokens", (double)j->stats[0].ntok);
        if (!from_stats) {
            cJSON *offs = cJSON_AddArrayToObject(cal, "offsets");
            for (int i = 0; i < o->nsamples; i++) cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)j->calib_off[i]));
            cJSON_AddNumberToObject(cal, "seconds", cj.seconds);
            cJSON_AddNumberToObject(cal, "tokens_per_second", (double)o->nsamples * o->seqlen / cj.seconds);
        } else cJSON_AddStringToObject(cal, "stats_file", o->stats);
        cJSON *imp = cJSON_AddObjectToObject(res, "importance");
        double *v = xmalloc(sizeof(double) * (size_t)j->L);
        for (int g = 0; g < GM_COUNT; g++) {
            for (int l = 0; l < j->L; l++) v[l] = j->stats[l].imp[g];
            cJSON_AddItemToObject(imp, global_metric_names[g], doubles(v, j->L));
        }
        free(v);
    }

    /* pruning sweep: scores once per method (on the owners), gathered at the root; then every ratio */
    cJSON *pruned = j->rank == 0 ? cJSON_AddArrayToObject(res, "pruned") : NULL;
    double sweep_secs = 0;
    int64_t total = 0;
    for (int l = 0; l < j->L; l++) total += j->cfg.ffn[l];
    for (int mi = 0; mi < o->nmethods && o->nratios > 0; mi++) {
        int method = o->methods[mi];
        double ts = now_seconds();
        int64_t n = 0;
        double *mine = own_scores(j, method, &n), *all = NULL;
        int *cnt = xmalloc(sizeof(int) * (size_t)j->P), *dsp = xmalloc(sizeof(int) * (size_t)j->P);
        for (int r = 0, d = 0; r < j->P; r++) {
            int k = 0;
            for (int u = j->map.first[r]; u < j->map.first[r + 1]; u++) if (j->plan.u[u].slice >= 0) k += j->plan.u[u].c1 - j->plan.u[u].c0;
            cnt[r] = k; dsp[r] = d; d += k;
        }
        if (j->rank == 0) all = xmalloc(sizeof(double) * (size_t)total);
        MPI_CHECK(MPI_Gatherv(mine, (int)n, MPI_DOUBLE, all, cnt, dsp, MPI_DOUBLE, 0, MPI_COMM_WORLD));
        sweep_secs += now_seconds() - ts;
        for (int r = 0; r < o->nratios; r++) prune_one(j, method, o->ratios[r], all, pruned, &sweep_secs);
        free(mine); free(all); free(cnt); free(dsp);
    }

    /* per-rank figures */
    int lay0 = j->nu ? j->plan.u[first].layer : -1, lay1 = j->nu ? j->plan.u[last - 1].layer : -1;
    double mine[10] = { (double)first, (double)last, (double)lay0, (double)lay1, (double)j->w.bytes_expected,
                        (double)j->st.bytes_mapped, (double)vm_hwm_bytes(), cj.compute_seconds, cj.wait_seconds, cj.rank_seconds };
    double *allr = j->rank == 0 ? xmalloc(sizeof(double) * 10 * (size_t)j->P) : NULL;
    MPI_CHECK(MPI_Gather(mine, 10, MPI_DOUBLE, allr, 10, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    rc = 0;
    if (j->rank == 0) {
        cJSON *stg = cJSON_AddArrayToObject(res, "stages");
        for (int r = 0; r < j->P; r++) {
            double *x = allr + 10 * r;
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "rank", r);
            cJSON_AddNumberToObject(s, "first_unit", x[0]);
            cJSON_AddNumberToObject(s, "last_unit", x[1] - 1);
            cJSON_AddNumberToObject(s, "first_block", x[2]);
            cJSON_AddNumberToObject(s, "last_block", x[3]);
            cJSON_AddNumberToObject(s, "weight_bytes_read", x[4]);
            cJSON_AddNumberToObject(s, "weight_bytes_mapped", x[5]);
            cJSON_AddNumberToObject(s, "vmhwm_bytes", x[6]);
            cJSON_AddNumberToObject(s, "calib_compute_seconds", x[7]);
            cJSON_AddNumberToObject(s, "calib_wait_seconds", x[8]);
            cJSON_AddNumberToObject(s, "calib_seconds", x[9]);
            cJSON_AddItemToArray(stg, s);
        }
        cJSON *t = cJSON_AddObjectToObject(res, "timings");
        cJSON_AddNumberToObject(t, "setup_seconds", t_setup);
        cJSON_AddNumberToObject(t, "dense_eval_seconds", dense_secs);
        cJSON_AddNumberToObject(t, "calibration_seconds", cj.seconds);
        cJSON_AddNumberToObject(t, "sweep_seconds_excluding_eval_and_output", sweep_secs);
        cJSON_AddNumberToObject(t, "total_seconds", now_seconds() - t_start);
        rc = commit_outputs(j);
        if (!rc) rc = results_write(o->output_dir, res);      /* results.json last: the job is complete */
        cJSON_Delete(res);
        free(allr);
    } else commit_outputs(j);
    cfsp_sync(rc);
    free(j->pending);

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
    return 0;
}
