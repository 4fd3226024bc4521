/* stats_h5.c — write / read the statistics file (see stats_h5.h). The writer checks every HDF5
 * call; the reader FAILs naming the file and the field, and closes the file best-effort when it
 * already failed. */
#include "cfsp/prune/stats_h5.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/format/h5util.h"
#include "cfsp/model/matmul.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every dataset carries the tensor checksum (model_h5.h) of its doubles' bits as attribute
 * "checksum"; the root's "checksum" covers the counts (nsamples, seqlen, ntokens, num_layers). */
#define STATS_A_CHECKSUM "checksum"

static uint64_t vec_checksum(const double *v, int64_t n) { return tensor_checksum(v, sizeof(double), n, 1, 0, 0, 1); }

static uint64_t counts_checksum(int64_t ns, int64_t sl, int64_t nt, int64_t L)
{
    int64_t v[4] = { ns, sl, nt, L };
    return tensor_checksum(v, sizeof(int64_t), 4, 1, 0, 0, 1);
}

static void write_vec(hid_t f, const char *path, const double *v, int64_t n)
{
    hid_t ds = h5_create_dataset(f, path, H5T_IEEE_F64LE, 1, &n);
    H5_CHECK(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
    h5_attr_u64(ds, STATS_A_CHECKSUM, vec_checksum(v, n));
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
    h5_attr_u64(f, STATS_A_CHECKSUM, counts_checksum(nsamples, seqlen, all[0].ntok, L));
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


/* What a value of a dataset may be: */
enum { V_IMPORTANCE, V_SUM_SQ, V_SUM };

#define RECOMPUTE "the statistics file is damaged or was edited: recompute it (cfsp-mpi run writes stats.h5)"

/* read dataset p [n] into v: its checksum (checked: a /2 file) and its values' ranges */
static int read_checked(hid_t f, const char *path, const char *p, double *v, int64_t n, int checked, int what, double bound)
{
    if (h5_read_vec(f, path, p, H5T_NATIVE_DOUBLE, v, n)) return -1;
    /* the values' ranges first (the more specific message), then the checksum (any other change) */
    for (int64_t i = 0; i < n; i++) {
        double x = v[i];
        const char *bad = !isfinite(x) ? "not finite"
                        : what == V_SUM_SQ && x < 0 ? "negative (a sum of squares)"
                        : what == V_IMPORTANCE && x < 0 ? "negative (a sum of distances)"
                        : what == V_IMPORTANCE && bound > 0 && x > bound ? "above its bound (ntokens times the largest distance per token)"
                        : NULL;
        if (bad) return FAIL("%s: dataset %s: value %lld is %g: %s; " RECOMPUTE, path, p, (long long)i, x, bad);
    }
    if (checked) {
        hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
        if (ds < 0) return FAIL("%s: dataset %s is missing", path, p);
        char where[4400];
        snprintf(where, sizeof where, "%s: dataset %s", path, p);
        uint64_t want = 0;
        int rc = H5Aexists(ds, STATS_A_CHECKSUM) > 0 ? h5_attr_read_num(ds, where, STATS_A_CHECKSUM, H5T_NATIVE_UINT64, &want)
                                                     : FAIL("%s: no '" STATS_A_CHECKSUM "' attribute (every dataset of a " STATS_H5_FORMAT " file carries one): " RECOMPUTE, where);
        H5_CHECK(H5Dclose(ds));
        if (rc) return -1;
        uint64_t got = vec_checksum(v, n);
        if (got != want)
            return FAIL("%s: checksum mismatch (stored %016llx, data %016llx): " RECOMPUTE, where, (unsigned long long)want, (unsigned long long)got);
    }
    return 0;
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
    /* /1 (no checksums): read with a warning, its values still range-checked */
    int checked = !strcmp(fmt, STATS_H5_FORMAT);
    if (!checked && strcmp(fmt, STATS_H5_FORMAT_V1)) { FAIL("%s: format '%s', expected '%s'", path, fmt, STATS_H5_FORMAT); goto out; }
    snprintf(want, sizeof want, "%016llx", (unsigned long long)fp);
    if (strcmp(fps, want)) { FAIL("%s: statistics of another model (fingerprint %s, this model %s)", path, fps, want); goto out; }
    if (ns < 1 || ns > INT_MAX) { FAIL("%s: attribute 'nsamples' is %lld, expected 1..%d; " RECOMPUTE, path, (long long)ns, INT_MAX); goto out; }
    if (sl < 2 || sl > INT_MAX) { FAIL("%s: attribute 'seqlen' is %lld, expected 2..%d; " RECOMPUTE, path, (long long)sl, INT_MAX); goto out; }
    if (nt != ns * sl) { FAIL("%s: attribute 'ntokens' is %lld, expected nsamples x seqlen = %lld; " RECOMPUTE, path, (long long)nt, (long long)(ns * sl)); goto out; }
    if (L != c->n_layers) { FAIL("%s: attribute 'num_layers' is %lld, the model has %d blocks (written for another model?)", path, (long long)L, c->n_layers); goto out; }
    if (checked) {
        uint64_t ck = 0;
        if (H5Aexists(f, STATS_A_CHECKSUM) <= 0) { FAIL("%s: no root '" STATS_A_CHECKSUM "' attribute (of the counts); " RECOMPUTE, path); goto out; }
        if (h5_attr_read_num(f, path, STATS_A_CHECKSUM, H5T_NATIVE_UINT64, &ck)) goto out;
        if (ck != counts_checksum(ns, sl, nt, L)) { FAIL("%s: the root attribute '" STATS_A_CHECKSUM "' does not match nsamples / seqlen / ntokens / num_layers; " RECOMPUTE, path); goto out; }
    } else
        fprintf(stderr, "cfsp-mpi: warning: %s: format %s has no checksums (written before " STATS_H5_FORMAT "): its values are only range-checked; recompute it to have them verified\n",
                path, fmt);
    char p[128];
    double *v = xmalloc(sizeof(double) * (size_t)L);
    for (int g = 0; g < GM_COUNT; g++) {
        /* per token: angular distance <= 1, cosine distance <= 2 (mse / mae: unbounded) */
        double bound = g == GM_ANGULAR ? (double)nt * (1 + 1e-9) : g == GM_COSINE ? 2.0 * (double)nt * (1 + 1e-9) : 0;
        snprintf(p, sizeof p, "/importance/%s", global_metric_names[g]);
        if (read_checked(f, path, p, v, L, checked, V_IMPORTANCE, bound)) { free(v); goto out; }
        for (int l = 0; l < L; l++) all[l].imp[g] = v[l];
    }
    free(v);
    for (int l = 0; l < L; l++) {
        snprintf(p, sizeof p, "/channels/%d/sum_sq", l);
        if (read_checked(f, path, p, all[l].sum_sq, all[l].m, checked, V_SUM_SQ, 0)) goto out;
        snprintf(p, sizeof p, "/channels/%d/sum", l);
        if (read_checked(f, path, p, all[l].sum, all[l].m, checked, V_SUM, 0)) goto out;
        all[l].ntok = nt;
    }
    *nsamples = (int)ns;
    *seqlen = (int)sl;
    rc = 0;
out:
    if (H5Fclose(f) < 0 && !rc) DIE("%s: closing the statistics file failed", path);
    return rc;
}
