/* plan_cmd.c — `cfsp-mpi plan`, the pipeline simulator (declared in cli/commands.h).
 * Model of the schedule: M micro-batches (N sequences x T/chunk chunks) pass P stages in order;
 * stage s takes t_s per micro-batch: the sum of its units' times, each from timings of the unit's
 * own operations measured here at the micro-batch size in the --compute mode (fp32 sgemm or the bf16
 * products of model/matmul.h; projections at the model's shapes,
 * the causal attention at the mean context, an FFN slice's three sgemms and SwiGLU, the RMSNorm,
 * and the 16-bit to fp32 weight conversion when the model is stored in 16 bits) — or, with
 * --gflops G, its flops at a uniform G GFLOP/s; with --product-gflops G, the matrix products at G
 * GFLOP/s (plus the measured cost of rounding their activations to bf16) and the other ops timed
 * (a CPU with faster products, e.g. AMX-BF16, predicted from this one). The stage map is the program's own (units split
 * by flop cost, stages_plan), so this predicts the schedule the program runs. The makespan
 * is sum_s t_s (the first micro-batch's trip) + (M - 1) x max_s t_s, so the predicted efficiency is
 * M x sum_s t_s / (P x makespan) = load balance x steady-state share. Communication is not
 * modelled (a micro-batch message is 3 x chunk x D floats per stage boundary). Every rank's memory
 * (stored weights, buffers, request) is pipeline/plan_mem.c's, with the stored dtypes from the
 * safetensors headers when the directory has them. */
#include "cfsp/cli/commands.h"
#include "cfsp/model/forward.h"
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/pipeline/plan_mem.h"
#include "cfsp/train/lora_plan.h"
#include "cfsp/train/train.h"
#include "cfsp/util/blas_env.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)((int)(i * 2654435761u % 2001u) - 1000) / 1000.0f;
}

/* median of 3 timed runs of y[m, n] = x[m, k] W[n, k]^T (after a warm-up): fp32 sgemm on an fp32
 * weight, or in the bf16 mode the program's bf16 product (linear() of forward.c) on a bf16 weight */
/* --product-gflops G (> 0): products are not timed but costed at G GFLOP/s, plus the measured cost
 * of rounding their activation operand to bf16 (pack_seconds per element) */
static double product_gflops, pack_seconds;

static double time_product(int m, int n, int k, fwd_ws *ws)
{
    if (product_gflops > 0) return 2.0 * m * n * k / (product_gflops * 1e9) + pack_seconds * (double)m * k;
    int bf16 = mm_bf16();
    float *a = xmalloc(sizeof(float) * (size_t)m * k), *b = xmalloc(sizeof(float) * (size_t)n * k), *c = xmalloc(sizeof(float) * (size_t)m * n);
    fill(a, (size_t)m * k, 1.0f);
    fill(b, (size_t)n * k, 0.01f);
    uint16_t *b16 = NULL;
    if (bf16) {
        b16 = xmalloc(sizeof(uint16_t) * (size_t)n * k);
        for (size_t i = 0; i < (size_t)n * k; i++) b16[i] = f32_to_bf16(b[i]);
    }
    wmat W = { bf16 ? DT_BF16 : DT_F32, n, k, k, bf16 ? (const void *)b16 : (const void *)b, NULL };
    linear(c, a, m, &W, 0.0f, ws);
    double t[3];
    for (int r = 0; r < 3; r++) {
        double t0 = now_seconds();
        linear(c, a, m, &W, 0.0f, ws);
        t[r] = now_seconds() - t0;
    }
    free(a); free(b); free(c); free(b16);
    double lo = t[0] < t[1] ? t[0] : t[1], hi = t[0] < t[1] ? t[1] : t[0];
    return t[2] < lo ? lo : t[2] > hi ? hi : t[2];
}

typedef struct {
    double attn_unit;          /* seconds per micro-batch: projections + attention core + norm + conversion */
    double ffn_width;          /* the FFN slice width timed */
    double ffn_unit;           /* seconds per micro-batch for an FFN slice of ffn_width channels */
    double proj, core, conv_per_elem, norm;   /* parts, for the report */
} unit_times;

/* Time one attention unit and one FFN slice of the model at the micro-batch size, with the
 * program's own kernels (forward.c: linear, attention, rmsnorm, swiglu) in the compute mode
 * mm_configure chose (fp32 or bf16). */
static void measure_units(const model_config *c, int chunk, int T, int width, unit_times *ut)
{
    int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    fwd_ws ws;
    fwd_ws_init_width(&ws, c, T, chunk, 0, width);
    double rate = 0;   /* --product-gflops: this machine's product rate, to take the products out of the attention core */
    if (product_gflops > 0) {
        double g = product_gflops;
        size_t n = (size_t)chunk * D;
        float *a = xmalloc(sizeof(float) * n);
        uint16_t *h = xmalloc(sizeof(uint16_t) * n);
        fill(a, n, 1.0f);
        pack_bf16(a, h, n);
        double t0 = now_seconds();
        pack_bf16(a, h, n);
        pack_seconds = (now_seconds() - t0) / (double)n;
        free(a); free(h);
        product_gflops = 0;
        rate = 2.0 * chunk * (double)Q * D / time_product(chunk, Q, D, &ws) / 1e9;
        product_gflops = g;
    }
    ut->proj = time_product(chunk, Q, D, &ws) + 2 * time_product(chunk, KV, D, &ws) + time_product(chunk, D, Q, &ws);
    /* causal attention on the sequence's last chunk (full context), scaled to the mean chunk */
    float *q = xmalloc(sizeof(float) * (size_t)chunk * Q), *out = xmalloc(sizeof(float) * (size_t)chunk * Q);
    float *kc = xmalloc(sizeof(float) * (size_t)T * KV), *vc = xmalloc(sizeof(float) * (size_t)T * KV);
    fill(q, (size_t)chunk * Q, 1.0f); fill(kc, (size_t)T * KV, 1.0f); fill(vc, (size_t)T * KV, 1.0f);
    int pos0 = T - chunk;
    attention(out, q, kc, vc, chunk, pos0, &ws);
    double t0 = now_seconds();
    attention(out, q, kc, vc, chunk, pos0, &ws);
    double t_last = now_seconds() - t0;
    double pairs_last = (double)chunk * (pos0 + (chunk + 1) / 2.0), pairs_mean = (double)chunk * (T + 1) / 2.0;
    ut->core = t_last * pairs_mean / pairs_last;
    if (product_gflops > 0) {   /* QK^T and PV: 4 hd flops per head and attended position */
        double core_flops = 4.0 * c->n_heads * c->head_dim * pairs_mean;
        double rest = ut->core - core_flops / (rate * 1e9);
        ut->core = (rest > 0 ? rest : 0) + core_flops / (product_gflops * 1e9) +
                   pack_seconds * (double)c->n_heads * (chunk * (double)c->head_dim + pairs_mean + 2.0 * T * c->head_dim);
    }
    free(q); free(out); free(kc); free(vc);
    /* RMSNorm of the micro-batch */
    float *x = xmalloc(sizeof(float) * (size_t)chunk * D), *w = xmalloc(sizeof(float) * (size_t)D);
    fill(x, (size_t)chunk * D, 1.0f); fill(w, (size_t)D, 1.0f);
    t0 = now_seconds();
    for (int r = 0; r < 4; r++) rmsnorm(ws.xn, x, w, chunk, D, 1e-5f);
    ut->norm = (now_seconds() - t0) / 4;
    free(x); free(w);
    /* 16-bit weights: the conversion time per element, timed on 8 Mi elements (16 MB of 16-bit
     * weights into 32 MB of linear()'s 64 MB fp32 scratch panel) */
    ut->conv_per_elem = 0;
    if (strcmp(c->torch_dtype, "float32") && !mm_bf16() && product_gflops <= 0) {   /* bf16: inside the products */
        size_t n = 8u << 20;
        uint16_t *h = xmalloc(sizeof(uint16_t) * n);
        for (size_t i = 0; i < n; i++) h[i] = (uint16_t)(0x3c00u + i % 977u);
        dtype_t dt = !strcmp(c->torch_dtype, "float16") ? DT_F16 : DT_BF16;
        convert_to_f32(dt, h, ws.scratch, n < ws.scratch_floats ? n : ws.scratch_floats);
        t0 = now_seconds();
        convert_to_f32(dt, h, ws.scratch, n < ws.scratch_floats ? n : ws.scratch_floats);
        ut->conv_per_elem = (now_seconds() - t0) / (double)(n < ws.scratch_floats ? n : ws.scratch_floats);
        free(h);
    }
    double attn_elems = 2.0 * (double)D * Q + 2.0 * (double)D * KV;
    ut->attn_unit = ut->proj + ut->core + ut->norm + ut->conv_per_elem * attn_elems;
    /* one FFN slice: gate and up, SwiGLU, down (+ the norm) */
    ut->ffn_width = width;
    double t_ffn = 2 * time_product(chunk, width, D, &ws) + time_product(chunk, D, width, &ws);
    float *g = xmalloc(sizeof(float) * (size_t)chunk * width), *u = xmalloc(sizeof(float) * (size_t)chunk * width);
    fill(g, (size_t)chunk * width, 1.0f); fill(u, (size_t)chunk * width, 1.0f);
    t0 = now_seconds();
    swiglu(g, u, (size_t)chunk * width);
    t_ffn += now_seconds() - t0;
    free(g); free(u);
    ut->ffn_unit = t_ffn + ut->norm + ut->conv_per_elem * 3.0 * D * width;
    fwd_ws_free(&ws);
}

/* the per-rank memory terms of plan_mem.h as a JSON object */
static cJSON *mem_json(const rank_mem *m)
{
    cJSON *o = cJSON_CreateObject();
    const char *k[] = { "unit_bytes", "embed_bytes", "head_bytes", "stored_bytes", "largest_ffn_slice_bytes",
                        "conversion_panel_bytes", "activation_bytes", "kv_cache_bytes", "logits_bytes", "table_bytes",
                        "buffer_bytes", "margin_bytes", "fixed_bytes", "request_bytes" };
    uint64_t v[] = { m->unit_bytes, m->embed_bytes, m->head_bytes, m->stored_bytes, m->largest_ffn_bytes,
                     m->panel_bytes, m->activation_bytes, m->kv_cache_bytes, m->logits_bytes, m->table_bytes,
                     m->buffer_bytes, m->margin_bytes, PLAN_MEM_FIXED_BYTES, m->request_bytes };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) cJSON_AddNumberToObject(o, k[i], (double)v[i]);
    return o;
}

/* time the stages, print the plan and write it as JSON (json_out non-NULL) */
static int plan_report(const char *model, const model_config *c, int from_headers, const unit_plan *up, const stage_map *map,
                       const rank_mem *mem, long N, long T, long chunk, long slice, double gflops, const char *json_out)
{
    long P = map->nranks;
    int measured = gflops <= 0;
    long M = N * (T / chunk);
    unit_times ut = { 0 };
    int width = 0;                                   /* the widest FFN slice */
    for (int u = 0; u < up->n; u++) if (up->u[u].slice >= 0 && up->u[u].c1 - up->u[u].c0 > width) width = up->u[u].c1 - up->u[u].c0;
    if (measured) measure_units(c, (int)chunk, (int)T, width, &ut);
    double sum_t = 0, max_t = 0, max_bytes = 0, model_bytes = 0;
    int big = 0;                                     /* the rank with the largest request */
    double *t = xmalloc(sizeof(double) * (size_t)P), *fl = xmalloc(sizeof(double) * (size_t)P);
    const mm_info *mi = mm_current();
    if (measured) printf("cfsp-mpi plan: compute %s (%s)%s\n", compute_names[mi->mode], mi->reason,
                         product_gflops > 0 ? "; products costed at --product-gflops" : "");
    if (measured)
        printf("cfsp-mpi plan: %s, %d blocks, %d stage units (--ffn-slice %ld), %ld ranks, %ld micro-batches of %ld tokens; "
               "measured here per micro-batch: attention unit %.4f s (projections %.4f, attention %.4f, conversion %.4f), "
               "FFN slice of %d channels %.4f s\n", model, c->n_layers, up->n, slice, P, M, chunk, ut.attn_unit, ut.proj, ut.core,
               ut.conv_per_elem * (2.0 * c->hidden * c->n_heads * c->head_dim + 2.0 * c->hidden * c->n_kv_heads * c->head_dim),
               width, ut.ffn_unit);
    else
        printf("cfsp-mpi plan: %s, %d blocks, %d stage units (--ffn-slice %ld), %ld ranks, %ld micro-batches of %ld tokens, flops at %.1f GFLOP/s\n",
               model, c->n_layers, up->n, slice, P, M, chunk, gflops);
    printf("%6s %14s %14s %10s %10s %10s %10s %10s\n", "rank", "units", "blocks", "GFLOP/mb", "s/mb", "stored GB", "buffers GB", "request GB");
    for (int r = 0; r < P; r++) {
        double f = 0, secs = 0;
        for (int u = map->first[r]; u < map->first[r + 1]; u++) {
            const stage_unit *su = &up->u[u];
            f += su->cost * (double)chunk;
            if (measured) secs += su->slice < 0 ? ut.attn_unit : ut.ffn_unit * (double)(su->c1 - su->c0) / ut.ffn_width;
        }
        fl[r] = f;
        t[r] = measured ? secs : f / (gflops * 1e9);
        sum_t += t[r];
        if (t[r] > max_t) max_t = t[r];
        if ((double)mem[r].unit_bytes > max_bytes) max_bytes = (double)mem[r].unit_bytes;
        if (mem[r].request_bytes > mem[big].request_bytes) big = r;
        /* the checkpoint once: a tied embedding on the last rank is the same tensor as rank 0's */
        model_bytes += (double)(mem[r].unit_bytes + mem[r].head_bytes) + (r == 0 ? (double)mem[r].embed_bytes : 0);
        if (P <= 32 || r < 4 || r >= P - 4)
            printf("%6d %6d-%-7d %6d-%-7d %10.2f %10.4f %10.2f %10.2f %10.2f\n", r, map->first[r], map->first[r + 1] - 1,
                   up->u[map->first[r]].layer, up->u[map->first[r + 1] - 1].layer, f / 1e9, t[r],
                   mem[r].stored_bytes / 1e9, mem[r].buffer_bytes / 1e9, mem[r].request_bytes / 1e9);
        else if (r == 4) printf("%6s\n", "...");
    }
    double makespan = sum_t + (double)(M - 1) * max_t;
    double eff = (double)M * sum_t / ((double)P * makespan);
    double balance = sum_t / P / max_t, bubble = (double)(P - 1) / (double)(M + P - 1);
    const rank_mem *b = &mem[big];
    char dtypes[64];
    snprintf(dtypes, sizeof dtypes, "%s", from_headers ? "from the safetensors headers" : c->torch_dtype);
    printf("load balance (mean/max stage) %.4f, fill/drain share %.4f, predicted efficiency %.4f, calibration %.1f s (serial %.1f s)\n",
           balance, bubble, eff, makespan, sum_t * M);
    printf("largest stage: %.2f GB of unit weights, %s; the model: %.2f GB stored\n", max_bytes / 1e9, dtypes, model_bytes / 1e9);
    printf("largest request: rank %d, %.3f GB = stored %.3f (units %.3f, embedding %.3f, norm + lm_head %.3f) + margin %.3f"
           " + buffers %.3f (conversion panel %.3f, activations %.3f, key/value cache %.3f, logits %.3f, tables %.3f) + 1 GiB\n",
           big, b->request_bytes / 1e9, b->stored_bytes / 1e9, b->unit_bytes / 1e9, b->embed_bytes / 1e9, b->head_bytes / 1e9,
           b->margin_bytes / 1e9, b->buffer_bytes / 1e9, b->panel_bytes / 1e9, b->activation_bytes / 1e9, b->kv_cache_bytes / 1e9,
           b->logits_bytes / 1e9, b->table_bytes / 1e9);
    printf("request rule per rank: stored + max(stored / 4, largest FFN slice) + buffers + 1 GiB (include/cfsp/pipeline/plan_mem.h)\n");
    int rc = 0;
    if (json_out) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddNumberToObject(j, "blocks", c->n_layers);
        cJSON_AddNumberToObject(j, "units", up->n);
        cJSON_AddNumberToObject(j, "ffn_slice", (double)slice);
        cJSON_AddNumberToObject(j, "ranks", (double)P);
        cJSON_AddNumberToObject(j, "nsamples", (double)N);
        cJSON_AddNumberToObject(j, "seqlen", (double)T);
        cJSON_AddNumberToObject(j, "chunk", (double)chunk);
        cJSON_AddNumberToObject(j, "micro_batches", (double)M);
        cJSON_AddStringToObject(j, "cost_model", measured ? "per-op timings measured here" : "flops at a uniform rate");
        if (product_gflops > 0) cJSON_AddNumberToObject(j, "product_gflops", product_gflops);
        cJSON *cp = cJSON_AddObjectToObject(j, "compute");
        cJSON_AddStringToObject(cp, "mode", compute_names[mi->mode]);
        cJSON_AddStringToObject(cp, "reason", mi->reason);
        cJSON_AddStringToObject(cp, "onednn_isa", mi->isa);
        cJSON_AddStringToObject(cp, "onednn_impl", mi->impl);
        if (measured) {
            cJSON *m = cJSON_AddObjectToObject(j, "measured_seconds_per_microbatch");
            cJSON_AddNumberToObject(m, "attention_unit", ut.attn_unit);
            cJSON_AddNumberToObject(m, "attention_projections", ut.proj);
            cJSON_AddNumberToObject(m, "attention_core_mean_context", ut.core);
            cJSON_AddNumberToObject(m, "rmsnorm", ut.norm);
            cJSON_AddNumberToObject(m, "conversion_per_weight_element", ut.conv_per_elem);
            cJSON_AddNumberToObject(m, "ffn_slice_width", ut.ffn_width);
            cJSON_AddNumberToObject(m, "ffn_slice", ut.ffn_unit);
        } else cJSON_AddNumberToObject(j, "gflops", gflops);
        cJSON_AddNumberToObject(j, "load_balance", balance);
        cJSON_AddNumberToObject(j, "fill_drain_share", bubble);
        cJSON_AddNumberToObject(j, "predicted_efficiency", eff);
        cJSON_AddNumberToObject(j, "predicted_calibration_seconds", makespan);
        cJSON_AddNumberToObject(j, "largest_stage_weight_bytes", max_bytes);
        cJSON_AddStringToObject(j, "stored_dtypes", from_headers ? "safetensors headers" : c->torch_dtype);
        cJSON_AddNumberToObject(j, "model_stored_bytes", model_bytes);
        cJSON_AddStringToObject(j, "memory_rule", "request = stored + max(stored / 4, largest FFN slice) + buffers + 1 GiB");
        cJSON_AddNumberToObject(j, "largest_request_rank", big);
        cJSON_AddNumberToObject(j, "largest_request_bytes", (double)b->request_bytes);
        cJSON *fu = cJSON_AddArrayToObject(j, "stage_first_unit");
        for (int r = 0; r <= P; r++) cJSON_AddItemToArray(fu, cJSON_CreateNumber(map->first[r]));
        cJSON *st = cJSON_AddArrayToObject(j, "stage_seconds_per_microbatch");
        for (int r = 0; r < P; r++) cJSON_AddItemToArray(st, cJSON_CreateNumber(t[r]));
        cJSON *sg = cJSON_AddArrayToObject(j, "stages");
        for (int r = 0; r < P; r++) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "rank", r);
            cJSON_AddNumberToObject(s, "first_unit", map->first[r]);
            cJSON_AddNumberToObject(s, "last_unit", map->first[r + 1] - 1);
            cJSON_AddNumberToObject(s, "first_block", up->u[map->first[r]].layer);
            cJSON_AddNumberToObject(s, "last_block", up->u[map->first[r + 1] - 1].layer);
            cJSON_AddNumberToObject(s, "attention_units", mem[r].attention_units);
            cJSON_AddNumberToObject(s, "ffn_width", mem[r].ffn_width);
            cJSON_AddNumberToObject(s, "gflop_per_microbatch", fl[r] / 1e9);
            cJSON_AddNumberToObject(s, "seconds_per_microbatch", t[r]);
            cJSON_AddItemToObject(s, "memory", mem_json(&mem[r]));
            cJSON_AddItemToArray(sg, s);
        }
        char *s = cJSON_Print(j);
        rc = write_text_atomic(json_out, s);
        free(s);
        cJSON_Delete(j);
    }
    free(t);
    free(fl);
    return rc;
}

typedef struct {
    char model[4096], json[4096];
    int ranks, nsamples, seqlen, chunk, ffn_slice, compute;
    double gflops, product_gflops;
    int train_batch, train_seqlen, train_rank, train_replicas;
    double train_keep;
} plan_opts;

/* --train-batch B: the plan of a pipelined recovery training step (`recover --trainer pipeline`,
 * train.h): the program's own stage map over blocks (train_stages_plan, costs = a step's flops
 * per token: forward, recomputation, backward; the head on the last stage), predicted efficiency =
 * load balance x B_r / (B_r + S - 1) x R S / P with R replicas (--train-replicas) of S stages and
 * B_r = B / R windows each (1F1B fill and drain; idle ranks beyond R S; communication, the
 * replicas' exchange of gradient-group sums included, left out), and every stage's memory: its weights in the stored
 * dtype, adapters with AdamW state and accumulator (24 bytes a parameter), and the activations of
 * train_ops.h as recover --recompute auto chooses them (every block's activations for each of the
 * S - s windows in flight when they take at most an eighth of the weights + 256 MB, else one set
 * per block and the blocks' inputs of the windows in flight), the backward scratch, the message buffers, the head's logits on the last stage, the
 * 16-bit weights' conversion panel). --train-keep k models the FFN widths after pruning (k x m). */
static int train_plan(const char *model, model_config *c, const st_model *stp, long P, long B, long T, int r, double keep,
                      int R, double gflops, const char *json_out)
{
    if (R < 1 || R > P) return FAIL("plan: --train-replicas = '%d': expected 1 to --ranks = %ld", R, P);
    int L = c->n_layers;
    for (int l = 0; l < L; l++) c->ffn[l] = (int)(keep * c->ffn[l] + 0.5) > 0 ? (int)(keep * c->ffn[l] + 0.5) : 1;
    int target[LORA_NMOD] = { 1, 1, 1, 1, 1, 1, 1 };
    lora_plan lp;
    lora_plan_build(&lp, c, target, r, 2.0 * r, 1, LORA_UNIFORM, NULL, 1, 1);
    train_stages st;
    train_stages_plan(c, &lp, (int)T, (int)(P / R), &st);
    int S = st.nstages;
    const st_tensor *gt = stp ? st_find(stp, "model.layers.0.mlp.gate_proj.weight") : NULL;
    double es = gt ? (double)dtype_size(gt->dtype) : !strcmp(c->torch_dtype, "float32") ? 4 : 2;
    double D = c->hidden, Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim, V = c->vocab, H = c->n_heads;
    double sum = 0, mx = 0, wmax = 0;
    for (int s2 = 0; s2 < S; s2++) { sum += st.cost[s2]; if (st.cost[s2] > mx) mx = st.cost[s2]; }
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            int64_t o, in;
            lora_module_shape(c, l, t, &o, &in);
            if ((double)o * in > wmax) wmax = (double)o * in;
        }
    double panel = 4.0 * (wmax < (double)TRAIN_PANEL_FLOATS ? wmax : (double)TRAIN_PANEL_FLOATS);
    double Br = (double)B / R;                      /* windows per replica */
    double balance = sum / S / mx, fill = Br / (Br + S - 1), eff = balance * fill * (double)S * R / P;
    printf("cfsp-mpi plan (training): %s, %ld ranks, %d replicas of %d stages of whole blocks (the last may hold the head alone), "
           "B = %ld windows x T = %ld, LoRA r = %d on all 7 projections, FFN widths x %.2f\n", model, P, R, S, B, T, r, keep);
    printf("  load balance %.3f, fill/drain %.3f, ranks used %d of %ld: predicted efficiency %.3f\n", balance, fill, S * R, P, eff);
    printf("  stage  blocks     GFLOP/window  weights GB  adapters GB  activations GB  total GB\n");
    cJSON *j = cJSON_CreateObject(), *ja = cJSON_AddArrayToObject(j, "stages");
    double worst = 0;
    for (int s2 = 0; s2 < S; s2++) {
        int b0 = st.first[s2], b1 = st.first[s2 + 1], nb = b1 - b0;
        double w = 0, lora = 0, act = 0, scr = 0;
        for (int l = b0; l < b1; l++) {
            double m = c->ffn[l];
            for (int t = 0; t < LORA_NMOD; t++) {
                int64_t o, in;
                lora_module_shape(c, l, t, &o, &in);
                w += (double)o * in * es;
                lora += (double)r * (o + in);
            }
            w += 2 * D * 4;                                        /* the two norms, fp32 */
            w += ((c->qkv_bias ? Q + 2 * KV : 0) + (c->qk_norm ? 2.0 * c->head_dim : 0)) * 4;   /* Qwen extras, fp32 */
            act += T * (4 * D + 2 * Q + 2 * KV + 3 * m + 2) + H * T * T + OP_NLIN * (double)T * r;
            if (c->qk_norm) act += T * (Q + KV + H + c->n_kv_heads);   /* q, k before their norms, the norms' rstd */
            double sc = T * (D + 2 * Q + 2 * KV + 3 * m + r) + (double)T * T + (c->qk_norm ? T * (Q + KV) : 0);
            if (sc > scr) scr = sc;
        }
        int first = s2 == 0, last = s2 == S - 1;
        if (first) w += V * D * es;                                  /* the embedding */
        if (last) w += D * 4 + ((c->tie_embeddings && first) ? 0 : V * D * es);
        double slots = S - s2;
        /* recover --recompute auto: the activations of the windows in flight kept when they take at
         * most an eighth of the weights + 256 MB, else the blocks' inputs kept and one set recomputed */
        double wproj = w - 2 * D * 4 * nb - (first ? V * D * es : 0) - (last ? D * 4 + ((c->tie_embeddings && first) ? 0 : V * D * es) : 0);
        int keep_act = slots * 4 * act <= wproj / 8 + 256e6;           /* the trainer's rule: its blocks' projections */
        double buf = (keep_act ? 0 : slots * nb * T * D) + 4 * T * D + 4 * T * D + (last ? T * V + T * D + T : 0);
        double act_b = 4 * ((keep_act ? slots : 1) * act + scr + buf) + panel, ad_b = 24 * lora, tot = w + ad_b + act_b;
        if (tot > worst) worst = tot;
        printf("  %5d  %3d-%-3d   %12.1f  %10.3f  %11.3f  %14.3f  %8.3f\n", s2, b0, b1 - 1, st.cost[s2] * T / 1e9, w / 1e9, ad_b / 1e9, act_b / 1e9,
               tot / 1e9);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "stage", s2);
        cJSON_AddNumberToObject(o, "first_block", b0);
        cJSON_AddNumberToObject(o, "last_block", b1 - 1);
        cJSON_AddNumberToObject(o, "gflop_per_window", st.cost[s2] * T / 1e9);
        cJSON_AddNumberToObject(o, "weight_bytes", w);
        cJSON_AddNumberToObject(o, "adapter_state_bytes", ad_b);
        cJSON_AddNumberToObject(o, "activation_bytes", act_b);
        cJSON_AddBoolToObject(o, "activations_kept", keep_act);
        cJSON_AddNumberToObject(o, "total_bytes", tot);
        cJSON_AddItemToArray(ja, o);
    }
    double step = gflops > 0 ? (Br + S - 1) * mx * T / (gflops * 1e9) : 0;
    if (gflops > 0) printf("  step %.1f s at %.0f GFLOP/s per rank: %.1f tokens/s per rank\n", step, gflops, B * T / step / P);
    cJSON_AddStringToObject(j, "model", model);
    cJSON_AddStringToObject(j, "kind", "training");
    cJSON_AddNumberToObject(j, "ranks", (double)P);
    cJSON_AddNumberToObject(j, "nstages", S);
    cJSON_AddNumberToObject(j, "replicas", R);
    cJSON_AddNumberToObject(j, "batch", (double)B);
    cJSON_AddNumberToObject(j, "seqlen", (double)T);
    cJSON_AddNumberToObject(j, "lora_rank", r);
    cJSON_AddNumberToObject(j, "ffn_keep", keep);
    cJSON_AddNumberToObject(j, "lora_params", (double)lp.params);
    cJSON_AddNumberToObject(j, "load_balance", balance);
    cJSON_AddNumberToObject(j, "fill_drain_share", fill);
    cJSON_AddNumberToObject(j, "predicted_efficiency", eff);
    cJSON_AddNumberToObject(j, "largest_stage_bytes", worst);
    if (gflops > 0) cJSON_AddNumberToObject(j, "predicted_step_seconds", step);
    int rc = 0;
    if (json_out) {
        char *txt = cJSON_Print(j);
        rc = write_text_atomic(json_out, txt);
        free(txt);
    }
    cJSON_Delete(j);
    train_stages_free(&st);
    lora_plan_free(&lp);
    return rc;
}

#define O(...) OPT(plan_opts, __VA_ARGS__)
static const opt_def plan_table[] = {
    O(OPT_STR, model, "model", NULL, NULL, "Hugging Face model directory (config.json): LLaMA, Mistral, DeciLM, Qwen2, Qwen3", .flags = OPT_REQUIRED),
    O(OPT_INT, ranks, "ranks", NULL, "[1, 1048576]", "pipeline stages P (MPI ranks)", .flags = OPT_REQUIRED),
    O(OPT_INT, nsamples, "nsamples", "128", "[1, 1073741824]", "calibration sequences N"),
    O(OPT_INT, seqlen, "seqlen", "1024", "[2, 16777216]", "tokens per sequence T"),
    O(OPT_INT, chunk, "chunk", "0", "[0, 16777216]", "tokens per micro-batch (divides seqlen; 0 = seqlen)"),
    O(OPT_INT, ffn_slice, "ffn-slice", "4096", "[0, 1073741824]", "FFN channels per stage unit (0 = whole FFN)"),
    O(OPT_ENUM, compute, "compute", "auto", NULL, "the products timed: as cfsp-mpi run --compute (auto: bf16 with native bf16 and a bf16 checkpoint)", .names = compute_names, .nnames = 3),
    O(OPT_DBL, gflops, "gflops", NULL, "> 0", "cost model: flops at this uniform GFLOP/s (not given: per-op timings measured here)"),
    O(OPT_DBL, product_gflops, "product-gflops", "0", ">= 0", "cost model of a CPU with faster products: every matrix product at this GFLOP/s plus the measured cost of rounding its activations to bf16, the other ops timed here (0: products timed too)"),
    O(OPT_STR, json, "json", NULL, NULL, "also write the plan as JSON here: stage map, per-rank units, memory terms and request, efficiency", .flags = OPT_NONEMPTY),
    O(OPT_INT, train_batch, "train-batch", "0", "[0, 1073741824]", "plan a pipelined recovery training step of this many windows instead (recover --trainer pipeline)"),
    O(OPT_INT, train_seqlen, "train-seqlen", "2048", "[2, 16777216]", "tokens per training window T"),
    O(OPT_INT, train_rank, "train-rank", "8", "[1, 65536]", "LoRA rank r of the training plan (uniform, all 7 projections)"),
    O(OPT_DBL, train_keep, "train-keep", "1", "(0, 1]", "the FFN widths of the pruned model to train: this fraction of the config's"),
    O(OPT_INT, train_replicas, "train-replicas", "1", "[1, 1048576]", "R pipelines of ranks / R stages (recover --replicas)"),
};
static const opt_table plan_opt_table = {
    "plan", "cfsp-mpi plan", "cfsp-mpi plan --model DIR --ranks P [options]",
    "cfsp-mpi plan — the pipeline simulator: stage map, per-rank time, memory and request, predicted efficiency",
    plan_table, sizeof plan_table / sizeof plan_table[0] };

int plan_command(int argc, char **argv)
{
    plan_opts po;
    memset(&po, 0, sizeof po);
    opt_result res;
    int prc = opts_parse(&plan_opt_table, argc, argv, 1, &po, &res);
    if (prc) return prc < 0 ? -1 : 0;                 /* 1: --help printed */
    const char *model = po.model, *json_out = po.json[0] ? po.json : NULL;
    long P = po.ranks, N = po.nsamples, T = po.seqlen, chunk = po.chunk, slice = po.ffn_slice;
    double gflops = po.gflops;
    product_gflops = po.product_gflops;
    if (!chunk) chunk = T;
    char w[4200];
    if (T % chunk) return FAIL("%s = '%ld': expected a divisor of seqlen = %ld", opts_where(&plan_opt_table, &res, "chunk", w, sizeof w), chunk, T);
    model_config c;
    if (model_config_load(model, &c)) return -1;
    /* stored dtypes from the checkpoint's headers when the directory has them (else torch_dtype) */
    st_model st;
    const st_model *stp = NULL;
    char p1[4200], p2[4200];
    snprintf(p1, sizeof p1, "%s/model.safetensors", model);
    snprintf(p2, sizeof p2, "%s/model.safetensors.index.json", model);
    if (path_exists(p1) || path_exists(p2)) {
        if (st_open_dir(model, &st)) { st_close(&st); model_config_free(&c); return -1; }
        stp = &st;
    }
    const st_tensor *gt = stp ? st_find(stp, "model.layers.0.mlp.gate_proj.weight") : NULL;
    dtype_t stored = gt ? gt->dtype : !strcmp(c.torch_dtype, "float32") ? DT_F32 : !strcmp(c.torch_dtype, "float16") ? DT_F16 : DT_BF16;
    if (po.train_batch > 0) {
        int trc = train_plan(model, &c, stp, P, po.train_batch, po.train_seqlen, po.train_rank, po.train_keep, po.train_replicas, gflops, json_out);
        if (stp) st_close(&st);
        model_config_free(&c);
        return trc;
    }
    const char *warn = NULL;
    mm_configure((compute_mode)po.compute, stored, blas_threads(), NULL, &warn);
    if (warn) fprintf(stderr, "cfsp-mpi: warning: %s\n", warn);
    unit_plan up;
    units_plan(&c, (int)slice, (int)T, &up);
    stage_map map = { 0, NULL };
    rank_mem *mem = xcalloc((size_t)P, sizeof(rank_mem));
    int rc = stages_plan(&up, (int)P, &map);
    for (int r = 0; r < P && !rc; r++) rc = plan_rank_mem(&c, stp, &up, &map, r, (int)T, (int)chunk, &mem[r]);
    if (stp) st_close(&st);
    if (!rc) rc = plan_report(model, &c, stp != NULL, &up, &map, mem, N, T, chunk, slice, gflops, json_out);
    free(mem);
    stages_free(&map);
    units_free(&up);
    model_config_free(&c);
    return rc;
}
