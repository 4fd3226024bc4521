/* matmul.h — the matrix-product backend of the forward pass, chosen once per process:
 *
 *  fp32  OpenBLAS sgemm on fp32 operands (stored bf16/f16 weights converted a panel at a time);
 *        exactly the arithmetic of cfsp-mpi before the bf16 backend existed.
 *  bf16  oneDNN matmul primitives: both operands of every product rounded to bf16 (round to nearest
 *        even) right before it, products accumulated and written in fp32. On a CPU whose oneDNN
 *        has bf16 kernels (AMX-BF16, AVX512-BF16, or AVX-512 where oneDNN emulates them) the
 *        primitives take bf16 operands and stored bf16 weights are used in place ("native"); where
 *        oneDNN has none (AVX2), the same rounded operands go to oneDNN f32 primitives ("emulated":
 *        the same numbers up to summation order, no faster than fp32).
 *
 * Primitives are created once per shape (M, N, K, leading dimensions, transposition, alpha, beta)
 * and kept in a small cache; one product at a time per process, on the rank's BLAS threads. */
#ifndef CFSP_MATMUL_H
#define CFSP_MATMUL_H
#include "cfsp/format/safetensors.h"
#include <stddef.h>
#include <stdint.h>

typedef enum { COMPUTE_AUTO = 0, COMPUTE_FP32 = 1, COMPUTE_BF16 = 2 } compute_mode;
extern const char *const compute_names[];   /* "auto", "fp32", "bf16", NULL */

typedef struct {
    compute_mode requested, mode;   /* mode: FP32 or BF16 after auto */
    int cpu_amx_bf16, cpu_avx512_bf16, cpu_avx512f;   /* CPUID */
    int onednn_bf16;                /* oneDNN creates bf16 matmul primitives on this CPU */
    int native;                     /* the CPU multiplies bf16 (AMX-BF16 or AVX512-BF16) and oneDNN uses it */
    char isa[40];                   /* oneDNN's effective ISA ("avx512_core_amx", "avx2", ...) */
    char impl[64];                  /* what oneDNN picked for a 7B-shape bf16 (or emulated) product */
    char reason[200];               /* why this mode: one sentence for the log and results.json */
} mm_info;

/* Decide the mode for this process: req (auto/fp32/bf16), the checkpoint's stored dtype of its
 * matrices, and the threads each rank may use (oneDNN's OpenMP threads follow the BLAS rule).
 * bf16 on a CPU without native bf16 is allowed; *warn is set to a sentence saying it is emulated
 * (NULL otherwise). Returns 0; may be called again (tests), which empties the primitive cache. */
int mm_configure(compute_mode req, dtype_t stored, int threads, mm_info *out, const char **warn);
/* the current mode (fp32 until mm_configure is called) and its description */
const mm_info *mm_current(void);
int mm_bf16(void);
/* destroy the cached primitives */
void mm_release(void);

/* Scratch of the bf16 mode, owned by the caller (fwd_ws): rounded operand A [M*K] and B [K*N]
 * copies, as floats (room for bf16 too), and c, a dense [M*N] result for products whose C has a
 * row stride ldc > N (oneDNN's brgemm kernels take dense results only: with c too small, such a
 * product still runs, on oneDNN's slower gemm kernel). */
typedef struct { float *a, *b, *c; size_t a_floats, b_floats, c_floats; } mm_scratch;

/* C[M,N] = alpha * A[M,K] op(B) + beta * C, all fp32 in memory, row-major with leading dimensions.
 * op(B) = B^T with B [N,K] (transB = 1) or B [K,N] (transB = 0). beta is 0 or 1. */
void mm_gemm(int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc, const mm_scratch *s);
/* y[M,N] (ldy) = x[M,K] W^T + beta * y with W [N,K] stored in dtype dt, row stride ldw elements.
 * fp32 mode: sgemm (dt f32 in place, else converted into panel, panel_floats floats at a time).
 * bf16 mode: native bf16 weights with ldw == K in place; other weights (a column slice, ldw > K,
 * copied; f32/f16 rounded) go through panels, so that oneDNN sees dense weights. */
void mm_linear(int M, int N, int K, const float *x, dtype_t dt, const void *W, int64_t ldw, float beta, float *y,
               int ldy, float *panel, size_t panel_floats, const mm_scratch *s);

/* The bare oneDNN bf16 product C[M,N] (ldc N) = A[M,K] B^T, B [N,K] with row stride ldb, on bf16
 * bit patterns: the primitive the bf16 mode runs on a bf16 checkpoint, without the operand
 * rounding (cfsp-mpi-gemm-bench times it). Needs mm_configure; returns -1, doing nothing, where
 * oneDNN has no bf16 matmul on this CPU. */
int mm_bf16_raw(int M, int N, int K, const uint16_t *A, const uint16_t *B, int ldb, float *C);

/* round n floats to bf16 (round to nearest even; NaN stays NaN), in place or from src to dst, as
 * floats (round_bf16_f32) or as bf16 bit patterns (pack_bf16) */
void round_bf16_f32(const float *src, float *dst, size_t n);
void pack_bf16(const float *src, uint16_t *dst, size_t n);
#endif
