/* h5_fuzz_edit.h — what the two HDF5 harnesses (fuzz_stats.c, fuzz_h5ckpt.c) share: the process
 * (the temporary file in $TMPDIR, stdout / stderr silenced around the reader), the edit program's
 * byte reader, and the HDF5 edits themselves — attributes replaced by numbers and strings in their
 * several forms (the forms our readers must accept or refuse), checksum attributes, link checks.
 * Static functions; each harness includes it once, after its own headers. */
#ifndef CFSP_H5_FUZZ_EDIT_H
#define CFSP_H5_FUZZ_EDIT_H
#include "cfsp/util/util.h"
#include <fcntl.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the process: temporary file, quiet stdout / stderr ---- */
static char g_path[256];
static int g_errfd = -1, g_outfd = -1, g_null = -1, g_verbose;
static ssize_t g_base;         /* open HDF5 objects between runs (H5Fget_obj_count counts transient types too) */

static void cleanup(void)
{
    if (g_errfd >= 0) dup2(g_errfd, 2);
    if (g_outfd >= 0) dup2(g_outfd, 1);
    if (g_path[0]) unlink(g_path);
}
static void quiet(int on)
{
    if (g_verbose) return;
    fflush(stdout);
    fflush(stderr);
    dup2(on ? g_null : g_errfd, 2);
    if (g_outfd >= 0) dup2(on ? g_null : g_outfd, 1);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* the file at g_path: written from an image, read back whole */
static int write_file(const unsigned char *p, size_t n)
{
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w <= 0) { close(fd); return -1; }
        done += (size_t)w;
    }
    return close(fd);
}
static unsigned char *read_file(size_t *n)
{
    FILE *f = fopen(g_path, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = xmalloc((size_t)len);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) abort();
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* ---- the edit program: bytes read in order, zeros (and eof set) past its end ---- */
typedef struct { const uint8_t *p; size_t n, i; int eof; } rd;
static unsigned u8(rd *r)
{
    if (r->i >= r->n) { r->eof = 1; return 0; }
    return r->p[r->i++];
}
static uint64_t un(rd *r, int k)               /* k bytes, little-endian */
{
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= (uint64_t)u8(r) << (8 * i);
    return v;
}

/* ---- HDF5 edits ---- */
enum { S_KNOWN, S_BAD };       /* a string attribute's state: what a string reader gets, or refused */

/* every link of path (its groups, then itself) exists: H5Lexists on a path through a missing group fails */
static int link_chain(hid_t f, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (H5Lexists(f, buf, H5P_DEFAULT) <= 0) return 0;
            if (!c) return 1;
            *p = c;
        }
}
static hid_t lcpl_mk(void)
{
    hid_t l = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(l, 1);
    return l;
}
/* replace attribute name of obj by one of type t on space sp (buf NULL: not written) */
static void attr_put(hid_t obj, const char *name, hid_t t, hid_t sp, const void *buf)
{
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return;
    if (buf) H5Awrite(a, t, buf);
    H5Aclose(a);
}
static void attr_scalar(hid_t obj, const char *name, hid_t t, const void *buf)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    attr_put(obj, name, t, sp, buf);
    H5Sclose(sp);
}
static void attr_n(hid_t obj, const char *name, hid_t t, hsize_t n, const void *buf)
{
    hid_t sp = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_NULL);
    attr_put(obj, name, t, sp, n ? buf : NULL);
    H5Sclose(sp);
}
/* a number attribute in ten forms; mode 0: as the readers expect (signed or not) */
static void put_number(hid_t obj, const char *name, unsigned mode, uint64_t v, int is_signed)
{
    double dv = is_signed ? (double)(int64_t)v : (double)v;
    uint64_t two[2] = { v, v };
    int8_t i8 = (int8_t)v;
    uint16_t u16 = (uint16_t)v;
    uint32_t u32 = (uint32_t)v;
    switch (mode % 10) {
    case 0: attr_scalar(obj, name, is_signed ? H5T_STD_I64LE : H5T_STD_U64LE, &v); break;
    case 1: attr_scalar(obj, name, is_signed ? H5T_STD_U64LE : H5T_STD_I64LE, &v); break;
    case 2: attr_scalar(obj, name, H5T_NATIVE_DOUBLE, &dv); break;
    case 3: { hid_t t = H5Tcopy(H5T_C_S1); H5Tset_size(t, 5); attr_scalar(obj, name, t, "1234"); H5Tclose(t); break; }
    case 4: if (H5Aexists(obj, name) > 0) H5Adelete(obj, name); break;
    case 5: attr_n(obj, name, H5T_STD_U64LE, 2, two); break;
    case 6: attr_scalar(obj, name, H5T_NATIVE_INT8, &i8); break;
    case 7: attr_scalar(obj, name, H5T_STD_U16BE, &u16); break;
    case 8: attr_n(obj, name, H5T_STD_U64LE, 0, NULL); break;
    default: attr_scalar(obj, name, H5T_STD_U32LE, &u32); break;
    }
}
/* a string attribute, the len bytes at s: 0 fixed NUL-terminated UTF-8, 1 fixed unterminated ASCII,
 * 2 / 3 variable-length UTF-8 / ASCII, 4 deleted, 5 an integer, 6 two strings, 7 null space;
 * *st / sv (svn bytes): its state and what a string reader gets (up to the first NUL) */
static void put_string(hid_t obj, const char *name, unsigned mode, const char *s, size_t len, int *st, char *sv, size_t svn)
{
    mode %= 8;
    char *z = xmalloc(2 * len + 2);            /* the string, NUL-terminated, twice for mode 6 */
    memcpy(z, s, len);
    z[len] = 0;
    memcpy(z + len + 1, z, len + 1);
    hid_t t = H5Tcopy(H5T_C_S1);
    if (mode == 0 || mode == 6 || mode == 7) { H5Tset_size(t, len + 1); H5Tset_cset(t, H5T_CSET_UTF8); }
    else if (mode == 1) { H5Tset_size(t, len ? len : 1); H5Tset_strpad(t, H5T_STR_NULLPAD); }
    else if (mode == 2 || mode == 3) { H5Tset_size(t, H5T_VARIABLE); if (mode == 2) H5Tset_cset(t, H5T_CSET_UTF8); }
    const char *vp = z;
    switch (mode) {
    case 0: case 1: attr_scalar(obj, name, t, z); break;
    case 2: case 3: attr_scalar(obj, name, t, &vp); break;
    case 4: if (H5Aexists(obj, name) > 0) H5Adelete(obj, name); break;
    case 5: { int64_t one = 1; attr_scalar(obj, name, H5T_STD_I64LE, &one); break; }
    case 6: attr_n(obj, name, t, 2, z); break;
    default: attr_n(obj, name, t, 0, NULL); break;
    }
    H5Tclose(t);
    if (st) { *st = mode <= 3 ? S_KNOWN : S_BAD; if (sv) snprintf(sv, svn, "%s", z); }
    free(z);
}
/* dataset p (its groups created) of type t and shape dims (nd 0: scalar): contiguous, or chunked
 * with chunks of at most chunk_cap per dimension when chunk_cap > 0 (a large shape then costs no
 * space: nothing is written); fill_never: no fill value written either */
static void make_ds(hid_t f, const char *p, hid_t type, int nd, const hsize_t *dims, hsize_t chunk_cap, int fill_never)
{
    hid_t sp = nd ? H5Screate_simple(nd, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t lc = lcpl_mk(), dc = H5Pcreate(H5P_DATASET_CREATE);
    if (fill_never) H5Pset_fill_time(dc, H5D_FILL_TIME_NEVER);
    if (chunk_cap && nd > 0 && nd <= 8) {
        hsize_t ch[8];
        for (int k = 0; k < nd; k++) ch[k] = dims[k] ? (dims[k] < chunk_cap ? dims[k] : chunk_cap) : 1;
        H5Pset_chunk(dc, nd, ch);
    }
    hid_t ds = H5Dcreate2(f, p, type, sp, lc, dc, H5P_DEFAULT);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dc);
    H5Pclose(lc);
    H5Sclose(sp);
}
/* dataset p's checksum attribute ("checksum", u64) set to v */
static void set_ck(hid_t f, const char *p, uint64_t v)
{
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    if (ds < 0) return;
    attr_scalar(ds, "checksum", H5T_STD_U64LE, &v);
    H5Dclose(ds);
}
#endif
