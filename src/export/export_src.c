/* export_src.c — the tensor source of `cfsp-mpi export` (see export.h): a pruned HDF5 checkpoint
 * (model_h5.c's layout) or an unpruned Hugging Face directory, listed as Hugging Face tensors with
 * shapes and dtypes checked up front, then read row panel by row panel as raw stored bytes. */
#include "cfsp/export/export.h"
#include "cfsp/util/err.h"
#include "cfsp/format/h5util.h"
#include "cfsp/util/json_util.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t ex_tensor_bytes(const ex_tensor *t) { return (uint64_t)t->rows * (uint64_t)t->cols * dtype_size(t->dtype); }

int64_t ex_panel_rows(const ex_tensor *t, int64_t multiple)
{
    int64_t row = t->cols * (int64_t)dtype_size(t->dtype);
    int64_t n = (int64_t)EX_PANEL_BYTES / (row ? row : 1);
    if (multiple < 1) multiple = 1;
    n -= n % multiple;
    if (n < multiple) n = multiple;
    return n > t->rows ? t->rows : n;
}

const ex_tensor *ex_find(const ex_source *s, const char *name)
{
    for (int i = 0; i < s->nt; i++) if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

static ex_tensor *add_tensor(ex_source *s, const char *name, int layer, int ndim, int64_t rows, int64_t cols)
{
    s->t = xrealloc(s->t, sizeof(ex_tensor) * (size_t)(s->nt + 1));
    ex_tensor *t = &s->t[s->nt++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->layer = layer;
    t->ndim = ndim;
    t->rows = rows;
    t->cols = ndim == 2 ? cols : 1;
    return t;
}

/* the Hugging Face tensor list of a LLaMA model with per-block FFN sizes cfg->ffn, in export order */
static void list_tensors(ex_source *s)
{
    const model_config *c = &s->cfg;
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    char n[128];
    add_tensor(s, "model.embed_tokens.weight", -1, 2, c->vocab, D);
    for (int l = 0; l < c->n_layers; l++) {
        int64_t M = c->ffn[l];
        struct { const char *suffix; int nd; int64_t r, cc; } b[] = {
            { "input_layernorm.weight", 1, D, 0 },
            { "self_attn.q_proj.weight", 2, Q, D },
            { "self_attn.k_proj.weight", 2, KV, D },
            { "self_attn.v_proj.weight", 2, KV, D },
            { "self_attn.o_proj.weight", 2, D, Q },
            { "post_attention_layernorm.weight", 1, D, 0 },
            { "mlp.gate_proj.weight", 2, M, D },
            { "mlp.up_proj.weight", 2, M, D },
            { "mlp.down_proj.weight", 2, D, M },
        };
        for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
            snprintf(n, sizeof n, "model.layers.%d.%s", l, b[i].suffix);
            add_tensor(s, n, l, b[i].nd, b[i].r, b[i].cc);
        }
    }
    add_tensor(s, "model.norm.weight", -1, 1, D, 0);
    if (!c->tie_embeddings) add_tensor(s, "lm_head.weight", -1, 2, c->vocab, D);
}

/* HF name -> dataset path of model_h5.c: dots become slashes, "model.layers.N" -> "/model/layers/N" */
static void h5_path_of(const char *name, char *out, size_t n)
{
    snprintf(out, n, "/%s", name);
    for (char *p = out; *p; p++) if (*p == '.') *p = '/';
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


static int attr_double(hid_t obj, const char *name, double *v)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_DOUBLE, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

/* open dataset p and check it is a float tensor of the expected rank and (when known) shape */
static int check_dataset(ex_source *s, ex_tensor *t)
{
    const char *f = s->in_path;
    if (!h5_path_exists(s->h5, t->h5path)) return FAIL("%s: dataset '%s' is missing", f, t->h5path);
    hid_t ds = H5Dopen2(s->h5, t->h5path, H5P_DEFAULT);
    if (ds < 0) return FAIL("%s: '%s' is not a dataset", f, t->h5path);
    hid_t ty = H5Dget_type(ds), sp = H5Dget_space(ds);
    int rc = 0;
    hsize_t dims[4] = { 0, 0, 0, 0 };
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (nd < 1 || nd > 4) rc = FAIL("%s: dataset '%s': unreadable dataspace", f, t->h5path);
    else H5Sget_simple_extent_dims(sp, dims, NULL);
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
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

int ex_source_open_h5(const char *path, const char *src_override, ex_source *s)
{
    memset(s, 0, sizeof *s);
    s->h5 = -1;
    snprintf(s->in_path, sizeof s->in_path, "%s", path);
    h5_quiet();
    if (!path_exists(path)) return FAIL("%s: no such file", path);
    if (H5Fis_hdf5(path) <= 0) return FAIL("%s: not an HDF5 file (or unreadable)", path);
    s->h5 = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->h5 < 0) return FAIL("%s: not an HDF5 file (or unreadable)", path);
    char *fmt = h5_attr_read_string(s->h5, "format");
    /* the dataset layout read here is the same in both versions (/2 changed the checksums) */
    if (!fmt || (strcmp(fmt, MODEL_H5_FORMAT) && strcmp(fmt, "cfsp-mpi-pruned/1"))) {
        int rc = FAIL("%s: attribute 'format' is %s%s%s, expected \"%s\" (a pruned checkpoint of cfsp-mpi)", path,
                      fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "", MODEL_H5_FORMAT);
        free(fmt);
        return rc;
    }
    free(fmt);
    if (H5Aexists(s->h5, "num_tensors") <= 0)
        return FAIL("%s: no 'num_tensors' attribute: not a complete cfsp-mpi output", path);
    s->config_text = h5_attr_read_string(s->h5, "config");
    if (!s->config_text) return FAIL("%s: attribute 'config' is missing", path);
    char where[4200];
    snprintf(where, sizeof where, "%s: attribute 'config'", path);
    if (model_config_parse(s->config_text, strlen(s->config_text), where, &s->cfg)) return -1;
    char *m = h5_attr_read_string(s->h5, "method");
    snprintf(s->method, sizeof s->method, "%s", m ? m : "unknown");
    free(m);
    if (attr_double(s->h5, "ratio", &s->ratio)) s->ratio = -1;

    /* the source checkpoint: --model, else the model path the pruning run recorded */
    if (src_override && src_override[0]) snprintf(s->src_dir, sizeof s->src_dir, "%s", src_override);
    else {
        char *opts = h5_attr_read_string(s->h5, "options");
        cJSON *j = opts ? cJSON_Parse(opts) : NULL;
        const cJSON *mp = j ? cJSON_GetObjectItemCaseSensitive(j, "model") : NULL;
        if (cJSON_IsString(mp) && mp->valuestring[0]) snprintf(s->src_dir, sizeof s->src_dir, "%s", mp->valuestring);
        cJSON_Delete(j);
        free(opts);
        if (!s->src_dir[0]) return FAIL("%s: attribute 'options' records no model path: give the source checkpoint with --model DIR", path);
    }

    /* tensors: the FFN sizes come from the datasets (checked against the recorded config) */
    for (int l = 0; l < s->cfg.n_layers; l++) s->cfg.ffn[l] = -1;
    list_tensors(s);
    for (int i = 0; i < s->nt; i++) {
        ex_tensor *t = &s->t[i];
        h5_path_of(t->name, t->h5path, sizeof t->h5path);
        if (strstr(t->name, "mlp.gate_proj.")) t->rows = -1;
        if (check_dataset(s, t)) return -1;
        if (strstr(t->name, "mlp.gate_proj.")) {
            s->cfg.ffn[t->layer] = (int)t->rows;
            if (t->rows < 1) return FAIL("%s: dataset '%s' has no rows", path, t->h5path);
            s->t[i + 1].rows = t->rows;             /* up_proj [m, D] */
            s->t[i + 2].cols = t->rows;             /* down_proj [D, m] */
        }
    }
    cJSON *cj = cJSON_Parse(s->config_text);
    const cJSON *is = cj ? cJSON_GetObjectItemCaseSensitive(cj, "intermediate_sizes") : NULL;
    int rc = 0;
    if (cJSON_IsArray(is)) {
        if (cJSON_GetArraySize(is) != s->cfg.n_layers) rc = FAIL("%s: attribute 'config': 'intermediate_sizes' has %d entries, expected %d", path, cJSON_GetArraySize(is), s->cfg.n_layers);
        for (int l = 0; !rc && l < s->cfg.n_layers; l++) {
            const cJSON *e = cJSON_GetArrayItem(is, l);
            if (!cJSON_IsNumber(e) || (int)e->valuedouble != s->cfg.ffn[l])
                rc = FAIL("%s: block %d: the datasets hold %d FFN channels, attribute 'config' records %g", path, l, s->cfg.ffn[l],
                          cJSON_IsNumber(e) ? e->valuedouble : -1.0);
        }
    }
    cJSON_Delete(cj);
    if (rc) return -1;
    s->bias_layer = -1;
    for (int l = 0; l < s->cfg.n_layers; l++) {
        char p[160];
        snprintf(p, sizeof p, "/model/layers/%d/mlp/down_proj/bias", l);
        if (!h5_path_exists(s->h5, p)) continue;
        s->has_bias = 1;
        if (s->bias_layer < 0) s->bias_layer = l;
        char n[128];
        snprintf(n, sizeof n, "model.layers.%d.mlp.down_proj.bias", l);
        ex_tensor *t = add_tensor(s, n, l, 1, s->cfg.hidden, 0);
        snprintf(t->h5path, sizeof t->h5path, "%s", p);
        if (check_dataset(s, t)) return -1;
    }
    return 0;
}

int ex_source_open_dir(const char *dir, ex_source *s)
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
        ex_tensor *t = &s->t[i];
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
        if (strstr(s->st.t[i].name, ".bias")) return FAIL("%s: tensor '%s': biases are not supported", s->st.files[s->st.t[i].file].path, s->st.t[i].name);
    s->bias_layer = -1;
    return 0;
}

int ex_read_rows(ex_source *s, const ex_tensor *t, int64_t r0, int64_t n, void *buf)
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
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (ty >= 0) H5Tclose(ty);
    H5Dclose(ds);
    return rc;
}

void ex_source_close(ex_source *s)
{
    if (s->h5 >= 0) H5Fclose(s->h5);
    if (s->st_open) st_close(&s->st);
    model_config_free(&s->cfg);
    free(s->config_text);
    free(s->t);
    memset(s, 0, sizeof *s);
    s->h5 = -1;
}
