/* merge.c — a pruned checkpoint with tensors replaced, for `recover --merge` (see merge.h): copy
 * the file, rewrite the datasets in their stored dtype with new checksums, provenance, rename.
 * Serial (rank 0) or parallel (every rank opens the copy with the MPI-IO driver and writes the
 * tensors it owns; metadata changes, the checksum attributes included, are made by all ranks
 * alike). Every HDF5 and IO call on the copy is checked; once the merge is failing (its copy is
 * removed), handles are released best-effort. */
#include "cfsp/ckpt/merge.h"
#include "cfsp/ckpt/layout.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/format/h5util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ckpt_merge {
    char tmp[4200];
    char out[4096];
    hid_t f;
    int par;                   /* opened by every rank with the MPI-IO driver */
    int bad;                   /* par: this rank's raw write failed */
};

static int copy_file(const char *src, const char *dst)
{
    if (input_check(src, NULL)) return -1;
    FILE *in = fopen(src, "rb");
    if (!in) return FAIL("%s: cannot open", src);
    FILE *out = fopen(dst, "wb");
    if (!out) { fclose(in); return FAIL("%s: cannot create", dst); }
    char *buf = xmalloc(1 << 20);
    size_t n;
    int ok = 1;
    while ((n = fread(buf, 1, 1 << 20, in)) > 0) ok &= fwrite(buf, 1, n, out) == n;
    ok &= !ferror(in);
    ok &= fclose(out) == 0;
    fclose(in);
    free(buf);
    return ok ? 0 : FAIL("%s: copy failed (disk full?)", dst);
}

static void replace_attr_u64(hid_t obj, const char *name, uint64_t v)
{
    if (H5Aexists(obj, name) > 0) H5_CHECK(H5Adelete(obj, name));
    h5_attr_u64(obj, name, v);
}

ckpt_merge *ckpt_merge_begin(const char *src, const char *out_path)
{
    ckpt_merge *m = xcalloc(1, sizeof *m);
    snprintf(m->out, sizeof m->out, "%s", out_path);
    snprintf(m->tmp, sizeof m->tmp, "%s.tmp", out_path);
    cfsp_tmp_register(m->tmp);
    if (copy_file(src, m->tmp)) { free(m); return NULL; }
    h5_quiet();
    m->f = H5Fopen(m->tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (m->f < 0) { FAIL("%s: cannot open for writing", m->tmp); free(m); return NULL; }
    return m;
}

ckpt_merge *ckpt_merge_begin_par(const char *src, const char *out_path)
{
    ckpt_merge *m = xcalloc(1, sizeof *m);
    m->par = 1;
    snprintf(m->out, sizeof m->out, "%s", out_path);
    snprintf(m->tmp, sizeof m->tmp, "%s.tmp", out_path);
    int rc = 0;
    if (cfsp_rank() == 0) {
        cfsp_tmp_register(m->tmp);
        rc = copy_file(src, m->tmp);
    }
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
    if (rc) { free(m); return NULL; }
    h5_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    H5_CHECK(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    H5_CHECK(H5Pset_all_coll_metadata_ops(fapl, 1));
    H5_CHECK(H5Pset_coll_metadata_write(fapl, 1));
    m->f = H5Fopen(m->tmp, H5F_ACC_RDWR, fapl);
    H5_CHECK(H5Pclose(fapl));
    int opened = m->f >= 0;          /* every rank must have it open before the collective calls */
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &opened, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD));
    if (!opened) {
        FAIL("%s: cannot open for writing (%s)", m->tmp, m->f < 0 ? "here" : "on another rank");
        if (m->f >= 0) H5Fclose(m->f);
        free(m);
        return NULL;
    }
    return m;
}

/* owner < 0: this rank writes alone (serial copy); else rank owner writes the data (independent raw
 * IO) and every rank sets the same checksum attribute (collective metadata) */
static int merge_one(ckpt_merge *m, const char *name, const float *v, int64_t rows, int64_t cols, int owner)
{
    char pth[160];
    ckpt_dataset_path(name, pth, sizeof pth);
    hid_t ds = H5Dopen2(m->f, pth, H5P_DEFAULT);
    if (ds < 0) return FAIL("%s: dataset %s is missing", m->tmp, pth);
    hid_t ty = H5Dget_type(ds), sp = H5Dget_space(ds);
    hsize_t dims[2] = { 0, 0 };
    dtype_t dt;
    int rc = 0;
    if (ty < 0 || h5_dtype_of(ty, &dt) != 0) rc = FAIL("%s: dataset %s: not an F32, F16 or BF16 float type", m->tmp, pth);
    else if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 ||
             (int64_t)dims[0] != rows || (int64_t)dims[1] != cols)
        rc = FAIL("%s: dataset %s is not of shape [%lld,%lld]", m->tmp, pth, (long long)rows, (long long)cols);
    if (!rc) {
        uint64_t sum = 0;
        if (owner < 0 || cfsp_rank() == owner) {
            size_t es = dtype_size(dt);
            void *out = xmalloc(es * (size_t)(rows * cols));
            ckpt_store_f32(dt, v, out, (size_t)(rows * cols));
            if (H5Dwrite(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
                FAIL("%s: writing %s failed (rank %d)", m->tmp, pth, cfsp_rank());
                if (owner < 0) rc = -1;
                else m->bad = 1;
            }
            sum = tensor_checksum(out, es, rows, cols, 0, 0, cols);
            free(out);
        }
        if (owner >= 0) MPI_CHECK(MPI_Bcast(&sum, 1, MPI_UINT64_T, owner, MPI_COMM_WORLD));
        if (!rc) replace_attr_u64(ds, CKPT_A_CHECKSUM, sum);
    }
    if (sp >= 0) H5_CHECK(H5Sclose(sp));
    if (ty >= 0) H5_CHECK(H5Tclose(ty));
    H5_CHECK(H5Dclose(ds));
    return rc;
}

int ckpt_merge_tensor_par(ckpt_merge *m, const char *name, const float *v, int64_t rows, int64_t cols, int owner)
{
    return merge_one(m, name, v, rows, cols, owner);
}

int ckpt_merge_tensor(ckpt_merge *m, const char *name, const float *v, int64_t rows, int64_t cols)
{
    return merge_one(m, name, v, rows, cols, -1);
}

int ckpt_merge_end(ckpt_merge *m, int ok, const ckpt_merge_info *info)
{
    if (ok) {
        if (H5Aexists(m->f, CKPT_A_FILE_CHECKSUM) > 0) H5_CHECK(H5Adelete(m->f, CKPT_A_FILE_CHECKSUM));
        h5_attr_string(m->f, CKPT_A_MERGED_FROM, info->from);
        h5_attr_string(m->f, CKPT_A_MERGED_PLAN, info->plan);
        h5_attr_i64(m->f, CKPT_A_MERGED_STEPS, info->steps);
        h5_attr_i64(m->f, CKPT_A_MERGED_PARAMS, info->params);
    }
    int rc = ok ? 0 : -1;
    if (H5Fclose(m->f) < 0 && !rc) rc = FAIL("%s: closing failed", m->tmp);
    if (m->par) {              /* every rank's writes decide; then rank 0 alone syncs and renames */
        int bad = rc != 0 || m->bad;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD));
        if (bad && !rc) rc = -1;
        if (rc || cfsp_rank() != 0) { free(m); return rc; }
    }
    if (!rc) {
        int fd = open(m->tmp, O_RDONLY);
        if (fd < 0 || fsync(fd) != 0) rc = FAIL("%s: fsync failed", m->tmp);
        if (fd >= 0 && close(fd) != 0 && !rc) rc = FAIL("%s: close failed", m->tmp);
    }
    if (!rc && rename(m->tmp, m->out) != 0) rc = FAIL("cannot rename %s to %s", m->tmp, m->out);
    if (!rc) cfsp_tmp_unregister(m->tmp);
    free(m);
    return rc;
}
