/* recover_cmd.c — `cfsp-mpi recover`: the command line of the LoRA recovery fine-tuning (issue 7):
 * the rank plan (adapter_config.json), training with periodic checkpoints and --resume, held-out
 * perplexity before and after, the log (recover.json), and --merge / --peft outputs. Collective:
 * every rank parses the same arguments; input problems end in cfsp_sync. */
#include "cfsp/cli/commands.h"
#include "cfsp/util/err.h"
#include "cfsp/prune/stats.h"
#include "cfsp/format/tokens.h"
#include "cfsp/train/train.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: mpirun -n P cfsp-mpi recover --model PRUNED.h5|DIR --train-tokens FILE[@A:B] [options]\n"
    "  LoRA recovery fine-tuning of a pruned model, data-parallel over the P ranks.\n"
    "  --model PATH          a pruned checkpoint of cfsp-mpi (.h5) or a Hugging Face directory\n"
    "  --train-tokens FILE   uint32 training tokens (FILE@START:END: a slice)\n"
    "  --eval-tokens FILE    held-out tokens: perplexity before and after (non-overlapping windows)\n"
    "  --eval-windows K      first K evaluation windows (0 = all; default 0)\n"
    "  --seqlen T            tokens per window (256)\n"
    "  --batch B             windows per step over all ranks, a multiple of P (8)\n"
    "  --steps S             optimizer steps (100; 0 = evaluate / export only)\n"
    "  --lr X --min-lr-ratio X --warmup N   peak rate (2e-3), cosine floor as a fraction (0.1), linear warm-up steps (10)\n"
    "  --weight-decay X --clip X            AdamW decoupled decay (0), global gradient-norm clip (1; 0 = off)\n"
    "  --beta1 X --beta2 X --adam-eps X     AdamW (0.9, 0.999, 1e-8)\n"
    "  --plan uniform|adaptive   ranks per block (uniform)\n"
    "  --rank R --alpha A    uniform rank and LoRA alpha (8, 16); the adaptive plan has the same parameter count\n"
    "  --alpha-scales 1|0    1: alpha_l = alpha r_l / r (constant alpha/r_l; default); 0: alpha fixed\n"
    "  --stats FILE          importances for --plan adaptive: stats.h5, or a pruned .h5 (default: --model)\n"
    "  --global-metric M --a X --alloc-mode default|reference   the importance scores (as the allocation)\n"
    "  --targets LIST        adapted projections (q,k,v,o,gate,up,down)\n"
    "  --seed S              adapter initialisation and batch sampling (0)\n"
    "  --output-dir DIR      (recover_out) --force: replace existing outputs\n"
    "  --save-every N        checkpoint.h5 every N steps (0: at the end only)\n"
    "  --resume CKPT         continue from a checkpoint (same plan)\n"
    "  --merge               write merged.h5: the pruned checkpoint with the adapters folded in\n"
    "  --peft                write adapter_model.safetensors (PEFT) next to adapter_config.json\n"
    "  --plan-only           write adapter_config.json and stop\n";

typedef struct {
    char model[4096], train_tokens[4096], eval_tokens[4096], stats[4096], out[4096], resume[4096];
    char plan[16], metric[16], alloc_mode[16], targets[128];
    int eval_windows, rank, alpha_scales, force, save_every, merge, peft, plan_only;
    double alpha, a;
    train_hparams h;
} rec_opts;

static int parse_num(const char *k, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x) || x < lo || x > hi) return FAIL("recover: %s '%s': expected a number in [%g, %g]", k, v, lo, hi);
    *out = x;
    return 0;
}

static int parse_int(const char *k, const char *v, double lo, double hi, int *out)
{
    double x;
    if (parse_num(k, v, lo, hi, &x)) return -1;
    if (x != floor(x)) return FAIL("recover: %s '%s': expected an integer", k, v);
    *out = (int)x;
    return 0;
}

static int parse_args(int argc, char **argv, rec_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->out, sizeof o->out, "recover_out");
    snprintf(o->plan, sizeof o->plan, "uniform");
    snprintf(o->metric, sizeof o->metric, "angular");
    snprintf(o->alloc_mode, sizeof o->alloc_mode, "default");
    snprintf(o->targets, sizeof o->targets, "q,k,v,o,gate,up,down");
    o->rank = 8; o->alpha = 16; o->alpha_scales = 1; o->a = 1;
    train_hparams *h = &o->h;
    h->seqlen = 256; h->batch = 8; h->steps = 100; h->warmup = 10;
    h->lr = 2e-3; h->min_lr_ratio = 0.1; h->weight_decay = 0; h->clip = 1; h->beta1 = 0.9; h->beta2 = 0.999; h->adam_eps = 1e-8;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) return 1;
        if (!strcmp(k, "--force")) { o->force = 1; continue; }
        if (!strcmp(k, "--merge")) { o->merge = 1; continue; }
        if (!strcmp(k, "--peft")) { o->peft = 1; continue; }
        if (!strcmp(k, "--plan-only")) { o->plan_only = 1; continue; }
        if (strncmp(k, "--", 2)) return FAIL("recover: unexpected argument '%s' (see cfsp-mpi recover --help)", k);
        if (i + 1 >= argc) return FAIL("recover: %s needs a value", k);
        const char *v = argv[++i];
        double d;
        struct { const char *name; char *dst; size_t n; } strs[] = {
            { "--model", o->model, sizeof o->model }, { "--train-tokens", o->train_tokens, sizeof o->train_tokens },
            { "--eval-tokens", o->eval_tokens, sizeof o->eval_tokens }, { "--stats", o->stats, sizeof o->stats },
            { "--output-dir", o->out, sizeof o->out }, { "--resume", o->resume, sizeof o->resume },
            { "--plan", o->plan, sizeof o->plan }, { "--global-metric", o->metric, sizeof o->metric },
            { "--alloc-mode", o->alloc_mode, sizeof o->alloc_mode }, { "--targets", o->targets, sizeof o->targets },
        };
        int done = 0;
        for (size_t s = 0; s < sizeof strs / sizeof strs[0]; s++)
            if (!strcmp(k, strs[s].name)) {
                if (strlen(v) >= strs[s].n || !v[0]) return FAIL("recover: %s: empty or too long", k);
                snprintf(strs[s].dst, strs[s].n, "%s", v);
                done = 1;
            }
        if (done) continue;
        int rc;
        if (!strcmp(k, "--eval-windows")) rc = parse_int(k, v, 0, 1e9, &o->eval_windows);
        else if (!strcmp(k, "--seqlen")) rc = parse_int(k, v, 2, 1 << 20, &h->seqlen);
        else if (!strcmp(k, "--batch")) rc = parse_int(k, v, 1, 1 << 20, &h->batch);
        else if (!strcmp(k, "--steps")) rc = parse_int(k, v, 0, 1e9, &h->steps);
        else if (!strcmp(k, "--warmup")) rc = parse_int(k, v, 0, 1e9, &h->warmup);
        else if (!strcmp(k, "--rank")) rc = parse_int(k, v, 1, 65536, &o->rank);
        else if (!strcmp(k, "--alpha-scales")) rc = parse_int(k, v, 0, 1, &o->alpha_scales);
        else if (!strcmp(k, "--save-every")) rc = parse_int(k, v, 0, 1e9, &o->save_every);
        else if (!strcmp(k, "--lr")) rc = parse_num(k, v, 0, 10, &h->lr);
        else if (!strcmp(k, "--min-lr-ratio")) rc = parse_num(k, v, 0, 1, &h->min_lr_ratio);
        else if (!strcmp(k, "--weight-decay")) rc = parse_num(k, v, 0, 10, &h->weight_decay);
        else if (!strcmp(k, "--clip")) rc = parse_num(k, v, 0, 1e30, &h->clip);
        else if (!strcmp(k, "--beta1")) rc = parse_num(k, v, 0, 0.999999, &h->beta1);
        else if (!strcmp(k, "--beta2")) rc = parse_num(k, v, 0, 0.999999999, &h->beta2);
        else if (!strcmp(k, "--adam-eps")) rc = parse_num(k, v, 1e-30, 1, &h->adam_eps);
        else if (!strcmp(k, "--alpha")) rc = parse_num(k, v, 1e-6, 1e6, &o->alpha);
        else if (!strcmp(k, "--a")) rc = parse_num(k, v, 0, 1e6, &o->a);
        else if (!strcmp(k, "--seed")) { rc = parse_num(k, v, 0, 9007199254740992.0, &d); h->seed = (uint64_t)d; }
        else return FAIL("recover: unknown option '%s' (see cfsp-mpi recover --help)", k);
        if (rc) return -1;
    }
    if (!o->model[0]) return FAIL("recover: --model is required");
    if (strcmp(o->plan, "uniform") && strcmp(o->plan, "adaptive")) return FAIL("recover: --plan '%s': expected uniform or adaptive", o->plan);
    if (strcmp(o->alloc_mode, "default") && strcmp(o->alloc_mode, "reference")) return FAIL("recover: --alloc-mode '%s': expected default or reference", o->alloc_mode);
    if (global_metric_from_name(o->metric) < 0) return FAIL("recover: --global-metric '%s': expected angular, cosine, mse or mae", o->metric);
    if (h->steps > 0 && !o->train_tokens[0] && !o->plan_only) return FAIL("recover: --train-tokens is required when --steps > 0");
    if (h->batch % cfsp_nranks()) return FAIL("recover: --batch %d is not a multiple of the %d ranks", h->batch, cfsp_nranks());
    if (h->warmup > h->steps) h->warmup = h->steps;
    return 0;
}

static void out_path(const rec_opts *o, const char *name, char *buf, size_t n) { snprintf(buf, n, "%s/%s", o->out, name); }

int recover_command(int argc, char **argv)
{
    rec_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc == 1) {
        if (cfsp_rank() == 0) fputs(usage, stdout);
        cfsp_sync(0);
        return 0;
    }
    cfsp_sync(prc);
    int rank = cfsp_rank();
    double t0 = now_seconds();

    /* outputs: refuse to overwrite without --force (checked by rank 0, before any work) */
    static const char *const outs[] = { "adapter_config.json", "recover.json", "checkpoint.h5", "merged.h5", "adapter_model.safetensors" };
    int rc = 0;
    if (rank == 0) {
        if (mkdir_p(o.out)) rc = -1;
        for (size_t i = 0; !rc && i < sizeof outs / sizeof outs[0]; i++) {
            char p[4200];
            out_path(&o, outs[i], p, sizeof p);
            if (!o.force && path_exists(p)) rc = FAIL("%s exists (use --force to replace the outputs of %s)", p, o.out);
        }
    }
    cfsp_sync(rc);

    train_model m;
    rc = train_model_load(o.model, &m);
    cfsp_sync(rc);
    const model_config *c = &m.cfg;
    int L = c->n_layers, target[LORA_NMOD];
    rc = lora_parse_targets(o.targets, target);
    double *imp = xcalloc((size_t)L, sizeof(double)), temp = 1;
    int adaptive = !strcmp(o.plan, "adaptive");
    if (!rc && adaptive) {
        const char *src = o.stats[0] ? o.stats : o.model;
        rc = lora_read_importance(src, L, o.metric, !strcmp(o.alloc_mode, "reference"), imp, &temp);
    }
    cfsp_sync(rc);
    lora_plan plan;
    lora_plan_build(&plan, c, target, o.rank, o.alpha, o.alpha_scales, adaptive, imp, o.a, temp);
    char p[4200];
    if (rank == 0) {
        out_path(&o, "adapter_config.json", p, sizeof p);
        rc = lora_plan_write_peft(&plan, p, m.src_dir, o.force);
        fprintf(stderr, "cfsp-mpi recover: %s plan, ranks", adaptive ? "adaptive" : "uniform");
        for (int l = 0; l < L; l++) fprintf(stderr, " %d", plan.rank[l]);
        fprintf(stderr, "; %lld LoRA parameters (uniform r=%d: %lld)\n", (long long)plan.params, o.rank, (long long)plan.params_uniform);
    }
    cfsp_sync(rc);
    if (o.plan_only) {
        lora_plan_free(&plan);
        train_model_free(&m);
        free(imp);
        return 0;
    }

    token_file train = { 0 }, eval = { 0 };
    rc = 0;
    if (o.train_tokens[0]) {
        rc = tokens_read(o.train_tokens, c->vocab, &train);
        if (!rc && train.n < o.h.seqlen) rc = FAIL("%s: %lld tokens, fewer than one window of %d", o.train_tokens, (long long)train.n, o.h.seqlen);
    }
    if (!rc && o.eval_tokens[0]) {
        rc = tokens_read(o.eval_tokens, c->vocab, &eval);
        if (!rc && eval.n < o.h.seqlen) rc = FAIL("%s: %lld tokens, fewer than one window of %d", o.eval_tokens, (long long)eval.n, o.h.seqlen);
    }
    cfsp_sync(rc);

    trainer tr;
    trainer_init(&tr, &m, &plan, o.h.seqlen, o.h.seed);
    rc = o.resume[0] ? train_ckpt_read(&tr, o.resume) : 0;
    cfsp_sync(rc);
    int start = tr.step;

    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "format", "cfsp-mpi-recover/1");
    cJSON_AddStringToObject(res, "model", o.model);
    cJSON_AddNumberToObject(res, "nranks", cfsp_nranks());
    cJSON *jp = cJSON_AddObjectToObject(res, "plan");
    cJSON_AddStringToObject(jp, "plan", o.plan);
    cJSON_AddNumberToObject(jp, "r", o.rank);
    cJSON_AddNumberToObject(jp, "alpha", o.alpha);
    cJSON_AddBoolToObject(jp, "alpha_scales", o.alpha_scales);
    cJSON_AddStringToObject(jp, "targets", o.targets);
    cJSON_AddNumberToObject(jp, "lora_params", (double)plan.params);
    cJSON_AddNumberToObject(jp, "lora_params_uniform", (double)plan.params_uniform);
    cJSON *jr = cJSON_AddArrayToObject(jp, "block_ranks"), *js = cJSON_AddArrayToObject(jp, "importance_share");
    for (int l = 0; l < L; l++) {
        cJSON_AddItemToArray(jr, cJSON_CreateNumber(plan.rank[l]));
        cJSON_AddItemToArray(js, cJSON_CreateNumber(plan.share[l]));
    }
    cJSON *jh = cJSON_AddObjectToObject(res, "hparams");
    cJSON_AddNumberToObject(jh, "seqlen", o.h.seqlen);
    cJSON_AddNumberToObject(jh, "batch", o.h.batch);
    cJSON_AddNumberToObject(jh, "steps", o.h.steps);
    cJSON_AddNumberToObject(jh, "warmup", o.h.warmup);
    cJSON_AddNumberToObject(jh, "lr", o.h.lr);
    cJSON_AddNumberToObject(jh, "min_lr_ratio", o.h.min_lr_ratio);
    cJSON_AddNumberToObject(jh, "weight_decay", o.h.weight_decay);
    cJSON_AddNumberToObject(jh, "clip", o.h.clip);
    cJSON_AddNumberToObject(jh, "seed", (double)o.h.seed);
    cJSON_AddStringToObject(jh, "train_tokens", o.train_tokens);
    cJSON_AddStringToObject(jh, "eval_tokens", o.eval_tokens);
    cJSON_AddNumberToObject(res, "start_step", start);

    double nll = 0;
    int64_t cnt = 0;
    if (eval.n) {
        double ppl = trainer_eval(&tr, eval.ids, eval.n, o.eval_windows, &nll, &cnt);
        cJSON *e = cJSON_AddObjectToObject(res, "eval_before");
        cJSON_AddNumberToObject(e, "ppl", ppl);
        cJSON_AddNumberToObject(e, "nll_sum", nll);
        cJSON_AddNumberToObject(e, "ntokens", (double)cnt);
        if (rank == 0) fprintf(stderr, "cfsp-mpi recover: held-out perplexity at step %d: %.4f (%lld tokens)\n", start, ppl, (long long)cnt);
    }
    cJSON *log = cJSON_AddArrayToObject(res, "log");
    double tt = now_seconds();
    char meta[512];
    snprintf(meta, sizeof meta, "{\"plan\":\"%s\",\"seed\":%llu,\"seqlen\":%d,\"batch\":%d,\"steps\":%d}", o.plan,
             (unsigned long long)o.h.seed, o.h.seqlen, o.h.batch, o.h.steps);
    int64_t *offs = xmalloc(sizeof(int64_t) * (size_t)o.h.batch);
    while (tr.step < o.h.steps) {
        double gnorm = 0;
        int s = tr.step + 1;
        double lr = train_lr(&o.h, s);
        double loss = trainer_step(&tr, &o.h, train.ids, train.n, &gnorm);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "step", s);
        cJSON_AddNumberToObject(e, "loss", loss);
        cJSON_AddNumberToObject(e, "lr", lr);
        cJSON_AddNumberToObject(e, "grad_norm", gnorm);
        train_batch_offsets(o.h.seed, s, o.h.batch, o.h.seqlen, train.n, offs);
        cJSON *oa = cJSON_AddArrayToObject(e, "offsets");
        for (int i = 0; i < o.h.batch; i++) cJSON_AddItemToArray(oa, cJSON_CreateNumber((double)offs[i]));
        cJSON_AddItemToArray(log, e);
        if (rank == 0 && (s == 1 || s % 10 == 0 || s == o.h.steps))
            fprintf(stderr, "cfsp-mpi recover: step %d/%d loss %.5f lr %.3g grad-norm %.4f\n", s, o.h.steps, loss, lr, gnorm);
        if (o.save_every > 0 && s % o.save_every == 0 && s < o.h.steps) {
            out_path(&o, "checkpoint.h5", p, sizeof p);
            rc = rank == 0 ? train_ckpt_write(&tr, p, meta) : 0;
            cfsp_sync(rc);
        }
    }
    free(offs);
    double train_secs = now_seconds() - tt;
    if (eval.n) {
        double ppl = trainer_eval(&tr, eval.ids, eval.n, o.eval_windows, &nll, &cnt);
        cJSON *e = cJSON_AddObjectToObject(res, "eval_after");
        cJSON_AddNumberToObject(e, "ppl", ppl);
        cJSON_AddNumberToObject(e, "nll_sum", nll);
        cJSON_AddNumberToObject(e, "ntokens", (double)cnt);
        if (rank == 0) fprintf(stderr, "cfsp-mpi recover: held-out perplexity at step %d: %.4f\n", tr.step, ppl);
    }
    cJSON_AddNumberToObject(res, "steps_done", tr.step);
    cJSON *tm = cJSON_AddObjectToObject(res, "timings");
    cJSON_AddNumberToObject(tm, "train_seconds", train_secs);
    cJSON_AddNumberToObject(tm, "total_seconds", now_seconds() - t0);
    rc = 0;
    if (rank == 0) {
        out_path(&o, "checkpoint.h5", p, sizeof p);
        rc = train_ckpt_write(&tr, p, meta);
        if (!rc && o.merge) { out_path(&o, "merged.h5", p, sizeof p); rc = train_merge_write(&tr, p); }
        if (!rc && o.peft) { out_path(&o, "adapter_model.safetensors", p, sizeof p); rc = train_peft_write(&tr, p); }
        if (!rc) {
            char *txt = cJSON_Print(res);
            out_path(&o, "recover.json", p, sizeof p);
            rc = write_text_atomic(p, txt);
            free(txt);
        }
    }
    cfsp_sync(rc);
    cJSON_Delete(res);
    trainer_free(&tr);
    tokens_free(&train);
    tokens_free(&eval);
    lora_plan_free(&plan);
    train_model_free(&m);
    free(imp);
    return 0;
}
