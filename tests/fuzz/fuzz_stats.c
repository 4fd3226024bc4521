/* fuzz_stats.c — libFuzzer harness for stats_h5_read (src/prune/stats_h5.c, the `prune --stats`
 * input) and the h5util.c readers it uses (h5_attr_read_string / _num / _i64, h5_read_vec). libhdf5
 * is an uninstrumented system library that is not hardened against arbitrary bytes, so the harness
 * is STRUCTURED: the fuzz input is a small program of edits applied with the HDF5 API to a valid
 * stats.h5 that the project's own writer (stats_h5_write) produced, and the reader then runs on the
 * edited file. Byte 0 picks the template (built once per value and cached as a file image): blocks
 * L = 1 + (b & 1), per-block channel counts (b >> 1 & 7), values (b >> 4 & 3: random in range,
 * zeros, exactly at the bounds / 1e300, denormals and -0), bit 6 a /1 file (format
 * "cfsp-mpi-stats/1", no checksums), bit 7 nsamples x seqlen = 3 x 16 (else 1 x 2). Byte 1 is the
 * reader's side: bits 0-1 the model it passes (0 the file's, 1 one block more or (bit 3) fewer, 2 /
 * 3 one channel more / fewer in a block), bit 2 another fingerprint. Then up to 24 edits (an opcode
 * byte mod 8, then fixed argument bytes; a truncated edit ends the program; make_h5_corpus.py
 * writes the seeds): 0 VALUE set one double of a dataset (16 special values or raw bits; flag:
 * rewrite its checksum), 1 CKSUM a dataset's or the root's "checksum" (set, flip a bit, delete, as
 * i64 / double / string / array / null space / u32, recompute), 2 COUNT nsamples / seqlen / ntokens
 * / num_layers (16 special values, as i64 / u64 / double / string / deleted / array / i8 / u16 /
 * null; flag: recompute the root checksum), 3 STRING format / fingerprint / compute (15 table
 * strings or a literal, as fixed NUL-terminated / fixed unterminated / variable length, UTF-8 or
 * ASCII, deleted, integer, array, null space), 4 REMOVE a dataset or its group, a group in its
 * place, a dangling or aliasing soft link, a hard link, 5 RESHAPE (other point counts, 2-D and
 * scalar, chunked, up to 2^31 points unwritten), 6 RETYPE (f32, f64 big-endian, i64, i32 BE, u8,
 * f16, bf16, string, compound, enum), 7 EXTRA objects the reader must ignore. The oracle is a
 * second implementation of the documented checks (stats_h5.h): the harness probes every dataset and
 * root attribute it touched with plain HDF5 calls and predicts accept or reject; the reader must
 * agree (an unchanged template must be accepted, any checksum, range, count, shape, fingerprint or
 * model mismatch rejected), on success return exactly the file's values, on failure leave a message
 * naming the file, and leave no HDF5 identifier open. The file is written to $TMPDIR (/dev/shm
 * under fuzz.sh): stats_h5_read takes a path, and HDF5 1.10 has no environment switch to the core
 * driver. No MPI_Init: the reader is serial, opens the file with the default (sec2) driver, and
 * err.c's FAIL only records the message (MPI_Initialized is asked only by DIE / cfsp_sync, which
 * would end the run: a crash here). The V1 warning on stderr is sent to /dev/null while the reader
 * runs (sanitizer reports go to the real stderr; CFSP_FUZZ_VERBOSE=1 keeps it and prints each
 * prediction and result). Built by mpi_scripts/fuzz.sh. */
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/format/h5util.h"
#include "cfsp/model/matmul.h"
#include "cfsp/prune/stats_h5.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <sanitizer/common_interface_defs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "h5_fuzz_edit.h"

/* stats_h5_write records the product mode (matmul.c): the fuzz build links no oneDNN / OpenBLAS */
const char *const compute_names[] = { "auto", "fp32", "bf16", NULL };
static mm_info g_mm = { .requested = COMPUTE_FP32, .mode = COMPUTE_FP32 };
const mm_info *mm_current(void) { return &g_mm; }

#define MAXL 3                 /* dataset slots: /channels/0..2 (templates have 1 or 2 blocks) */
#define NDS (GM_COUNT + 2 * MAXL)
#define VCAP 64                /* values probed per dataset */
#define MAX_OPS 24

/* ---- the process (the rest in h5_fuzz_edit.h) ---- */
static _Noreturn void oracle(const char *what, int rc, int pred)
{
    quiet(0);
    fprintf(stderr, "fuzz_stats: oracle failed: %s (reader rc %d, predicted %d; message: %s)\n", what, rc, pred, cfsp_last_error());
    abort();
}

static double unit(uint64_t *s) { return (double)(splitmix(s) >> 11) / 9007199254740992.0; }

/* ---- the probed state of the file (what a second, plain-HDF5 reading of it says) ---- */
enum { DS_OK, DS_MISSING, DS_NOTDS, DS_UNREADABLE, DS_BIG };
enum { CK_U64, CK_MISSING, CK_BAD };
enum { I_KNOWN, I_BAD };
typedef struct {
    int kind;                  /* DS_* */
    int64_t np;                /* points (DS_OK, DS_BIG) */
    double v[VCAP];            /* DS_OK: the values as H5Dread to native double gives them */
    int ck;                    /* CK_* of its "checksum" attribute */
    uint64_t ck_val;
} dstate;
typedef struct {
    dstate ds[NDS];
    int ik[4];                 /* nsamples, seqlen, ntokens, num_layers: I_* */
    int64_t iv[4];
    int rck;                   /* the root "checksum" */
    uint64_t rck_val;
    int sk[2];                 /* format, fingerprint: S_* */
    char sv[2][80];            /* the string a reader gets (up to the first NUL) */
    int unknown;               /* no prediction (never set today; kept for edits without a model) */
} fstate;

static const char *const count_names[4] = { "nsamples", "seqlen", "ntokens", "num_layers" };
static const char *const str_names[3] = { "format", "fingerprint", "compute" };

static void ds_path(int i, char *out, size_t n)
{
    if (i < GM_COUNT) snprintf(out, n, "/importance/%s", global_metric_names[i]);
    else snprintf(out, n, "/channels/%d/%s", (i - GM_COUNT) / 2, (i - GM_COUNT) % 2 ? "sum" : "sum_sq");
}
static void ds_group(int i, char *out, size_t n)
{
    if (i < GM_COUNT) snprintf(out, n, "/importance");
    else snprintf(out, n, "/channels/%d", (i - GM_COUNT) / 2);
}

/* one number attribute: exists, one point, of integer class, read as mt (as h5util.h promises) */
static int probe_num(hid_t obj, const char *name, hid_t mt, void *out)
{
    if (H5Aexists(obj, name) <= 0) return -2;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t sp = H5Aget_space(a), t = H5Aget_type(a);
    int ok = sp >= 0 && t >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Tget_class(t) == H5T_INTEGER &&
             H5Aread(a, mt, out) >= 0;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok ? 0 : -1;
}

static void probe_ds(hid_t f, int i, dstate *d)
{
    char p[128];
    ds_path(i, p, sizeof p);
    memset(d, 0, sizeof *d);
    d->ck = CK_MISSING;
    if (!link_chain(f, p)) { d->kind = DS_MISSING; return; }
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    if (ds < 0) { d->kind = DS_NOTDS; return; }
    hid_t sp = H5Dget_space(ds);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    d->np = np;
    if (np < 0) d->kind = DS_UNREADABLE;
    else if (np > VCAP) d->kind = DS_BIG;
    else if (np > 0 && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, d->v) < 0) d->kind = DS_UNREADABLE;
    else d->kind = DS_OK;
    int r = probe_num(ds, "checksum", H5T_NATIVE_UINT64, &d->ck_val);
    d->ck = r == 0 ? CK_U64 : r == -2 ? CK_MISSING : CK_BAD;
    H5Dclose(ds);
}

static void probe_root(hid_t f, fstate *s)
{
    for (int k = 0; k < 4; k++) s->ik[k] = probe_num(f, count_names[k], H5T_NATIVE_INT64, &s->iv[k]) ? I_BAD : I_KNOWN;
    int r = probe_num(f, "checksum", H5T_NATIVE_UINT64, &s->rck_val);
    s->rck = r == 0 ? CK_U64 : r == -2 ? CK_MISSING : CK_BAD;
}
static void probe_all(hid_t f, fstate *s)
{
    for (int i = 0; i < NDS; i++) probe_ds(f, i, &s->ds[i]);
    probe_root(f, s);
}

static uint64_t vec_ck(const double *v, int64_t n) { return tensor_checksum(v, sizeof(double), n, 1, 0, 0, 1); }
static uint64_t counts_ck(const int64_t *iv)
{
    int64_t v[4] = { iv[0], iv[1], iv[2], iv[3] };
    return tensor_checksum(v, sizeof(int64_t), 4, 1, 0, 0, 1);
}

/* ---- the reader's side ---- */
typedef struct { int L, m[MAXL]; uint64_t fp; } rside;

/* stats_h5.h's checks, from the probed state: 1 accept, 0 reject, -1 cannot tell */
static int predict(const fstate *s, const rside *r)
{
    if (s->unknown) return -1;
    int unk = 0;
    int checked = 0;
    if (s->sk[0] == S_BAD || strlen(s->sv[0]) >= 64) return 0;
    if (!strcmp(s->sv[0], STATS_H5_FORMAT)) checked = 1;
    else if (strcmp(s->sv[0], STATS_H5_FORMAT_V1)) return 0;
    char want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)r->fp);
    if (s->sk[1] == S_BAD || strlen(s->sv[1]) >= 64 || strcmp(s->sv[1], want)) return 0;
    for (int k = 0; k < 4; k++) if (s->ik[k] == I_BAD) return 0;
    int64_t ns = s->iv[0], sl = s->iv[1], nt = s->iv[2], L = s->iv[3];
    if (ns < 1 || ns > INT_MAX || sl < 2 || sl > INT_MAX || nt != ns * sl || L != r->L) return 0;
    if (checked && (s->rck != CK_U64 || s->rck_val != counts_ck(s->iv))) return 0;
    for (int i = 0; i < GM_COUNT + 2 * r->L; i++) {
        const dstate *d = &s->ds[i];
        int64_t n = i < GM_COUNT ? r->L : r->m[(i - GM_COUNT) / 2];
        if (d->kind == DS_MISSING || d->kind == DS_NOTDS || d->kind == DS_UNREADABLE || d->np != n) return 0;
        if (d->kind != DS_OK) { unk = 1; continue; }
        double bound = i == GM_ANGULAR ? (double)nt * (1 + 1e-9) : i == GM_COSINE ? 2.0 * (double)nt * (1 + 1e-9) : 0;
        for (int64_t j = 0; j < n; j++) {
            double x = d->v[j];
            if (!isfinite(x)) return 0;
            if (i < GM_COUNT && (x < 0 || (bound > 0 && x > bound))) return 0;
            if (i >= GM_COUNT && (i - GM_COUNT) % 2 == 0 && x < 0) return 0;
        }
        if (checked && (d->ck != CK_U64 || d->ck_val != vec_ck(d->v, n))) return 0;
    }
    return unk ? -1 : 1;
}

/* ---- templates ---- */
typedef struct {
    int built, L, m[MAXL], ns, sl;
    uint64_t fp;
    unsigned char *img;
    size_t len;
    fstate st;
} templ;
static templ g_t[256];
static model_config g_cfg[MAXL + 1];    /* [L]: a model of L blocks (stats_h5_read reads n_layers only) */

static const int m_pattern[8][MAXL] = { { 4, 4, 4 }, { 1, 5, 2 }, { 7, 1, 1 }, { 2, 9, 3 }, { 3, 3, 8 }, { 1, 1, 1 }, { 6, 2, 5 }, { 9, 4, 2 } };

static templ *get_templ(unsigned v)
{
    templ *t = &g_t[v];
    if (t->built) return t;
    uint64_t rs = 0x5eed0000u + v;
    t->L = 1 + (int)(v & 1);
    for (int l = 0; l < MAXL; l++) t->m[l] = m_pattern[(v >> 1) & 7][l];
    int style = (v >> 4) & 3, v1 = (v >> 6) & 1;
    t->ns = v & 0x80 ? 3 : 1;
    t->sl = v & 0x80 ? 16 : 2;
    t->fp = 0x0123456789abcdefULL ^ ((uint64_t)v * 0x100000001b3ULL);
    double nt = (double)t->ns * t->sl;
    block_stats all[MAXL];
    for (int l = 0; l < t->L; l++) {
        stats_init(&all[l], l, t->m[l]);
        all[l].ntok = t->ns * t->sl;
        for (int g = 0; g < GM_COUNT; g++) {
            double u = unit(&rs);
            all[l].imp[g] = style == 0 ? (g == GM_ANGULAR ? nt * u : g == GM_COSINE ? 2 * nt * u : 100 * u)
                          : style == 1 ? 0.0
                          : style == 2 ? (g == GM_ANGULAR ? nt : g == GM_COSINE ? 2 * nt : 1e300)
                          : (l & 1 ? -0.0 : 4.9e-324);
        }
        for (int j = 0; j < t->m[l]; j++) {
            double u = unit(&rs);
            all[l].sum_sq[j] = style == 0 ? 10 * u : style == 1 ? 0.0 : style == 2 ? 1e300 : (j & 1 ? -0.0 : 4.9e-324);
            all[l].sum[j] = style == 0 ? 10 * (u - 0.5) : style == 1 ? 0.0 : style == 2 ? -1e300 : -4.9e-324;
        }
    }
    if (stats_h5_write(g_path, &g_cfg[t->L], all, t->ns, t->sl, t->fp)) {
        fprintf(stderr, "fuzz_stats: stats_h5_write failed: %s\n", cfsp_last_error());
        abort();
    }
    for (int l = 0; l < t->L; l++) stats_free(&all[l]);
    if (v1) {   /* a /1 file: the same datasets, format /1, no checksums */
        hid_t f = H5Fopen(g_path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (f < 0 || H5Adelete(f, "format") < 0 || H5Adelete(f, "checksum") < 0) abort();
        h5_attr_string(f, "format", STATS_H5_FORMAT_V1);
        for (int i = 0; i < GM_COUNT + 2 * t->L; i++) {
            char p[128];
            ds_path(i, p, sizeof p);
            hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
            if (ds < 0 || H5Adelete(ds, "checksum") < 0 || H5Dclose(ds) < 0) abort();
        }
        if (H5Fclose(f) < 0) abort();
    }
    t->img = read_file(&t->len);
    hid_t f = H5Fopen(g_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) abort();
    memset(&t->st, 0, sizeof t->st);
    probe_all(f, &t->st);
    H5Fclose(f);
    t->st.sk[0] = t->st.sk[1] = S_KNOWN;
    snprintf(t->st.sv[0], sizeof t->st.sv[0], "%s", v1 ? STATS_H5_FORMAT_V1 : STATS_H5_FORMAT);
    snprintf(t->st.sv[1], sizeof t->st.sv[1], "%016llx", (unsigned long long)t->fp);
    rside r = { t->L, { 0 }, t->fp };
    memcpy(r.m, t->m, sizeof r.m);
    if (predict(&t->st, &r) != 1) { fprintf(stderr, "fuzz_stats: template %u: predicted not accepted\n", v); abort(); }
    t->built = 1;
    return t;
}

/* ---- the edit program (its reader and the common edits: h5_fuzz_edit.h) ---- */
static double special_value(unsigned sel, uint64_t raw, double cur, int i, const fstate *s)
{
    double nt = s->ik[2] == I_KNOWN ? (double)s->iv[2] : 32;
    double bound = i == GM_ANGULAR ? nt * (1 + 1e-9) : i == GM_COSINE ? 2.0 * nt * (1 + 1e-9) : 1e300;
    double x;
    switch (sel % 17) {
    case 0: memcpy(&x, &raw, 8); return x;
    case 1: return NAN;
    case 2: return INFINITY;
    case 3: return -INFINITY;
    case 4: return -0.0;
    case 5: return 0.0;
    case 6: return -1e-300;
    case 7: return -1.0;
    case 8: return 1.0;
    case 9: return 1.7976931348623157e308;
    case 10: return 2.2250738585072014e-308;
    case 11: return 4.9e-324;
    case 12: return i == GM_ANGULAR ? nt : i == GM_COSINE ? 2 * nt : 1e300;
    case 13: return bound * (1 + 2e-9);
    case 14: return nextafter(bound, INFINITY);
    case 15: return cur * 2;
    default: return nextafter(cur, INFINITY);
    }
}

static int64_t special_count(unsigned sel, uint64_t raw, int k, const fstate *s)
{
    int64_t cur = s->ik[k] == I_KNOWN ? s->iv[k] : 0;
    switch (sel % 16) {
    case 0: return (int64_t)raw;
    case 1: return (int64_t)((uint64_t)cur + 1);
    case 2: return (int64_t)((uint64_t)cur - 1);
    case 3: return 0;
    case 4: return 1;
    case 5: return 2;
    case 6: return -1;
    case 7: return INT_MAX;
    case 8: return (int64_t)INT_MAX + 1;
    case 9: return INT64_MAX;
    case 10: return INT64_MIN;
    case 11: return (int64_t)((uint64_t)(s->ik[0] == I_KNOWN ? s->iv[0] : 0) * (uint64_t)(s->ik[1] == I_KNOWN ? s->iv[1] : 0));
    case 12: return (int64_t)((uint64_t)(s->ik[3] == I_KNOWN ? s->iv[3] : 0) + 1);
    case 13: return 3;
    case 14: return (int64_t)((uint64_t)cur * 2);
    default: return (int64_t)(raw & 0xffff);
    }
}

static const char *const str_table[] = {
    STATS_H5_FORMAT, STATS_H5_FORMAT_V1, "cfsp-mpi-stats/3", "cfsp-mpi-pruned/2", "", NULL /* the fingerprint */,
    NULL /* upper case */, NULL /* 0x... */, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL /* another fingerprint */,
    STATS_H5_FORMAT " ", "fp32", "bf16", "cfsp-mpi-stats/",
};
#define NSTR (sizeof str_table / sizeof str_table[0])

static void write_values(hid_t f, const char *p, const double *v, int64_t n)
{
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    if (ds < 0) return;
    if (n > 0) H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
}

/* apply one edit; -1 when the program ended inside it */
static int apply(hid_t f, rd *r, fstate *s, int *links)
{
    unsigned op = u8(r) % 8;
    char p[128], q[128];
    int touched = -1;           /* the dataset to probe again; -2 all; -3 root */
    switch (op) {
    case 0: {                   /* VALUE */
        unsigned i = u8(r) % NDS, idx = u8(r);
        idx |= u8(r) << 8;
        unsigned sel = u8(r);
        uint64_t raw = un(r, 8);
        unsigned fl = u8(r);
        if (r->eof) return -1;
        dstate *d = &s->ds[i];
        if (d->kind != DS_OK || d->np < 1) break;
        double v[VCAP];
        memcpy(v, d->v, sizeof v);
        idx %= (unsigned)d->np;
        v[idx] = special_value(sel, raw, v[idx], (int)i, s);
        ds_path((int)i, p, sizeof p);
        write_values(f, p, v, d->np);
        probe_ds(f, (int)i, d);
        if ((fl & 1) && d->kind == DS_OK) set_ck(f, p, vec_ck(d->v, d->np));
        touched = (int)i;
        break;
    }
    case 1: {                   /* CKSUM */
        unsigned i = u8(r) % (NDS + 1), mode = u8(r);
        uint64_t raw = un(r, 8);
        if (r->eof) return -1;
        hid_t obj = f;
        if (i < NDS) {
            ds_path((int)i, p, sizeof p);
            if (s->ds[i].kind == DS_MISSING || s->ds[i].kind == DS_NOTDS) break;
            obj = H5Dopen2(f, p, H5P_DEFAULT);
            if (obj < 0) break;
        }
        int known = i < NDS ? s->ds[i].ck == CK_U64 : s->rck == CK_U64;
        uint64_t cur = i < NDS ? s->ds[i].ck_val : s->rck_val;
        if (mode % 12 == 10) {          /* flip one bit of the stored value */
            uint64_t v = (known ? cur : raw) ^ (1ULL << (raw & 63));
            attr_scalar(obj, "checksum", H5T_STD_U64LE, &v);
        } else if (mode % 12 == 11) {   /* the right value for what the file holds now */
            int ok = i < NDS ? s->ds[i].kind == DS_OK : 1;
            for (int k = 0; k < 4 && i == NDS; k++) ok &= s->ik[k] == I_KNOWN;
            if (ok) {
                uint64_t v = i < NDS ? vec_ck(s->ds[i].v, s->ds[i].np) : counts_ck(s->iv);
                attr_scalar(obj, "checksum", H5T_STD_U64LE, &v);
            }
        } else
            put_number(obj, "checksum", mode, raw, 0);
        if (i < NDS) H5Dclose(obj);
        touched = i < NDS ? (int)i : -3;
        break;
    }
    case 2: {                   /* COUNT */
        unsigned k = u8(r) % 4, mode = u8(r), sel = u8(r);
        uint64_t raw = un(r, 8);
        unsigned fl = u8(r);
        if (r->eof) return -1;
        int64_t v = special_count(sel, raw, (int)k, s);
        put_number(f, count_names[k], mode, (uint64_t)v, 1);
        probe_root(f, s);
        int ok = 1;
        for (int j = 0; j < 4; j++) ok &= s->ik[j] == I_KNOWN;
        if ((fl & 1) && ok) { uint64_t c = counts_ck(s->iv); attr_scalar(f, "checksum", H5T_STD_U64LE, &c); }
        touched = -3;
        break;
    }
    case 3: {                   /* STRING */
        unsigned k = u8(r) % 3, mode = u8(r), sel = u8(r);
        if (r->eof) return -1;
        char buf[80];
        size_t len;
        if (sel >= 0xc0) {
            len = sel & 0x3f;
            for (size_t j = 0; j < len; j++) buf[j] = (char)u8(r);
            if (r->eof) return -1;
        } else {
            const char *t = str_table[sel % NSTR];
            uint64_t fp = 0;
            if (s->sk[1] == S_KNOWN) fp = strtoull(s->sv[1], NULL, 16);
            if (sel % NSTR == 5) snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fp);
            else if (sel % NSTR == 6) snprintf(buf, sizeof buf, "%016llX", (unsigned long long)fp);
            else if (sel % NSTR == 7) snprintf(buf, sizeof buf, "0x%016llx", (unsigned long long)fp);
            else if (sel % NSTR == 10) snprintf(buf, sizeof buf, "%016llx", (unsigned long long)(fp ^ 1));
            else snprintf(buf, sizeof buf, "%s", t);
            len = strlen(buf);
        }
        put_string(f, str_names[k], mode, buf, len, k < 2 ? &s->sk[k] : NULL, k < 2 ? s->sv[k] : NULL, sizeof s->sv[0]);
        break;
    }
    case 4: {                   /* REMOVE */
        unsigned i = u8(r) % NDS, mode = u8(r) % 6, o = u8(r) % NDS;
        if (r->eof) return -1;
        ds_path((int)i, p, sizeof p);
        ds_path((int)o, q, sizeof q);
        hid_t lc = lcpl_mk();
        if (mode == 1) {
            ds_group((int)i, q, sizeof q);
            H5Ldelete(f, q, H5P_DEFAULT);
        } else {
            if (link_chain(f, p)) H5Ldelete(f, p, H5P_DEFAULT);
            if (mode == 2) { hid_t g = H5Gcreate2(f, p, lc, H5P_DEFAULT, H5P_DEFAULT); if (g >= 0) H5Gclose(g); }
            if (mode == 3) H5Lcreate_soft("/nowhere/at/all", f, p, lc, H5P_DEFAULT);
            if (mode == 4 && o != i) { H5Lcreate_soft(q, f, p, lc, H5P_DEFAULT); *links = 1; }
            if (mode == 5 && o != i && link_chain(f, q)) { H5Lcreate_hard(f, q, f, p, lc, H5P_DEFAULT); *links = 1; }
        }
        H5Pclose(lc);
        touched = -2;
        break;
    }
    case 5: {                   /* RESHAPE */
        unsigned i = u8(r) % NDS, code = u8(r), nd = u8(r) % 4;
        uint64_t seed = u8(r);
        unsigned fl = u8(r);
        if (r->eof) return -1;
        int64_t cur = s->ds[i].np;
        static const int64_t tab[] = { 0, 1, 2, -1, -2, -3, 3, 4, 5, 6, 9, 10, 64, 1 << 20, (int64_t)1 << 31, (int64_t)1 << 40 };
        int64_t n = tab[code % 16];
        if (n == -1) n = cur + 1;
        else if (n == -2) n = cur > 0 ? cur - 1 : 0;
        else if (n == -3) n = cur;
        hsize_t dims[2] = { (hsize_t)n, 1 };
        int ndim = nd == 0 ? 1 : nd == 3 ? 0 : 2;
        if (nd == 1) { dims[0] = 1; dims[1] = (hsize_t)n; }
        if (ndim == 0) n = 1;
        int big = n > VCAP;
        ds_path((int)i, p, sizeof p);
        if (link_chain(f, p)) H5Ldelete(f, p, H5P_DEFAULT);
        make_ds(f, p, H5T_IEEE_F64LE, ndim, dims, (big || (fl & 2)) ? 1024 : 0, 0);
        double v[VCAP];
        for (int64_t j = 0; j < n && !big; j++) v[j] = 10 * unit(&seed);
        if (!big) write_values(f, p, v, n);
        if ((fl & 1) && !big) set_ck(f, p, vec_ck(v, n));
        touched = *links ? -2 : (int)i;
        break;
    }
    case 6: {                   /* RETYPE */
        unsigned i = u8(r) % NDS, ty = u8(r) % 10, fl = u8(r);
        if (r->eof) return -1;
        dstate *d = &s->ds[i];
        if (d->kind != DS_OK) break;
        ds_path((int)i, p, sizeof p);
        hid_t t;
        switch (ty) {
        case 0: t = H5Tcopy(H5T_IEEE_F32LE); break;
        case 1: t = H5Tcopy(H5T_IEEE_F64BE); break;
        case 2: t = H5Tcopy(H5T_STD_I64LE); break;
        case 3: t = H5Tcopy(H5T_STD_I32BE); break;
        case 4: t = H5Tcopy(H5T_STD_U8LE); break;
        case 5: t = h5_dtype(DT_F16); break;
        case 6: t = H5Tcopy(H5T_C_S1); H5Tset_size(t, 8); break;
        case 7: t = H5Tcreate(H5T_COMPOUND, 8); H5Tinsert(t, "v", 0, H5T_NATIVE_DOUBLE); break;
        case 8: { t = H5Tenum_create(H5T_NATIVE_INT); int a = 0, b = 1; H5Tenum_insert(t, "a", &a); H5Tenum_insert(t, "b", &b); break; }
        default: t = h5_dtype(DT_BF16); break;
        }
        hsize_t dims[1] = { (hsize_t)d->np };
        double v[VCAP];
        memcpy(v, d->v, sizeof v);
        int64_t n = d->np;
        H5Ldelete(f, p, H5P_DEFAULT);
        make_ds(f, p, t, 1, dims, (fl & 2) ? 1024 : 0, 0);
        if (ty < 6 || ty == 9) write_values(f, p, v, n);
        H5Tclose(t);
        probe_ds(f, (int)i, d);
        if ((fl & 1) && d->kind == DS_OK) set_ck(f, p, vec_ck(d->v, d->np));
        touched = *links ? -2 : (int)i;
        break;
    }
    default: {                  /* EXTRA: what the reader must ignore */
        unsigned w = u8(r), kind = u8(r) % 4;
        if (r->eof) return -1;
        if (kind == 0) { int64_t x = (int64_t)w; attr_scalar(f, "extra", H5T_STD_I64LE, &x); }
        else if (kind == 1) {
            ds_path((int)(w % NDS), p, sizeof p);
            hid_t ds = link_chain(f, p) ? H5Dopen2(f, p, H5P_DEFAULT) : -1;
            if (ds >= 0) { double x = w; attr_scalar(ds, "note", H5T_NATIVE_DOUBLE, &x); H5Dclose(ds); }
        } else if (kind == 2) {
            snprintf(p, sizeof p, "/channels/%u/sum", 7 + w % 4);
            hsize_t d = 3;
            make_ds(f, p, H5T_IEEE_F64LE, 1, &d, 0, 0);
        } else {
            hid_t lc = lcpl_mk();
            snprintf(p, sizeof p, "/other/g%u", w);
            hid_t g = H5Gcreate2(f, p, lc, H5P_DEFAULT, H5P_DEFAULT);
            if (g >= 0) H5Gclose(g);
            H5Pclose(lc);
        }
        break;
    }
    }
    if (*links || touched == -2) probe_all(f, s);
    else if (touched >= 0) probe_ds(f, touched, &s->ds[touched]);
    else if (touched == -3) probe_root(f, s);
    return 0;
}

static fstate g_s;             /* static: too large for libFuzzer's default stack comfort */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(g_path, sizeof g_path, "%s/cfsp_fuzz_stats_%d.h5", dir && *dir ? dir : "/tmp", (int)getpid());
        g_verbose = getenv("CFSP_FUZZ_VERBOSE") && atoi(getenv("CFSP_FUZZ_VERBOSE"));
        g_errfd = dup(2);
        g_null = open("/dev/null", O_WRONLY);
        if (g_errfd < 0 || g_null < 0) abort();
        __sanitizer_set_report_fd((void *)(intptr_t)g_errfd);
        atexit(cleanup);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        /* keep HDF5's freed blocks on its free lists: each file open callocs a ~1 MB metadata cache,
         * which under ASan's allocator is a fresh mmap (page faults) every time otherwise */
        H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
        for (int L = 1; L <= MAXL; L++) {
            char j[256];
            snprintf(j, sizeof j, "{\"hidden_size\":8,\"intermediate_size\":4,\"num_hidden_layers\":%d,\"num_attention_heads\":2,"
                     "\"num_key_value_heads\":1,\"vocab_size\":16}", L);
            if (model_config_parse(j, strlen(j), "fuzz/config.json", &g_cfg[L])) abort();
        }
        g_base = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    }
    if (size < 2) return 0;
    templ *t = get_templ(data[0]);
    unsigned side = data[1];
    rside rs = { t->L, { 0 }, t->fp };
    memcpy(rs.m, t->m, sizeof rs.m);
    switch (side & 3) {
    case 1: rs.L = t->L == 1 ? 2 : side & 8 ? 1 : 3; break;
    case 2: rs.m[0]++; break;
    case 3: rs.m[t->L - 1] = rs.m[t->L - 1] > 1 ? rs.m[t->L - 1] - 1 : rs.m[t->L - 1] + 2; break;
    default: break;
    }
    if (side & 4) rs.fp ^= 1;

    g_s = t->st;
    if (write_file(t->img, t->len)) abort();
    rd r = { data + 2, size - 2, 0, 0 };
    if (r.n) {
        hid_t f = H5Fopen(g_path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (f < 0) abort();
        int links = 0;
        for (int k = 0; k < MAX_OPS && !r.eof && r.i < r.n; k++)
            if (apply(f, &r, &g_s, &links)) break;
        if (H5Fclose(f) < 0) abort();
    }
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != g_base) { fprintf(stderr, "fuzz_stats: the harness left HDF5 objects open\n"); abort(); }
    int pred = predict(&g_s, &rs);

    block_stats all[MAXL];
    for (int l = 0; l < rs.L; l++) stats_init(&all[l], l, rs.m[l]);
    int ns = -7, sl = -7;
    quiet(1);
    int rc = stats_h5_read(g_path, &g_cfg[rs.L], all, &ns, &sl, rs.fp);
    quiet(0);
    if (g_verbose) fprintf(stderr, "fuzz_stats: predicted %d, stats_h5_read %d %s\n", pred, rc, cfsp_last_error());
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != g_base) oracle("HDF5 identifiers left open by the reader", rc, pred);
    if (rc == 0) {
        if (pred == 0) oracle("accepted a file the checks reject", rc, pred);
        if (ns < 1 || sl < 2 || ns != g_s.iv[0] || sl != g_s.iv[1]) oracle("nsamples / seqlen not the file's", rc, pred);
        double nt = (double)ns * sl;
        for (int l = 0; l < rs.L; l++) {
            if (all[l].ntok != (int64_t)ns * sl) oracle("ntok", rc, pred);
            for (int g = 0; g < GM_COUNT; g++) {
                double x = all[l].imp[g], b = g == GM_ANGULAR ? nt * (1 + 1e-9) : g == GM_COSINE ? 2 * nt * (1 + 1e-9) : INFINITY;
                if (!isfinite(x) || x < 0 || x > b) oracle("importance out of range", rc, pred);
                if (g_s.ds[g].kind == DS_OK && memcmp(&x, &g_s.ds[g].v[l], 8)) oracle("importance not the file's", rc, pred);
            }
            for (int j = 0; j < rs.m[l]; j++) {
                const dstate *q = &g_s.ds[GM_COUNT + 2 * l], *m = q + 1;
                if (!isfinite(all[l].sum_sq[j]) || all[l].sum_sq[j] < 0 || !isfinite(all[l].sum[j])) oracle("channel sums out of range", rc, pred);
                if (q->kind == DS_OK && memcmp(&all[l].sum_sq[j], &q->v[j], 8)) oracle("sum_sq not the file's", rc, pred);
                if (m->kind == DS_OK && memcmp(&all[l].sum[j], &m->v[j], 8)) oracle("sum not the file's", rc, pred);
            }
        }
    } else {
        if (pred == 1) oracle("rejected a valid file", rc, pred);
        if (!strstr(cfsp_last_error(), g_path)) oracle("a failure without a message naming the file", rc, pred);
    }
    for (int l = 0; l < rs.L; l++) stats_free(&all[l]);
    cfsp_clear_error();
    return 0;
}
