/* reader.c — the checkpoint reader (see reader.h): a pruned HDF5 checkpoint or an unpruned Hugging
 * Face directory, listed as Hugging Face tensors with shapes and dtypes checked up front, then
 * read row panel by row panel as raw stored bytes. Every read of the file FAILs naming it and the
 * field; closes of handles that opened are checked (H5_CHECK). */
#include "cfsp/ckpt/reader.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/format/h5util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t ckpt_tensor_bytes(const ckpt_tensor *t) { return (uint64_t)t->rows * (uint64_t)t->cols * dtype_size(t->dtype); }

const ckpt_tensor *ckpt_find(const ckpt_source *s, const char *name)
{
    for (int i = 0; i < s->nt; i++) if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

/* append tensor kind (of block l, m FFN channels; -1: read from the file) with its layout shape */
static ckpt_tensor *add_tensor(ckpt_source *s, ckpt_kind kind, int l, int64_t m)
{
    /* room for 64, then doubled (the capacity is implied by nt): a config of 4096 blocks lists its
     * 36k tensors in linear time, also where realloc always copies (under ASan one-by-one growth
     * took minutes before the first missing dataset was reported) */
    if (s->nt == 0 || (s->nt >= 64 && !(s->nt & (s->nt - 1))))
        s->t = xrealloc(s->t, sizeof(ckpt_tensor) * (size_t)(s->nt < 64 ? 64 : 2 * s->nt));
    ckpt_tensor *t = &s->t[s->nt++];
    memset(t, 0, sizeof *t);
    int64_t dims[2];
    ckpt_tensor_name(kind, l, t->name, sizeof t->name);
    if (s->in_path[0]) ckpt_dataset_path(t->name, t->h5path, sizeof t->h5path);
    t->kind = kind;
    t->layer = kind < CK_NBLOCK ? l : -1;
    t->ndim = ckpt_tensor_shape(&s->cfg, kind, m, dims);
    t->rows = dims[0];
    t->cols = t->ndim == 2 ? dims[1] : 1;
    return t;
}

/* the Hugging Face tensor list of the model with per-block FFN sizes cfg->ffn, in export order
 * (a block's attention extras — Qwen2 biases, Qwen3 q/k norms — after o_proj; gate, up and down
 * stay adjacent, as ckpt_open reads the FFN size off gate) */
static void list_tensors(ckpt_source *s)
{
    static const ckpt_kind block[] = { CK_LN1, CK_Q, CK_K, CK_V, CK_O, CK_QB, CK_KB, CK_VB, CK_QN, CK_KN,
                                       CK_LN2, CK_GATE, CK_UP, CK_DOWN };
    add_tensor(s, CK_EMBED, -1, 0);
    for (int l = 0; l < s->cfg.n_layers; l++)
        for (size_t i = 0; i < sizeof block / sizeof block[0]; i++)
            if (ckpt_kind_in_block(&s->cfg, block[i])) add_tensor(s, block[i], l, s->cfg.ffn[l]);
    add_tensor(s, CK_NORM, -1, 0);
    if (!s->cfg.tie_embeddings) add_tensor(s, CK_HEAD, -1, 0);
}

/* does every component of path exist? (H5Lexists needs the intermediate groups to exist) */
static int h5_path_exists(hid_t f, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (H5Lexists(f, buf, H5P_DEFAULT) <= 0) return 0;
            if (!c) return 1;
            *p = c;
        }
    }
}

/* why h5_attr_read_string found no string attribute `name` */
static const char *absent_or_bad(hid_t obj, const char *name)
{
    return H5Aexists(obj, name) > 0 ? "not one readable string" : "missing";
}

/* open t's dataset and check it is a float tensor of the expected rank and (when known) shape */
static int check_dataset(ckpt_source *s, ckpt_tensor *t)
{
    const char *f = s->in_path;
    if (!h5_path_exists(s->h5, t->h5path)) return FAIL("%s: dataset '%s' is missing", f, t->h5path);
    hid_t ds = H5Dopen2(s->h5, t->h5path, H5P_DEFAULT);
    if (ds < 0) return FAIL("%s: '%s' is not a dataset", f, t->h5path);
    hid_t ty = H5Dget_type(ds), sp = H5Dget_space(ds);
    int rc = 0;
    hsize_t dims[4] = { 0, 0, 0, 0 };
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (nd < 1 || nd > 4 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) rc = FAIL("%s: dataset '%s': unreadable dataspace", f, t->h5path);
    if (!rc && (ty < 0 || h5_dtype_of(ty, &t->dtype) != 0))
        rc = FAIL("%s: dataset '%s': not an F32, F16 or BF16 float type", f, t->h5path);
    if (!rc && nd != t->ndim)
        rc = FAIL("%s: dataset '%s' has %d dimensions, expected %d", f, t->h5path, nd, t->ndim);
    if (!rc && t->rows < 0) t->rows = (int64_t)dims[0];     /* FFN size read from the file */
    if (!rc && ((int64_t)dims[0] != t->rows || (nd == 2 && (int64_t)dims[1] != t->cols))) {
        if (nd == 2)
            rc = FAIL("%s: dataset '%s' has shape [%llu,%llu], expected [%lld,%lld]", f, t->h5path, (unsigned long long)dims[0],
                      (unsigned long long)dims[1], (long long)t->rows, (long long)t->cols);
        else
            rc = FAIL("%s: dataset '%s' has shape [%llu], expected [%lld]", f, t->h5path, (unsigned long long)dims[0], (long long)t->rows);
    }
    if (!rc && s->ck_verify) {           /* CKPT_FORMAT: every tensor carries its checksum */
        char where[4400];
        snprintf(where, sizeof where, "%s: dataset '%s'", f, t->h5path);
        if (H5Aexists(ds, CKPT_A_CHECKSUM) <= 0)
            rc = FAIL("%s: no '" CKPT_A_CHECKSUM "' attribute (every tensor of a " CKPT_FORMAT " file carries one): damaged or not a cfsp-mpi output", where);
        else if (h5_attr_read_num(ds, where, CKPT_A_CHECKSUM, H5T_NATIVE_UINT64, &t->ck_want)) rc = -1;
        else t->ck_has = 1;
    }
    if (ty >= 0) H5_CHECK(H5Tclose(ty));
    if (sp >= 0) H5_CHECK(H5Sclose(sp));
    H5_CHECK(H5Dclose(ds));
    return rc;
}

int ckpt_open(const char *path, const char *src_override, ckpt_source *s)
{
    memset(s, 0, sizeof *s);
    s->h5 = -1;
    snprintf(s->in_path, sizeof s->in_path, "%s", path);
    h5_quiet();
    if (!path_exists(path)) return FAIL("%s: no such file", path);
    if (input_check(path, NULL)) return -1;
    if (H5Fis_hdf5(path) <= 0) return FAIL("%s: not an HDF5 file (or unreadable)", path);
    s->h5 = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->h5 < 0) return FAIL("%s: not an HDF5 file (or unreadable)", path);
    char *fmt = h5_attr_read_string(s->h5, CKPT_A_FORMAT);
    /* the dataset layout read here is the same in both versions (/2 changed the checksums) */
    if (!fmt || (strcmp(fmt, CKPT_FORMAT) && strcmp(fmt, CKPT_FORMAT_V1))) {
        int rc = FAIL("%s: attribute '" CKPT_A_FORMAT "' is %s%s%s, expected \"%s\" (a pruned checkpoint of cfsp-mpi)", path,
                      fmt ? "\"" : "", fmt ? fmt : absent_or_bad(s->h5, CKPT_A_FORMAT), fmt ? "\"" : "", CKPT_FORMAT);
        free(fmt);
        return rc;
    }
    /* /1 hashed with another function: its tensors are read unverified (`cfsp-mpi verify` of /2 only) */
    s->ck_verify = !strcmp(fmt, CKPT_FORMAT);
    free(fmt);
    if (H5Aexists(s->h5, CKPT_A_NUM_TENSORS) <= 0)
        return FAIL("%s: no '" CKPT_A_NUM_TENSORS "' attribute: not a complete cfsp-mpi output", path);
    s->config_text = h5_attr_read_string(s->h5, CKPT_A_CONFIG);
    if (!s->config_text) return FAIL("%s: attribute '" CKPT_A_CONFIG "' is %s", path, absent_or_bad(s->h5, CKPT_A_CONFIG));
    char where[4200];
    snprintf(where, sizeof where, "%s: attribute '" CKPT_A_CONFIG "'", path);
    if (model_config_parse(s->config_text, strlen(s->config_text), where, &s->cfg)) return -1;
    char *m = h5_attr_read_string(s->h5, CKPT_A_METHOD);
    snprintf(s->method, sizeof s->method, "%s", m ? m : "unknown");
    free(m);
    s->ratio = -1;
    if (H5Aexists(s->h5, CKPT_A_RATIO) > 0 && h5_attr_read_num(s->h5, path, CKPT_A_RATIO, H5T_NATIVE_DOUBLE, &s->ratio)) return -1;

    /* the source checkpoint: --model, else the model path the pruning run recorded */
    if (src_override && src_override[0]) snprintf(s->src_dir, sizeof s->src_dir, "%s", src_override);
    else {
        char *opts = h5_attr_read_string(s->h5, CKPT_A_OPTIONS);
        cJSON *j = opts ? cJSON_Parse(opts) : NULL;
        const cJSON *mp = j ? cJSON_GetObjectItemCaseSensitive(j, CKPT_OPTIONS_MODEL) : NULL;
        if (cJSON_IsString(mp) && mp->valuestring[0]) snprintf(s->src_dir, sizeof s->src_dir, "%s", mp->valuestring);
        cJSON_Delete(j);
        free(opts);
        if (!s->src_dir[0]) return FAIL("%s: attribute '" CKPT_A_OPTIONS "' records no model path: give the source checkpoint with --model DIR", path);
    }

    /* tensors: the FFN sizes come from the datasets (checked against the recorded config) */
    for (int l = 0; l < s->cfg.n_layers; l++) s->cfg.ffn[l] = -1;
    list_tensors(s);
    for (int i = 0; i < s->nt; i++) {
        ckpt_tensor *t = &s->t[i];
        if (check_dataset(s, t)) return -1;
        if (t->kind == CK_GATE) {
            if (t->rows < 1) return FAIL("%s: dataset '%s' has no rows", path, t->h5path);
            /* model_config.c's bound on FFN sizes; also keeps cfg.ffn (int) the dataset's size */
            if (t->rows > (1 << 30))
                return FAIL("%s: dataset '%s' has %lld rows: more FFN channels than 2^30", path, t->h5path, (long long)t->rows);
            s->cfg.ffn[t->layer] = (int)t->rows;
            s->t[i + 1].rows = t->rows;             /* up_proj [m, D] */
            s->t[i + 2].cols = t->rows;             /* down_proj [D, m] */
        }
    }
    cJSON *cj = cJSON_Parse(s->config_text);
    const cJSON *is = cj ? cJSON_GetObjectItemCaseSensitive(cj, CKPT_CONFIG_FFN_SIZES) : NULL;
    int rc = 0;
    if (cJSON_IsArray(is)) {
        if (cJSON_GetArraySize(is) != s->cfg.n_layers) rc = FAIL("%s: attribute '" CKPT_A_CONFIG "': '" CKPT_CONFIG_FFN_SIZES "' has %d entries, expected %d", path, cJSON_GetArraySize(is), s->cfg.n_layers);
        for (int l = 0; !rc && l < s->cfg.n_layers; l++) {
            const cJSON *e = cJSON_GetArrayItem(is, l);
            /* compared as doubles: (int) of a number outside int's range is undefined (2^32 + 3
             * would pass as 3) */
            if (!cJSON_IsNumber(e) || e->valuedouble != (double)s->cfg.ffn[l])
                rc = FAIL("%s: block %d: the datasets hold %d FFN channels, attribute '" CKPT_A_CONFIG "' records %g", path, l, s->cfg.ffn[l],
                          cJSON_IsNumber(e) ? e->valuedouble : -1.0);
        }
    }
    cJSON_Delete(cj);
    if (rc) return -1;
    s->bias_layer = -1;
    for (int l = 0; l < s->cfg.n_layers; l++) {
        char n[128], p[160];
        ckpt_tensor_name(CK_BIAS, l, n, sizeof n);
        ckpt_dataset_path(n, p, sizeof p);
        if (!h5_path_exists(s->h5, p)) continue;
        s->has_bias = 1;
        if (s->bias_layer < 0) s->bias_layer = l;
        if (check_dataset(s, add_tensor(s, CK_BIAS, l, 0))) return -1;
    }
    return 0;
}

int ckpt_open_dir(const char *dir, ckpt_source *s)
{
    memset(s, 0, sizeof *s);
    s->h5 = -1;
    snprintf(s->src_dir, sizeof s->src_dir, "%s", dir);
    snprintf(s->method, sizeof s->method, "none");
    s->ratio = 0.0;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    size_t len = 0;
    if (read_whole_file(p, 16u << 20, &s->config_text, &len)) return -1;
    if (model_config_parse(s->config_text, len, p, &s->cfg)) return -1;
    if (st_open_dir(dir, &s->st)) return -1;
    s->st_open = 1;
    list_tensors(s);
    for (int i = 0; i < s->nt; i++) {
        ckpt_tensor *t = &s->t[i];
        const st_tensor *st = st_find(&s->st, t->name);
        if (!st) return FAIL("%s: tensor '%s' is missing", s->st.files[0].path, t->name);
        const char *fp = s->st.files[st->file].path;
        if (st->ndim != t->ndim || st->shape[0] != t->rows || (t->ndim == 2 && st->shape[1] != t->cols))
            return FAIL("%s: tensor '%s' has %d dimensions [%lld,...], expected [%lld%s%lld]", fp, t->name, st->ndim,
                        (long long)st->shape[0], (long long)t->rows, t->ndim == 2 ? "," : "", t->ndim == 2 ? (long long)t->cols : 0LL);
        t->dtype = st->dtype;
        t->st = st;
    }
    for (int i = 0; i < s->st.nt; i++)
        if ((strstr(s->st.t[i].name, ".bias") || strstr(s->st.t[i].name, "_norm.weight")) && !strstr(s->st.t[i].name, "layernorm") &&
            strcmp(s->st.t[i].name, "model.norm.weight") && !ckpt_find(s, s->st.t[i].name))
            return FAIL("%s: tensor '%s': a bias or norm the %s architecture does not have", s->st.files[s->st.t[i].file].path,
                        s->st.t[i].name, s->cfg.model_type);
    s->bias_layer = -1;
    return 0;
}

int64_t ckpt_max_ffn(const ckpt_source *s)
{
    int64_t m = 0;
    for (int l = 0; l < s->cfg.n_layers; l++) if (s->cfg.ffn[l] > m) m = s->cfg.ffn[l];
    return m;
}

/* block l's FFN presented as m[l] >= its stored size channels */
static void pad_blocks(ckpt_source *s, const int64_t *m)
{
    int first = !s->stored_ffn;             /* the stored shapes: recorded on the first padding */
    for (int i = 0; i < s->nt; i++) {
        ckpt_tensor *t = &s->t[i];
        if (t->kind != CK_GATE && t->kind != CK_UP && t->kind != CK_DOWN) continue;
        if (first) { t->stored_rows = t->rows; t->stored_cols = t->cols; }
        if (t->kind == CK_DOWN) t->cols = m[t->layer];
        else t->rows = m[t->layer];
    }
    if (!s->stored_ffn) {
        s->stored_ffn = xmalloc(sizeof(int) * (size_t)s->cfg.n_layers);
        memcpy(s->stored_ffn, s->cfg.ffn, sizeof(int) * (size_t)s->cfg.n_layers);
    }
    s->cfg.ffn_default = 0;
    for (int l = 0; l < s->cfg.n_layers; l++) {
        s->cfg.ffn[l] = (int)m[l];
        if (s->cfg.ffn[l] > s->cfg.ffn_default) s->cfg.ffn_default = s->cfg.ffn[l];
    }
}

void ckpt_pad_ffn(ckpt_source *s, int64_t m)
{
    int64_t *v = xmalloc(sizeof(int64_t) * (size_t)s->cfg.n_layers);
    for (int l = 0; l < s->cfg.n_layers; l++) v[l] = m;
    pad_blocks(s, v);
    free(v);
}

int ckpt_pad_empty_ffn(ckpt_source *s)
{
    int n = 0;
    int64_t *v = xmalloc(sizeof(int64_t) * (size_t)s->cfg.n_layers);
    for (int l = 0; l < s->cfg.n_layers; l++) {
        v[l] = s->cfg.ffn[l] > 0 ? s->cfg.ffn[l] : 1;
        n += s->cfg.ffn[l] == 0;
    }
    if (n) pad_blocks(s, v);
    free(v);
    return n;
}

int ckpt_stored_ffn(const ckpt_source *s, int l) { return s->stored_ffn ? s->stored_ffn[l] : s->cfg.ffn[l]; }

static int read_stored_rows(ckpt_source *s, const ckpt_tensor *t, int64_t r0, int64_t n, void *buf);

/* The streaming checksum (reader.h): n stored rows of t from stored row r0, their bytes at data
 * (scols elements each), of a tensor with srows stored rows. Being a sum of per-position terms,
 * the panels' checksums add up to the whole tensor's; a read from row 0 starts the sum afresh. */
static int ck_account(ckpt_source *s, const ckpt_tensor *t, int64_t r0, int64_t n, const void *data, int64_t srows, int64_t scols)
{
    if (!t->ck_has || n <= 0) return 0;
    int i = -1;
    for (int k = 0; k < s->nt && i < 0; k++) if (&s->t[k] == t) i = k;
    if (i < 0) {                                /* a copy: find the listed tensor */
        const ckpt_tensor *f = ckpt_find(s, t->name);
        if (!f) return 0;
        i = (int)(f - s->t);
    }
    if (!s->ck_sum) {
        s->ck_sum = xcalloc((size_t)s->nt, sizeof(uint64_t));
        s->ck_next = xcalloc((size_t)s->nt, sizeof(int64_t));
    }
    if (r0 == 0) { s->ck_sum[i] = 0; s->ck_next[i] = 0; }
    if (s->ck_next[i] != r0) { s->ck_next[i] = -1; return 0; }   /* out of order: not verified */
    s->ck_sum[i] += tensor_checksum(data, dtype_size(t->dtype), n, scols, r0, 0, scols);
    s->ck_next[i] += n;
    if (s->ck_next[i] < srows) return 0;
    s->ck_next[i] = -1;                        /* done: a later read from row 0 verifies again */
    if (s->ck_sum[i] != t->ck_want)
        return FAIL("%s: dataset '%s': checksum mismatch (stored %016llx, data %016llx): the file is damaged (cfsp-mpi verify %s checks every tensor)",
                    s->in_path, t->h5path, (unsigned long long)t->ck_want, (unsigned long long)s->ck_sum[i], s->in_path);
    return 0;
}

int ckpt_read_rows(ckpt_source *s, const ckpt_tensor *t, int64_t r0, int64_t n, void *buf)
{
    if (n <= 0) return 0;
    if (!t->stored_rows && !t->stored_cols) {
        int rc = read_stored_rows(s, t, r0, n, buf);
        return rc ? rc : ck_account(s, t, r0, n, buf, t->rows, t->cols);
    }
    /* padded (ckpt_pad_ffn): stored rows, zero rows after them; each stored row's columns, zeros after */
    size_t es = dtype_size(t->dtype), out_row = (size_t)t->cols * es, in_row = (size_t)t->stored_cols * es;
    int64_t have = t->stored_rows - r0;
    have = have < 0 ? 0 : have > n ? n : have;
    memset(buf, 0, (size_t)n * out_row);
    if (!have) return 0;
    if (in_row == out_row) {
        int rc = read_stored_rows(s, t, r0, have, buf);
        return rc ? rc : ck_account(s, t, r0, have, buf, t->stored_rows, t->stored_cols);
    }
    ckpt_tensor st = *t;
    st.rows = t->stored_rows;
    st.cols = t->stored_cols;
    st.stored_rows = st.stored_cols = 0;
    if (!in_row) return 0;
    char *tmp = xmalloc((size_t)have * in_row);
    int rc = read_stored_rows(s, &st, r0, have, tmp);
    if (!rc) rc = ck_account(s, t, r0, have, tmp, t->stored_rows, t->stored_cols);
    for (int64_t r = 0; !rc && r < have; r++) memcpy((char *)buf + (size_t)r * out_row, tmp + (size_t)r * in_row, in_row);
    free(tmp);
    return rc;
}

static int read_stored_rows(ckpt_source *s, const ckpt_tensor *t, int64_t r0, int64_t n, void *buf)
{
    if (n <= 0) return 0;
    size_t row = (size_t)t->cols * dtype_size(t->dtype);
    if (t->st) {
        const st_file *f = &s->st.files[t->st->file];
        uint64_t off = f->data_start + t->st->begin + (uint64_t)r0 * row, want = (uint64_t)n * row, got = 0;
        while (got < want) {
            ssize_t r = pread(f->fd, (char *)buf + got, (size_t)(want - got), (off_t)(off + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return FAIL("%s: tensor '%s': read failed: %s", f->path, t->name, r < 0 ? strerror(errno) : "unexpected end of file");
            got += (uint64_t)r;
        }
        return 0;
    }
    hid_t ds = H5Dopen2(s->h5, t->h5path, H5P_DEFAULT);
    if (ds < 0) return FAIL("%s: cannot open dataset '%s'", s->in_path, t->h5path);
    hid_t ty = H5Dget_type(ds), fs = H5Dget_space(ds);
    hsize_t start[2] = { (hsize_t)r0, 0 }, count[2] = { (hsize_t)n, (hsize_t)t->cols };
    int nd = t->ndim;
    int rc = 0;
    hid_t ms = H5Screate_simple(nd, count, NULL);
    if (ty < 0 || fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(ds, ty, ms, fs, H5P_DEFAULT, buf) < 0)   /* the file type as memory type: raw bits */
        rc = FAIL("%s: dataset '%s': reading rows %lld..%lld failed", s->in_path, t->h5path, (long long)r0, (long long)(r0 + n));
    if (ms >= 0) H5_CHECK(H5Sclose(ms));
    if (fs >= 0) H5_CHECK(H5Sclose(fs));
    if (ty >= 0) H5_CHECK(H5Tclose(ty));
    H5_CHECK(H5Dclose(ds));
    return rc;
}

void ckpt_close(ckpt_source *s)
{
    if (s->h5 >= 0) H5_CHECK(H5Fclose(s->h5));
    if (s->st_open) st_close(&s->st);
    model_config_free(&s->cfg);
    free(s->config_text);
    free(s->t);
    free(s->stored_ffn);
    free(s->ck_sum);
    free(s->ck_next);
    memset(s, 0, sizeof *s);
    s->h5 = -1;
}
