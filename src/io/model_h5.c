/* model_h5.c — parallel HDF5 writer and verifier of pruned checkpoints (see model_h5.h). */
#include "cfsp/model_h5.h"
#include "cfsp/err.h"
#include "cfsp/h5util.h"
#include "cfsp/util.h"
#include <cjson/cJSON.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

typedef struct {
    hid_t ds;
    int owner;               /* rank that writes the data */
    uint64_t checksum;
} dset_rec;

typedef struct {
    hid_t file;
    dset_rec *d;
    int n, cap;
    uint64_t bytes;
} writer;

static int add_dataset(writer *wr, const char *path, dtype_t dt, int is_index, int ndims, int64_t d0, int64_t d1, int owner)
{
    int64_t dims[2] = { d0, d1 };
    hid_t type = is_index ? H5Tcopy(H5T_STD_I64LE) : h5_dtype(dt);
    H5_CHECK(type);
    hid_t ds = h5_create_dataset(wr->file, path, type, ndims, dims);
    if (!is_index) h5_attr_string(ds, "dtype", dtype_name(dt));
    H5Tclose(type);
    if (wr->n == wr->cap) { wr->cap = wr->cap ? 2 * wr->cap : 64; wr->d = xrealloc(wr->d, sizeof(dset_rec) * (size_t)wr->cap); }
    wr->d[wr->n].ds = ds;
    wr->d[wr->n].owner = owner;
    wr->d[wr->n].checksum = 0;
    return wr->n++;
}

static void write_raw(writer *wr, int idx, dtype_t dt, int is_index, const void *data, int64_t rows, int64_t cols)
{
    hid_t type = is_index ? H5Tcopy(H5T_STD_I64LE) : h5_dtype(dt);
    size_t es = is_index ? 8 : dtype_size(dt);
    h5_write_rows(wr->d[idx].ds, type, data, 0, rows, cols, es);
    H5Tclose(type);
    wr->d[idx].checksum = fnv1a64(FNV1A64_INIT, data, (size_t)(rows * cols) * es);
    wr->bytes += (uint64_t)(rows * cols) * es;
}

static void write_wmat(writer *wr, int idx, const wmat *m) { write_raw(wr, idx, m->dtype, 0, m->data, m->rows, m->cols); }

static void write_norm(writer *wr, int idx, const float *v, int D, dtype_t dt)
{
    void *buf = xmalloc((size_t)D * dtype_size(dt));
    for (int i = 0; i < D; i++) {
        if (dt == DT_F32) ((float *)buf)[i] = v[i];
        else if (dt == DT_BF16) ((uint16_t *)buf)[i] = f32_to_bf16(v[i]);
        else ((uint16_t *)buf)[i] = f32_to_f16(v[i]);
    }
    write_raw(wr, idx, dt, 0, buf, D, 1);
    free(buf);
}

static char *pruned_config_json(const model_config *c, const int *counts)
{
    cJSON *j = cJSON_Parse(c->source_json);
    if (!j) j = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    for (int l = 0; l < c->n_layers; l++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(counts[l]));
    cJSON_DeleteItemFromObject(j, "intermediate_sizes");
    cJSON_AddItemToObject(j, "intermediate_sizes", arr);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* Test hook (documented in README, used by tests/py/test_kill.py): CFSP_FAULT=kill:R:write makes
 * rank R kill itself with SIGKILL in the middle of writing its tensor data. */
static void fault_point(const char *where)
{
    const char *f = getenv("CFSP_FAULT");
    int r = -1;
    char w[32];
    if (f && sscanf(f, "kill:%d:%31s", &r, w) == 2 && r == cfsp_rank() && !strcmp(w, where)) raise(SIGKILL);
}

uint64_t model_h5_write(const char *tmp, const model_out *mo, double *seconds)
{
    const model_config *c = mo->cfg;
    const rank_weights *w = mo->w;
    int rank = cfsp_rank(), P = cfsp_nranks(), L = c->n_layers, D = c->hidden;
    int64_t Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double t0 = now_seconds();

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    H5_CHECK(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    H5_CHECK(H5Pset_all_coll_metadata_ops(fapl, 1));
    H5_CHECK(H5Pset_coll_metadata_write(fapl, 1));
    writer wr = { 0 };
    wr.file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (wr.file < 0) DIE("%s: cannot create the HDF5 output file", tmp);
    H5Pclose(fapl);

    /* collective metadata: every rank creates every dataset, in the same order */
    int *owner = xmalloc(sizeof(int) * (size_t)L);
    for (int r = 0; r < P; r++)
        for (int l = mo->map->first[r]; l < mo->map->first[r + 1]; l++) owner[l] = r;
    const block_weights *any = NULL;
    int mine0 = w->first_block;
    (void)any;
    int *first_idx = xmalloc(sizeof(int) * (size_t)L);
    char p[256];
    for (int l = 0; l < L; l++) {
        int o = owner[l], k = mo->counts[l];
        /* the dtypes of block l are known on its owner only: agree on them */
        int dts[3] = { 0, 0, 0 };
        if (rank == o) {
            const block_weights *b = &mo->blocks[l - mine0];
            dts[0] = b->ln_dtype; dts[1] = b->q.dtype; dts[2] = b->gate.dtype;
        }
        MPI_CHECK(MPI_Bcast(dts, 3, MPI_INT, o, MPI_COMM_WORLD));
        int has_bias = rank == o ? mo->blocks[l - mine0].down_bias != NULL : 0;
        MPI_CHECK(MPI_Bcast(&has_bias, 1, MPI_INT, o, MPI_COMM_WORLD));
        dtype_t ln = (dtype_t)dts[0], at = (dtype_t)dts[1], ff = (dtype_t)dts[2];
#define DS(name, dt, idx, nd, a, b) (snprintf(p, sizeof p, "/model/layers/%d/%s", l, name), add_dataset(&wr, p, dt, idx, nd, a, b, o))
        first_idx[l] = DS("input_layernorm/weight", ln, 0, 1, D, 0);
        DS("post_attention_layernorm/weight", ln, 0, 1, D, 0);
        DS("self_attn/q_proj/weight", at, 0, 2, Q, D);
        DS("self_attn/k_proj/weight", at, 0, 2, KV, D);
        DS("self_attn/v_proj/weight", at, 0, 2, KV, D);
        DS("self_attn/o_proj/weight", at, 0, 2, D, Q);
        DS("mlp/gate_proj/weight", ff, 0, 2, k, D);
        DS("mlp/up_proj/weight", ff, 0, 2, k, D);
        DS("mlp/down_proj/weight", ff, 0, 2, D, k);
        DS("mlp/kept_channels", ff, 1, 1, k, 0);
        if (has_bias) DS("mlp/down_proj/bias", DT_F32, 0, 1, D, 0);
#undef DS
    }
    int dts[3] = { w->has_embed ? (int)w->embed.dtype : 0, w->has_head ? (int)w->final_norm_dtype : 0,
                   w->has_head ? (int)w->lm_head.dtype : 0 };
    MPI_CHECK(MPI_Bcast(&dts[0], 1, MPI_INT, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Bcast(&dts[1], 2, MPI_INT, P - 1, MPI_COMM_WORLD));
    int i_embed = add_dataset(&wr, "/model/embed_tokens/weight", (dtype_t)dts[0], 0, 2, c->vocab, D, 0);
    int i_norm = add_dataset(&wr, "/model/norm/weight", (dtype_t)dts[1], 0, 1, D, 0, P - 1);
    int i_head = c->tie_embeddings ? -1 : add_dataset(&wr, "/lm_head/weight", (dtype_t)dts[2], 0, 2, c->vocab, D, P - 1);
    int64_t dL[1] = { L };
    hid_t d_imp = h5_create_dataset(wr.file, "/cfsp/importance", H5T_IEEE_F64LE, 1, dL);
    hid_t d_keep = h5_create_dataset(wr.file, "/cfsp/keep_fraction", H5T_IEEE_F64LE, 1, dL);
    hid_t d_m = h5_create_dataset(wr.file, "/cfsp/intermediate_sizes", H5T_STD_I64LE, 1, dL);

    /* data: each rank its own */
    for (int l = w->first_block; l < w->last_block; l++) {
        const block_weights *b = &mo->blocks[l - mine0];
        int i = first_idx[l];
        write_norm(&wr, i++, b->ln1, D, b->ln_dtype);
        write_norm(&wr, i++, b->ln2, D, b->ln_dtype);
        write_wmat(&wr, i++, &b->q);
        write_wmat(&wr, i++, &b->k);
        write_wmat(&wr, i++, &b->v);
        write_wmat(&wr, i++, &b->o);
        write_wmat(&wr, i++, &b->gate);
        write_wmat(&wr, i++, &b->up);
        write_wmat(&wr, i++, &b->down);
        write_raw(&wr, i++, DT_F32, 1, mo->kept[l - mine0], b->ffn, 1);
        if (b->down_bias) write_raw(&wr, i++, DT_F32, 0, b->down_bias, D, 1);
        fault_point("write");
    }
    if (rank == 0) write_wmat(&wr, i_embed, &w->embed);
    if (rank == P - 1) {
        write_norm(&wr, i_norm, w->final_norm, D, w->final_norm_dtype);
        if (i_head >= 0) write_wmat(&wr, i_head, &w->lm_head);
    }
    if (rank == 0) {
        int64_t *m = xmalloc(sizeof(int64_t) * (size_t)L);
        for (int l = 0; l < L; l++) m[l] = mo->counts[l];
        H5_CHECK(H5Dwrite(d_imp, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mo->importance));
        H5_CHECK(H5Dwrite(d_keep, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mo->keep_fraction));
        H5_CHECK(H5Dwrite(d_m, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, m));
        free(m);
    }
    H5Dclose(d_imp);
    H5Dclose(d_keep);
    H5Dclose(d_m);

    /* checksums: owners computed them; every rank learns all and writes the attributes collectively */
    uint64_t *cs = xcalloc((size_t)wr.n, sizeof(uint64_t)), *all = xmalloc(sizeof(uint64_t) * (size_t)wr.n);
    for (int i = 0; i < wr.n; i++) if (wr.d[i].owner == rank) cs[i] = wr.d[i].checksum;
    MPI_CHECK(MPI_Allreduce(cs, all, wr.n, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    uint64_t file_sum = FNV1A64_INIT;
    for (int i = 0; i < wr.n; i++) {
        h5_attr_u64(wr.d[i].ds, "fnv1a64", all[i]);
        file_sum = fnv1a64(file_sum, &all[i], sizeof all[i]);
        H5Dclose(wr.d[i].ds);
    }
    hid_t root = H5Gopen2(wr.file, "/", H5P_DEFAULT);
    H5_CHECK(root);
    h5_attr_string(root, "format", MODEL_H5_FORMAT);
    h5_attr_string(root, "method", mo->method);
    h5_attr_double(root, "ratio", mo->ratio);
    h5_attr_string(root, "options", mo->options_json);
    char *cj = pruned_config_json(c, mo->counts);
    h5_attr_string(root, "config", cj);
    free(cj);
    h5_attr_i64(root, "num_tensors", wr.n);
    h5_attr_u64(root, "tensor_checksum", file_sum);
    H5Gclose(root);
    if (H5Fclose(wr.file) < 0) DIE("%s: closing the HDF5 file failed", tmp);
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    if (seconds) *seconds = now_seconds() - t0;
    free(cs); free(all); free(wr.d); free(owner); free(first_idx);
    return wr.bytes;
}

typedef struct { int checked, bad; uint64_t sum; } verify_ctx;

static herr_t verify_one(hid_t loc, const char *name, const H5O_info_t *info, void *opdata)
{
    verify_ctx *v = opdata;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    if (H5Aexists(ds, "fnv1a64") <= 0) { H5Dclose(ds); return 0; }
    uint64_t want = 0;
    hid_t a = H5Aopen(ds, "fnv1a64", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_UINT64, &want);
    H5Aclose(a);
    hid_t type = H5Dget_type(ds), sp = H5Dget_space(ds);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    size_t es = H5Tget_size(type);
    void *buf = xmalloc((size_t)n * es);
    int ok = H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
    uint64_t got = fnv1a64(FNV1A64_INIT, buf, (size_t)n * es);
    if (!ok || got != want) {
        fprintf(stderr, "cfsp-mpi: verify: /%s: checksum mismatch (stored %016llx, data %016llx)\n", name,
                (unsigned long long)want, (unsigned long long)got);
        v->bad++;
    }
    v->checked++;
    free(buf);
    H5Tclose(type);
    H5Sclose(sp);
    H5Dclose(ds);
    return 0;
}

int model_h5_verify(const char *path)
{
    h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: not an HDF5 file (or unreadable)", path);
    int64_t ntens = -1;
    if (H5Aexists(f, "num_tensors") > 0) {
        hid_t a = H5Aopen(f, "num_tensors", H5P_DEFAULT);
        H5Aread(a, H5T_NATIVE_INT64, &ntens);
        H5Aclose(a);
    }
    verify_ctx v = { 0, 0, 0 };
    if (H5Ovisit(f, H5_INDEX_NAME, H5_ITER_NATIVE, verify_one, &v) < 0) { H5Fclose(f); return FAIL("%s: cannot read the file's objects", path); }
    H5Fclose(f);
    if (ntens < 0) return FAIL("%s: no 'num_tensors' attribute: not a complete cfsp-mpi output", path);
    if (v.checked != ntens) return FAIL("%s: %d tensors carry checksums, the file records %lld", path, v.checked, (long long)ntens);
    if (v.bad) return FAIL("%s: %d of %d tensors fail their checksum", path, v.bad, v.checked);
    printf("%s: OK, %d tensors, all checksums match\n", path, v.checked);
    return 0;
}
