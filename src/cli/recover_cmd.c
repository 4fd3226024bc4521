/* recover_cmd.c — `cfsp-mpi recover`: the command line of the LoRA recovery fine-tuning (issue 7):
 * the rank plan (adapter_config.json), the trainer (data parallel or pipelined, train.h),
 * training with periodic checkpoints and --resume, held-out
 * perplexity before and after, the log (recover.json), and --merge / --peft outputs. Collective:
 * every rank parses the same arguments; input problems end in cfsp_sync. */
#include "cfsp/cli/commands.h"
#include "cfsp/format/tokens.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/blas_env.h"
#include "cfsp/prune/stats.h"
#include "cfsp/report/results.h"
#include "cfsp/train/train.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char model[4096], train_tokens[4096], eval_tokens[4096], stats[4096], out[4096], resume[4096];
    char targets[128];
    int adaptive, metric, alloc_reference;    /* --plan, --global-metric, --alloc-mode */
    int eval_windows, rank, alpha_scales, force, save_every, merge, peft, plan_only, trainer, replicas, grad_groups, compute, recompute;
    double alpha, a;
    train_hparams h;
} rec_opts;

static const char *const plan_names[] = { "uniform", "adaptive", "pruned" };
static const char *const alloc_names[] = { "default", "reference" };
static const char *const trainer_names[] = { "auto", "data", "pipeline" };
static const char *const recompute_names[] = { "auto", "on", "off" };
#define O(...) OPT(rec_opts, __VA_ARGS__)
static const opt_def rec_table[] = {
    O(OPT_STR, model, "model", NULL, NULL, "a pruned checkpoint of cfsp-mpi (.h5) or a Hugging Face directory", .flags = OPT_REQUIRED),
    O(OPT_STR, train_tokens, "train-tokens", NULL, NULL, "uint32 training tokens (FILE@START:END: a slice); required when --steps > 0", .flags = OPT_NONEMPTY),
    O(OPT_STR, eval_tokens, "eval-tokens", NULL, NULL, "held-out tokens: perplexity before and after (non-overlapping windows)", .flags = OPT_NONEMPTY),
    O(OPT_INT, eval_windows, "eval-windows", "0", "[0, 1000000000]", "first K evaluation windows (0 = all)"),
    O(OPT_INT, h.seqlen, "seqlen", "256", "[2, 1048576]", "tokens per window T"),
    O(OPT_INT, h.batch, "batch", "8", "[1, 1048576]", "windows per step over all ranks, a multiple of P"),
    O(OPT_INT, h.steps, "steps", "100", "[0, 1000000000]", "optimizer steps (0 = evaluate / export only)"),
    O(OPT_DBL, h.lr, "lr", "2e-3", "[0, 10]", "peak learning rate"),
    O(OPT_DBL, h.min_lr_ratio, "min-lr-ratio", "0.1", "[0, 1]", "cosine floor as a fraction of --lr"),
    O(OPT_INT, h.warmup, "warmup", "10", "[0, 1000000000]", "linear warm-up steps (at most --steps: a larger value is reduced to --steps, as recover.json records)"),
    O(OPT_DBL, h.weight_decay, "weight-decay", "0", "[0, 10]", "AdamW decoupled weight decay"),
    O(OPT_DBL, h.clip, "clip", "1", ">= 0", "global gradient-norm clip (0 = off)"),
    O(OPT_DBL, h.beta1, "beta1", "0.9", "[0, 0.999999]", "AdamW beta1"),
    O(OPT_DBL, h.beta2, "beta2", "0.999", "[0, 0.999999999]", "AdamW beta2"),
    O(OPT_DBL, h.adam_eps, "adam-eps", "1e-8", "[1e-30, 1]", "AdamW epsilon"),
    O(OPT_ENUM, adaptive, "plan", "uniform", NULL, "ranks per block: uniform; adaptive, proportional to the block's importance share "
      "(as its pruning budget); or pruned, proportional to the fraction of its FFN channels pruned (read from the pruned --stats/--model "
      "checkpoint). Either way at most the uniform parameter count, short by less than one block-rank",
      .names = plan_names, .nnames = 3),
    O(OPT_INT, rank, "rank", "8", "[1, 65536]", "the uniform LoRA rank r"),
    O(OPT_DBL, alpha, "alpha", "16", "[1e-6, 1e6]", "LoRA alpha"),
    O(OPT_BOOL, alpha_scales, "alpha-scales", "1", NULL, "1: alpha_l = alpha r_l / r (constant alpha/r_l); 0: alpha fixed"),
    O(OPT_STR, stats, "stats", NULL, NULL, "importances for --plan adaptive: stats.h5, or a pruned .h5 (not given: --model)", .flags = OPT_NONEMPTY),
    O(OPT_ENUM, metric, "global-metric", "angular", NULL, "the importance score of --plan adaptive (as the allocation)",
      .names = global_metric_names, .nnames = GM_COUNT),
    O(OPT_DBL, a, "a", "1", "[0, 1e6]", "sigmoid temperature of the adaptive plan (as the allocation)"),
    O(OPT_ENUM, alloc_reference, "alloc-mode", "default", NULL, "the temperature scaling of the adaptive plan (as the allocation)",
      .names = alloc_names, .nnames = 2),
    O(OPT_STR, targets, "targets", "q,k,v,o,gate,up,down", NULL, "adapted projections, comma-separated", .flags = OPT_NONEMPTY),
    O(OPT_I64, h.seed, "seed", "0", "[0, 9007199254740992]", "adapter initialisation and batch sampling"),
    O(OPT_STR, out, "output-dir", "recover_out", NULL, "directory of the outputs", .flags = OPT_NONEMPTY),
    O(OPT_BOOL, force, "force", "0", NULL, "replace existing outputs"),
    O(OPT_INT, save_every, "save-every", "0", "[0, 1000000000]", "checkpoint.h5 every N steps (0: at the end only)"),
    O(OPT_STR, resume, "resume", NULL, NULL, "continue from a checkpoint (same plan)", .flags = OPT_NONEMPTY),
    O(OPT_BOOL, merge, "merge", "0", NULL, "write merged.h5: the pruned checkpoint with the adapters folded in"),
    O(OPT_BOOL, peft, "peft", "0", NULL, "write adapter_model.safetensors (PEFT) next to adapter_config.json"),
    O(OPT_BOOL, plan_only, "plan-only", "0", NULL, "write adapter_config.json and stop"),
    O(OPT_ENUM, trainer, "trainer", "auto", NULL, "data: every rank holds the whole model, windows split over the ranks; pipeline: "
      "each rank holds its stage's blocks (1F1B over windows); auto: data on one rank or when the whole model takes at most a "
      "quarter of a rank's share of the node's memory, else pipeline (the pipelined trainer's adapters are bitwise the data-parallel "
      "trainer's on one rank; with several ranks the data-parallel sum of the ranks' parts may differ in the last bit)",
      .names = trainer_names, .nnames = 3),
    O(OPT_ENUM, compute, "compute", "auto", NULL, "the frozen weights' products in training and evaluation: fp32 (OpenBLAS), bf16 (oneDNN, "
      "activations rounded to bf16, weights as stored; adapters, gradients, optimizer state, attention and lm_head stay fp32), "
      "auto = bf16 with native bf16 dot products and a bf16 checkpoint", .names = compute_names, .nnames = 3),
    O(OPT_ENUM, recompute, "recompute", "auto", NULL, "pipelined trainer: on = keep only the blocks' inputs of the windows in flight and recompute "
      "their activations in the backward; off = keep the activations; auto = off when they take at most an eighth of the stage's weights "
      "+ 256 MB (bitwise the same adapters either way)", .names = recompute_names, .nnames = 3),
    O(OPT_INT, replicas, "replicas", "1", "[1, 1048576]", "pipelined trainer: R pipelines of P / R ranks each, data parallel over the batch"),
    O(OPT_INT, grad_groups, "grad-groups", "0", "[0, 1048576]", "pipelined trainer: the batch's gradient is summed in G groups of contiguous windows, "
      "then the groups in order (a multiple of --replicas; 0: --replicas). The adapters are bitwise the same for every --replicas dividing G"),
};
static const opt_table rec_opt_table = {
    "recover", "cfsp-mpi recover", "mpirun -n P cfsp-mpi recover --model PRUNED.h5|DIR --train-tokens FILE[@A:B] [options]",
    "cfsp-mpi recover — LoRA recovery fine-tuning of a pruned model, data-parallel or pipelined over the P ranks",
    rec_table, sizeof rec_table / sizeof rec_table[0] };

/* 0, 1 after --help, or -1 (FAIL) */
static int parse_args(int argc, char **argv, rec_opts *o)
{
    memset(o, 0, sizeof *o);
    int rc = opts_parse(&rec_opt_table, argc, argv, 1, o, NULL);
    if (rc) return rc;
    train_hparams *h = &o->h;
    if (h->steps > 0 && !o->train_tokens[0] && !o->plan_only) return FAIL("recover: --train-tokens is required when --steps > 0");
    if (o->trainer == 1 && h->batch % cfsp_nranks())
        return FAIL("recover: --batch = '%d': not a multiple of the %d ranks (the data-parallel trainer splits the windows evenly)", h->batch, cfsp_nranks());
    if (h->warmup > h->steps) h->warmup = h->steps;
    if (!o->grad_groups) o->grad_groups = o->replicas;
    if (o->replicas > cfsp_nranks()) return FAIL("recover: --replicas = '%d': more than the %d ranks", o->replicas, cfsp_nranks());
    if (o->grad_groups % o->replicas)
        return FAIL("recover: --grad-groups = '%d': not a multiple of --replicas = %d (each replica sums whole groups)", o->grad_groups, o->replicas);
    if (o->grad_groups > h->batch) return FAIL("recover: --grad-groups = '%d': more groups than the %d windows of --batch", o->grad_groups, h->batch);
    if (o->trainer == 1 && (o->replicas > 1 || o->grad_groups > 1))
        return FAIL("recover: --replicas / --grad-groups belong to the pipelined trainer (--trainer data is data parallel over all ranks already)");
    return 0;
}

static void out_path(const rec_opts *o, const char *name, char *buf, size_t n) { snprintf(buf, n, "%s/%s", o->out, name); }

/* bytes of the checkpoint's files (the .h5, or the directory's *.safetensors) */
static double model_bytes(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    if (!S_ISDIR(sb.st_mode)) return (double)sb.st_size;
    double n = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (k < 12 || strcmp(e->d_name + k - 12, ".safetensors")) continue;
        char f[8192];
        snprintf(f, sizeof f, "%s/%s", path, e->d_name);
        if (stat(f, &sb) == 0) n += (double)sb.st_size;
    }
    if (d) closedir(d);
    return n;
}

/* --trainer auto: data parallel on one rank, or when the whole model (its files, plus the fp32
 * lm_head copy) takes at most a quarter of this rank's share of the node's memory; pipelined
 * otherwise. The same on every rank (rank 0 decides, broadcast). */
static trainer_kind choose_trainer(const rec_opts *o, const char *path, char *why, size_t n)
{
    int P = cfsp_nranks();
    if (o->trainer == 1) { snprintf(why, n, "--trainer data"); return TRAINER_DATA; }
    if (o->trainer == 2) { snprintf(why, n, "--trainer pipeline"); return TRAINER_PIPELINE; }
    if (P == 1) { snprintf(why, n, "auto: one rank"); return TRAINER_DATA; }
    MPI_Comm node;
    int local = 1;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_size(node, &local));
    MPI_CHECK(MPI_Comm_free(&node));
    double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / local, need = model_bytes(path);
    MPI_CHECK(MPI_Bcast(&need, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Bcast(&mem, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    int data = need <= 0.25 * mem && o->h.batch % P == 0;
    snprintf(why, n, "auto: the model's files %.3g GB %s a quarter of %.3g GB per rank%s", need / 1e9, need <= 0.25 * mem ? "within" : "beyond",
             mem / 1e9, data || need > 0.25 * mem ? "" : ", --batch not a multiple of the ranks");
    return data ? TRAINER_DATA : TRAINER_PIPELINE;
}

int recover_command(int argc, char **argv)
{
    rec_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc == 1) {                                   /* rank 0 printed --help */
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
        if (mkdir_p(o.out) || output_dir_lock(o.out)) rc = -1;     /* one job per output directory */
        for (size_t i = 0; !rc && i < sizeof outs / sizeof outs[0]; i++) {
            char p[4200];
            out_path(&o, outs[i], p, sizeof p);
            if (!o.force && path_exists(p)) rc = FAIL("%s exists (use --force to replace the outputs of %s)", p, o.out);
        }
    }
    cfsp_sync(rc);

    /* the config first (no tensors): the plan and the trainer's stage map depend on it */
    train_model m;
    rc = train_model_load_range(o.model, 0, 0, 0, 0, &m);
    cfsp_sync(rc);
    const model_config *c = &m.cfg;
    int L = c->n_layers, target[LORA_NMOD];
    rc = lora_parse_targets(o.targets, target);
    if (!rc && c->sliding_window > 0 && o.h.seqlen > c->sliding_window)   /* as run: full attention within one window only */
        rc = FAIL("%s: config 'sliding_window' = %d: --seqlen %d is longer (sliding-window attention is not supported)", o.model,
                  c->sliding_window, o.h.seqlen);
    double *imp = xcalloc((size_t)L, sizeof(double)), temp = 1;
    int adaptive = o.adaptive;
    if (!rc && adaptive == LORA_ADAPTIVE) {
        const char *src = o.stats[0] ? o.stats : o.model;
        rc = lora_read_importance(src, L, global_metric_names[o.metric], o.alloc_reference, imp, &temp);
    } else if (!rc && adaptive == LORA_PRUNED)
        rc = lora_read_pruned_fraction(o.stats[0] ? o.stats : o.model, L, imp);
    cfsp_sync(rc);
    lora_plan plan;
    lora_plan_build(&plan, c, target, o.rank, o.alpha, o.alpha_scales, adaptive, imp, o.a, temp);
    char p[4200];
    if (rank == 0) {
        out_path(&o, "adapter_config.json", p, sizeof p);
        rc = lora_plan_write_peft(&plan, p, m.src_dir, o.force);
        fprintf(stderr, "cfsp-mpi recover: %s plan, ranks", plan_names[adaptive]);
        for (int l = 0; l < L; l++) fprintf(stderr, " %d", plan.rank[l]);
        fprintf(stderr, "; %lld LoRA parameters (uniform r=%d: %lld)\n", (long long)plan.params, o.rank, (long long)plan.params_uniform);
    }
    cfsp_sync(rc);
    if (o.plan_only) {
        if (rank == 0) output_dir_unlock();
        lora_plan_free(&plan);
        train_model_free(&m);
        free(imp);
        return 0;
    }

    /* the trainer: data parallel (every rank loads the whole model) or pipelined (each its stage) */
    char why[256];
    trainer_kind kind = choose_trainer(&o, o.model, why, sizeof why);
    if (kind == TRAINER_DATA && (o.replicas > 1 || o.grad_groups > 1)) {
        kind = TRAINER_PIPELINE;
        snprintf(why, sizeof why, "--replicas / --grad-groups: the pipelined trainer");
    }
    if (kind == TRAINER_PIPELINE && o.h.seqlen < 2) kind = TRAINER_DATA;
    train_stages st = { 0 };
    int stage = 0;
    if (kind == TRAINER_PIPELINE) {
        train_stages_plan(c, &plan, o.h.seqlen, cfsp_nranks() / o.replicas, &st);
        st.replicas = o.replicas;
        st.groups = o.grad_groups;
        st.recompute = o.recompute == 0 ? -1 : o.recompute == 1 ? 1 : 0;
        stage = rank < st.nstages * o.replicas ? rank % st.nstages : -1;
    }
    {
        char path_keep[4096];
        snprintf(path_keep, sizeof path_keep, "%s", o.model);
        train_model_free(&m);
        c = &m.cfg;
        if (kind == TRAINER_DATA) rc = train_model_load(path_keep, &m);
        else if (stage < 0) rc = train_model_load_range(path_keep, 0, 0, 0, 0, &m);
        else rc = train_model_load_range(path_keep, st.first[stage], st.first[stage + 1], stage == 0, stage == st.nstages - 1, &m);
    }
    cfsp_sync(rc);
    /* the products' backend (model/matmul.h) from --compute and the stored dtype of the blocks'
     * matrices (a rank that holds blocks knows it; the same choice everywhere) */
    int sdt = m.b1 > m.b0 ? (int)m.w[m.b0][TM_GATE].dtype : -1;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &sdt, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    const char *mwarn = NULL;
    cfsp_sync(mm_configure((compute_mode)o.compute, sdt >= 0 ? (dtype_t)sdt : DT_F32, blas_threads(), NULL, &mwarn));
    if (rank == 0) {
        if (mwarn) fprintf(stderr, "cfsp-mpi: warning: %s\n", mwarn);
        fprintf(stderr, "cfsp-mpi recover: compute %s (%s)\n", compute_names[mm_current()->mode], mm_current()->reason);
        fprintf(stderr, "cfsp-mpi recover: %s trainer (%s)", trainer_kind_names[kind], why);
        if (kind == TRAINER_PIPELINE) {
            if (o.replicas > 1 || o.grad_groups > 1) fprintf(stderr, "; %d replicas, %d gradient groups", o.replicas, o.grad_groups);
            fprintf(stderr, "; %d stages, blocks", st.nstages);
            for (int s2 = 0; s2 < st.nstages; s2++)
                if (st.first[s2] < st.first[s2 + 1]) fprintf(stderr, " %d-%d", st.first[s2], st.first[s2 + 1] - 1);
                else fprintf(stderr, " head");
        }
        fprintf(stderr, "\n");
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
    trainer_init(&tr, &m, &plan, o.h.seqlen, o.h.seed, kind, &st, stage);
    rc = o.resume[0] ? train_ckpt_read(&tr, o.resume) : 0;
    cfsp_sync(rc);
    int start = tr.step;

    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "format", "cfsp-mpi-recover/1");
    cJSON_AddStringToObject(res, "model", o.model);
    cJSON_AddNumberToObject(res, "nranks", cfsp_nranks());
    cJSON *jp = cJSON_AddObjectToObject(res, "plan");
    cJSON_AddStringToObject(jp, "plan", plan_names[o.adaptive]);
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
    cJSON *jcp = results_add_compute(res);
    cJSON_AddStringToObject(jcp, "products", "frozen-weight projections (forward, recomputation, backward) in this mode; LoRA, attention and lm_head fp32");
    cJSON *jt = cJSON_AddObjectToObject(res, "trainer");
    cJSON_AddStringToObject(jt, "requested", trainer_names[o.trainer]);
    cJSON_AddStringToObject(jt, "kind", trainer_kind_names[kind]);
    cJSON_AddStringToObject(jt, "reason", why);
    if (kind == TRAINER_PIPELINE) {
        cJSON_AddNumberToObject(jt, "stages", st.nstages);
        cJSON_AddNumberToObject(jt, "replicas", st.replicas);
        cJSON_AddNumberToObject(jt, "grad_groups", st.groups);
        cJSON_AddStringToObject(jt, "recompute", recompute_names[o.recompute]);
        cJSON *jf = cJSON_AddArrayToObject(jt, "first_block"), *jc = cJSON_AddArrayToObject(jt, "stage_cost_flops_per_token");
        for (int s2 = 0; s2 <= st.nstages; s2++) cJSON_AddItemToArray(jf, cJSON_CreateNumber(st.first[s2]));
        for (int s2 = 0; s2 < st.nstages; s2++) cJSON_AddItemToArray(jc, cJSON_CreateNumber(st.cost[s2]));
    }

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
    snprintf(meta, sizeof meta, "{\"plan\":\"%s\",\"seed\":%llu,\"seqlen\":%d,\"batch\":%d,\"steps\":%d}", plan_names[o.adaptive],
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
            rc = train_ckpt_write(&tr, p, meta);
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
    /* per-rank times of the training: the slowest rank's compute and every rank's waits */
    /* per rank: training compute and wait seconds, peak RSS, the bytes of the blocks it holds */
    double wb = 0;
    for (int l = m.b0; l < m.b1; l++)
        for (int t = 0; t < LORA_NMOD; t++) wb += (double)(m.w[l][t].rows * m.w[l][t].cols) * (double)dtype_size(m.w[l][t].dtype);
    if (m.has_embed) wb += (double)(m.embed.rows * m.embed.cols) * (double)dtype_size(m.embed.dtype);
    if (m.has_head && m.head.owned) wb += (double)(m.head.rows * m.head.cols) * (double)dtype_size(m.head.dtype);
    double cw[6] = { tr.compute_seconds, tr.wait_seconds, (double)vm_hwm_bytes(), wb, tr.act_bytes, tr.store_act },
           *all = xmalloc(sizeof(double) * 6 * (size_t)cfsp_nranks());
    MPI_CHECK(MPI_Gather(cw, 6, MPI_DOUBLE, all, 6, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    if (rank == 0) {
        static const char *const names[6] = { "rank_compute_seconds", "rank_wait_seconds", "rank_vmhwm_bytes", "rank_weight_bytes",
                                              "rank_activation_bytes", "rank_activations_kept" };
        for (int k = 0; k < 6; k++) {
            cJSON *a = cJSON_AddArrayToObject(tm, names[k]);
            for (int r = 0; r < cfsp_nranks(); r++) cJSON_AddItemToArray(a, cJSON_CreateNumber(all[6 * r + k]));
        }
    }
    free(all);
    /* the outputs: checkpoint, merge and PEFT are collective (each rank writes or sends its part) */
    out_path(&o, "checkpoint.h5", p, sizeof p);
    rc = train_ckpt_write(&tr, p, meta);
    cfsp_sync(rc);
    if (o.merge) { out_path(&o, "merged.h5", p, sizeof p); rc = train_merge_write(&tr, p); cfsp_sync(rc); }
    if (o.peft) { out_path(&o, "adapter_model.safetensors", p, sizeof p); rc = train_peft_write(&tr, p); cfsp_sync(rc); }
    rc = 0;
    if (rank == 0) {
        char *txt = cJSON_Print(res);
        out_path(&o, "recover.json", p, sizeof p);
        rc = write_text_atomic(p, txt);
        free(txt);
    }
    cfsp_sync(rc);
    if (rank == 0) output_dir_unlock();
    cJSON_Delete(res);
    trainer_free(&tr);
    train_stages_free(&st);
    tokens_free(&train);
    tokens_free(&eval);
    lora_plan_free(&plan);
    train_model_free(&m);
    free(imp);
    return 0;
}
