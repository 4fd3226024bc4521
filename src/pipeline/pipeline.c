/* pipeline.c — the pipelined forward pass over MPI ranks (see pipeline.h).
 * A micro-batch message is three [chunk, D] arrays: the residual stream x, the partial FFN sum acc
 * (when a stage boundary falls between FFN slices) and the block input hin (for the block
 * distance, when statistics are collected). Buffers rotate over three slots: slot mb%3 is being
 * computed while the next micro-batch is received into slot (mb+1)%3 and the previous one may
 * still be in flight to the next rank. */
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#define TAG_ACT 100
#define PROGRESS_SECONDS 10.0

void pipeline_init(pipeline *p, const model_config *c, const rank_weights *w, int rank, int nranks, int seqlen, int chunk)
{
    memset(p, 0, sizeof *p);
    p->cfg = c;
    p->w = w;
    p->rank = rank;
    p->nranks = nranks;
    p->seqlen = seqlen;
    p->chunk = chunk;
    int width = 0;                      /* the widest FFN slice this rank runs sizes the activations */
    for (int i = 0; i < w->last_unit - w->first_unit; i++)
        if (w->units[i].slice >= 0 && w->units[i].c1 - w->units[i].c0 > width) width = w->units[i].c1 - w->units[i].c0;
    fwd_ws_init_width(&p->ws, c, seqlen, chunk, w->has_head, width > 0 ? width : 1);
    int natt = 0;
    for (int i = 0; i < w->last_unit - w->first_unit; i++) natt += w->units[i].slice < 0;
    size_t kv = (size_t)c->n_kv_heads * c->head_dim * (size_t)seqlen * (size_t)(natt ? natt : 1);
    p->kcache = xmalloc(sizeof(float) * kv);
    p->vcache = xmalloc(sizeof(float) * kv);
    for (int i = 0; i < 3; i++) p->buf[i] = xcalloc((size_t)3 * chunk * c->hidden, sizeof(float));
}

void pipeline_free(pipeline *p)
{
    fwd_ws_free(&p->ws);
    free(p->kcache);
    free(p->vcache);
    for (int i = 0; i < 3; i++) free(p->buf[i]);
    memset(p, 0, sizeof *p);
}

static void wait_req(MPI_Request *r)
{
    if (*r != MPI_REQUEST_NULL) MPI_CHECK(MPI_Wait(r, MPI_STATUS_IGNORE));
}

void pipeline_run(pipeline *p, const unit_weights *units, pipe_job *job)
{
    const model_config *c = p->cfg;
    int D = c->hidden, KV = c->n_kv_heads * c->head_dim, chunk = job->chunk;
    int nchunks = job->seqlen / chunk, nmb = job->nseq * nchunks;
    int first_stage = p->rank == 0, last_stage = p->rank == p->nranks - 1;
    int nu = p->w->last_unit - p->w->first_unit;
    size_t kvb = (size_t)KV * (size_t)job->seqlen, cd = (size_t)chunk * D;
    int count = 3 * chunk * D;
    MPI_Request rreq = MPI_REQUEST_NULL, sreq[3] = { MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL };
    int32_t *targets = xmalloc(sizeof(int32_t) * (size_t)chunk);
    float *dumpbuf = job->dump_logits && last_stage ? xmalloc(sizeof(float) * (size_t)chunk * c->vocab) : NULL;
    double t0 = now_seconds(), tlast = t0, compute = 0, wait = 0;
    job->nll_sum = 0;
    job->ntok = 0;
    if (job->seq_nll) memset(job->seq_nll, 0, sizeof(double) * (size_t)job->nseq);

    if (!first_stage && nmb > 0)
        MPI_CHECK(MPI_Irecv(p->buf[0], count, MPI_FLOAT, p->rank - 1, TAG_ACT, MPI_COMM_WORLD, &rreq));
    for (int mb = 0; mb < nmb; mb++) {
        int seq = mb / nchunks, pos0 = (mb % nchunks) * chunk;
        const uint32_t *ids = job->tokens + job->offsets[seq] + pos0;
        float *x = p->buf[mb % 3];
        double tw = now_seconds();
        if (first_stage) {
            wait_req(&sreq[mb % 3]);
            embed_tokens(&p->w->embed, ids, chunk, x);
        } else {
            wait_req(&rreq);
            if (mb + 1 < nmb) {
                wait_req(&sreq[(mb + 1) % 3]);
                MPI_CHECK(MPI_Irecv(p->buf[(mb + 1) % 3], count, MPI_FLOAT, p->rank - 1, TAG_ACT, MPI_COMM_WORLD, &rreq));
            }
        }
        double tc = now_seconds();
        wait += tc - tw;
        float *acc = x + cd, *hin = x + 2 * cd;
        for (int i = 0, att = 0; i < nu; i++) {
            const unit_weights *u = &units[i];
            if (u->slice < 0) {
                if (job->hook) memcpy(hin, x, sizeof(float) * cd);
                attention_unit(u, x, chunk, pos0, p->kcache + kvb * att, p->vcache + kvb * att, c, &p->ws);
                att++;
            } else {
                ffn_unit(u, x, acc, hin, chunk, job->hook, c, &p->ws);
            }
        }
        if (last_stage && job->eval) {
            for (int t = 0; t < chunk; t++)
                targets[t] = pos0 + t >= job->score_from && pos0 + t + 1 < job->seqlen ? (int32_t)ids[t + 1] : -1;
            double mb_nll = 0.0;       /* this micro-batch's, then into the pass's and the sequence's sums */
            head_nll(p->w, x, chunk, targets, &mb_nll, &job->ntok, dumpbuf, job->ref, &p->ws);
            job->nll_sum += mb_nll;
            if (job->seq_nll) job->seq_nll[seq] += mb_nll;
            if (dumpbuf && fwrite(dumpbuf, sizeof(float), (size_t)chunk * c->vocab, job->dump_logits) != (size_t)chunk * c->vocab)
                DIE("cannot write the logits dump");
        }
        compute += now_seconds() - tc;
        if (!last_stage)
            MPI_CHECK(MPI_Isend(x, count, MPI_FLOAT, p->rank + 1, TAG_ACT, MPI_COMM_WORLD, &sreq[mb % 3]));
        double now = now_seconds();
        if (now - tlast >= PROGRESS_SECONDS || (mb + 1 == nmb && now - t0 >= PROGRESS_SECONDS)) {
            fprintf(stderr, "cfsp-mpi: rank %d: %s: blocks %d-%d, micro-batch %d/%d, %lld tokens, %.0f tokens/s\n",
                    p->rank, job->label ? job->label : "forward", units[0].layer, units[nu - 1].layer, mb + 1, nmb,
                    (long long)(mb + 1) * chunk, (double)(mb + 1) * chunk / (now - t0));
            tlast = now;
        }
    }
    for (int i = 0; i < 3; i++) wait_req(&sreq[i]);
    free(targets);
    free(dumpbuf);
    job->seconds = now_seconds() - t0;
    job->compute_seconds = compute;
    job->wait_seconds = wait;
    if (job->eval) {
        double buf[2] = { job->nll_sum, (double)job->ntok };
        MPI_CHECK(MPI_Bcast(buf, 2, MPI_DOUBLE, p->nranks - 1, MPI_COMM_WORLD));
        job->nll_sum = buf[0];
        job->ntok = (int64_t)buf[1];
        if (job->seq_nll) MPI_CHECK(MPI_Bcast(job->seq_nll, job->nseq, MPI_DOUBLE, p->nranks - 1, MPI_COMM_WORLD));
    }
}
