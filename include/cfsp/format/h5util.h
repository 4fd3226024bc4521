/* h5util.h — small HDF5 helpers shared by the output writers: the stored-dtype file types (bf16
 * and f16 as 16-bit IEEE-like float types written from our own bits, never converted by HDF5),
 * dataset creation with intermediate groups, row-panel writes, attributes, and checksums. */
#ifndef CFSP_H5UTIL_H
#define CFSP_H5UTIL_H
#include "cfsp/format/safetensors.h"
#include <hdf5.h>
#include <stdint.h>

void h5_quiet(void);                             /* no automatic HDF5 error stack printing */
hid_t h5_dtype(dtype_t t);                       /* caller closes */
int h5_dtype_of(hid_t type, dtype_t *out);       /* recognise F32 / F16 / BF16 file types */
hid_t h5_create_dataset(hid_t file, const char *path, hid_t type, int ndims, const int64_t *dims);
/* write a contiguous [nrows, ncols] block at (r0, c0) of a 1-D or 2-D dataset, in row panels of at most ~256 MB */
void h5_write_block(hid_t dset, hid_t memtype, const void *data, int64_t r0, int64_t c0, int64_t nrows, int64_t ncols, size_t elsize);
void h5_attr_string(hid_t obj, const char *name, const char *value);
void h5_attr_double(hid_t obj, const char *name, double v);
void h5_attr_i64(hid_t obj, const char *name, int64_t v);
void h5_attr_u64(hid_t obj, const char *name, uint64_t v);
/* a string attribute (one fixed or variable length string), newly allocated; NULL if absent, not
 * one string, or unreadable */
char *h5_attr_read_string(hid_t obj, const char *name);
/* one number attribute of obj (named `file` in messages) read as memtype (H5T_NATIVE_INT64,
 * _UINT64, _DOUBLE, ...), whose class (integer / float) the stored type must have; FAIL if missing,
 * not one number of that class, or unreadable */
int h5_attr_read_num(hid_t obj, const char *file, const char *name, hid_t memtype, void *v);
/* h5_attr_read_num as int64 */
int h5_attr_read_i64(hid_t obj, const char *file, const char *name, int64_t *v);
/* the n values of dataset `path` of file f read as memtype (H5T_NATIVE_DOUBLE, H5T_NATIVE_FLOAT, ...)
 * into v (named `file` in messages); FAIL if missing, unreadable or of another size */
int h5_read_vec(hid_t f, const char *file, const char *path, hid_t memtype, void *v, int64_t n);
#endif
