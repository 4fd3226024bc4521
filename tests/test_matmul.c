/* test_matmul.c — the matrix-product backend (model/matmul.c) against a plain double-precision
 * product of independently rounded operands: bf16 rounding (vector path vs util's scalar
 * f32_to_bf16, ties, NaN, infinities, subnormals), mm_gemm in both transpositions with leading
 * dimensions, alpha and beta, mm_linear on f32 / f16 / bf16 weights with a row stride, panels
 * smaller than the weight, odd shapes, and more shapes than the primitive cache holds. Run in both
 * modes; fp32 must also equal OpenBLAS sgemm bit for bit. Exit 1 on the first failing group. */
#include "cfsp/model/matmul.h"
#include "cfsp/util/util.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0, checks = 0;
#define EXPECT(cond, ...) do { checks++; if (!(cond)) { failures++; if (failures < 20) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } } while (0)

static uint64_t rng = 88172645463325252ULL;
static double urand(void)   /* xorshift64*, uniform in [-1, 1) */
{
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ULL) >> 11) / 4503599627370496.0 - 1.0;
}

/* the rounding of the reference: via the bit pattern, round to nearest even */
static double rb(float x, int bf16)
{
    if (!bf16) return x;
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_rounding(void)
{
    enum { N = 4099 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = (float)(urand() * pow(2.0, (int)(urand() * 60)));
    uint32_t special[] = { 0x3f808000u /* tie, even below */, 0x3f818000u /* tie, odd below */, 0x3f807fffu, 0x3f808001u,
                           0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u /* signalling NaN */, 0x00000001u,
                           0x80008000u, 0x7f7fffffu /* rounds to infinity */, 0x00000000u, 0x80000000u };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) memcpy(&x[i * 7], &special[i], 4);
    round_bf16_f32(x, y, N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float want = bf16_to_f32(f32_to_bf16(x[i]));
        uint32_t a, b;
        memcpy(&a, &y[i], 4); memcpy(&b, &want, 4);
        if (a != b && !(isnan(y[i]) && isnan(want))) bad++;
        if (isnan(x[i]) && !isnan(y[i])) bad++;
    }
    EXPECT(bad == 0, "round_bf16_f32 differs from f32_to_bf16 on %d of %d values", bad, N);
    uint16_t *h = malloc(sizeof(uint16_t) * N);
    pack_bf16(x, h, N);
    int badp = 0;
    for (int i = 0; i < N; i++) {
        uint16_t want = f32_to_bf16(x[i]);
        if (h[i] != want && !(isnan(bf16_to_f32(h[i])) && isnan(x[i]))) badp++;
    }
    EXPECT(badp == 0, "pack_bf16 differs from f32_to_bf16 on %d of %d values", badp, N);
    for (int n = 0; n < 40; n++) {   /* every tail length of the 16-wide loop, one value past the end untouched */
        uint16_t t[41];
        t[n] = 0xabcd;
        pack_bf16(x, t, (size_t)n);
        int ok = t[n] == 0xabcd;
        for (int i = 0; i < n; i++) ok &= t[i] == f32_to_bf16(x[i]) || isnan(x[i]);
        EXPECT(ok, "pack_bf16 of %d values", n);
    }
    free(h);
    round_bf16_f32(x, x, N);   /* in place */
    for (int i = 0; i < N; i++) if (!isnan(x[i])) { uint32_t a; memcpy(&a, &x[i], 4); if (a & 0xffffu) bad++; }
    EXPECT(bad == 0, "in-place rounding leaves low bits");
    free(x); free(y);
}

static float *randv(size_t n, double scale)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = (float)(urand() * scale);
    return v;
}

/* C = alpha A op(B) + beta C0 in double from rounded operands; the bound is relative to sum |a b| */
static void check_gemm(int bf16, int transB, int M, int N, int K, float alpha, float beta, const mm_scratch *s)
{
    int lda = K + 3, ldb = (transB ? K : N) + 5, ldc = N + 2;
    int brows = transB ? N : K;
    float *A = randv((size_t)M * lda, 1.0), *B = randv((size_t)brows * ldb, 2.0), *C = randv((size_t)M * ldc, 1.0);
    float *C0 = malloc(sizeof(float) * (size_t)M * ldc), *Cb = malloc(sizeof(float) * (size_t)M * ldc);
    memcpy(C0, C, sizeof(float) * (size_t)M * ldc);
    memcpy(Cb, C, sizeof(float) * (size_t)M * ldc);
    mm_gemm(transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, s);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double b = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                double p = rb(A[(size_t)i * lda + k], bf16) * rb((float)b, bf16);
                acc += p; mag += fabs(p);
            }
            double want = alpha * acc + beta * C0[(size_t)i * ldc + j];
            double err = fabs(C[(size_t)i * ldc + j] - want) / (fabs(alpha) * mag + fabs(beta * C0[(size_t)i * ldc + j]) + 1e-30);
            if (err > worst) worst = err;
        }
    EXPECT(worst <= 2e-6 * (1 + K / 64.0), "%s gemm transB=%d %dx%dx%d alpha=%g beta=%g: relative error %.3g",
           bf16 ? "bf16" : "fp32", transB, M, N, K, alpha, beta, worst);
    /* the padding between rows is not written */
    int pad_ok = 1;
    for (int i = 0; i < M; i++) for (int j = N; j < ldc; j++) pad_ok &= C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j];
    EXPECT(pad_ok, "gemm wrote outside its %dx%d block of C (ldc %d)", M, N, ldc);
    if (!bf16) {   /* fp32 mode is OpenBLAS sgemm, bit for bit */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, Cb, ldc);
        EXPECT(!memcmp(Cb, C, sizeof(float) * (size_t)M * ldc), "fp32 gemm is not sgemm bit for bit (%dx%dx%d)", M, N, K);
    }
    free(A); free(B); free(C); free(C0); free(Cb);
}

static void check_linear(int bf16, dtype_t dt, int M, int N, int K, float beta, size_t panel_floats, const mm_scratch *s)
{
    int ldw = K + 7;
    size_t es = dtype_size(dt);
    float *Wf = randv((size_t)N * ldw, 0.5), *x = randv((size_t)M * K, 3.0), *y = randv((size_t)M * N, 1.0);
    char *W = malloc((size_t)N * ldw * es);
    for (size_t i = 0; i < (size_t)N * ldw; i++) {   /* store, and keep the stored value for the reference */
        if (dt == DT_F32) memcpy(W + i * 4, &Wf[i], 4);
        else if (dt == DT_BF16) { uint16_t h = f32_to_bf16(Wf[i]); memcpy(W + i * 2, &h, 2); Wf[i] = bf16_to_f32(h); }
        else { uint16_t h = f32_to_f16(Wf[i]); memcpy(W + i * 2, &h, 2); Wf[i] = f16_to_f32(h); }
    }
    float *y0 = malloc(sizeof(float) * (size_t)M * N), *panel = malloc(sizeof(float) * panel_floats);
    memcpy(y0, y, sizeof(float) * (size_t)M * N);
    mm_linear(M, N, K, x, dt, W, ldw, beta, y, N, panel, panel_floats, s);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = rb(x[(size_t)i * K + k], bf16) * rb(Wf[(size_t)j * ldw + k], bf16);
                acc += p; mag += fabs(p);
            }
            double want = acc + beta * y0[(size_t)i * N + j];
            double err = fabs(y[(size_t)i * N + j] - want) / (mag + fabs(beta * y0[(size_t)i * N + j]) + 1e-30);
            if (err > worst) worst = err;
        }
    EXPECT(worst <= 2e-6 * (1 + K / 64.0), "%s linear %s %dx%dx%d beta=%g panel=%zu: relative error %.3g", bf16 ? "bf16" : "fp32",
           dtype_name(dt), M, N, K, beta, panel_floats, worst);
    free(Wf); free(x); free(y); free(W); free(y0); free(panel);
}

static void run_mode(compute_mode mode)
{
    mm_info info;
    const char *warn = NULL;
    mm_configure(mode, DT_BF16, 1, &info, &warn);
    int bf16 = mm_bf16();
    EXPECT(bf16 == (mode == COMPUTE_BF16), "mode %s: mm_bf16() = %d", compute_names[mode], bf16);
    EXPECT(info.mode == mode && info.reason[0], "mode recorded with a reason");
    EXPECT(mode != COMPUTE_BF16 || info.native || warn, "bf16 without native support warns");
    printf("mode %s: %s; oneDNN ISA %s, impl %s\n", compute_names[mode], info.reason, info.isa, info.impl);
    mm_scratch s = { 0 };
    s.a_floats = s.b_floats = 1u << 16;
    s.a = malloc(sizeof(float) * s.a_floats);
    s.b = malloc(sizeof(float) * s.b_floats);
    mm_scratch s0 = s;              /* without the dense result buffer: C written in place with its ldc */
    s.c_floats = 1u << 16;
    s.c = malloc(sizeof(float) * s.c_floats);
    int shapes[][3] = { { 1, 1, 1 }, { 7, 5, 3 }, { 16, 33, 64 }, { 37, 19, 130 }, { 64, 64, 17 }, { 3, 200, 96 } };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int t = 0; t < 2; t++)
            for (int withc = 0; withc < 2; withc++) {
                check_gemm(bf16, t, shapes[i][0], shapes[i][1], shapes[i][2], 1.0f, 0.0f, withc ? &s : &s0);
                check_gemm(bf16, t, shapes[i][0], shapes[i][1], shapes[i][2], 0.125f, 1.0f, withc ? &s : &s0);
            }
    dtype_t dts[] = { DT_F32, DT_F16, DT_BF16 };
    for (int d = 0; d < 3; d++) {
        check_linear(bf16, dts[d], 9, 70, 48, 0.0f, 1u << 16, &s);      /* whole weight in one panel */
        check_linear(bf16, dts[d], 9, 70, 48, 1.0f, 48 * 13, &s);       /* panels of 13 rows (6 of them) */
        check_linear(bf16, dts[d], 1, 3, 257, 0.0f, 257 * 2, &s);
    }
    /* more distinct shapes than the cache has slots, then the first ones again (eviction, reuse) */
    for (int r = 0; r < 2; r++)
        for (int m = 1; m <= 110; m += (r ? 11 : 1)) check_gemm(bf16, 1, m, 3, 5, 1.0f, 0.0f, &s);
    free(s.a); free(s.b); free(s.c);
    mm_release();
}

int main(void)
{
    test_rounding();
    run_mode(COMPUTE_FP32);
    run_mode(COMPUTE_BF16);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
