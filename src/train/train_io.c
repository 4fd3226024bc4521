/* train_io.c — the files of the LoRA recovery (see train.h): loading the frozen model (a pruned
 * HDF5 checkpoint or a Hugging Face directory, through the checkpoint reader of cfsp/ckpt/reader.h),
 * adapter checkpoints, the merged pruned checkpoint (its tensors computed here, written by
 * cfsp/ckpt/merge.h) and the PEFT adapter safetensors. All writers are serial (rank 0), write
 * NAME.tmp and rename it into place; they check every HDF5 and IO call. The checkpoint reader
 * FAILs naming the file and the field, and releases its handles best-effort once failing. */
#include "cfsp/ckpt/merge.h"
#include "cfsp/ckpt/reader.h"
#include "cfsp/format/h5util.h"
#include "cfsp/train/train.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cblas.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LORA_CKPT_FORMAT "cfsp-mpi-lora/1"

static int read_tensor(ckpt_source *s, const char *name, wmat *out)
{
    const ckpt_tensor *t = ckpt_find(s, name);
    if (!t) return FAIL("%s: tensor '%s' is missing", s->in_path[0] ? s->in_path : s->src_dir, name);
    size_t bytes = (size_t)ckpt_tensor_bytes(t);
    void *buf = xmalloc(bytes);
    if (ckpt_read_rows(s, t, 0, t->rows, buf)) { free(buf); return -1; }
    memset(out, 0, sizeof *out);
    out->dtype = t->dtype;
    out->rows = t->rows;
    out->cols = t->cols;
    out->ld = t->cols;
    out->data = out->owned = buf;
    return 0;
}

static int read_vec_f32(ckpt_source *s, const char *name, int D, float **out)
{
    wmat w;
    if (read_tensor(s, name, &w)) return -1;
    if (w.rows * w.cols != D) { free(w.owned); return FAIL("%s: tensor '%s' has %lld values, expected %d", s->in_path, name, (long long)(w.rows * w.cols), D); }
    *out = xmalloc(sizeof(float) * (size_t)D);
    convert_to_f32(w.dtype, w.data, *out, (size_t)D);
    free(w.owned);
    return 0;
}

int train_model_load(const char *path, train_model *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    ckpt_source s;
    int rc;
    m->from_h5 = !path_exists(path) ? 0 : H5Fis_hdf5(path) > 0;
    h5_quiet();
    if (m->from_h5) rc = ckpt_open(path, NULL, &s);
    else rc = ckpt_open_dir(path, &s);
    if (rc) { ckpt_close(&s); return -1; }
    snprintf(m->src_dir, sizeof m->src_dir, "%s", s.src_dir);
    /* the model config with the file's FFN sizes */
    if (model_config_parse(s.config_text, strlen(s.config_text), path, &m->cfg)) { ckpt_close(&s); return -1; }
    int L = m->cfg.n_layers, D = m->cfg.hidden;
    for (int l = 0; l < L; l++) m->cfg.ffn[l] = s.cfg.ffn[l];
    m->w = xcalloc((size_t)L, sizeof *m->w);
    m->ln1 = xcalloc((size_t)L, sizeof(float *));
    m->ln2 = xcalloc((size_t)L, sizeof(float *));
    m->bias = xcalloc((size_t)L, sizeof(float *));
    char n[192];
    rc = 0;
    for (int l = 0; !rc && l < L; l++) {
        for (int t = 0; !rc && t < LORA_NMOD; t++) {
            snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, lora_module_paths[t]);
            rc = read_tensor(&s, n, &m->w[l][t]);
        }
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        if (!rc) rc = read_vec_f32(&s, n, D, &m->ln1[l]);
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!rc) rc = read_vec_f32(&s, n, D, &m->ln2[l]);
        snprintf(n, sizeof n, "model.layers.%d.mlp.down_proj.bias", l);
        if (!rc && ckpt_find(&s, n)) rc = read_vec_f32(&s, n, D, &m->bias[l]);
    }
    if (!rc) rc = read_tensor(&s, "model.embed_tokens.weight", &m->embed);
    if (!rc) rc = read_vec_f32(&s, "model.norm.weight", D, &m->final_norm);
    if (!rc) {
        wmat head;
        int tied = !ckpt_find(&s, "lm_head.weight");
        if (!tied) rc = read_tensor(&s, "lm_head.weight", &head);
        if (!rc) {
            const wmat *h = tied ? &m->embed : &head;
            m->head_f32 = xmalloc(sizeof(float) * (size_t)h->rows * (size_t)h->cols);
            convert_to_f32(h->dtype, h->data, m->head_f32, (size_t)h->rows * (size_t)h->cols);
            if (!tied) free(head.owned);
        }
    }
    ckpt_close(&s);
    return rc;
}

void train_model_free(train_model *m)
{
    int L = m->cfg.n_layers;
    for (int l = 0; m->w && l < L; l++) {
        for (int t = 0; t < LORA_NMOD; t++) free(m->w[l][t].owned);
        free(m->ln1[l]); free(m->ln2[l]); free(m->bias[l]);
    }
    free(m->w); free(m->ln1); free(m->ln2); free(m->bias);
    free(m->embed.owned); free(m->head_f32); free(m->final_norm);
    model_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}

/* ---- adapter checkpoints ------------------------------------------------------------------------ */
static void write_f32(hid_t f, const char *path, const float *v, int64_t rows, int64_t cols)
{
    int64_t dims[2] = { rows, cols };
    hid_t ds = h5_create_dataset(f, path, H5T_IEEE_F32LE, cols > 0 ? 2 : 1, dims);
    if (rows * (cols > 0 ? cols : 1) > 0) H5_CHECK(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
    H5_CHECK(H5Dclose(ds));
}

int train_ckpt_write(const trainer *tr, const char *path, const char *meta_json)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    h5_quiet();
    cfsp_tmp_register(tmp);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: cannot create the checkpoint", tmp);
    const lora_plan *p = &tr->plan;
    int L = p->L;
    write_f32(f, "/state/param", tr->param, tr->nparam, 0);
    write_f32(f, "/state/adam_m", tr->adam_m, tr->nparam, 0);
    write_f32(f, "/state/adam_v", tr->adam_v, tr->nparam, 0);
    int64_t dL = L;
    hid_t ds = h5_create_dataset(f, "/plan/ranks", H5T_STD_I32LE, 1, &dL);
    H5_CHECK(H5Dwrite(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->rank));
    H5_CHECK(H5Dclose(ds));
    char pth[160];
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            int64_t o, in;
            lora_module_shape(&tr->m->cfg, l, t, &o, &in);
            snprintf(pth, sizeof pth, "/lora/%d/%s/A", l, lora_module_paths[t]);
            write_f32(f, pth, tr->param + tr->offA[l][t], p->rank[l], in);
            snprintf(pth, sizeof pth, "/lora/%d/%s/B", l, lora_module_paths[t]);
            write_f32(f, pth, tr->param + tr->offB[l][t], o, p->rank[l]);
            snprintf(pth, sizeof pth, "/lora/%d/%s", l, lora_module_paths[t]);
            hid_t g = H5Gopen2(f, pth, H5P_DEFAULT);
            H5_CHECK(g);
            h5_attr_double(g, "scaling", lora_plan_scaling(p, l));
            h5_attr_i64(g, "rank", p->rank[l]);
            H5_CHECK(H5Gclose(g));
        }
    char targets[128] = "";
    for (int t = 0; t < LORA_NMOD; t++) if (p->target[t]) { strcat(targets, targets[0] ? "," : ""); strcat(targets, lora_module_names[t]); }
    h5_attr_string(f, "format", LORA_CKPT_FORMAT);
    h5_attr_i64(f, "step", tr->step);
    h5_attr_i64(f, "nparam", tr->nparam);
    h5_attr_string(f, "targets", targets);
    h5_attr_string(f, "plan", p->adaptive ? "adaptive" : "uniform");
    h5_attr_i64(f, "r", p->r);
    h5_attr_double(f, "alpha", p->alpha);
    h5_attr_i64(f, "alpha_scales", p->alpha_scales);
    h5_attr_string(f, "model", tr->m->path);
    h5_attr_string(f, "meta", meta_json ? meta_json : "{}");
    if (H5Fclose(f) < 0) return FAIL("%s: writing the checkpoint failed", tmp);
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) { if (fd >= 0) close(fd); return FAIL("%s: fsync failed", tmp); }
    if (close(fd) != 0) return FAIL("%s: close failed", tmp);
    if (rename(tmp, path) != 0) return FAIL("cannot rename %s to %s", tmp, path);
    cfsp_tmp_unregister(tmp);
    return 0;
}

static int read_f32(hid_t f, const char *file, const char *path, float *v, int64_t n)
{
    if (H5Lexists(f, "/state", H5P_DEFAULT) <= 0) return FAIL("%s: dataset %s is missing", file, path);
    return h5_read_vec(f, file, path, H5T_NATIVE_FLOAT, v, n);
}

int train_ckpt_read(trainer *tr, const char *path)
{
    h5_quiet();
    if (!path_exists(path) || H5Fis_hdf5(path) <= 0) return FAIL("%s: no such checkpoint (or not HDF5)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: cannot open", path);
    int rc = -1, L = tr->plan.L;
    int64_t step = -1;
    int *ranks = xmalloc(sizeof(int) * (size_t)L);
    if (H5Aexists(f, "step") <= 0) { FAIL("%s: attribute 'step' is missing (not a %s checkpoint)", path, LORA_CKPT_FORMAT); goto out; }
    if (h5_attr_read_i64(f, path, "step", &step)) goto out;
    if (H5Lexists(f, "/plan", H5P_DEFAULT) <= 0 || H5Lexists(f, "/plan/ranks", H5P_DEFAULT) <= 0) { FAIL("%s: /plan/ranks is missing", path); goto out; }
    hid_t ds = H5Dopen2(f, "/plan/ranks", H5P_DEFAULT), sp = ds < 0 ? -1 : H5Dget_space(ds);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5_CHECK(H5Sclose(sp));
    int ranks_ok = np == L && H5Dread(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ranks) >= 0;
    if (ds >= 0) H5_CHECK(H5Dclose(ds));
    if (!ranks_ok) { FAIL("%s: /plan/ranks: expected %d blocks", path, L); goto out; }
    for (int l = 0; l < L; l++)
        if (ranks[l] != tr->plan.rank[l]) { FAIL("%s: block %d has rank %d in the checkpoint, %d in this plan (use the same --plan/--rank/--stats)", path, l, ranks[l], tr->plan.rank[l]); goto out; }
    if (read_f32(f, path, "/state/param", tr->param, tr->nparam) || read_f32(f, path, "/state/adam_m", tr->adam_m, tr->nparam) ||
        read_f32(f, path, "/state/adam_v", tr->adam_v, tr->nparam))
        goto out;
    if (step < 0) { FAIL("%s: step %lld", path, (long long)step); goto out; }
    tr->step = (int)step;
    rc = 0;
out:
    free(ranks);
    if (H5Fclose(f) < 0 && !rc) DIE("%s: closing the checkpoint failed", path);
    return rc;
}

/* ---- merge ---------------------------------------------------------------------------------------- */
int train_merge_write(const trainer *tr, const char *out_path)
{
    const train_model *m = tr->m;
    if (!m->from_h5) return FAIL("--merge: the model %s is not a pruned HDF5 checkpoint (use --peft for a Hugging Face directory)", m->path);
    ckpt_merge *out = ckpt_merge_begin(m->path, out_path);
    if (!out) return -1;
    const lora_plan *p = &tr->plan;
    int rc = 0;
    for (int l = 0; !rc && l < p->L; l++)
        for (int t = 0; !rc && t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            /* W + alpha/r B A in fp32; merge.c rounds it to the stored dtype */
            const wmat *w = &m->w[l][t];
            int64_t rows = w->rows, cols = w->cols, r = p->rank[l];
            float *W = xmalloc(sizeof(float) * (size_t)(rows * cols));
            convert_to_f32(w->dtype, w->data, W, (size_t)(rows * cols));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)r, (float)lora_plan_scaling(p, l),
                        tr->param + tr->offB[l][t], (int)r, tr->param + tr->offA[l][t], (int)cols, 1.0f, W, (int)cols);
            char name[192];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lora_module_paths[t]);
            rc = ckpt_merge_tensor(out, name, W, rows, cols);
            free(W);
        }
    ckpt_merge_info info = { .from = m->path, .plan = p->adaptive ? "adaptive" : "uniform", .steps = tr->step, .params = p->params };
    return ckpt_merge_end(out, !rc, &info);
}

/* ---- PEFT safetensors ------------------------------------------------------------------------------ */
int train_peft_write(const trainer *tr, const char *out_path)
{
    const lora_plan *p = &tr->plan;
    cJSON *h = cJSON_CreateObject();
    uint64_t off = 0;
    char name[192];
    for (int l = 0; l < p->L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            int64_t o, in;
            lora_module_shape(&tr->m->cfg, l, t, &o, &in);
            for (int ab = 0; ab < 2; ab++) {
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_%c.weight", l, lora_module_paths[t], ab ? 'B' : 'A');
                cJSON *e = cJSON_AddObjectToObject(h, name);
                cJSON_AddStringToObject(e, "dtype", "F32");
                cJSON *sh = cJSON_AddArrayToObject(e, "shape");
                cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)(ab ? o : p->rank[l])));
                cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)(ab ? p->rank[l] : in)));
                uint64_t n = (uint64_t)(ab ? o : in) * (uint64_t)p->rank[l] * 4;
                cJSON *d = cJSON_AddArrayToObject(e, "data_offsets");
                cJSON_AddItemToArray(d, cJSON_CreateNumber((double)off));
                cJSON_AddItemToArray(d, cJSON_CreateNumber((double)(off + n)));
                off += n;
            }
        }
    cJSON *md = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(md, "format", "pt");
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t hl = strlen(js), pad = (8 - hl % 8) % 8;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    cfsp_tmp_register(tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) { free(js); return FAIL("%s: cannot create", tmp); }
    uint64_t len = hl + pad;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(len >> (8 * i));
    int ok = fwrite(lb, 1, 8, f) == 8 && fwrite(js, 1, hl, f) == hl;
    for (size_t i = 0; i < pad; i++) ok &= fputc(' ', f) != EOF;
    free(js);
    /* the data in the header's order; float32 little-endian (the host order on every supported machine) */
    for (int l = 0; l < p->L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            int64_t o, in;
            lora_module_shape(&tr->m->cfg, l, t, &o, &in);
            ok &= fwrite(tr->param + tr->offA[l][t], 4, (size_t)(p->rank[l] * in), f) == (size_t)(p->rank[l] * in);
            ok &= fwrite(tr->param + tr->offB[l][t], 4, (size_t)(o * p->rank[l]), f) == (size_t)(o * p->rank[l]);
        }
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;   /* on the device before the rename */
    ok &= fclose(f) == 0;
    if (!ok) return FAIL("%s: write failed (disk full?)", tmp);
    if (rename(tmp, out_path) != 0) return FAIL("cannot rename %s to %s", tmp, out_path);
    cfsp_tmp_unregister(tmp);
    return 0;
}
