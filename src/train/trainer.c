/* trainer.c — LoRA adapters on a frozen model (both trainers' state), one data-parallel training
 * step (forward with kept activations, backward, double-precision MPI_Allreduce of the adapter
 * gradients), the update shared with the pipelined trainer (norm in block order, clipping, AdamW),
 * data-parallel evaluation, the learning-rate schedule and the batch sampler (see train.h). */
#include "cfsp/model/forward.h"
#include "cfsp/model/matmul.h"
#include "cfsp/train/train.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cblas.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif01(uint64_t *s) { return (double)(splitmix64(s) >> 11) / 9007199254740992.0; }

/* the starting state of an independent stream for (seed, tag, index): hashed, so that the streams of
 * neighbouring indices do not overlap (a splitmix64 state advanced by a constant would) */
static uint64_t stream_state(uint64_t seed, uint64_t tag, uint64_t index)
{
    uint64_t a = seed ^ 0x6a09e667f3bcc909ull, b = (tag << 48) ^ index ^ 0xbb67ae8584caa73bull;
    uint64_t x = splitmix64(&a), y = splitmix64(&b);
    uint64_t c = x ^ (y * 0xd1b54a32d192ed03ull);
    return splitmix64(&c);
}

void train_batch_offsets(uint64_t seed, int step, int B, int T, int64_t ntok, int64_t *off)
{
    uint64_t s = stream_state(seed, 1, (uint64_t)step);
    int64_t span = ntok - T + 1;                    /* offsets 0 .. ntok - T */
    for (int i = 0; i < B; i++) off[i] = (int64_t)(splitmix64(&s) % (uint64_t)span);
}

double train_lr(const train_hparams *h, int step)
{
    if (h->warmup > 0 && step <= h->warmup) return h->lr * step / h->warmup;
    double lo = h->lr * h->min_lr_ratio;
    int span = h->steps - h->warmup;
    double prog = span > 0 ? (double)(step - h->warmup) / span : 1.0;
    if (prog > 1) prog = 1;
    return lo + (h->lr - lo) * 0.5 * (1.0 + cos(M_PI * prog));
}

const char *const trainer_kind_names[2] = { "data", "pipeline" };

int trainer_owner(const trainer *tr, int l)
{
    if (tr->kind == TRAINER_DATA) return 0;
    for (int s = 0; s < tr->nstages; s++) if (l < tr->first[s + 1]) return s;
    return tr->nstages - 1;
}

void trainer_init(trainer *tr, const train_model *m, const lora_plan *plan, int seqlen, uint64_t seed, trainer_kind kind,
                  const train_stages *st, int stage)
{
    memset(tr, 0, sizeof *tr);
    tr->m = m;
    tr->kind = kind;
    const model_config *c = &m->cfg;
    int L = c->n_layers, D = c->hidden, T = seqlen;
    tr->b0 = 0; tr->b1 = L;
    tr->stage = 0; tr->nstages = 1;
    tr->replica = 0; tr->replicas = 1; tr->groups = 1; tr->base = 0;
    tr->stage_comm = MPI_COMM_NULL;
    if (kind == TRAINER_PIPELINE) {
        tr->nstages = st->nstages;
        tr->first = xmalloc(sizeof(int) * (size_t)(st->nstages + 1));
        memcpy(tr->first, st->first, sizeof(int) * (size_t)(st->nstages + 1));
        tr->stage = stage;
        tr->b0 = stage >= 0 ? st->first[stage] : 0;
        tr->b1 = stage >= 0 ? st->first[stage + 1] : 0;
        tr->replicas = st->replicas > 0 ? st->replicas : 1;
        tr->groups = st->groups > 0 ? st->groups : 1;
        tr->replica = stage >= 0 ? cfsp_rank() / st->nstages : -1;
        tr->base = stage >= 0 ? tr->replica * st->nstages : 0;
        if (tr->replicas > 1)              /* collective: idle ranks get MPI_COMM_NULL */
            MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, stage >= 0 ? stage : MPI_UNDEFINED, tr->replica, &tr->stage_comm));
    }
    int b0 = tr->b0, b1 = tr->b1;
    /* a private copy of the plan */
    tr->plan = *plan;
    tr->plan.rank = xmalloc(sizeof(int) * (size_t)L);
    tr->plan.share = xmalloc(sizeof(double) * (size_t)L);
    tr->plan.cost = xmalloc(sizeof(int64_t) * (size_t)L);
    memcpy(tr->plan.rank, plan->rank, sizeof(int) * (size_t)L);
    memcpy(tr->plan.share, plan->share, sizeof(double) * (size_t)L);
    memcpy(tr->plan.cost, plan->cost, sizeof(int64_t) * (size_t)L);
    tr->offA = xmalloc(sizeof *tr->offA * (size_t)L);
    tr->offB = xmalloc(sizeof *tr->offB * (size_t)L);
    /* global offsets of every adapter (the same layout for both trainers: checkpoints are shared) */
    int64_t n = 0;
    tr->pbase = -1;
    for (int l = 0; l < L; l++) {
        if (l == b0) tr->pbase = n;
        for (int t = 0; t < LORA_NMOD; t++) {
            tr->offA[l][t] = tr->offB[l][t] = -1;
            if (!plan->target[t]) continue;
            int64_t o, in;
            lora_module_shape(c, l, t, &o, &in);
            tr->offA[l][t] = n; n += plan->rank[l] * in;
            tr->offB[l][t] = n; n += o * plan->rank[l];
            if (plan->rank[l] > tr->rmax) tr->rmax = plan->rank[l];
        }
        if (l == b1 - 1 && b1 > b0) tr->nlocal = n - tr->pbase;
    }
    if (tr->pbase < 0) tr->pbase = n;            /* no blocks held */
    tr->nparam = n;
    int64_t nl = tr->nlocal;
    tr->param = xcalloc((size_t)nl + 1, sizeof(float));
    tr->grad = xcalloc((size_t)nl + 1, sizeof(float));
    tr->adam_m = xcalloc((size_t)nl + 1, sizeof(float));
    tr->adam_v = xcalloc((size_t)nl + 1, sizeof(float));
    tr->gacc = xcalloc((size_t)nl + 1, sizeof(double));
    if (tr->groups > 1) {
        if (nl + 1 > INT32_MAX) DIE("rank %d: %lld adapter parameters on one stage: more than an MPI count holds (use more stages)", cfsp_rank(), (long long)nl);
        tr->gsum = xcalloc((size_t)tr->groups * (size_t)(nl + 1), sizeof(double));
    }
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a=sqrt 5)), B = 0; the stream of each
     * adapter depends on (seed, block, module) only, never on the rank count or the trainer */
    for (int l = b0; l < b1; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            int64_t o, in;
            lora_module_shape(c, l, t, &o, &in);
            uint64_t s = stream_state(seed, 2, (uint64_t)(l * LORA_NMOD + t));
            double bound = 1.0 / sqrt((double)in);
            float *A = trainer_param(tr, tr->offA[l][t]);
            for (int64_t i = 0; i < plan->rank[l] * in; i++) A[i] = (float)((2.0 * unif01(&s) - 1.0) * bound);
        }
    /* block parameters, activations, scratch (the blocks held) */
    tr->T = T;
    tr->bp = xcalloc((size_t)L, sizeof(blk_params));
    tr->act = xcalloc((size_t)L, sizeof(blk_act));
    tr->act_win = xmalloc(sizeof(int) * (size_t)L);
    int64_t smax[BLK_NSCRATCH] = { 0 };
    int need_conv = 0;
    for (int l = b0; l < b1; l++) {
        tr->act_win[l] = -1;
        blk_params *p = &tr->bp[l];
        p->D = D; p->H = c->n_heads; p->K = c->n_kv_heads; p->hd = c->head_dim; p->m = c->ffn[l];
        p->eps = (float)c->eps;
        p->ln1 = m->ln1[l]; p->ln2 = m->ln2[l]; p->bias = m->bias[l];
        p->qb = m->extra[0][l]; p->kb = m->extra[1][l]; p->vb = m->extra[2][l];
        p->qn = m->extra[3][l]; p->kn = m->extra[4][l];
        for (int t = 0; t < LORA_NMOD; t++) {
            lora_lin *q = &p->lin[t];
            const wmat *w = &m->w[l][t];
            q->out = (int)w->rows; q->in = (int)w->cols;
            q->Wst = w->data;
            q->wdt = (int)w->dtype;
            if (w->dtype != DT_F32) need_conv = 1;
            if (tr->offA[l][t] >= 0) {
                q->r = plan->rank[l];
                q->s = (float)lora_plan_scaling(plan, l);
                q->A = trainer_param(tr, tr->offA[l][t]);
                q->B = trainer_param(tr, tr->offB[l][t]);
                q->dA = tr->grad + (tr->offA[l][t] - tr->pbase);
                q->dB = tr->grad + (tr->offB[l][t] - tr->pbase);
            }
        }
        int64_t ss[BLK_NSCRATCH];
        blk_scratch_sizes(p, T, tr->rmax, ss);
        for (int i = 0; i < BLK_NSCRATCH; i++) if (ss[i] > smax[i]) smax[i] = ss[i];
    }
    float **sp = (float **)&tr->sc;
    for (int i = 0; i < BLK_NSCRATCH; i++) sp[i] = xcalloc((size_t)(smax[i] > 0 ? smax[i] : 1), sizeof(float));
    /* activations: one set per block held, or (pipeline, kept) one per block and window in flight */
    double per_window = 0, wbytes = 0;
    for (int l = b0; l < b1; l++) {
        int64_t as[BLK_NACT];
        blk_act_sizes(&tr->bp[l], T, as);
        for (int i = 0; i < BLK_NACT; i++) per_window += 4.0 * (double)as[i];
        for (int t = 0; t < LORA_NMOD; t++) wbytes += (double)(m->w[l][t].rows * m->w[l][t].cols) * (double)dtype_size(m->w[l][t].dtype);
    }
    if (kind == TRAINER_PIPELINE && stage >= 0) {
        int slots = st->nstages - stage;
        tr->store_act = st->recompute == 0 || (st->recompute < 0 && slots * per_window <= wbytes / 8 + 256e6);
    }
    int nsets = tr->store_act ? st->nstages - stage : 1, nb = b1 - b0;
    tr->act_bytes = per_window * nsets;
    if (tr->store_act) tr->acts = xcalloc((size_t)(nsets * nb > 0 ? nsets * nb : 1), sizeof(blk_act));
    for (int k = 0; k < nsets; k++)
        for (int l = b0; l < b1; l++) {
            int64_t as[BLK_NACT];
            blk_act_sizes(&tr->bp[l], T, as);
            float **ap = (float **)(tr->store_act ? &tr->acts[(size_t)k * (size_t)nb + (size_t)(l - b0)] : &tr->act[l]);
            for (int i = 0; i < BLK_NACT; i++) ap[i] = xcalloc((size_t)(as[i] > 0 ? as[i] : 1), sizeof(float));
        }
    /* 16-bit weights (and every weight in the bf16 mode): used a panel of rows at a time (train_ops.h);
     * the panel's size depends on the model only (its largest projection), so every rank sums alike */
    if (need_conv || mm_bf16()) {
        int64_t wmax = 0;
        for (int l = 0; l < L; l++)
            for (int t = 0; t < LORA_NMOD; t++) {
                int64_t o, in;
                lora_module_shape(c, l, t, &o, &in);
                if (o * in > wmax) wmax = o * in;
            }
        size_t pf = (size_t)wmax < TRAIN_PANEL_FLOATS ? (size_t)wmax : TRAIN_PANEL_FLOATS;
        tr->wconv = xmalloc(sizeof(float) * pf);
        for (int l = b0; l < b1; l++)
            for (int t = 0; t < LORA_NMOD; t++) { tr->bp[l].lin[t].panel = tr->wconv; tr->bp[l].lin[t].panel_floats = pf; }
        if (mm_bf16()) {   /* the bf16 backend's rounded operands: activations [T, max dim], weight panels */
            int64_t dmax = 0;
            for (int l = 0; l < L; l++)
                for (int t = 0; t < LORA_NMOD; t++) {
                    int64_t o, in;
                    lora_module_shape(c, l, t, &o, &in);
                    if (o > dmax) dmax = o;
                    if (in > dmax) dmax = in;
                }
            tr->mms.a_floats = (size_t)T * (size_t)dmax;
            tr->mms.b_floats = pf;
            tr->mms.a = xmalloc(sizeof(float) * tr->mms.a_floats);
            tr->mms.b = xmalloc(sizeof(float) * tr->mms.b_floats);
        }
        for (int l = b0; l < b1; l++)
            for (int t = 0; t < LORA_NMOD; t++) tr->bp[l].lin[t].mms = &tr->mms;
    }
    size_t nd = (size_t)T * D;
    tr->x = xmalloc(sizeof(float) * nd);
    tr->y = xmalloc(sizeof(float) * nd);
    tr->dx = xmalloc(sizeof(float) * nd);
    tr->tgt = xmalloc(sizeof(int32_t) * (size_t)T);
    if (m->has_head) {
        tr->xn = xmalloc(sizeof(float) * nd);
        tr->rstd = xmalloc(sizeof(float) * (size_t)T);
        tr->logits = xmalloc(sizeof(float) * (size_t)T * (size_t)c->vocab);
        if (m->head.dtype != DT_F32) tr->hpanel = xmalloc(sizeof(float) * (size_t)HEAD_PANEL * (size_t)D);
    }
    if (kind == TRAINER_PIPELINE && stage >= 0) {
        /* windows in flight at stage s of a 1F1B schedule: S - s (its warm-up forwards + 1) */
        tr->slots = tr->nstages - stage;
        if (!tr->store_act) tr->xin = xmalloc(sizeof(float) * nd * (size_t)tr->slots * (size_t)(b1 - b0 > 0 ? b1 - b0 : 1));
        tr->sendbuf = xmalloc(sizeof(float) * nd * 2);           /* train_pipe.c's NSEND */
        tr->dxbuf = xmalloc(sizeof(float) * nd);
    }
    /* RoPE tables of the inference path (forward.c), llama3 scaling included */
    fwd_ws ws;
    fwd_ws_init(&ws, c, T, 1, 0);
    size_t half = (size_t)c->head_dim / 2;
    tr->cosb = xmalloc(sizeof(float) * (size_t)T * half);
    tr->sinb = xmalloc(sizeof(float) * (size_t)T * half);
    memcpy(tr->cosb, ws.rope_cos, sizeof(float) * (size_t)T * half);
    memcpy(tr->sinb, ws.rope_sin, sizeof(float) * (size_t)T * half);
    fwd_ws_free(&ws);
}

void trainer_free(trainer *tr)
{
    int nb = tr->b1 - tr->b0, nsets = tr->store_act ? tr->slots : 1;
    for (int k = 0; k < nsets; k++)
        for (int l = tr->b0; tr->act && l < tr->b1; l++) {
            float **ap = (float **)(tr->store_act ? &tr->acts[(size_t)k * (size_t)nb + (size_t)(l - tr->b0)] : &tr->act[l]);
            for (int i = 0; i < BLK_NACT; i++) free(ap[i]);
        }
    free(tr->acts);
    float **sp = (float **)&tr->sc;
    for (int i = 0; i < BLK_NSCRATCH; i++) free(sp[i]);
    free(tr->act); free(tr->bp); free(tr->act_win); free(tr->first);
    free(tr->param); free(tr->grad); free(tr->adam_m); free(tr->adam_v); free(tr->gacc);
    free(tr->offA); free(tr->offB);
    free(tr->x); free(tr->y); free(tr->dx); free(tr->xn); free(tr->rstd); free(tr->logits); free(tr->tgt);
    free(tr->xin); free(tr->sendbuf); free(tr->dxbuf); free(tr->hpanel); free(tr->gsum);
    free(tr->mms.a); free(tr->mms.b);
    if (tr->stage_comm != MPI_COMM_NULL) MPI_Comm_free(&tr->stage_comm);
    free(tr->cosb); free(tr->sinb); free(tr->wconv);
    lora_plan_free(&tr->plan);
    memset(tr, 0, sizeof *tr);
}

/* rows [v0, v0 + n) of the stored head as fp32 */
static const float *head_rows(trainer *tr, int64_t v0, int n)
{
    const wmat *h = &tr->m->head;
    size_t D = (size_t)h->cols;
    if (h->dtype == DT_F32) return (const float *)h->data + (size_t)v0 * (size_t)h->ld;
    convert_to_f32(h->dtype, (const char *)h->data + (size_t)v0 * (size_t)h->ld * dtype_size(h->dtype), tr->hpanel, (size_t)n * D);
    return tr->hpanel;
}

double trainer_head(trainer *tr, const float *x, int n, float scale, float *dx, int64_t *count)
{
    const model_config *c = &tr->m->cfg;
    int D = c->hidden, V = c->vocab;
    float *xn = tr->xn, *lg = tr->logits;
    op_rmsnorm_fwd(xn, tr->rstd, x, tr->m->final_norm, n, D, (float)c->eps);
    for (int v0 = 0; v0 < V; v0 += HEAD_PANEL) {            /* logits[:, v0..] = xn E[v0..]^T */
        int k = V - v0 < HEAD_PANEL ? V - v0 : HEAD_PANEL;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, k, D, 1.0f, xn, D, head_rows(tr, v0, k), D, 0.0f, lg + v0, V);
    }
    double loss = op_xent(dx ? lg : NULL, lg, tr->tgt, n, V, scale, count);   /* dlogits in place */
    if (dx) {
        float *dxn = xn;                       /* xn is not needed after this: d(xn) = dlogits E */
        for (int v0 = 0; v0 < V; v0 += HEAD_PANEL) {
            int k = V - v0 < HEAD_PANEL ? V - v0 : HEAD_PANEL;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, k, 1.0f, lg + v0, V, head_rows(tr, v0, k), D,
                        v0 ? 1.0f : 0.0f, dxn, D);
        }
        memset(dx, 0, sizeof(float) * (size_t)n * (size_t)D);
        op_rmsnorm_bwd(dx, dxn, x, tr->m->final_norm, tr->rstd, n, D);
    }
    return loss;
}

/* forward (and, with scale > 0, backward into tr->grad) of one window of T tokens */
static double window(trainer *tr, const uint32_t *ids, float scale, int backward, int64_t *count)
{
    const model_config *c = &tr->m->cfg;
    int T = tr->T, D = c->hidden, L = c->n_layers;
    for (int t = 0; t < T; t++) wmat_row_f32(&tr->m->embed, ids[t], tr->x + (size_t)t * D);
    for (int t = 0; t < T; t++) tr->tgt[t] = t + 1 < T ? (int32_t)ids[t + 1] : -1;
    float *x = tr->x, *y = tr->y;
    for (int l = 0; l < L; l++) {
        blk_forward(&tr->bp[l], &tr->act[l], x, y, T, tr->cosb, tr->sinb);
        float *s = x; x = y; y = s;
    }
    double loss = trainer_head(tr, x, T, scale, backward ? tr->dx : NULL, count);
    if (backward)
        for (int l = L - 1; l >= 0; l--) {
                blk_backward(&tr->bp[l], &tr->act[l], tr->dx, T, tr->cosb, tr->sinb, &tr->sc);
        }
    return loss;
}

double trainer_update(trainer *tr, const train_hparams *h, int step, const double *red, double *gnorm)
{
    /* the global norm: each block's sum of squares over its parameters in order, then the blocks in
     * order (pipelined: every block's sum computed by its stage, the others' entries exactly 0) */
    int L = tr->plan.L;
    double *bss = xcalloc((size_t)L, sizeof(double));
    for (int l = tr->b0; l < tr->b1; l++) {
        int64_t j0 = -1, j1 = -1;
        for (int t = 0; t < LORA_NMOD; t++)
            if (tr->offA[l][t] >= 0) {
                int64_t o, in;
                lora_module_shape(&tr->m->cfg, l, t, &o, &in);
                if (j0 < 0) j0 = tr->offA[l][t];
                j1 = tr->offB[l][t] + o * tr->plan.rank[l];
            }
        double a = 0;
        for (int64_t j = j0; j0 >= 0 && j < j1; j++) a += tr->gacc[j - tr->pbase] * tr->gacc[j - tr->pbase];
        bss[l] = a;
    }
    if (tr->kind == TRAINER_PIPELINE) {
        if (tr->replica != 0) memset(bss, 0, sizeof(double) * (size_t)L);   /* the replicas hold the same sums */
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, bss, L, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    }
    double ss = 0;
    for (int l = 0; l < L; l++) ss += bss[l];
    free(bss);
    *gnorm = sqrt(ss);
    double clipf = h->clip > 0 && *gnorm > h->clip ? h->clip / (*gnorm + 1e-6) : 1.0;
    double lr = train_lr(h, step), b1 = h->beta1, b2 = h->beta2;
    double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
    for (int64_t j = 0; j < tr->nlocal; j++) {    /* AdamW, decoupled weight decay */
        double g = tr->gacc[j] * clipf;
        double mj = b1 * tr->adam_m[j] + (1 - b1) * g, vj = b2 * tr->adam_v[j] + (1 - b2) * g * g;
        tr->adam_m[j] = (float)mj;
        tr->adam_v[j] = (float)vj;
        double p = tr->param[j];
        p -= lr * ((mj / bc1) / (sqrt(vj / bc2) + h->adam_eps) + h->weight_decay * p);
        tr->param[j] = (float)p;
    }
    tr->step = step;
    return red[0] / red[1];
}

double trainer_step(trainer *tr, const train_hparams *h, const uint32_t *tokens, int64_t ntok, double *gnorm)
{
    if (tr->kind == TRAINER_PIPELINE) return trainer_pipe_step(tr, h, tokens, ntok, gnorm);
    int P = cfsp_nranks(), rank = cfsp_rank(), B = h->batch, T = tr->T, step = tr->step + 1;
    int64_t *off = xmalloc(sizeof(int64_t) * (size_t)B);
    train_batch_offsets(h->seed, step, B, T, ntok, off);
    int i0 = (int)((int64_t)rank * B / P), i1 = (int)((int64_t)(rank + 1) * B / P);
    int64_t n = tr->nparam;
    memset(tr->gacc, 0, sizeof(double) * (size_t)n);
    double red[2] = { 0, 0 };
    float scale = (float)(1.0 / ((double)B * (T - 1)));
    double t0 = now_seconds();
    for (int i = i0; i < i1; i++) {
        memset(tr->grad, 0, sizeof(float) * (size_t)n);
        int64_t cnt = 0;
        red[0] += window(tr, tokens + off[i], scale, 1, &cnt);
        red[1] += (double)cnt;
        for (int64_t j = 0; j < n; j++) tr->gacc[j] += tr->grad[j];
    }
    free(off);
    double t1 = now_seconds();
    for (int64_t j0 = 0; j0 < n; j0 += (int64_t)1 << 30) {    /* MPI counts are int: pieces of 2^30 */
        int64_t k = n - j0 < ((int64_t)1 << 30) ? n - j0 : ((int64_t)1 << 30);
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, tr->gacc + j0, (int)k, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, red, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    tr->compute_seconds += t1 - t0;
    tr->wait_seconds += now_seconds() - t1;
    return trainer_update(tr, h, step, red, gnorm);
}

double trainer_eval(trainer *tr, const uint32_t *tokens, int64_t ntok, int nwin, double *nll, int64_t *count)
{
    if (tr->kind == TRAINER_PIPELINE) return trainer_pipe_eval(tr, tokens, ntok, nwin, nll, count);
    int P = cfsp_nranks(), rank = cfsp_rank(), T = tr->T;
    int64_t avail = ntok / T;
    if (nwin <= 0 || nwin > avail) nwin = (int)avail;
    int w0 = (int)((int64_t)rank * nwin / P), w1 = (int)((int64_t)(rank + 1) * nwin / P);
    double red[2] = { 0, 0 };
    for (int w = w0; w < w1; w++) {
        int64_t cnt = 0;
        red[0] += window(tr, tokens + (int64_t)w * T, 0, 0, &cnt);
        red[1] += (double)cnt;
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, red, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    *nll = red[0];
    *count = (int64_t)red[1];
    return exp(red[0] / red[1]);
}
