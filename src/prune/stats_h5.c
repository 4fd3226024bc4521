/* stats_h5.c — write / read the statistics file (see stats_h5.h). The writer checks every HDF5
 * call; the reader FAILs naming the file and the field, and closes the file best-effort when it
 * already failed. */
#include "cfsp/prune/stats_h5.h"
#include "cfsp/format/h5util.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_vec(hid_t f, const char *path, const double *v, int64_t n)
{
    hid_t ds = h5_create_dataset(f, path, H5T_IEEE_F64LE, 1, &n);
    H5_CHECK(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
    H5_CHECK(H5Dclose(ds));
}

int stats_h5_write(const char *path, const model_config *c, const block_stats *all, int nsamples, int seqlen, uint64_t fp)
{
    char p[128];
    h5_quiet();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: cannot create the statistics file", path);
    int L = c->n_layers;
    double *v = xmalloc(sizeof(double) * (size_t)L);
    for (int g = 0; g < GM_COUNT; g++) {
        for (int l = 0; l < L; l++) v[l] = all[l].imp[g];
        snprintf(p, sizeof p, "/importance/%s", global_metric_names[g]);
        write_vec(f, p, v, L);
    }
    free(v);
    for (int l = 0; l < L; l++) {
        snprintf(p, sizeof p, "/channels/%d/sum_sq", l);
        write_vec(f, p, all[l].sum_sq, all[l].m);
        snprintf(p, sizeof p, "/channels/%d/sum", l);
        write_vec(f, p, all[l].sum, all[l].m);
    }
    h5_attr_string(f, "format", STATS_H5_FORMAT);
    char fps[32];
    snprintf(fps, sizeof fps, "%016llx", (unsigned long long)fp);
    h5_attr_string(f, "fingerprint", fps);
    h5_attr_i64(f, "nsamples", nsamples);
    h5_attr_i64(f, "seqlen", seqlen);
    h5_attr_i64(f, "ntokens", all[0].ntok);
    h5_attr_i64(f, "num_layers", L);
    h5_attr_string(f, "compute", compute_names[mm_current()->mode]);   /* the products' arithmetic: fp32 | bf16 */
    if (H5Fclose(f) < 0) return FAIL("%s: writing the statistics file failed", path);
    return 0;
}


static int read_attr_str(hid_t f, const char *path, const char *name, char *out, size_t n)
{
    if (H5Aexists(f, name) <= 0) return FAIL("%s: attribute '%s' is missing", path, name);
    char *v = h5_attr_read_string(f, name);
    int rc = !v || strlen(v) >= n ? FAIL("%s: attribute '%s': expected a short string", path, name) : 0;
    if (!rc) snprintf(out, n, "%s", v);
    free(v);
    return rc;
}


int stats_h5_read(const char *path, const model_config *c, block_stats *all, int *nsamples, int *seqlen, uint64_t fp)
{
    h5_quiet();
    if (!path_exists(path)) return FAIL("%s: statistics file not found", path);
    if (input_check(path, NULL)) return -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: not an HDF5 file", path);
    int rc = -1;
    char fmt[64], fps[64], want[32];
    int64_t ns = 0, sl = 0, L = 0, nt = 0;
    if (read_attr_str(f, path, "format", fmt, sizeof fmt) || read_attr_str(f, path, "fingerprint", fps, sizeof fps) ||
        h5_attr_read_i64(f, path, "nsamples", &ns) || h5_attr_read_i64(f, path, "seqlen", &sl) ||
        h5_attr_read_i64(f, path, "num_layers", &L) || h5_attr_read_i64(f, path, "ntokens", &nt))
        goto out;
    if (strcmp(fmt, STATS_H5_FORMAT)) { FAIL("%s: format '%s', expected '%s'", path, fmt, STATS_H5_FORMAT); goto out; }
    snprintf(want, sizeof want, "%016llx", (unsigned long long)fp);
    if (strcmp(fps, want)) { FAIL("%s: statistics of another model (fingerprint %s, this model %s)", path, fps, want); goto out; }
    if (L != c->n_layers || ns < 1 || sl < 1 || nt != ns * sl) { FAIL("%s: inconsistent sizes (layers %lld, nsamples %lld, seqlen %lld, tokens %lld)", path, (long long)L, (long long)ns, (long long)sl, (long long)nt); goto out; }
    char p[128];
    double *v = xmalloc(sizeof(double) * (size_t)L);
    for (int g = 0; g < GM_COUNT; g++) {
        snprintf(p, sizeof p, "/importance/%s", global_metric_names[g]);
        if (h5_read_vec(f, path, p, H5T_NATIVE_DOUBLE, v, L)) { free(v); goto out; }
        for (int l = 0; l < L; l++) all[l].imp[g] = v[l];
    }
    free(v);
    for (int l = 0; l < L; l++) {
        snprintf(p, sizeof p, "/channels/%d/sum_sq", l);
        if (h5_read_vec(f, path, p, H5T_NATIVE_DOUBLE, all[l].sum_sq, all[l].m)) goto out;
        snprintf(p, sizeof p, "/channels/%d/sum", l);
        if (h5_read_vec(f, path, p, H5T_NATIVE_DOUBLE, all[l].sum, all[l].m)) goto out;
        all[l].ntok = nt;
    }
    *nsamples = (int)ns;
    *seqlen = (int)sl;
    rc = 0;
out:
    if (H5Fclose(f) < 0 && !rc) DIE("%s: closing the statistics file failed", path);
    return rc;
}
