/* driver.c — the distributed pruning sweep (see driver.h): statistics between owners and root,
 * scores on the owners gathered at the root, the root's allocation and selection broadcast,
 * slicing on the owners, flap's bias summed at the root. */
#include "cfsp/prune/driver.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

void prune_ctx_init(prune_ctx *x, const model_config *cfg, const unit_plan *plan, const stage_map *map,
                    const rank_weights *w, const block_stats *stats, int nsamples, int seqlen, const prune_params *p)
{
    memset(x, 0, sizeof *x);
    x->cfg = cfg;
    x->plan = plan;
    x->map = map;
    x->w = w;
    x->stats = stats;
    x->nsamples = nsamples;
    x->seqlen = seqlen;
    x->p = *p;
    x->rank = cfsp_rank();
    x->nranks = cfsp_nranks();
    x->L = cfg->n_layers;
    x->nu = w->last_unit - w->first_unit;
    for (int l = 0; l < x->L; l++) x->total += cfg->ffn[l];
}

/* The counts and displacements [nranks] of a gather over the ranks in unit order: per rank, its
 * FFN slices (channels = 0) or their channels (channels = 1), times per. Returns the sum. */
static int rank_counts(const prune_ctx *x, int channels, int per, int *cnt, int *dsp)
{
    int d = 0;
    for (int r = 0; r < x->nranks; r++) {
        int k = 0;
        for (int u = x->map->first[r]; u < x->map->first[r + 1]; u++) {
            const stage_unit *su = &x->plan->u[u];
            if (su->slice >= 0) k += channels ? su->c1 - su->c0 : 1;
        }
        cnt[r] = per * k;
        dsp[r] = d;
        d += cnt[r];
    }
    return d;
}

void prune_stats_move(const unit_plan *plan, const stage_map *map, block_stats *stats, int to_root)
{
    int rank = cfsp_rank();
    for (int u = 0; u < plan->n; u++) {
        const stage_unit *su = &plan->u[u];
        if (su->slice < 0) continue;
        int o = stage_of_unit(map, u), n = su->c1 - su->c0;
        if (o == 0 || (rank != o && rank != 0)) continue;
        block_stats *s = &stats[su->layer];
        double head[GM_COUNT + 1];
        int sender = to_root ? o : 0, receiver = to_root ? 0 : o, last = su->slice == su->nslices - 1;
        if (rank == sender) {
            memcpy(head, s->imp, sizeof s->imp);
            head[GM_COUNT] = (double)s->ntok;
            MPI_CHECK(MPI_Send(head, GM_COUNT + 1, MPI_DOUBLE, receiver, 200, MPI_COMM_WORLD));
            MPI_CHECK(MPI_Send(s->sum_sq + su->c0, n, MPI_DOUBLE, receiver, 201, MPI_COMM_WORLD));
            MPI_CHECK(MPI_Send(s->sum + su->c0, n, MPI_DOUBLE, receiver, 202, MPI_COMM_WORLD));
        } else {
            MPI_CHECK(MPI_Recv(head, GM_COUNT + 1, MPI_DOUBLE, sender, 200, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            if (last || !to_root) memcpy(s->imp, head, sizeof s->imp);
            s->ntok = (int64_t)head[GM_COUNT];
            MPI_CHECK(MPI_Recv(s->sum_sq + su->c0, n, MPI_DOUBLE, sender, 201, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            MPI_CHECK(MPI_Recv(s->sum + su->c0, n, MPI_DOUBLE, sender, 202, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        }
    }
}

/* every block's row sums [L][3][D] of the row-normalised metric: each slice's share, gathered on
 * every rank and summed in slice order */
static double *block_rowsums(const prune_ctx *x)
{
    int D = x->cfg->hidden, mine = 0, nu = x->nu;
    const unit_weights *units = x->w->units;
    double *part = xcalloc((size_t)3 * D * (size_t)(nu ? nu : 1), sizeof(double));
    for (int i = 0; i < nu; i++)
        if (units[i].slice >= 0)
            rowsum_slice(&units[i], &x->stats[units[i].layer], x->nsamples, x->p.b, part + (size_t)3 * D * mine++);
    int *cnt = xmalloc(sizeof(int) * (size_t)x->nranks), *dsp = xmalloc(sizeof(int) * (size_t)x->nranks);
    int n = rank_counts(x, 0, 3 * D, cnt, dsp);
    double *all = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    MPI_CHECK(MPI_Allgatherv(part, 3 * D * mine, MPI_DOUBLE, all, cnt, dsp, MPI_DOUBLE, MPI_COMM_WORLD));
    double *rows = xcalloc((size_t)3 * D * (size_t)x->L, sizeof(double));
    for (int u = 0, s = 0; u < x->plan->n; u++) {
        if (x->plan->u[u].slice < 0) continue;
        double *dst = rows + (size_t)3 * D * x->plan->u[u].layer;
        for (int e = 0; e < 3 * D; e++) dst[e] += all[(size_t)3 * D * s + e];
        s++;
    }
    free(part); free(all); free(cnt); free(dsp);
    return rows;
}

double *prune_scores(const prune_ctx *x, prune_method method)
{
    const unit_weights *units = x->w->units;
    int D = x->cfg->hidden;
    int64_t n = 0;
    for (int i = 0; i < x->nu; i++) if (units[i].slice >= 0) n += units[i].k;
    double *mine = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    double *rows = method == PM_CFSP && x->p.local_metric == LM_THREE_W_ONE_WA_ROWNORM ? block_rowsums(x) : NULL;
    int64_t off = 0;
    for (int i = 0; i < x->nu; i++) {
        const unit_weights *u = &units[i];
        if (u->slice < 0) continue;
        score_slice(u, &x->stats[u->layer], x->nsamples, method, (local_metric)x->p.local_metric, x->p.b, x->p.c,
                    rows ? rows + (size_t)3 * D * u->layer : NULL, mine + off);
        off += u->k;
    }
    free(rows);
    int *cnt = xmalloc(sizeof(int) * (size_t)x->nranks), *dsp = xmalloc(sizeof(int) * (size_t)x->nranks);
    rank_counts(x, 1, 1, cnt, dsp);
    double *all = x->rank == 0 ? xmalloc(sizeof(double) * (size_t)x->total) : NULL;
    MPI_CHECK(MPI_Gatherv(mine, (int)n, MPI_DOUBLE, all, cnt, dsp, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    free(mine); free(cnt); free(dsp);
    return all;
}

/* root: from every block's scores, the kept channels (ascending block channel numbers) */
static void root_select(const prune_ctx *x, prune_method method, double ratio, const double *scores,
                        double *keep, int *counts, int64_t *kept)
{
    const prune_params *p = &x->p;
    const int *ffn = x->cfg->ffn;
    int L = x->L, align = p->align > 1 ? p->align : 0;
    if (method == PM_CFSP) {
        double *imp = xmalloc(sizeof(double) * (size_t)L);
        for (int l = 0; l < L; l++) imp[l] = x->stats[l].imp[p->global_metric];
        double scale = p->alloc_reference ? 1.0 : 131072.0 / ((double)x->nsamples * x->seqlen);
        alloc_keep_fraction(imp, L, ratio, p->a, scale, keep);
        free(imp);
    } else if (method == PM_WANDA_SP || method == PM_FLAP) {
        alloc_global_threshold(scores, ffn, L, ratio, counts);
    } else {
        for (int l = 0; l < L; l++) counts[l] = default_count(ffn[l], 1.0 - ratio, align);
    }
    int64_t off = 0, koff = 0;
    for (int l = 0; l < L; l++) {
        int m = ffn[l];
        if (method == PM_CFSP) counts[l] = select_cfsp(scores + off, m, keep[l], p->alloc_reference, align, kept + koff);
        else {
            select_topk(scores + off, m, counts[l], kept + koff);
            keep[l] = (double)counts[l] / m;
        }
        off += m;
        koff += counts[l];
    }
}

void prune_select(const prune_ctx *x, prune_method method, double ratio, const double *scores, prune_cut *cut)
{
    int L = x->L, nu = x->nu;
    const unit_plan *plan = x->plan;
    memset(cut, 0, sizeof *cut);
    cut->method = method;
    cut->ratio = ratio;
    cut->keep = xcalloc((size_t)L, sizeof(double));
    cut->counts = xcalloc((size_t)L, sizeof(int));
    double t0 = now_seconds();
    int64_t *kept = xmalloc(sizeof(int64_t) * (size_t)x->total);
    if (x->rank == 0) root_select(x, method, ratio, scores, cut->keep, cut->counts, kept);
    MPI_CHECK(MPI_Bcast(cut->keep, L, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Bcast(cut->counts, L, MPI_INT, 0, MPI_COMM_WORLD));
    for (int l = 0; l < L; l++) cut->nkept += cut->counts[l];
    for (int64_t off = 0; off < cut->nkept; off += 1 << 26) {
        int n = (int)(cut->nkept - off < (1 << 26) ? cut->nkept - off : (1 << 26));
        MPI_CHECK(MPI_Bcast(kept + off, n, MPI_INT64_T, 0, MPI_COMM_WORLD));
    }
    /* where each slice's kept channels start in its block's list, and this rank's own lists */
    int64_t *block_start = xmalloc(sizeof(int64_t) * (size_t)L);
    for (int l = 0, acc = 0; l < L; l++) { block_start[l] = acc; acc += cut->counts[l]; }
    cut->kofs = xcalloc((size_t)plan->n, sizeof(int));
    for (int u = 0; u < plan->n; u++) {
        const stage_unit *su = &plan->u[u];
        if (su->slice < 0) continue;
        const int64_t *kl = kept + block_start[su->layer];
        int c = 0;
        while (c < cut->counts[su->layer] && kl[c] < su->c0) c++;
        cut->kofs[u] = c;
    }
    cut->kept = xcalloc((size_t)(nu ? nu : 1), sizeof(int64_t *));
    cut->nk = xcalloc((size_t)(nu ? nu : 1), sizeof(int));
    for (int i = 0; i < nu; i++) {
        const unit_weights *u = &x->w->units[i];
        if (u->slice < 0) continue;
        int c0 = cut->kofs[x->w->first_unit + i], k = 0;
        const int64_t *kl = kept + block_start[u->layer] + c0;
        while (c0 + k < cut->counts[u->layer] && kl[k] < u->c1) k++;
        cut->kept[i] = xmalloc(sizeof(int64_t) * (size_t)(k ? k : 1));
        memcpy(cut->kept[i], kl, sizeof(int64_t) * (size_t)k);
        cut->nk[i] = k;
    }
    free(block_start);
    free(kept);
    cut->select_seconds = now_seconds() - t0;
}

/* flap: every slice's bias share [D] gathered at the root and summed per block in slice order */
static float *flap_bias(const prune_ctx *x, const unit_weights *pu)
{
    int D = x->cfg->hidden, nu = x->nu, mine = 0;
    float *part = xmalloc(sizeof(float) * (size_t)D * (size_t)(nu ? nu : 1)), *all = NULL, *bias;
    for (int i = 0; i < nu; i++) if (pu[i].slice >= 0) memcpy(part + (size_t)D * mine++, pu[i].bias, sizeof(float) * (size_t)D);
    int *cnt = xmalloc(sizeof(int) * (size_t)x->nranks), *dsp = xmalloc(sizeof(int) * (size_t)x->nranks);
    int n = rank_counts(x, 0, D, cnt, dsp);
    if (x->rank == 0) all = xmalloc(sizeof(float) * (size_t)(n ? n : 1));
    MPI_CHECK(MPI_Gatherv(part, D * mine, MPI_FLOAT, all, cnt, dsp, MPI_FLOAT, 0, MPI_COMM_WORLD));
    if (x->rank == 0) {
        bias = xcalloc((size_t)x->L * D, sizeof(float));
        for (int u = 0, s = 0; u < x->plan->n; u++) {
            if (x->plan->u[u].slice < 0) continue;
            float *b = bias + (size_t)D * x->plan->u[u].layer;
            for (int e = 0; e < D; e++) b[e] += all[(size_t)D * s + e];
            s++;
        }
    } else bias = xcalloc(1, sizeof(float));   /* non-NULL: tells the writer a bias exists */
    free(part); free(all); free(cnt); free(dsp);
    return bias;
}

void prune_slice(const prune_ctx *x, prune_cut *cut)
{
    int nu = x->nu;
    double t0 = now_seconds();
    cut->units = xcalloc((size_t)(nu ? nu : 1), sizeof(unit_weights));
    for (int i = 0; i < nu; i++) {
        const unit_weights *u = &x->w->units[i];
        if (u->slice < 0) { cut->units[i] = *u; continue; }
        double *mean = NULL;
        if (cut->method == PM_FLAP) {     /* the block's mean down_proj input */
            const block_stats *st = &x->stats[u->layer];
            mean = xcalloc((size_t)x->cfg->ffn[u->layer], sizeof(double));
            for (int c = u->c0; c < u->c1; c++) mean[c] = st->sum[c] / (double)st->ntok;
        }
        slice_unit(u, cut->kept[i], cut->nk[i], mean, &cut->units[i]);
        free(mean);
    }
    if (cut->method == PM_FLAP) cut->bias = flap_bias(x, cut->units);
    cut->slice_seconds = now_seconds() - t0;
}

void prune_cut_free(const prune_ctx *x, prune_cut *cut)
{
    for (int i = 0; i < x->nu; i++) {
        if (cut->units && cut->units[i].slice >= 0) unit_weights_free_owned(&cut->units[i]);
        free(cut->kept[i]);
    }
    free(cut->units); free(cut->kept); free(cut->nk); free(cut->kofs);
    free(cut->keep); free(cut->counts); free(cut->bias);
    memset(cut, 0, sizeof *cut);
}
