/* model_h5.c — parallel HDF5 writer and verifier of pruned checkpoints (see model_h5.h), in the
 * layout of layout.h. The writer checks every HDF5 and IO call (H5_CHECK / DIE); the verifier reads
 * an untrusted file and FAILs naming it and the field, releasing its handles best-effort then. */
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/ckpt/layout.h"
#include "cfsp/ckpt/rawio.h"
#include "cfsp/format/h5util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The tensor checksum: the sum (mod 2^64) over elements of f(position, bits), position = row x
 * full_cols + column in the whole tensor and bits = the element's stored bytes (little-endian,
 * zero-extended). Being a sum of per-position terms, the shares of ranks that wrote different
 * row or column ranges add up to the checksum of the whole tensor, which verify recomputes in one
 * pass. f is one multiply-xorshift-multiply round: any change of one element changes the sum, and
 * it costs about a nanosecond per element scalar, half that with AVX2 (below; the write path hashes
 * every byte it writes). */
static inline uint64_t ck_term(uint64_t pos, uint64_t bits)
{
    uint64_t x = (pos * 0x9e3779b97f4a7c15ULL) ^ (bits + 0x632be59bd9b4e019ULL);
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 31;
    return x * 0x94d049bb133111ebULL;
}

/* one row of es-byte elements starting at position pos (scalar) */
static uint64_t ck_row_scalar(const unsigned char *row, size_t es, int64_t cols, uint64_t pos)
{
    uint64_t h = 0;
    if (es == 2) {
        const uint16_t *v = (const uint16_t *)row;
        for (int64_t c = 0; c < cols; c++) h += ck_term(pos + (uint64_t)c, v[c]);
    } else if (es == 4) {
        const uint32_t *v = (const uint32_t *)row;
        for (int64_t c = 0; c < cols; c++) h += ck_term(pos + (uint64_t)c, v[c]);
    } else {
        for (int64_t c = 0; c < cols; c++) {
            uint64_t bits = 0;
            memcpy(&bits, row + (size_t)c * es, es);
            h += ck_term(pos + (uint64_t)c, bits);
        }
    }
    return h;
}

/* The same sum with AVX2, four 64-bit lanes (the write path hashes every byte it writes: 0.54
 * instead of 0.97-1.35 ns per element here). AVX2 has no 64-bit multiply: x * K (mod 2^64) =
 * lo(x) lo(K) + ((hi(x) lo(K) + lo(x) hi(K)) << 32), three 32x32->64 multiplies; pos * K0
 * advances by 4 K0 per step. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("avx2"))) static inline __m256i mul64c(__m256i x, __m256i klo, __m256i khi)
{
    __m256i lo = _mm256_mul_epu32(x, klo);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(x, 32), klo), _mm256_mul_epu32(x, khi));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}
__attribute__((target("avx2"))) static uint64_t ck_row_avx2(const unsigned char *row, size_t es, int64_t cols, uint64_t pos)
{
    const __m256i k1 = _mm256_set1_epi64x((long long)0x632be59bd9b4e019ULL);
    const __m256i k2lo = _mm256_set1_epi64x((long long)(0xbf58476d1ce4e5b9ULL & 0xffffffffu));
    const __m256i k2hi = _mm256_set1_epi64x((long long)(0xbf58476d1ce4e5b9ULL >> 32));
    const __m256i k3lo = _mm256_set1_epi64x((long long)(0x94d049bb133111ebULL & 0xffffffffu));
    const __m256i k3hi = _mm256_set1_epi64x((long long)(0x94d049bb133111ebULL >> 32));
    const uint64_t K0 = 0x9e3779b97f4a7c15ULL;
    __m256i pk = _mm256_set_epi64x((long long)((pos + 3) * K0), (long long)((pos + 2) * K0), (long long)((pos + 1) * K0), (long long)(pos * K0));
    const __m256i step = _mm256_set1_epi64x((long long)(4 * K0));
    __m256i acc = _mm256_setzero_si256();
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
        __m256i b = es == 2 ? _mm256_cvtepu16_epi64(_mm_loadl_epi64((const __m128i *)(row + (size_t)c * 2)))
                            : _mm256_cvtepu32_epi64(_mm_loadu_si128((const __m128i *)(row + (size_t)c * 4)));
        __m256i x = _mm256_xor_si256(pk, _mm256_add_epi64(b, k1));
        x = mul64c(x, k2lo, k2hi);
        x = _mm256_xor_si256(x, _mm256_srli_epi64(x, 31));
        acc = _mm256_add_epi64(acc, mul64c(x, k3lo, k3hi));
        pk = _mm256_add_epi64(pk, step);
    }
    uint64_t lane[4];
    _mm256_storeu_si256((__m256i *)lane, acc);
    return lane[0] + lane[1] + lane[2] + lane[3] + ck_row_scalar(row + (size_t)c * es, es, cols - c, pos + (uint64_t)c);
}
static int have_avx2(void)
{
    static int v = -1;
    if (v < 0) { __builtin_cpu_init(); v = __builtin_cpu_supports("avx2") ? 1 : 0; }
    return v;
}
#else
static uint64_t ck_row_avx2(const unsigned char *row, size_t es, int64_t cols, uint64_t pos) { return ck_row_scalar(row, es, cols, pos); }
static int have_avx2(void) { return 0; }
#endif

static int g_ck_scalar = 0;                  /* tests: force the scalar loop */
void tensor_checksum_force_scalar(int on) { g_ck_scalar = on; }

uint64_t tensor_checksum(const void *data, size_t es, int64_t rows, int64_t cols, int64_t r0, int64_t c0, int64_t full_cols)
{
    int vec = (es == 2 || es == 4) && !g_ck_scalar && have_avx2();
    uint64_t h = 0;
    if (cols <= 0) return 0;               /* no elements: the empty sum (not a loop over 2^62 empty rows) */
    for (int64_t r = 0; r < rows; r++) {
        uint64_t pos = (uint64_t)(r0 + r) * (uint64_t)full_cols + (uint64_t)c0;
        const unsigned char *row = (const unsigned char *)data + (size_t)r * (size_t)cols * es;
        h += vec ? ck_row_avx2(row, es, cols, pos) : ck_row_scalar(row, es, cols, pos);
    }
    return h;
}

typedef struct {
    hid_t file;
    hid_t *ds;
    uint64_t *sum;          /* this rank's share of each dataset's checksum */
    uint64_t *addr;         /* each dataset's byte offset in the file (raw writes) */
    int n, cap;
    uint64_t bytes;
    raw_writer *raw;        /* NULL: data through H5Dwrite (MPI-IO) */
} writer;

static int add_dataset(writer *wr, const char *path, dtype_t dt, int is_index, int ndims, int64_t d0, int64_t d1)
{
    int64_t dims[2] = { d0, d1 };
    hid_t type = is_index ? H5Tcopy(H5T_STD_I64LE) : h5_dtype(dt);
    H5_CHECK(type);
    hid_t ds = h5_create_dataset(wr->file, path, type, ndims, dims);
    if (!is_index) h5_attr_string(ds, CKPT_A_DTYPE, dtype_name(dt));
    H5_CHECK(H5Tclose(type));
    if (wr->n == wr->cap) {
        wr->cap = wr->cap ? 2 * wr->cap : 64;
        wr->ds = xrealloc(wr->ds, sizeof(hid_t) * (size_t)wr->cap);
        wr->sum = xrealloc(wr->sum, sizeof(uint64_t) * (size_t)wr->cap);
        wr->addr = xrealloc(wr->addr, sizeof(uint64_t) * (size_t)wr->cap);
    }
    wr->addr[wr->n] = 0;
    wr->ds[wr->n] = ds;
    wr->sum[wr->n] = 0;
    return wr->n++;
}

/* write a [rows, cols] block at (r0, c0) of dataset idx (full_cols columns). Raw writes go in
 * panels of about 8 MB: the writer thread writes one while this thread hashes the next. */
static void write_block(writer *wr, int idx, dtype_t dt, int is_index, const void *data, int64_t rows, int64_t cols,
                        int64_t r0, int64_t c0, int64_t full_cols)
{
    if (rows == 0 || cols == 0) return;
    size_t es = is_index ? 8 : dtype_size(dt);
    size_t row_bytes = (size_t)cols * es;
    if (!wr->raw) {
        hid_t type = is_index ? H5Tcopy(H5T_STD_I64LE) : h5_dtype(dt);
        H5_CHECK(type);
        h5_write_block(wr->ds[idx], type, data, r0, c0, rows, cols, es);
        H5_CHECK(H5Tclose(type));
        wr->sum[idx] += tensor_checksum(data, es, rows, cols, r0, c0, full_cols);
    } else {
        CHECK(wr->addr[idx] != UINT64_MAX, "internal: HDF5 dataset %d has no file address", idx);
        int64_t panel = (int64_t)((8u << 20) / row_bytes);
        if (panel < 1) panel = 1;
        for (int64_t r = 0; r < rows; r += panel) {
            int64_t nr = rows - r < panel ? rows - r : panel;
            const char *p = (const char *)data + (size_t)r * row_bytes;
            uint64_t at = wr->addr[idx] + ((uint64_t)(r0 + r) * (uint64_t)full_cols + (uint64_t)c0) * es;
            if (cols == full_cols) raw_write(wr->raw, at, p, (size_t)nr * row_bytes);
            else
                for (int64_t i = 0; i < nr; i++)
                    raw_write(wr->raw, at + (uint64_t)i * (uint64_t)full_cols * es, p + (size_t)i * row_bytes, row_bytes);
            wr->sum[idx] += tensor_checksum(p, es, nr, cols, r0 + r, c0, full_cols);
        }
    }
    wr->bytes += (uint64_t)(rows * cols) * es;
}

/* down_proj columns of n adjacent FFN slices of one block ([D, k_i] each, compact), written as
 * [rows, sum k_i] row panels at column c0 of the [D, k_full] dataset through a bounded buffer */
static void write_down_group(writer *wr, int idx, const unit_weights *us, int n, int64_t c0, int64_t k_full, int D)
{
    dtype_t dt = us[0].down.dtype;
    size_t es = dtype_size(dt);
    int64_t kg = 0;
    for (int s = 0; s < n; s++) kg += us[s].k;
    if (kg == 0) return;
    if (n == 1) { write_block(wr, idx, dt, 0, us[0].down.data, D, kg, 0, c0, k_full); return; }
    size_t row_bytes = (size_t)kg * es;
    int64_t panel = (int64_t)((8u << 20) / row_bytes);
    if (panel < 1) panel = 1;
    if (panel > D) panel = D;
    char *buf = xmalloc(row_bytes * (size_t)panel);
    for (int64_t r0 = 0; r0 < D; r0 += panel) {
        int64_t nr = D - r0 < panel ? D - r0 : panel;
        for (int64_t r = 0; r < nr; r++) {
            char *dst = buf + (size_t)r * row_bytes;
            for (int s = 0; s < n; s++) {
                size_t b = (size_t)us[s].k * es;
                memcpy(dst, (const char *)us[s].down.data + (size_t)(r0 + r) * (size_t)us[s].down.ld * es, b);
                dst += b;
            }
        }
        write_block(wr, idx, dt, 0, buf, nr, kg, r0, c0, k_full);
    }
    free(buf);
}

/* a whole tensor from a (possibly strided) matrix */
static void write_wmat(writer *wr, int idx, const wmat *m)
{
    if (m->ld == m->cols) { write_block(wr, idx, m->dtype, 0, m->data, m->rows, m->cols, 0, 0, m->cols); return; }
    DIE("internal: strided matrix written whole");
}

static void write_norm(writer *wr, int idx, const float *v, int D, dtype_t dt)
{
    void *buf = xmalloc((size_t)D * dtype_size(dt));
    ckpt_store_f32(dt, v, buf, (size_t)D);
    write_block(wr, idx, dt, 0, buf, D, 1, 0, 0, 1);
    free(buf);
}

/* the dtype of the source checkpoint's tensor kind (of block l): the pruned one keeps it */
static dtype_t src_dtype(const st_model *st, ckpt_kind kind, int l)
{
    char n[256];
    ckpt_tensor_name(kind, l, n, sizeof n);
    const st_tensor *t = st_find(st, n);
    return t ? t->dtype : DT_F32;
}

/* create the dataset of tensor kind (of block l, m FFN channels) in the layout; its index */
static int add_tensor(writer *wr, const model_config *c, ckpt_kind kind, int l, int64_t m, dtype_t dt)
{
    char name[256], path[256];
    int64_t dims[2];
    ckpt_tensor_name(kind, l, name, sizeof name);
    ckpt_dataset_path(name, path, sizeof path);
    int nd = ckpt_tensor_shape(c, kind, m, dims);
    return add_dataset(wr, path, dt, kind == CK_KEPT, nd, dims[0], dims[1]);
}

static char *pruned_config_json(const model_config *c, const int *counts)
{
    cJSON *j = cJSON_Parse(c->source_json);
    if (!j) j = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    for (int l = 0; l < c->n_layers; l++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(counts[l]));
    cJSON_DeleteItemFromObject(j, CKPT_CONFIG_FFN_SIZES);
    cJSON_AddItemToObject(j, CKPT_CONFIG_FFN_SIZES, arr);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

uint64_t model_h5_write(const char *path, const model_out *mo, double *seconds, char *io_mode, size_t io_mode_cap)
{
    const model_config *c = mo->cfg;
    const rank_weights *w = mo->w;
    int rank = cfsp_rank(), P = cfsp_nranks(), L = c->n_layers, D = c->hidden;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double t0 = now_seconds();

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    H5_CHECK(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    H5_CHECK(H5Pset_all_coll_metadata_ops(fapl, 1));
    H5_CHECK(H5Pset_coll_metadata_write(fapl, 1));
    if (mo->write_io != WRITE_IO_MPIIO) H5_CHECK(H5Pset_alignment(fapl, 65536, raw_alignment()));
    writer wr = { 0 };
    wr.file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (wr.file < 0) DIE("%s: cannot create the HDF5 output file", path);
    H5_CHECK(H5Pclose(fapl));

    /* collective metadata: every rank creates every dataset, in the same order (a block's in
     * ckpt_kind order); dsi[l * CK_NBLOCK + kind] is the dataset of block l's tensor kind (-1: none) */
    int *dsi = xmalloc(sizeof(int) * (size_t)L * CK_NBLOCK);
    for (int l = 0; l < L; l++) {
        for (ckpt_kind kd = CK_LN1; kd < CK_NBLOCK; kd++) {
            int *slot = &dsi[(size_t)l * CK_NBLOCK + kd];
            *slot = -1;
            if (kd == CK_BIAS ? !mo->bias : !ckpt_kind_in_block(c, kd)) continue;
            /* every tensor in its own stored dtype (checkpoints mix them: f32 norms beside bf16 matrices) */
            dtype_t dt = kd == CK_BIAS || kd == CK_KEPT ? DT_F32 : src_dtype(mo->st, kd, l);
            *slot = add_tensor(&wr, c, kd, l, mo->counts[l], dt);
        }
    }
    int i_embed = add_tensor(&wr, c, CK_EMBED, 0, 0, src_dtype(mo->st, CK_EMBED, 0));
    int i_norm = add_tensor(&wr, c, CK_NORM, 0, 0, src_dtype(mo->st, CK_NORM, 0));
    int i_head = c->tie_embeddings ? -1 : add_tensor(&wr, c, CK_HEAD, 0, 0, src_dtype(mo->st, CK_HEAD, 0));
    int64_t dL[1] = { L };
    hid_t d_imp = h5_create_dataset(wr.file, CKPT_DS_IMPORTANCE, H5T_IEEE_F64LE, 1, dL);
    hid_t d_keep = h5_create_dataset(wr.file, CKPT_DS_KEEP_FRACTION, H5T_IEEE_F64LE, 1, dL);
    hid_t d_m = h5_create_dataset(wr.file, CKPT_DS_FFN_SIZES, H5T_STD_I64LE, 1, dL);

    /* raw writes: every dataset's place in the file, then this rank's own descriptor(s) */
    if (mo->write_io != WRITE_IO_MPIIO) {
        for (int i = 0; i < wr.n; i++) {
            haddr_t a = H5Dget_offset(wr.ds[i]);
            wr.addr[i] = a == HADDR_UNDEF ? UINT64_MAX : (uint64_t)a;   /* undefined only for empty datasets */
        }
        /* the metadata on the disk before the first raw byte: when a raw write then fails (disk
         * full), the ranks end in cfsp_sync and MPI_Finalize closes the file with nothing left to
         * flush. Dirty metadata would be written then, fail on the full disk on one rank, and
         * parallel HDF5's close would wait forever in mismatched collectives. */
        H5_CHECK(H5Fflush(wr.file, H5F_SCOPE_GLOBAL));
        wr.raw = raw_open(path, mo->write_io == WRITE_IO_DIRECT);
    }

    /* data: each rank its own units */
    int nu = w->last_unit - w->first_unit;
    for (int i = 0; i < nu; i++) {
        const unit_weights *u = &mo->units[i];
        const int *d = dsi + (size_t)u->layer * CK_NBLOCK;
        int k = mo->counts[u->layer], ofs = mo->kofs[w->first_unit + i];
        if (u->slice < 0) {
            write_norm(&wr, d[CK_LN1], u->ln, D, u->ln_dtype);
            write_wmat(&wr, d[CK_Q], &u->q);
            write_wmat(&wr, d[CK_K], &u->k_proj);
            write_wmat(&wr, d[CK_V], &u->v);
            write_wmat(&wr, d[CK_O], &u->o);
            const float *xv[5] = { u->qb, u->kb, u->vb, u->qn, u->kn };
            for (ckpt_kind kd = CK_QB; kd <= CK_KN; kd++) {
                if (d[kd] < 0) continue;
                int64_t dims[2];
                ckpt_tensor_shape(c, kd, 0, dims);
                write_norm(&wr, d[kd], xv[kd - CK_QB], (int)dims[0], u->extra_dtype[kd - CK_QB]);
            }
        } else {
            if (u->slice == 0) write_norm(&wr, d[CK_LN2], u->ln, D, u->ln_dtype);
            write_block(&wr, d[CK_GATE], u->gate.dtype, 0, u->gate.data, u->k, D, ofs, 0, D);
            write_block(&wr, d[CK_UP], u->up.dtype, 0, u->up.data, u->k, D, ofs, 0, D);
            write_block(&wr, d[CK_KEPT], DT_F32, 1, mo->kept[i], u->k, 1, ofs, 0, 1);
            /* down_proj [D, k]: the rank's slices of this block are adjacent column ranges; after
             * the last of them, write them together as whole row panels (one contiguous file range
             * when the rank holds the block's every slice, instead of D small strided writes each) */
            int g0 = i;
            while (g0 > 0 && mo->units[g0 - 1].slice >= 0 && mo->units[g0 - 1].layer == u->layer) g0--;
            if (i + 1 == nu || mo->units[i + 1].slice < 0 || mo->units[i + 1].layer != u->layer)
                write_down_group(&wr, d[CK_DOWN], &mo->units[g0], i + 1 - g0, mo->kofs[w->first_unit + g0], k, D);
        }
        if (cfsp_fault("kill", "write")) raise(SIGKILL);   /* test hook (err.h) */
    }
    if (rank == 0 && mo->bias)
        for (int l = 0; l < L; l++) write_block(&wr, dsi[(size_t)l * CK_NBLOCK + CK_BIAS], DT_F32, 0, mo->bias + (size_t)l * D, D, 1, 0, 0, 1);
    if (rank == 0) write_wmat(&wr, i_embed, &w->embed);
    if (rank == P - 1) {
        write_norm(&wr, i_norm, w->final_norm, D, w->final_norm_dtype);
        if (i_head >= 0) write_wmat(&wr, i_head, &w->lm_head);
    }
    char mode[200] = "mpiio";
    /* every raw byte written and on the device; a write error (disk full, EIO) on any rank ends the
     * job on every rank with the lowest failing rank's one line (cfsp_sync; the caller's temporary
     * files are removed) before any collective HDF5 call could wait for a failed rank */
    cfsp_sync(wr.raw ? raw_close(wr.raw, mode, sizeof mode) : 0);
    if (io_mode) snprintf(io_mode, io_mode_cap, "%s", mode);
    if (rank == 0) {
        int64_t *m = xmalloc(sizeof(int64_t) * (size_t)L);
        for (int l = 0; l < L; l++) m[l] = mo->counts[l];
        H5_CHECK(H5Dwrite(d_imp, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mo->importance));
        H5_CHECK(H5Dwrite(d_keep, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mo->keep_fraction));
        H5_CHECK(H5Dwrite(d_m, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, m));
        free(m);
    }
    H5_CHECK(H5Dclose(d_imp));
    H5_CHECK(H5Dclose(d_keep));
    H5_CHECK(H5Dclose(d_m));

    /* checksums: every rank's shares add up exactly (mod 2^64); all ranks write the attributes */
    uint64_t *all = xmalloc(sizeof(uint64_t) * (size_t)wr.n);
    MPI_CHECK(MPI_Allreduce(wr.sum, all, wr.n, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    uint64_t file_sum = FNV1A64_INIT;
    for (int i = 0; i < wr.n; i++) {
        h5_attr_u64(wr.ds[i], CKPT_A_CHECKSUM, all[i]);
        file_sum = fnv1a64(file_sum, &all[i], sizeof all[i]);
        H5_CHECK(H5Dclose(wr.ds[i]));
    }
    hid_t root = H5Gopen2(wr.file, "/", H5P_DEFAULT);
    H5_CHECK(root);
    h5_attr_string(root, CKPT_A_FORMAT, CKPT_FORMAT);
    h5_attr_string(root, CKPT_A_METHOD, mo->method);
    h5_attr_double(root, CKPT_A_RATIO, mo->ratio);
    h5_attr_string(root, CKPT_A_OPTIONS, mo->options_json);
    char *cj = pruned_config_json(c, mo->counts);
    h5_attr_string(root, CKPT_A_CONFIG, cj);
    free(cj);
    h5_attr_i64(root, CKPT_A_NUM_TENSORS, wr.n);
    h5_attr_u64(root, CKPT_A_FILE_CHECKSUM, file_sum);
    H5_CHECK(H5Gclose(root));
    if (H5Fclose(wr.file) < 0) DIE("%s: closing the HDF5 file failed", path);
    {                                     /* durable before it can be renamed into place: every rank, */
        int fd = open(path, O_RDONLY);    /* as on a parallel file system its metadata writes are its own */
        if (fd < 0 || fsync(fd) != 0 || close(fd) != 0) DIE("%s: syncing to the device failed: %s", path, strerror(errno));
    }
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    if (seconds) *seconds = now_seconds() - t0;
    uint64_t bytes = wr.bytes;
    free(all); free(wr.ds); free(wr.sum); free(wr.addr); free(dsi);
    return bytes;
}

typedef struct {
    const char *path;
    int checked, bad;
    int failed;             /* verify_one recorded a FAIL and stopped the visit */
    hsize_t file_size;      /* no tensor's data can be larger */
} verify_ctx;

/* H5Ovisit callback: the checksum of one dataset that carries one. A dataset whose data cannot be
 * read counts as bad (one line, like a mismatch); an unreadable checksum attribute or a dataset
 * that is no tensor stops the visit with a FAIL. */
static herr_t verify_one(hid_t loc, const char *name, const H5O_info_t *info, void *opdata)
{
    verify_ctx *v = opdata;
    if (info->type != H5O_TYPE_DATASET) return 0;
    char where[4400];
    snprintf(where, sizeof where, "%s: dataset /%s", v->path, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) { v->failed = 1; return FAIL("%s: cannot open", where); }
    if (H5Aexists(ds, CKPT_A_CHECKSUM) <= 0) { H5_CHECK(H5Dclose(ds)); return 0; }
    uint64_t want = 0;
    if (h5_attr_read_num(ds, where, CKPT_A_CHECKSUM, H5T_NATIVE_UINT64, &want)) { H5Dclose(ds); v->failed = 1; return -1; }
    hid_t type = H5Dget_type(ds), sp = H5Dget_space(ds);
    hsize_t dims[2] = { 1, 1 };
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    size_t es = type < 0 ? 0 : H5Tget_size(type);
    int rc = 0;
    if (nd < 0 || nd > 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0)
        rc = FAIL("%s: %d dimensions, expected a tensor of 1 or 2", where, nd);
    else if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || es < 1 || es > 8)
        rc = FAIL("%s: carries a checksum but is not a tensor of 1- to 8-byte numbers", where);
    hsize_t fsize = v->file_size;
    /* the data can be no larger than the file (contiguous, uncompressed, as cfsp-mpi writes it):
     * a shape claiming more is refused before anything is allocated or read */
    if (!rc && dims[0] && (nd == 2 ? dims[1] : 1) && ((dims[0] > UINT64_MAX / (nd == 2 ? dims[1] : 1)) ||
                                                     dims[0] * (nd == 2 ? dims[1] : 1) > fsize / es))
        rc = FAIL("%s: a [%llu, %llu] tensor of %zu-byte numbers is larger than the file (%llu bytes)", where,
                  (unsigned long long)dims[0], (unsigned long long)(nd == 2 ? dims[1] : 1), es, (unsigned long long)fsize);
    if (!rc) {
        int64_t rows = (int64_t)dims[0], cols = nd == 2 ? (int64_t)dims[1] : 1;
        void *buf = xmalloc((size_t)(rows * cols) * es + 1);
        if (H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            fprintf(stderr, "cfsp-mpi: verify: /%s: data unreadable (truncated or damaged file?)\n", name);
            v->bad++;
        } else {
            uint64_t got = tensor_checksum(buf, es, rows, cols, 0, 0, cols);
            if (got != want) {
                fprintf(stderr, "cfsp-mpi: verify: /%s: checksum mismatch (stored %016llx, data %016llx)\n", name,
                        (unsigned long long)want, (unsigned long long)got);
                v->bad++;
            }
        }
        v->checked++;
        free(buf);
    }
    if (type >= 0) H5_CHECK(H5Tclose(type));
    if (sp >= 0) H5_CHECK(H5Sclose(sp));
    H5_CHECK(H5Dclose(ds));
    if (rc) v->failed = 1;
    return rc;
}

int model_h5_verify(const char *path)
{
    h5_quiet();
    if (input_check(path, NULL)) return -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: not an HDF5 file (or unreadable)", path);
    int64_t ntens = -1;
    if (H5Aexists(f, CKPT_A_NUM_TENSORS) > 0 && h5_attr_read_i64(f, path, CKPT_A_NUM_TENSORS, &ntens)) { H5Fclose(f); return -1; }
    verify_ctx v = { path, 0, 0, 0, 0 };
    if (H5Fget_filesize(f, &v.file_size) < 0) { H5Fclose(f); return FAIL("%s: cannot read the file's size", path); }
    if (H5Ovisit(f, H5_INDEX_NAME, H5_ITER_NATIVE, verify_one, &v) < 0) {
        H5Fclose(f);
        return v.failed ? -1 : FAIL("%s: cannot read the file's objects", path);
    }
    H5_CHECK(H5Fclose(f));
    if (ntens < 0) return FAIL("%s: no '" CKPT_A_NUM_TENSORS "' attribute: not a complete cfsp-mpi output", path);
    if (v.checked != ntens) return FAIL("%s: %d tensors carry checksums, the file records %lld", path, v.checked, (long long)ntens);
    if (v.bad) return FAIL("%s: %d of %d tensors fail their checksum", path, v.bad, v.checked);
    printf("%s: OK, %d tensors, all checksums match\n", path, v.checked);
    return 0;
}
