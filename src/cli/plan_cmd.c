/* plan_cmd.c — the pipeline simulator (see plan.h).
 * Model of the schedule: M micro-batches (N sequences x T/chunk chunks) pass P stages in order;
 * stage s takes t_s per micro-batch (its units' flops / the sgemm rate). The pipeline's makespan
 * is sum_s t_s (the first micro-batch's trip) + (M - 1) x max_s t_s, so the predicted efficiency is
 * M x sum_s t_s / (P x makespan) = load balance x steady-state share. Communication is not
 * modelled (a micro-batch message is 3 x chunk x D floats per stage boundary). */
#include "cfsp/plan.h"
#include "cfsp/err.h"
#include "cfsp/pipeline.h"
#include "cfsp/util.h"
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double measure_gflops(int m, int n, int k)
{
    float *a = xcalloc((size_t)m * k, sizeof(float)), *b = xcalloc((size_t)n * k, sizeof(float)), *c = xcalloc((size_t)m * n, sizeof(float));
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)n * k; i++) b[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);   /* warm-up */
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        double g = 2.0 * m * n * k / (now_seconds() - t) / 1e9;
        if (g > best) best = g;
    }
    free(a); free(b); free(c);
    return best;
}

static int arg_int(const char *v, const char *name, long lo, long hi, long *out)
{
    char *e = NULL;
    long x = strtol(v, &e, 10);
    if (!*v || *e || x < lo || x > hi) return FAIL("plan: %s = '%s': expected an integer in [%ld, %ld]", name, v, lo, hi);
    *out = x;
    return 0;
}

int plan_command(int argc, char **argv)
{
    const char *model = NULL, *json_out = NULL;
    long P = 0, N = 128, T = 1024, chunk = 0, slice = 4096;
    double gflops = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return FAIL("plan: %s: missing value", a);
        int rc = 0;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--ranks")) rc = arg_int(v, a, 1, 1 << 20, &P);
        else if (!strcmp(a, "--nsamples")) rc = arg_int(v, a, 1, 1 << 30, &N);
        else if (!strcmp(a, "--seqlen")) rc = arg_int(v, a, 2, 1 << 24, &T);
        else if (!strcmp(a, "--chunk")) rc = arg_int(v, a, 0, 1 << 24, &chunk);
        else if (!strcmp(a, "--ffn-slice")) rc = arg_int(v, a, 0, 1 << 30, &slice);
        else if (!strcmp(a, "--gflops")) { gflops = atof(v); if (!(gflops > 0)) return FAIL("plan: --gflops: expected a positive number"); }
        else if (!strcmp(a, "--json")) json_out = v;
        else return FAIL("plan: unknown option '%s' (--model DIR --ranks P [--nsamples N --seqlen T --chunk C --ffn-slice S --gflops G --json FILE])", a);
        if (rc) return -1;
        i++;
    }
    if (!model || !P) return FAIL("plan: --model DIR and --ranks P are required");
    if (!chunk) chunk = T;
    if (T % chunk) return FAIL("plan: --chunk %ld does not divide --seqlen %ld", chunk, T);
    model_config c;
    if (model_config_load(model, &c)) return -1;
    unit_plan up;
    units_plan(&c, (int)slice, (int)T, &up);
    stage_map map;
    if (stages_plan(&up, (int)P, &map)) { units_free(&up); model_config_free(&c); return -1; }
    int measured = gflops <= 0;
    if (measured) gflops = measure_gflops((int)chunk, c.hidden < 4096 ? c.hidden : 4096, c.hidden);
    double es = !strcmp(c.torch_dtype, "float32") ? 4 : 2;
    long M = N * (T / chunk);
    double sum_t = 0, max_t = 0, max_bytes = 0;
    double *t = xmalloc(sizeof(double) * (size_t)P);
    printf("cfsp-mpi plan: %s, %d blocks, %d stage units (--ffn-slice %ld), %ld ranks, %ld micro-batches of %ld tokens, sgemm %.1f GFLOP/s%s\n",
           model, c.n_layers, up.n, slice, P, M, chunk, gflops, measured ? " (measured here, 1 thread)" : "");
    printf("%6s %14s %14s %12s %12s %10s\n", "rank", "units", "blocks", "GFLOP/mb", "s/mb", "GB");
    for (int r = 0; r < P; r++) {
        double f = 0, bytes = 0;
        for (int u = map.first[r]; u < map.first[r + 1]; u++) {
            f += up.u[u].cost * (double)chunk;
            bytes += up.u[u].slice < 0 ? (up.u[u].cost - 4.0 * c.n_heads * c.head_dim * (T + 1) / 2.0) / 2 * es
                                       : up.u[u].cost / 2 * es;
        }
        t[r] = f / (gflops * 1e9);
        sum_t += t[r];
        if (t[r] > max_t) max_t = t[r];
        if (bytes > max_bytes) max_bytes = bytes;
        if (P <= 32 || r < 4 || r >= P - 4)
            printf("%6d %6d-%-7d %6d-%-7d %12.2f %12.4f %10.2f\n", r, map.first[r], map.first[r + 1] - 1, up.u[map.first[r]].layer,
                   up.u[map.first[r + 1] - 1].layer, f / 1e9, t[r], bytes / 1e9);
        else if (r == 4) printf("%6s\n", "...");
    }
    double makespan = sum_t + (double)(M - 1) * max_t;
    double eff = (double)M * sum_t / ((double)P * makespan);
    double balance = sum_t / P / max_t, bubble = (double)(P - 1) / (double)(M + P - 1);
    printf("load balance (mean/max stage) %.4f, fill/drain share %.4f, predicted efficiency %.4f, calibration %.1f s (serial %.1f s)\n",
           balance, bubble, eff, makespan, sum_t * M);
    printf("largest stage: %.2f GB of weights in %s\n", max_bytes / 1e9, c.torch_dtype);
    if (json_out) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddNumberToObject(j, "blocks", c.n_layers);
        cJSON_AddNumberToObject(j, "units", up.n);
        cJSON_AddNumberToObject(j, "ffn_slice", (double)slice);
        cJSON_AddNumberToObject(j, "ranks", (double)P);
        cJSON_AddNumberToObject(j, "nsamples", (double)N);
        cJSON_AddNumberToObject(j, "seqlen", (double)T);
        cJSON_AddNumberToObject(j, "chunk", (double)chunk);
        cJSON_AddNumberToObject(j, "micro_batches", (double)M);
        cJSON_AddNumberToObject(j, "sgemm_gflops", gflops);
        cJSON_AddBoolToObject(j, "sgemm_measured", measured);
        cJSON_AddNumberToObject(j, "load_balance", balance);
        cJSON_AddNumberToObject(j, "fill_drain_share", bubble);
        cJSON_AddNumberToObject(j, "predicted_efficiency", eff);
        cJSON_AddNumberToObject(j, "predicted_calibration_seconds", makespan);
        cJSON_AddNumberToObject(j, "largest_stage_weight_bytes", max_bytes);
        cJSON *st = cJSON_AddArrayToObject(j, "stage_seconds_per_microbatch");
        for (int r = 0; r < P; r++) cJSON_AddItemToArray(st, cJSON_CreateNumber(t[r]));
        char *s = cJSON_Print(j);
        FILE *f = fopen(json_out, "w");
        int ok = f && fputs(s, f) >= 0;
        if (f) ok &= fclose(f) == 0;
        free(s);
        cJSON_Delete(j);
        if (!ok) { free(t); return FAIL("%s: cannot write", json_out); }
    }
    free(t);
    stages_free(&map);
    units_free(&up);
    model_config_free(&c);
    return 0;
}
