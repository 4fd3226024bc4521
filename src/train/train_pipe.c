/* train_pipe.c — the pipelined LoRA trainer (issue 15, see train.h): the stage plan over blocks,
 * one training step as a 1F1B schedule of windows, and the pipelined evaluation.
 *
 * Stage s of S holds blocks [first[s], first[s+1]) (the last stage possibly none: the head alone,
 * when that balances better; S = min(P, L + 1)). A window (T tokens) is a micro-batch: stage 0
 * embeds it, each stage runs its blocks and sends the hidden state [T, D] to s+1 (tag TAG_FWD), the
 * last stage computes the loss and its gradient; the gradient of the hidden state flows back up
 * (tag TAG_BWD) through the blocks in reverse. Schedule of stage s (1F1B): min(S-1-s, B) warm-up
 * forwards, then one forward and one backward in turn, then the remaining backwards; forwards and
 * backwards each in window order, so every stage's accumulator adds the windows' gradients in
 * window order, as the data-parallel trainer on one rank does. Sends are non-blocking from two
 * buffers per direction, each waited before it is used again; receives are blocking and in
 * schedule order, so no stage waits on another in a cycle.
 *
 * Activations: with store_act, stage s keeps every block's activations (train_ops.h) for each of
 * the S - s windows in flight; otherwise the input of each of its blocks for each window in flight
 * (slots x blocks x [T, D] floats) and one set of block activations per block, and a backward
 * recomputes a block's forward from its kept input unless that block's activations still belong to
 * the window (always the case on the last stage, and for S = 1). Recomputation repeats the same
 * operations on the same input, so the gradients are bitwise the same either way. */
#include "cfsp/train/train.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <float.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_FWD 7101
#define TAG_BWD 7102
/* send buffers per direction: window i's message goes from buffer i % NSEND, whose previous send
 * (window i - NSEND) is waited for first; the receiver needs nothing of this stage's later windows
 * to take it, so the wait ends */
#define NSEND 2

double train_block_cost(const model_config *c, const lora_plan *plan, int l, int T)
{
    double w = 0, lora = 0;
    for (int t = 0; t < LORA_NMOD; t++) {
        int64_t o, in;
        lora_module_shape(c, l, t, &o, &in);
        w += (double)o * in;
        if (plan->target[t]) lora += (double)plan->rank[l] * (o + in);
    }
    double attn = 4.0 * c->n_heads * c->head_dim * (T + 1) / 2.0;   /* QK^T and PV, causal */
    double fwd = 2.0 * (w + lora) + attn;
    return 4.0 * fwd;                             /* forward, recomputation, backward (2 x forward) */
}

double train_head_cost(const model_config *c) { return 3.0 * 2.0 * (double)c->vocab * c->hidden; }

void train_stages_plan(const model_config *c, const lora_plan *plan, int T, int P, train_stages *st)
{
    int L = c->n_layers, S = P < L + 1 ? P : L + 1;
    double *pre = xcalloc((size_t)L + 1, sizeof(double));
    for (int l = 0; l < L; l++) pre[l + 1] = pre[l] + train_block_cost(c, plan, l, T);
    double head = train_head_cost(c);
    /* best[s][i]: the smallest largest-stage cost of blocks [0, i) on stages 0..s-1, each non-empty;
     * the last stage takes the remaining blocks [j, L), possibly none (the head alone: a large
     * vocabulary's head costs about a block), plus the head */
    double *best = xmalloc(sizeof(double) * (size_t)S * (size_t)(L + 1));
    int *cut = xmalloc(sizeof(int) * (size_t)S * (size_t)(L + 1));
#define BEST(s, i) best[(size_t)(s) * (size_t)(L + 1) + (size_t)(i)]
#define CUT(s, i) cut[(size_t)(s) * (size_t)(L + 1) + (size_t)(i)]
    for (int s = 0; s < S; s++)
        for (int i = 0; i <= L; i++) BEST(s, i) = DBL_MAX, CUT(s, i) = 0;
    BEST(0, 0) = 0;
    for (int s = 1; s < S; s++)
        for (int i = s; i <= L; i++)
            for (int j = s - 1; j < i; j++) {
                if (BEST(s - 1, j) == DBL_MAX) continue;
                double cs = pre[i] - pre[j];
                double v = BEST(s - 1, j) > cs ? BEST(s - 1, j) : cs;
                if (v < BEST(s, i)) { BEST(s, i) = v; CUT(s, i) = j; }
            }
    double bmax = DBL_MAX;
    int jbest = S - 1;
    for (int j = S - 1; j <= L; j++) {              /* the last stage: blocks [j, L) + head */
        if (BEST(S - 1, j) == DBL_MAX || (S == 1 && j != 0)) continue;
        double cs = pre[L] - pre[j] + head, v = BEST(S - 1, j) > cs ? BEST(S - 1, j) : cs;
        if (v < bmax) { bmax = v; jbest = j; }
    }
    st->nstages = S;
    st->first = xmalloc(sizeof(int) * (size_t)(S + 1));
    st->cost = xmalloc(sizeof(double) * (size_t)S);
    st->first[S] = L;
    st->first[S - 1] = jbest;
    for (int s = S - 1, i = jbest; s > 0; s--) { i = CUT(s, i); st->first[s - 1] = i; }
    for (int s = 0; s < S; s++) st->cost[s] = pre[st->first[s + 1]] - pre[st->first[s]] + (s == S - 1 ? head : 0);
#undef BEST
#undef CUT
    free(best);
    free(cut);
    free(pre);
}

void train_stages_free(train_stages *st)
{
    free(st->first);
    free(st->cost);
    memset(st, 0, sizeof *st);
}

typedef struct {
    MPI_Request *fwd, *bwd;   /* [NSEND] */
    float *bwdbuf;            /* [NSEND][T, D] */
} sends;

static void wait_req(trainer *tr, MPI_Request *r)
{
    if (*r == MPI_REQUEST_NULL) return;
    double t0 = now_seconds();
    MPI_CHECK(MPI_Wait(r, MPI_STATUS_IGNORE));
    tr->wait_seconds += now_seconds() - t0;
}

static void recv_from(trainer *tr, float *buf, size_t n, int src, int tag)
{
    double t0 = now_seconds();
    MPI_CHECK(MPI_Recv(buf, (int)n, MPI_FLOAT, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    tr->wait_seconds += now_seconds() - t0;
}

/* the activations of block l for window i: its own set (kept) or the block's one set */
static blk_act *act_of(trainer *tr, int i, int l)
{
    if (!tr->store_act) return &tr->act[l];
    return &tr->acts[(size_t)(i % tr->slots) * (size_t)(tr->b1 - tr->b0) + (size_t)(l - tr->b0)];
}

/* the forward of window i (token ids ids) through this stage's blocks; keep: the block inputs go to
 * slot i % slots. Last stage: the loss (and with scale > 0 its gradient into tr->dxbuf); other
 * stages: the output is sent on. Returns the window's loss sum (last stage), else 0. */
static double fwd_window(trainer *tr, int i, const uint32_t *ids, int keep, float scale, sends *sd, int64_t *count)
{
    const model_config *c = &tr->m->cfg;
    int T = tr->T, D = c->hidden, s = tr->stage, S = tr->nstages, slot = i % tr->slots;
    size_t nd = (size_t)T * D;
    float *x = tr->x, *y = tr->y;
    if (s == 0) for (int t = 0; t < T; t++) wmat_row_f32(&tr->m->embed, ids[t], x + (size_t)t * D);
    else recv_from(tr, x, nd, tr->base + s - 1, TAG_FWD);
    double t0 = now_seconds(), loss = 0;
    for (int l = tr->b0; l < tr->b1; l++) {
        if (keep && !tr->store_act) memcpy(tr->xin + ((size_t)slot * (size_t)(tr->b1 - tr->b0) + (size_t)(l - tr->b0)) * nd, x, sizeof(float) * nd);
        blk_forward(&tr->bp[l], act_of(tr, i, l), x, y, T, tr->cosb, tr->sinb);
        tr->act_win[l] = i;
        float *sw = x; x = y; y = sw;
    }
    if (s == S - 1) {
        for (int t = 0; t < T; t++) tr->tgt[t] = t + 1 < T ? (int32_t)ids[t + 1] : -1;
        loss = trainer_head(tr, x, T, scale, scale > 0 ? tr->dxbuf : NULL, count);
        tr->compute_seconds += now_seconds() - t0;
    } else {
        tr->compute_seconds += now_seconds() - t0;
        int k = i % NSEND;
        wait_req(tr, &sd->fwd[k]);
        float *sb = tr->sendbuf + (size_t)k * nd;
        memcpy(sb, x, sizeof(float) * nd);
        MPI_CHECK(MPI_Isend(sb, (int)nd, MPI_FLOAT, tr->base + s + 1, TAG_FWD, MPI_COMM_WORLD, &sd->fwd[k]));
    }
    return loss;
}

/* the backward of window i: d(output) from the next stage (or the head), the blocks in reverse
 * (recomputing activations that belong to another window), the window's gradient added to gacc,
 * d(input) sent to the previous stage */
static void bwd_window(trainer *tr, int i, double *acc, sends *sd)
{
    const model_config *c = &tr->m->cfg;
    int T = tr->T, D = c->hidden, s = tr->stage, S = tr->nstages, slot = i % tr->slots;
    size_t nd = (size_t)T * D;
    if (s < S - 1) recv_from(tr, tr->dxbuf, nd, tr->base + s + 1, TAG_BWD);
    double t0 = now_seconds();
    memset(tr->grad, 0, sizeof(float) * (size_t)tr->nlocal);
    for (int l = tr->b1 - 1; l >= tr->b0; l--) {
        if (!tr->store_act && tr->act_win[l] != i) {
            const float *xi = tr->xin + ((size_t)slot * (size_t)(tr->b1 - tr->b0) + (size_t)(l - tr->b0)) * nd;
            blk_forward(&tr->bp[l], &tr->act[l], xi, tr->y, T, tr->cosb, tr->sinb);
            tr->act_win[l] = i;
        }
        blk_backward(&tr->bp[l], act_of(tr, i, l), tr->dxbuf, T, tr->cosb, tr->sinb, &tr->sc);
    }
    for (int64_t j = 0; j < tr->nlocal; j++) acc[j] += tr->grad[j];
    tr->compute_seconds += now_seconds() - t0;
    if (s > 0) {
        int k = i % NSEND;
        wait_req(tr, &sd->bwd[k]);
        float *sb = sd->bwdbuf + (size_t)k * nd;
        memcpy(sb, tr->dxbuf, sizeof(float) * nd);
        MPI_CHECK(MPI_Isend(sb, (int)nd, MPI_FLOAT, tr->base + s - 1, TAG_BWD, MPI_COMM_WORLD, &sd->bwd[k]));
    }
}

static void sends_init(trainer *tr, sends *sd, int backward)
{
    int n = NSEND;
    sd->fwd = xmalloc(sizeof(MPI_Request) * (size_t)n);
    sd->bwd = xmalloc(sizeof(MPI_Request) * (size_t)n);
    for (int k = 0; k < n; k++) sd->fwd[k] = sd->bwd[k] = MPI_REQUEST_NULL;
    sd->bwdbuf = backward && tr->stage > 0 ? xmalloc(sizeof(float) * (size_t)tr->T * (size_t)tr->m->cfg.hidden * (size_t)n) : NULL;
}

static void sends_finish(trainer *tr, sends *sd)
{
    int n = NSEND;
    for (int k = 0; k < n; k++) { wait_req(tr, &sd->fwd[k]); wait_req(tr, &sd->bwd[k]); }
    free(sd->fwd);
    free(sd->bwd);
    free(sd->bwdbuf);
}

/* the group of window w of B in G groups: windows [g B / G, (g + 1) B / G) */
static int group_of(int w, int B, int G)
{
    int g = (int)((int64_t)w * G / B);
    while (g > 0 && (int64_t)g * B / G > w) g--;
    while (g + 1 < G && (int64_t)(g + 1) * B / G <= w) g++;
    return g;
}

double trainer_pipe_step(trainer *tr, const train_hparams *h, const uint32_t *tokens, int64_t ntok, double *gnorm)
{
    int B = h->batch, T = tr->T, step = tr->step + 1, s = tr->stage, S = tr->nstages;
    int R = tr->replicas, G = tr->groups, rep = tr->replica;
    int64_t nl = tr->nlocal;
    double red[2] = { 0, 0 };
    double *gl = xcalloc((size_t)2 * (size_t)G, sizeof(double));      /* per group: loss sum, count */
    memset(tr->gacc, 0, sizeof(double) * (size_t)nl);
    if (tr->gsum) memset(tr->gsum, 0, sizeof(double) * (size_t)G * (size_t)(nl + 1));
    for (int l = tr->b0; l < tr->b1; l++) tr->act_win[l] = -1;      /* window numbers restart every step */
    /* this replica's groups [g0, g1) and their windows [w0, w1) */
    int g0 = rep >= 0 ? rep * G / R : 0, g1 = rep >= 0 ? (rep + 1) * G / R : 0;
    int w0 = (int)((int64_t)g0 * B / G), w1 = (int)((int64_t)g1 * B / G), nw = w1 - w0;
    if (s >= 0 && nw > 0) {
        int64_t *off = xmalloc(sizeof(int64_t) * (size_t)B);
        train_batch_offsets(h->seed, step, B, T, ntok, off);
        float scale = (float)(1.0 / ((double)B * (T - 1)));
        sends sd;
        sends_init(tr, &sd, 1);
        int nwarm = S - 1 - s < nw ? S - 1 - s : nw, f = 0, b = 0;
        for (int k = 0; k < nwarm; k++, f++) fwd_window(tr, f, tokens + off[w0 + f], 1, scale, &sd, NULL);
        char where[32];
        snprintf(where, sizeof where, "step%d", step);
        if (cfsp_fault("kill", where)) raise(SIGKILL);   /* test hook (err.h): a rank killed mid-step */
        while (f < nw || b < nw) {
            if (f < nw) {
                int64_t cnt = 0;
                double lw = fwd_window(tr, f, tokens + off[w0 + f], 1, scale, &sd, &cnt);
                if (s == S - 1) {
                    int g = group_of(w0 + f, B, G);
                    gl[2 * g] += lw;
                    gl[2 * g + 1] += (double)cnt;
                }
                f++;
            }
            int g = group_of(w0 + b, B, G);
            bwd_window(tr, b, G > 1 ? tr->gsum + (size_t)g * (size_t)(nl + 1) : tr->gacc, &sd);
            b++;
        }
        sends_finish(tr, &sd);
        free(off);
    }
    if (s >= 0 && G > 1) {
        /* every replica's groups to every replica (R divides G: G / R groups each), then the G sums
         * in group order */
        double t0 = now_seconds();
        int per = G / R;
        size_t gn = (size_t)(nl + 1);
        if (R > 1) {
            /* this replica's groups sit at g0 * gn already: in place, one group per element of a
             * contiguous type (gn < 2^31, checked at init), so the count is the group count */
            MPI_Datatype blk;
            MPI_CHECK(MPI_Type_contiguous((int)gn, MPI_DOUBLE, &blk));
            MPI_CHECK(MPI_Type_commit(&blk));
            MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, tr->gsum, per, blk, tr->stage_comm));
            MPI_CHECK(MPI_Type_free(&blk));
            MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, gl, 2 * G, MPI_DOUBLE, MPI_SUM, tr->stage_comm));   /* one replica's entry each */
        }
        memcpy(tr->gacc, tr->gsum, sizeof(double) * (size_t)nl);
        for (int g = 1; g < G; g++) {
            const double *v = tr->gsum + (size_t)g * gn;
            for (int64_t j = 0; j < nl; j++) tr->gacc[j] += v[j];
        }
        tr->wait_seconds += now_seconds() - t0;
    }
    /* the loss: the groups' sums in group order, on the last stage of replica 0; every other
     * entry of the world sum is 0, so it is exact */
    if (s == S - 1 && rep == 0)
        for (int g = 0; g < G; g++) { red[0] += gl[2 * g]; red[1] += gl[2 * g + 1]; }
    free(gl);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, red, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    return trainer_update(tr, h, step, red, gnorm);
}

double trainer_pipe_eval(trainer *tr, const uint32_t *tokens, int64_t ntok, int nwin, double *nll, int64_t *count)
{
    int T = tr->T, s = tr->stage, S = tr->nstages;
    int64_t avail = ntok / T;
    if (nwin <= 0 || nwin > avail) nwin = (int)avail;
    double red[2] = { 0, 0 };
    if (s >= 0 && tr->replica == 0) {            /* replica 0 evaluates; the others wait */
        sends sd;
        sends_init(tr, &sd, 0);
        for (int w = 0; w < nwin; w++) {
            int64_t cnt = 0;
            double lw = fwd_window(tr, w, tokens + (int64_t)w * T, 0, 0, &sd, &cnt);
            if (s == S - 1) { red[0] += lw; red[1] += (double)cnt; }
        }
        sends_finish(tr, &sd);
        for (int l = tr->b0; l < tr->b1; l++) tr->act_win[l] = -1;   /* evaluation windows are not training windows */
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, red, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    *nll = red[0];
    *count = (int64_t)red[1];
    return exp(red[0] / red[1]);
}
