/* gemm_bench.c — cfsp-mpi-gemm-bench: the machine's sgemm limit on a model's projection shapes.
 *
 * Times cblas_sgemm(RowMajor, NoTrans, Trans, M, N, K) — y[M,N] = x[M,K] W[N,K]^T, exactly the call
 * linear() makes — for the q/k/v/o/gate/up/down shapes of one LLaMA block, M = tokens per pipeline
 * micro-batch, with fp32 weights. --ffn-slice S splits the FFN as cfsp-mpi's stage units do (gate/up
 * with N = S, down with K = S, plus the remainder), so the shapes are the ones the program runs. Optionally (--bf16 1) also the same product with the weight stored
 * as bf16 and converted into a 16 MB fp32 panel before each sgemm (the scheme of linear(), whose panel is 64 MB), with a
 * vectorisable inline conversion, to show what that scheme costs when the conversion is fast. With
 * --onednn 1 also (a) "onednn_bf16": the bare oneDNN matmul primitive on bf16 operands with an fp32
 * result (model/matmul.h mm_bf16_raw; the hardware's bf16 figure, absent where oneDNN has no bf16
 * matmul, e.g. AVX2), and (b) "cfsp_bf16": cfsp-mpi's own bf16 product (mm_linear in the bf16 mode:
 * fp32 activations rounded to bf16, the bf16 weight in place), so the program's overhead is visible.
 *
 * Under mpirun every rank runs the same shape at the same moment (a barrier before each
 * repetition), so `mpirun -n 2` gives the figure of both cores while both are busy. Rank 0 prints one
 * JSON object on stdout. Besides CBLAS and MPI it uses util of the cfsp library (the option parser
 * of every command: the same --help, --config FILE.json and one-line errors; the error convention,
 * xmalloc) and the model layer's matmul backend for the oneDNN modes. OPENBLAS_NUM_THREADS sets the
 * thread count (reported; oneDNN gets the same).
 */
#define _POSIX_C_SOURCE 200809L
#include "cfsp/model/matmul.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include "cfsp/util/util.h"
#include <cblas.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* OpenBLAS extensions (declared by OpenBLAS's cblas.h; repeated here for other CBLAS headers) */
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);

#define PANEL_BYTES (16u << 20)

static double clk(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(void) { return clk(CLOCK_MONOTONIC); }
static double cpu(void) { return clk(CLOCK_PROCESS_CPUTIME_ID); }

#define PROG "cfsp-mpi-gemm-bench"
typedef struct {
    int64_t hidden, ffn, heads, kv_heads, head_dim, tokens, reps, ffn_slice;
    int bf16, onednn;
} bench_opts;
#define O(...) OPT(bench_opts, __VA_ARGS__)
static const opt_def bench_table[] = {
    O(OPT_I64, hidden, "hidden", NULL, ">= 1", "hidden size D", .flags = OPT_REQUIRED),
    O(OPT_I64, ffn, "ffn", NULL, ">= 1", "intermediate size M", .flags = OPT_REQUIRED),
    O(OPT_I64, heads, "heads", NULL, ">= 1", "attention heads H", .flags = OPT_REQUIRED),
    O(OPT_I64, kv_heads, "kv-heads", NULL, ">= 1", "key/value heads K", .flags = OPT_REQUIRED),
    O(OPT_I64, head_dim, "head-dim", "0", ">= 0", "head dimension HD (0 = D/H)"),
    O(OPT_I64, tokens, "tokens", "512", ">= 1", "rows of x T = tokens per micro-batch"),
    O(OPT_I64, reps, "reps", "3", ">= 1", "timed repetitions per shape (the median is reported)"),
    O(OPT_BOOL, bf16, "bf16", "0", NULL, "also time the weight stored as bf16, converted into fp32 panels"),
    O(OPT_BOOL, onednn, "onednn", "0", NULL, "also time the oneDNN bf16 matmul primitive and cfsp-mpi's bf16 product (--compute bf16)"),
    O(OPT_I64, ffn_slice, "ffn-slice", "0", ">= 0", "FFN channels per slice, as cfsp-mpi --ffn-slice (0 = whole FFN)"),
};
static const opt_table bench_opt_table = {
    PROG, PROG, "[mpirun -n P] " PROG " --hidden D --ffn M --heads H --kv-heads K [options]",
    PROG " — times cblas_sgemm(RowMajor, NoTrans, Trans, T, N, K) for the q,k,v,o,gate,up,down shapes of\n"
    "one block (k/v and gate/up share a shape and are timed once) and prints JSON on rank 0: per shape\n"
    "and rank the median and best GFLOP/s, and the block figure = block FLOPs / sum of median times.",
    bench_table, sizeof bench_table / sizeof bench_table[0] };

static float *rnd(size_t n, uint64_t *s)
{
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(*s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
    }
    return p;
}

static inline float bf16f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { const char *name; int N, K, count; } shape;

enum { MODE_FP32, MODE_PANELS, MODE_ONEDNN, MODE_CFSP };
static const char *const mode_names[] = { "fp32", "bf16_panels", "onednn_bf16", "cfsp_bf16" };

/* one repetition of a mode: fp32 sgemm; W16 (the weight in bf16) converted panel by panel as linear()
 * does in fp32; the bare oneDNN bf16 primitive on x16 (x in bf16); cfsp-mpi's bf16 linear() */
static void product(int mode, int M, int N, int K, const float *x, const uint16_t *x16, const float *W,
                    const uint16_t *W16, float *panel, const mm_scratch *mm, float *y)
{
    if (mode == MODE_FP32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
        return;
    }
    if (mode == MODE_ONEDNN) { mm_bf16_raw(M, N, K, x16, W16, K, y); return; }
    if (mode == MODE_CFSP) { mm_linear(M, N, K, x, DT_BF16, W16, K, 0.0f, y, N, panel, PANEL_BYTES / sizeof(float), mm); return; }
    int rows = (int)(PANEL_BYTES / sizeof(float) / (size_t)K);
    if (rows < 1) rows = 1;
    for (int r0 = 0; r0 < N; r0 += rows) {
        int nr = N - r0 < rows ? N - r0 : rows;
        const uint16_t *s = W16 + (size_t)r0 * K;
        size_t n = (size_t)nr * K;
        for (size_t i = 0; i < n; i++) panel[i] = bf16f(s[i]);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nr, K, 1.0f, x, K, panel, K, 0.0f, y + r0, N);
    }
}

int main(int argc, char **argv)
{
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "cfsp-mpi: error: " PROG ": MPI_Init failed\n");
        return 1;
    }
    int rank = 0, P = 1;
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &P));
    cfsp_err_init(rank, P);
    bench_opts o;
    memset(&o, 0, sizeof o);
    int rc = opts_parse(&bench_opt_table, argc, argv, 1, &o, NULL);
    if (rc == 1) cfsp_exit_all(0);                      /* rank 0 printed --help */
    if (!rc && o.head_dim == 0 && o.hidden / o.heads == 0)
        rc = FAIL(PROG ": --hidden %lld < --heads %lld: no head dimension D/H (give --head-dim)", (long long)o.hidden, (long long)o.heads);
    cfsp_sync(rc);                                      /* one error line, exit 1 on every rank */
    long D = (long)o.hidden, FF = (long)o.ffn, H = (long)o.heads, KVH = (long)o.kv_heads, HD = (long)o.head_dim;
    long T = (long)o.tokens, reps = (long)o.reps, FS = (long)o.ffn_slice;
    int bf16 = o.bf16;
    if (!HD) HD = D / H;
    int Q = (int)(H * HD), KV = (int)(KVH * HD);
    shape sh[7] = { { "q", Q, (int)D, 1 }, { "k,v", KV, (int)D, 2 }, { "o", (int)D, Q, 1 } };
    int ns = 3;
    if (FS <= 0 || FS >= FF) {
        sh[ns++] = (shape){ "gate,up", (int)FF, (int)D, 2 };
        sh[ns++] = (shape){ "down", (int)D, (int)FF, 1 };
    } else {                               /* FF = q slices of FS + a remainder */
        int q = (int)(FF / FS), rem = (int)(FF % FS);
        sh[ns++] = (shape){ "gate,up slice", (int)FS, (int)D, 2 * q };
        sh[ns++] = (shape){ "down slice", (int)D, (int)FS, q };
        if (rem) {
            sh[ns++] = (shape){ "gate,up rest", rem, (int)D, 2 };
            sh[ns++] = (shape){ "down rest", (int)D, rem, 1 };
        }
    }
    /* the modes timed, and what oneDNN offers here */
    int modes[4], nmode = 0;
    modes[nmode++] = MODE_FP32;
    if (bf16) modes[nmode++] = MODE_PANELS;
    mm_info info;
    memset(&info, 0, sizeof info);
    if (o.onednn) {
        mm_configure(COMPUTE_BF16, DT_BF16, openblas_get_num_threads(), &info, NULL);
        if (info.onednn_bf16) modes[nmode++] = MODE_ONEDNN;
        modes[nmode++] = MODE_CFSP;
    }
    mm_scratch mm = { 0 };
    if (o.onednn) {
        size_t widest = (size_t)(D > FF ? D : FF) > (size_t)Q ? (size_t)(D > FF ? D : FF) : (size_t)Q;
        mm.a_floats = (size_t)T * widest;
        mm.a = xmalloc(sizeof(float) * mm.a_floats);
    }
    /* per shape and mode: median and best wall GFLOP/s, and GFLOP per CPU second (median), which
     * does not count time the process spent descheduled by other load on a shared machine */
    double *med = xcalloc((size_t)ns * nmode, sizeof(double)), *best = xcalloc((size_t)ns * nmode, sizeof(double));
    double *medcpu = xcalloc((size_t)ns * nmode, sizeof(double));
    double *times = xmalloc(sizeof(double) * (size_t)reps), *ctimes = xmalloc(sizeof(double) * (size_t)reps);
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(rank + 1);
    float *panel = bf16 || o.onednn ? xmalloc(PANEL_BYTES) : NULL;

    for (int s = 0; s < ns; s++) {
        int N = sh[s].N, K = sh[s].K;
        float *x = rnd((size_t)T * K, &seed), *W = rnd((size_t)N * K, &seed), *y = rnd((size_t)T * N, &seed);
        uint16_t *W16 = NULL, *x16 = NULL;
        if (bf16 || o.onednn) {
            W16 = xmalloc(sizeof(uint16_t) * (size_t)N * K);
            for (size_t i = 0; i < (size_t)N * K; i++) { uint32_t u; memcpy(&u, &W[i], 4); W16[i] = (uint16_t)(u >> 16); }
            x16 = xmalloc(sizeof(uint16_t) * (size_t)T * K);
            for (size_t i = 0; i < (size_t)T * K; i++) x16[i] = f32_to_bf16(x[i]);
        }
        double flops = 2.0 * (double)T * N * K;
        for (int mode = 0; mode < nmode; mode++) {
            int md = modes[mode];
            MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
            product(md, (int)T, N, K, x, x16, W, W16, panel, &mm, y);   /* warm-up: page faults, packing, primitive creation */
            for (int r = 0; r < reps; r++) {
                MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));          /* all ranks busy at the same moment */
                double t0 = now(), c0 = cpu();
                product(md, (int)T, N, K, x, x16, W, W16, panel, &mm, y);
                times[r] = now() - t0;
                ctimes[r] = cpu() - c0;
            }
            qsort(times, (size_t)reps, sizeof(double), cmpd);
            qsort(ctimes, (size_t)reps, sizeof(double), cmpd);
            med[s * nmode + mode] = flops / times[reps / 2] / 1e9;
            best[s * nmode + mode] = flops / times[0] / 1e9;
            medcpu[s * nmode + mode] = flops / ctimes[reps / 2] / 1e9;
        }
        free(x); free(W); free(y); free(W16); free(x16);
    }

    double *allmed = rank ? NULL : xmalloc(sizeof(double) * (size_t)ns * nmode * P);
    double *allbest = rank ? NULL : xmalloc(sizeof(double) * (size_t)ns * nmode * P);
    double *allcpu = rank ? NULL : xmalloc(sizeof(double) * (size_t)ns * nmode * P);
    MPI_CHECK(MPI_Gather(med, ns * nmode, MPI_DOUBLE, allmed, ns * nmode, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Gather(best, ns * nmode, MPI_DOUBLE, allbest, ns * nmode, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Gather(medcpu, ns * nmode, MPI_DOUBLE, allcpu, ns * nmode, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    if (!rank) {
        double block_flops = 0;
        for (int s = 0; s < ns; s++) block_flops += 2.0 * (double)T * sh[s].N * sh[s].K * sh[s].count;
        printf("{\n  \"tool\": \"cfsp-mpi-gemm-bench\",\n  \"call\": \"cblas_sgemm(RowMajor, NoTrans, Trans, M=tokens, N=out, K=in)\",\n");
        printf("  \"ranks\": %d, \"openblas_threads\": %d, \"openblas_config\": \"%s\",\n", P, openblas_get_num_threads(), openblas_get_config());
        if (o.onednn)
            printf("  \"onednn\": {\"isa\": \"%s\", \"impl\": \"%s\", \"bf16_matmul\": %s, \"native_bf16\": %s, \"cpu_amx_bf16\": %s, \"cpu_avx512_bf16\": %s},\n",
                   info.isa, info.impl, info.onednn_bf16 ? "true" : "false", info.native ? "true" : "false",
                   info.cpu_amx_bf16 ? "true" : "false", info.cpu_avx512_bf16 ? "true" : "false");
        printf("  \"tokens\": %ld, \"reps\": %ld, \"hidden\": %ld, \"ffn\": %ld, \"ffn_slice\": %ld, \"heads\": %ld, \"kv_heads\": %ld, \"head_dim\": %ld,\n",
               T, reps, D, FF, FS, H, KVH, HD);
        printf("  \"block_flops\": %.6e,\n  \"shapes\": [\n", block_flops);
        for (int s = 0; s < ns; s++) {
            printf("    {\"name\": \"%s\", \"M\": %ld, \"N\": %d, \"K\": %d, \"count\": %d, \"flops\": %.6e", sh[s].name, T, sh[s].N, sh[s].K,
                   sh[s].count, 2.0 * (double)T * sh[s].N * sh[s].K);
            for (int mode = 0; mode < nmode; mode++) {
                printf(", \"%s\": {\"gflops_median\": [", mode_names[modes[mode]]);
                for (int r = 0; r < P; r++) printf("%s%.3f", r ? ", " : "", allmed[(size_t)r * ns * nmode + s * nmode + mode]);
                printf("], \"gflops_best\": [");
                for (int r = 0; r < P; r++) printf("%s%.3f", r ? ", " : "", allbest[(size_t)r * ns * nmode + s * nmode + mode]);
                printf("], \"gflops_per_cpu_second\": [");
                for (int r = 0; r < P; r++) printf("%s%.3f", r ? ", " : "", allcpu[(size_t)r * ns * nmode + s * nmode + mode]);
                printf("]}");
            }
            printf("}%s\n", s + 1 < ns ? "," : "");
        }
        printf("  ],\n");
        /* block figure per rank: block FLOPs / sum over shapes of count x median time (wall, CPU) */
        for (int mode = 0; mode < nmode; mode++)
            for (int kind = 0; kind < 2; kind++) {
                const double *g = kind ? allcpu : allmed;
                printf("  \"block_gflops_%s%s\": [", mode_names[modes[mode]], kind ? "_per_cpu_second" : "");
                for (int r = 0; r < P; r++) {
                    double t = 0;
                    for (int s = 0; s < ns; s++)
                        t += sh[s].count * 2.0 * (double)T * sh[s].N * sh[s].K / (g[(size_t)r * ns * nmode + s * nmode + mode] * 1e9);
                    printf("%s%.3f", r ? ", " : "", block_flops / t / 1e9);
                }
                printf("]%s\n", mode + 1 < nmode || !kind ? "," : "");
            }
        printf("}\n");
        free(allmed); free(allbest); free(allcpu);
    }
    free(med); free(best); free(medcpu); free(times); free(ctimes); free(panel); free(mm.a);
    mm_release();
    MPI_CHECK(MPI_Finalize());
    return 0;
}
