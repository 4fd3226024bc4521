/* h5util.c — HDF5 helpers (see h5util.h). Writes and every call on handles we made are checked
 * with H5_CHECK; the readers of attributes and datasets of untrusted files FAIL (or return NULL)
 * instead, naming the file and the field. On a path that is already failing, handles are released
 * best-effort (their close unchecked). */
#include "cfsp/format/h5util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <stdlib.h>
#include <string.h>

void h5_quiet(void) { H5_CHECK(H5Eset_auto2(H5E_DEFAULT, NULL, NULL)); }

hid_t h5_dtype(dtype_t t)
{
    hid_t ty = H5Tcopy(H5T_IEEE_F32LE);
    H5_CHECK(ty);
    if (t == DT_F32) return ty;
    if (t == DT_BF16) {                 /* sign 15, exponent 7..14 (8 bits), mantissa 0..6 (7 bits) */
        H5_CHECK(H5Tset_fields(ty, 15, 7, 8, 0, 7));
        H5_CHECK(H5Tset_precision(ty, 16));
        H5_CHECK(H5Tset_size(ty, 2));
        H5_CHECK(H5Tset_ebias(ty, 127));
    } else {                            /* IEEE half: exponent 10..14 (5 bits), mantissa 0..9 */
        H5_CHECK(H5Tset_fields(ty, 15, 10, 5, 0, 10));
        H5_CHECK(H5Tset_precision(ty, 16));
        H5_CHECK(H5Tset_size(ty, 2));
        H5_CHECK(H5Tset_ebias(ty, 15));
    }
    return ty;
}

int h5_dtype_of(hid_t type, dtype_t *out)
{
    if (H5Tget_class(type) != H5T_FLOAT) return -1;
    size_t sz = H5Tget_size(type), spos, epos, esize, mpos, msize;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return -1;
    dtype_t t;
    if (sz == 4 && esize == 8 && msize == 23) t = DT_F32;
    else if (sz == 2 && esize == 8 && msize == 7) t = DT_BF16;
    else if (sz == 2 && esize == 5 && msize == 10) t = DT_F16;
    else return -1;
    /* and exactly the file type h5_dtype writes: the readers pass the stored bits on raw, so the
     * byte order, bit positions, exponent bias, normalisation and padding must be these too (a
     * big-endian F32, or bf16-sized fields with another bias, are other numbers) */
    hid_t c = h5_dtype(t);
    htri_t eq = H5Tequal(type, c);
    H5_CHECK(H5Tclose(c));
    if (eq <= 0) return -1;
    *out = t;
    return 0;
}

hid_t h5_create_dataset(hid_t file, const char *path, hid_t type, int ndims, const int64_t *dims)
{
    hsize_t d[4];
    for (int i = 0; i < ndims; i++) d[i] = (hsize_t)dims[i];
    hid_t space = H5Screate_simple(ndims, d, NULL);
    H5_CHECK(space);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5_CHECK(lcpl);
    H5_CHECK(H5Pset_create_intermediate_group(lcpl, 1));
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHECK(dcpl);
    H5_CHECK(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    /* no modification-time message in the dataset's object header: the same job writes the same
     * bytes (tests/py/test_reproducible.py). The groups (the root, and the intermediate groups HDF5
     * creates here with its default properties) have version-1 object headers, which hold no time. */
    H5_CHECK(H5Pset_obj_track_times(dcpl, 0));
    hid_t ds = H5Dcreate2(file, path, type, space, lcpl, dcpl, H5P_DEFAULT);
    if (ds < 0) DIE("cannot create HDF5 dataset %s", path);
    H5_CHECK(H5Pclose(dcpl));
    H5_CHECK(H5Pclose(lcpl));
    H5_CHECK(H5Sclose(space));
    return ds;
}

void h5_write_block(hid_t dset, hid_t memtype, const void *data, int64_t r0, int64_t c0, int64_t nrows, int64_t ncols, size_t elsize)
{
    if (nrows == 0 || ncols == 0) return;
    hid_t fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    int nd = H5Sget_simple_extent_ndims(fspace);
    H5_CHECK(nd);
    int64_t row_bytes = ncols * (int64_t)elsize, panel = (256LL << 20) / (row_bytes ? row_bytes : 1);
    if (panel < 1) panel = 1;
    for (int64_t r = 0; r < nrows; r += panel) {
        int64_t n = nrows - r < panel ? nrows - r : panel;
        hsize_t start[2] = { (hsize_t)(r0 + r), (hsize_t)c0 }, count[2] = { (hsize_t)n, (hsize_t)ncols };
        if (nd == 1) count[0] = (hsize_t)(n * ncols);
        H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
        hid_t mspace = H5Screate_simple(nd, count, NULL);
        H5_CHECK(mspace);
        if (H5Dwrite(dset, memtype, mspace, fspace, H5P_DEFAULT, (const char *)data + r * row_bytes) < 0)
            DIE("HDF5 write of %lld rows failed (disk full or file system error?)", (long long)n);
        H5_CHECK(H5Sclose(mspace));
    }
    H5_CHECK(H5Sclose(fspace));
}

static void attr_write(hid_t obj, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    H5_CHECK(sp);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) DIE("cannot create HDF5 attribute %s", name);
    H5_CHECK(H5Awrite(a, type, v));
    H5_CHECK(H5Aclose(a));
    H5_CHECK(H5Sclose(sp));
}

void h5_attr_string(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5_CHECK(t);
    H5_CHECK(H5Tset_size(t, strlen(value) + 1));
    H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8));
    attr_write(obj, name, t, value);
    H5_CHECK(H5Tclose(t));
}

void h5_attr_double(hid_t obj, const char *name, double v) { attr_write(obj, name, H5T_NATIVE_DOUBLE, &v); }
void h5_attr_i64(hid_t obj, const char *name, int64_t v) { attr_write(obj, name, H5T_NATIVE_INT64, &v); }
void h5_attr_u64(hid_t obj, const char *name, uint64_t v) { attr_write(obj, name, H5T_NATIVE_UINT64, &v); }

/* attribute `name` of obj when it holds exactly one value (*st = A_OK; the caller closes it), else
 * -1 with *st = A_MISSING (absent) or A_BAD (not openable, or an array / empty attribute: reading it
 * into one value would overrun the caller's buffer) */
enum { A_OK, A_MISSING, A_BAD };
static hid_t attr_open_one(hid_t obj, const char *name, int *st)
{
    *st = A_MISSING;
    if (H5Aexists(obj, name) <= 0) return -1;
    *st = A_BAD;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5_CHECK(H5Sclose(sp));
    if (np != 1) { H5Aclose(a); return -1; }
    *st = A_OK;
    return a;
}

char *h5_attr_read_string(hid_t obj, const char *name)
{
    int st;
    hid_t a = attr_open_one(obj, name, &st);
    if (a < 0) return NULL;
    hid_t t = H5Aget_type(a);
    char *out = NULL;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            char *v = NULL;
            H5T_cset_t cs = H5Tget_cset(t);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5_CHECK(mt);
            H5_CHECK(H5Tset_size(mt, H5T_VARIABLE));
            /* HDF5 does not convert between character sets: the file's (an unknown one: unreadable) */
            if (cs >= 0 && H5Tset_cset(mt, cs) >= 0 && H5Aread(a, mt, &v) >= 0 && v) out = xstrdup(v);
            if (v) H5_CHECK(H5free_memory(v));
            H5_CHECK(H5Tclose(mt));
        } else {
            size_t sz = H5Tget_size(t);          /* 0: error */
            out = sz ? xcalloc(sz + 1, 1) : NULL;
            if (out && H5Aread(a, t, out) < 0) { free(out); out = NULL; }
        }
    }
    if (t >= 0) H5_CHECK(H5Tclose(t));
    H5_CHECK(H5Aclose(a));
    return out;
}

int h5_read_vec(hid_t f, const char *file, const char *path, hid_t memtype, void *v, int64_t n)
{
    if (H5Lexists(f, path, H5P_DEFAULT) <= 0) return FAIL("%s: dataset %s is missing", file, path);
    hid_t ds = H5Dopen2(f, path, H5P_DEFAULT);
    if (ds < 0) return FAIL("%s: dataset %s is missing", file, path);
    hid_t sp = H5Dget_space(ds);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5_CHECK(H5Sclose(sp));
    int rc = 0;
    if (np < 0) rc = FAIL("%s: dataset %s: unreadable dataspace", file, path);
    else if (np != n) rc = FAIL("%s: dataset %s has %lld values, expected %lld (written for another model or plan?)", file, path, (long long)np, (long long)n);
    else if (n > 0 && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) rc = FAIL("%s: cannot read %s", file, path);
    H5_CHECK(H5Dclose(ds));
    return rc;
}

int h5_attr_read_num(hid_t obj, const char *file, const char *name, hid_t memtype, void *v)
{
    int st;
    hid_t a = attr_open_one(obj, name, &st);
    if (st == A_MISSING) return FAIL("%s: attribute '%s' is missing", file, name);
    H5T_class_t want = H5Tget_class(memtype);
    H5_CHECK(want);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    int rc = 0;
    if (t < 0 || H5Tget_class(t) != want)
        rc = FAIL("%s: attribute '%s': expected one %s", file, name, want == H5T_INTEGER ? "integer" : "floating-point number");
    else if (H5Aread(a, memtype, v) < 0) rc = FAIL("%s: attribute '%s' unreadable", file, name);
    if (t >= 0) H5_CHECK(H5Tclose(t));
    if (a >= 0) H5_CHECK(H5Aclose(a));
    return rc;
}

int h5_attr_read_i64(hid_t obj, const char *file, const char *name, int64_t *v)
{
    return h5_attr_read_num(obj, file, name, H5T_NATIVE_INT64, v);
}
