/* matmul.c — the matrix-product backend (see matmul.h): the fp32/bf16 choice, CPU detection, the
 * oneDNN primitive cache, operand rounding and weight panels. The only file that calls oneDNN. */
#include "cfsp/model/matmul.h"
#include "cfsp/model/weights.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#endif

const char *const compute_names[] = { "auto", "fp32", "bf16", NULL };

/* ---------------------------------------------------------------- CPU features */
static void cpu_features(mm_info *m)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        m->cpu_avx512f = (b >> 16) & 1;          /* CPUID.(7,0):EBX[16] AVX512F */
        m->cpu_amx_bf16 = (d >> 22) & 1;         /* CPUID.(7,0):EDX[22] AMX-BF16 */
        unsigned max_sub = a;
        if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
            m->cpu_avx512_bf16 = (a >> 5) & 1;   /* CPUID.(7,1):EAX[5] AVX512_BF16 */
    }
#else
    (void)m;
#endif
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch ((int)isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
    }
}

/* ---------------------------------------------------------------- the primitive cache */
typedef struct {
    int used, bf16, transB, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    uint64_t last;                       /* LRU tick */
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst;         /* handles set per call */
} mm_entry;

#define CACHE_SLOTS 96
static struct {
    mm_info info;
    int configured;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    mm_entry cache[CACHE_SLOTS];
    uint64_t tick;
} S;

#define DN(call) do { dnnl_status_t st_ = (call); \
        if (st_ != dnnl_success) DIE("oneDNN: %s failed (status %d)", #call, (int)st_); } while (0)

static void entry_free(mm_entry *e)
{
    if (!e->used) return;
    dnnl_primitive_destroy(e->prim);
    dnnl_memory_destroy(e->src);
    dnnl_memory_destroy(e->wei);
    dnnl_memory_destroy(e->dst);
    memset(e, 0, sizeof *e);
}

void mm_release(void)
{
    for (int i = 0; i < CACHE_SLOTS; i++) entry_free(&S.cache[i]);
}

static void engine_up(void)
{
    if (S.eng) return;
    DN(dnnl_engine_create(&S.eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&S.stream, S.eng, dnnl_stream_default_flags));
}

/* Create the matmul primitive descriptor for src [M,K] (lda), weights as op(B) [K,N] (B row-major
 * with ldb, transposed or not), dst f32 [M,N] (ldc); operands bf16 or f32. Returns NULL when oneDNN
 * has no implementation (only asked for when probing). */
static dnnl_primitive_desc_t make_pd(int bf16, int transB, int M, int N, int K, int lda, int ldb, int ldc,
                                     float alpha, float beta, int probe)
{
    dnnl_data_type_t t = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t a, w, c;
    dnnl_dims_t ad = { M, K }, as = { lda, 1 }, wd = { K, N }, cd = { M, N }, cs = { ldc, 1 };
    dnnl_dims_t ws_ = { 0, 0 };
    if (transB) { ws_[0] = 1; ws_[1] = ldb; }   /* B [N,K]: element (k, n) at n*ldb + k */
    else { ws_[0] = ldb; ws_[1] = 1; }          /* B [K,N]: element (k, n) at k*ldb + n */
    DN(dnnl_memory_desc_init_by_strides(&a, 2, ad, t, as));
    DN(dnnl_memory_desc_init_by_strides(&w, 2, wd, t, ws_));
    DN(dnnl_memory_desc_init_by_strides(&c, 2, cd, dnnl_f32, cs));
    dnnl_matmul_desc_t md;
    DN(dnnl_matmul_desc_init(&md, &a, &w, NULL, &c));
    dnnl_primitive_attr_t attr;
    DN(dnnl_primitive_attr_create(&attr));
    if (alpha != 1.0f) DN(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha));
    if (beta != 0.0f) {
        dnnl_post_ops_t po;
        DN(dnnl_post_ops_create(&po));
        DN(dnnl_post_ops_append_sum(po, beta));
        DN(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, S.eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) {
        if (probe) return NULL;
        DIE("oneDNN has no %s matmul for M=%d N=%d K=%d (status %d)", bf16 ? "bf16" : "f32", M, N, K, (int)st);
    }
    return pd;
}

static const char *pd_impl(dnnl_primitive_desc_t pd)
{
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s) return "?";
    return s;
}

static mm_entry *lookup(int bf16, int transB, int M, int N, int K, int lda, int ldb, int ldc, float alpha, float beta)
{
    mm_entry *free_e = NULL, *old = &S.cache[0];
    S.tick++;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        mm_entry *e = &S.cache[i];
        if (!e->used) { if (!free_e) free_e = e; continue; }
        if (e->bf16 == bf16 && e->transB == transB && e->M == M && e->N == N && e->K == K && e->lda == lda &&
            e->ldb == ldb && e->ldc == ldc && e->alpha == alpha && e->beta == beta) {
            e->last = S.tick;
            return e;
        }
        if (e->last < old->last) old = e;
    }
    mm_entry *e = free_e ? free_e : old;
    entry_free(e);
    dnnl_primitive_desc_t pd = make_pd(bf16, transB, M, N, K, lda, ldb, ldc, alpha, beta, 0);
    DN(dnnl_primitive_create(&e->prim, pd));
    const dnnl_memory_desc_t *sm = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wm = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dm = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    DN(dnnl_memory_create(&e->src, sm, S.eng, DNNL_MEMORY_NONE));
    DN(dnnl_memory_create(&e->wei, wm, S.eng, DNNL_MEMORY_NONE));
    DN(dnnl_memory_create(&e->dst, dm, S.eng, DNNL_MEMORY_NONE));
    dnnl_primitive_desc_destroy(pd);
    e->used = 1; e->bf16 = bf16; e->transB = transB; e->M = M; e->N = N; e->K = K;
    e->lda = lda; e->ldb = ldb; e->ldc = ldc; e->alpha = alpha; e->beta = beta; e->last = S.tick;
    return e;
}

static void run_prim(mm_entry *e, const void *A, const void *B, float *C)
{
    DN(dnnl_memory_set_data_handle(e->src, (void *)A));
    DN(dnnl_memory_set_data_handle(e->wei, (void *)B));
    DN(dnnl_memory_set_data_handle(e->dst, C));
    dnnl_exec_arg_t args[3] = { { DNNL_ARG_SRC, e->src }, { DNNL_ARG_WEIGHTS, e->wei }, { DNNL_ARG_DST, e->dst } };
    DN(dnnl_primitive_execute(e->prim, S.stream, 3, args));
    DN(dnnl_stream_wait(S.stream));
}

/* ---------------------------------------------------------------- configuration */
int mm_configure(compute_mode req, dtype_t stored, int threads, mm_info *out, const char **warn)
{
    mm_release();
    memset(&S.info, 0, sizeof S.info);
    mm_info *m = &S.info;
    m->requested = req;
    cpu_features(m);
    omp_set_num_threads(threads > 0 ? threads : 1);
    engine_up();
    snprintf(m->isa, sizeof m->isa, "%s", isa_name(dnnl_get_effective_cpu_isa()));
    /* probe at a 7B projection shape: does oneDNN multiply bf16 here, and with what? Only when bf16
     * may be chosen: an fp32 job (or auto on a CPU without bf16 instructions) creates no primitive. */
    if (req == COMPUTE_BF16 || (req == COMPUTE_AUTO && (m->cpu_amx_bf16 || m->cpu_avx512_bf16))) {
        dnnl_primitive_desc_t pd = make_pd(1, 1, 128, 4096, 4096, 4096, 4096, 4096, 1.0f, 0.0f, 1);
        m->onednn_bf16 = pd != NULL;
        m->native = m->onednn_bf16 && (m->cpu_amx_bf16 || m->cpu_avx512_bf16);
        if (!pd) pd = make_pd(0, 1, 128, 4096, 4096, 4096, 4096, 4096, 1.0f, 0.0f, 0);
        snprintf(m->impl, sizeof m->impl, "%s", pd_impl(pd));
        dnnl_primitive_desc_destroy(pd);
    } else {
        snprintf(m->impl, sizeof m->impl, "none (no bf16 product)");
    }
    const char *hw = m->cpu_amx_bf16 ? "AMX-BF16" : m->cpu_avx512_bf16 ? "AVX512-BF16" : NULL;
    if (warn) *warn = NULL;
    if (req == COMPUTE_FP32) {
        m->mode = COMPUTE_FP32;
        snprintf(m->reason, sizeof m->reason, "fp32 requested");
    } else if (req == COMPUTE_BF16) {
        m->mode = COMPUTE_BF16;
        if (m->native)
            snprintf(m->reason, sizeof m->reason, "bf16 requested; the CPU has %s (oneDNN %s)", hw, m->impl);
        else {
            snprintf(m->reason, sizeof m->reason, "bf16 requested on a CPU without native bf16 dot products (oneDNN ISA %s): %s",
                     m->isa, m->onednn_bf16 ? "oneDNN emulates bf16" : "bf16-rounded operands, oneDNN f32 products");
            if (warn) *warn = "--compute bf16 on a CPU without native bf16 (AMX-BF16 or AVX512-BF16): bf16 numerics are emulated (bf16-rounded operands, fp32 products: no faster than fp32)";
        }
    } else if (!m->native) {
        m->mode = COMPUTE_FP32;
        snprintf(m->reason, sizeof m->reason, "auto: no native bf16 dot products on this CPU (oneDNN ISA %s)", m->isa);
    } else if (stored != DT_BF16) {
        m->mode = COMPUTE_FP32;
        snprintf(m->reason, sizeof m->reason, "auto: the checkpoint stores %s, not bf16", dtype_name(stored));
    } else {
        m->mode = COMPUTE_BF16;
        snprintf(m->reason, sizeof m->reason, "auto: bf16 checkpoint and %s (oneDNN %s)", hw, m->impl);
    }
    S.configured = 1;
    if (out) *out = *m;
    return 0;
}

const mm_info *mm_current(void)
{
    if (!S.configured) { S.info.requested = COMPUTE_FP32; S.info.mode = COMPUTE_FP32; }
    return &S.info;
}

int mm_bf16(void) { return S.configured && S.info.mode == COMPUTE_BF16; }

/* ---------------------------------------------------------------- rounding */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* 8 floats to bf16 (round to nearest even) as the upper halves of 8 floats; NaN stays NaN (quieted) */
__attribute__((target("avx2"))) static void round_bf16_avx2(const float *s, float *d, size_t n)
{
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), hi = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000), qbit = _mm256_set1_epi32(0x00400000);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(u, qbit), nan);
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_and_si256(r, hi));
    }
    for (; i < n; i++) d[i] = bf16_to_f32(f32_to_bf16(s[i]));
}
__attribute__((target("avx2"))) static void pack_bf16_avx2(const float *restrict s, uint16_t *restrict d, size_t n)
{
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000), qbit = _mm256_set1_epi32(0x00400000);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r2[2];
        for (int h = 0; h < 2; h++) {
            __m256i u = _mm256_loadu_si256((const __m256i *)(s + i + 8 * h));
            __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
            r2[h] = _mm256_srli_epi32(_mm256_blendv_epi8(r, _mm256_or_si256(u, qbit), nan), 16);
        }
        /* packus works per 128-bit lane: fix the order with a 64-bit permute */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r2[0], r2[1]), 0xd8);
        _mm256_storeu_si256((__m256i *)(d + i), p);
    }
    for (; i < n; i++) d[i] = f32_to_bf16(s[i]);
}
static int have_avx2(void)
{
    static int v = -1;
    if (v < 0) { __builtin_cpu_init(); v = __builtin_cpu_supports("avx2"); }
    return v;
}
#else
static int have_avx2(void) { return 0; }
static void round_bf16_avx2(const float *s, float *d, size_t n) { (void)s; (void)d; (void)n; }
static void pack_bf16_avx2(const float *s, uint16_t *d, size_t n) { (void)s; (void)d; (void)n; }
#endif

void round_bf16_f32(const float *src, float *dst, size_t n)
{
    if (have_avx2()) { round_bf16_avx2(src, dst, n); return; }
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
}

void pack_bf16(const float *src, uint16_t *dst, size_t n)
{
    if (have_avx2()) { pack_bf16_avx2(src, dst, n); return; }
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

/* rows x cols of src (ld) into dense dst [rows, cols], rounded to bf16: packed (native) or as floats */
static void round_rows(const float *src, int ld, int rows, int cols, float *dst, int packed)
{
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        if (packed) pack_bf16(s, (uint16_t *)dst + (size_t)r * cols, (size_t)cols);
        else round_bf16_f32(s, dst + (size_t)r * cols, (size_t)cols);
    }
}

static void need(const mm_scratch *s, size_t a, size_t b)
{
    if (!s || a > s->a_floats || b > s->b_floats)
        DIE("bf16 operand scratch too small (%zu/%zu floats needed, %zu/%zu there)", a, b,
            s ? s->a_floats : 0, s ? s->b_floats : 0);
}

/* ---------------------------------------------------------------- products */
void mm_gemm(int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc, const mm_scratch *s)
{
    if (M == 0 || N == 0) return;
    if (!mm_bf16()) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                    beta, C, ldc);
        return;
    }
    int packed = S.info.onednn_bf16;
    int brows = transB ? N : K, bcols = transB ? K : N;
    /* packed bf16 takes half a float per element */
    need(s, packed ? ((size_t)M * K + 1) / 2 : (size_t)M * K, packed ? ((size_t)brows * bcols + 1) / 2 : (size_t)brows * bcols);
    round_rows(A, lda, M, K, s->a, packed);
    round_rows(B, ldb, brows, bcols, s->b, packed);
    if (ldc != N && s->c && (size_t)M * N <= s->c_floats) {   /* a dense result, then into place */
        run_prim(lookup(packed, transB, M, N, K, K, bcols, N, alpha, 0.0f), s->a, s->b, s->c);
        for (int i = 0; i < M; i++) {
            float *c = C + (size_t)i * ldc;
            const float *t = s->c + (size_t)i * N;
            if (beta != 0.0f) for (int j = 0; j < N; j++) c[j] += t[j];
            else memcpy(c, t, sizeof(float) * (size_t)N);
        }
        return;
    }
    run_prim(lookup(packed, transB, M, N, K, K, bcols, ldc, alpha, beta), s->a, s->b, C);
}

void mm_linear(int M, int N, int K, const float *x, dtype_t dt, const void *W, int64_t ldw, float beta, float *y,
               int ldy, float *panel, size_t panel_floats, const mm_scratch *s)
{
    if (M == 0 || N == 0) return;
    int bf16 = mm_bf16(), packed = bf16 && S.info.onednn_bf16;
    size_t es = dtype_size(dt);
    if (!bf16 && dt == DT_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, (const float *)W, (int)ldw, beta, y, ldy);
        return;
    }
    const void *A = x;
    if (bf16) {
        need(s, packed ? ((size_t)M * K + 1) / 2 : (size_t)M * K, 0);
        round_rows(x, K, M, K, s->a, packed);
        A = s->a;
        if (packed && dt == DT_BF16 && ldw == K) {   /* the stored weights, in place */
            run_prim(lookup(1, 1, M, N, K, K, (int)ldw, ldy, 1.0f, beta), A, W, y);
            return;
        }
    }
    /* a panel of weight rows at a time: fp32 (fp32 mode, or emulated bf16 with rounded values) or packed bf16 */
    size_t per_row = packed ? ((size_t)K + 1) / 2 : (size_t)K;
    int rows_per = (int)(panel_floats / per_row);
    if (rows_per < 1) DIE("weight rows of %d columns do not fit the %zu-float conversion buffer", K, panel_floats);
    float *tmp = NULL;
    for (int r0 = 0; r0 < N; r0 += rows_per) {
        int nr = N - r0 < rows_per ? N - r0 : rows_per;
        for (int r = 0; r < nr; r++) {
            const char *src = (const char *)W + (size_t)(r0 + r) * (size_t)ldw * es;
            if (packed && dt == DT_BF16) {   /* a column slice of a bf16 weight: its rows, dense */
                memcpy((uint16_t *)panel + (size_t)r * K, src, sizeof(uint16_t) * (size_t)K);
            } else if (packed) {   /* f32/f16 weights to bf16 (bf16 mode on non-bf16 checkpoints) */
                if (!tmp) tmp = xmalloc(sizeof(float) * (size_t)K);
                convert_to_f32(dt, src, tmp, (size_t)K);
                pack_bf16(tmp, (uint16_t *)panel + (size_t)r * K, (size_t)K);
            } else {
                float *d = panel + (size_t)r * K;
                convert_to_f32(dt, src, d, (size_t)K);
                if (bf16 && dt != DT_BF16) round_bf16_f32(d, d, (size_t)K);
            }
        }
        if (!bf16)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nr, K, 1.0f, x, K, panel, K, beta, y + r0, ldy);
        else
            run_prim(lookup(packed, 1, M, nr, K, K, K, ldy, 1.0f, beta), A, panel, y + r0);
    }
    free(tmp);
}

int mm_bf16_raw(int M, int N, int K, const uint16_t *A, const uint16_t *B, int ldb, float *C)
{
    if (!S.configured || !S.info.onednn_bf16) return -1;
    run_prim(lookup(1, 1, M, N, K, K, ldb, N, 1.0f, 0.0f), A, B, C);
    return 0;
}
