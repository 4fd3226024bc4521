/* train_io.c — the files of the LoRA recovery (see train.h): loading the frozen model (a pruned
 * HDF5 checkpoint or a Hugging Face directory, through the checkpoint reader of cfsp/ckpt/reader.h),
 * adapter checkpoints, the merged pruned checkpoint (its tensors computed here, written by
 * cfsp/ckpt/merge.h) and the PEFT adapter safetensors. The adapter checkpoint of the pipelined
 * trainer is written by every rank (below); the other writers are serial (rank 0). All write
 * NAME.tmp and rename it into place; they check every HDF5 and IO call. The checkpoint reader
 * FAILs naming the file and the field, and releases its handles best-effort once failing. */
#include "cfsp/ckpt/merge.h"
#include "cfsp/ckpt/rawio.h"
#include "cfsp/ckpt/reader.h"
#include "cfsp/format/h5util.h"
#include "cfsp/train/train.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cblas.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

int train_model_load(const char *path, train_model *m) { return train_model_load_range(path, 0, -1, 1, 1, m); }

int train_model_load_range(const char *path, int b0, int b1, int embed, int head, train_model *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    ckpt_source s;
    int rc;
    h5_quiet();
    struct stat sb;
    m->from_h5 = stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && H5Fis_hdf5(path) > 0;
    if (m->from_h5) rc = ckpt_open(path, NULL, &s);
    else rc = ckpt_open_dir(path, &s);
    if (rc) { ckpt_close(&s); return -1; }
    snprintf(m->src_dir, sizeof m->src_dir, "%s", s.src_dir);
    /* the model config with the file's FFN sizes */
    if (model_config_parse(s.config_text, strlen(s.config_text), path, &m->cfg)) { ckpt_close(&s); return -1; }
    int L = m->cfg.n_layers, D = m->cfg.hidden;
    for (int l = 0; l < L; l++) m->cfg.ffn[l] = s.cfg.ffn[l];
    if (b1 < 0 || b1 > L) b1 = L;
    if (b0 < 0 || b0 > b1) b0 = b1;
    m->b0 = b0; m->b1 = b1; m->has_embed = embed; m->has_head = head;
    m->w = xcalloc((size_t)L, sizeof *m->w);
    m->ln1 = xcalloc((size_t)L, sizeof(float *));
    m->ln2 = xcalloc((size_t)L, sizeof(float *));
    m->bias = xcalloc((size_t)L, sizeof(float *));
    for (int i = 0; i < 5; i++) m->extra[i] = xcalloc((size_t)L, sizeof(float *));
    static const char *const xnames[5] = { "q_proj.bias", "k_proj.bias", "v_proj.bias", "q_norm.weight", "k_norm.weight" };
    int Q = m->cfg.n_heads * m->cfg.head_dim, KV = m->cfg.n_kv_heads * m->cfg.head_dim;
    const int xlen[5] = { Q, KV, KV, m->cfg.head_dim, m->cfg.head_dim };
    char n[192];
    rc = 0;
    for (int l = b0; !rc && l < b1; l++) {
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
        for (int i = 0; !rc && i < 5; i++) {
            if (!(i < 3 ? m->cfg.qkv_bias : m->cfg.qk_norm)) continue;
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", l, xnames[i]);
            rc = read_vec_f32(&s, n, xlen[i], &m->extra[i][l]);
        }
    }
    int tied = !ckpt_find(&s, "lm_head.weight");
    if (!rc && (embed || (head && tied))) rc = read_tensor(&s, "model.embed_tokens.weight", &m->embed);
    if (!rc && head) rc = read_vec_f32(&s, "model.norm.weight", D, &m->final_norm);
    if (!rc && head) {
        if (!tied) rc = read_tensor(&s, "lm_head.weight", &m->head);
        else if (embed) { m->head = m->embed; m->head.owned = NULL; }      /* the same matrix */
        else { m->head = m->embed; memset(&m->embed, 0, sizeof m->embed); } /* read for the head only */
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
        for (int i = 0; i < 5; i++) if (m->extra[i]) free(m->extra[i][l]);
    }
    free(m->w); free(m->ln1); free(m->ln2); free(m->bias);
    for (int i = 0; i < 5; i++) free(m->extra[i]);
    free(m->embed.owned); free(m->head.owned); free(m->final_norm);
    model_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}

/* ---- adapter checkpoints ------------------------------------------------------------------------
 * One file for both trainers and any rank count: /state/{param,adam_m,adam_v} [nparam] in the global
 * block-by-block layout, /lora/<l>/<module>/{A,B} for reading, /plan/ranks. The writing ranks open
 * it with the MPI-IO driver (data parallel: rank 0 alone, on MPI_COMM_SELF; pipelined: every rank)
 * and create every dataset and attribute with the same values (HDF5's collective metadata, its
 * contiguous datasets allocated at creation); one collective flush puts the metadata on the disk;
 * then each rank writes the bytes of its own part of the state and its own blocks' adapters at the
 * datasets' offsets through the raw writer (cfsp/ckpt/rawio.h), outside HDF5. A failed raw write
 * (a full disk) thus leaves HDF5 nothing to flush: the collective close runs the same on every
 * rank, and every rank learns the failure. (A full disk during HDF5's own metadata writes left the
 * file half-closed inside the library, and MPI_Finalize then crashed or hung closing it again.) */
static int par_io(const trainer *tr) { return tr->kind == TRAINER_PIPELINE; }

static hid_t ckpt_fapl(int par)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    H5_CHECK(H5Pset_fapl_mpio(fapl, par ? MPI_COMM_WORLD : MPI_COMM_SELF, MPI_INFO_NULL));
    if (par) {
        H5_CHECK(H5Pset_all_coll_metadata_ops(fapl, 1));
        H5_CHECK(H5Pset_coll_metadata_write(fapl, 1));
    }
    return fapl;
}

/* a dataset's first byte in the file (contiguous, allocated when created: the MPI-IO driver);
 * UINT64_MAX for an empty one */
static uint64_t ds_offset(hid_t ds)
{
    haddr_t a = H5Dget_offset(ds);
    return a == HADDR_UNDEF ? UINT64_MAX : (uint64_t)a;
}

/* n bytes of v at byte pos of the dataset starting at base (nothing for n = 0) */
static void write_raw(raw_writer *w, uint64_t base, uint64_t pos, const void *v, size_t n, const char *file, const char *what)
{
    if (n == 0) return;
    if (base == UINT64_MAX) DIE("%s: %s has no place in the file", file, what);
    raw_write(w, base + pos, v, n);
}

int train_ckpt_write(const trainer *tr, const char *path, const char *meta_json)
{
    int par = par_io(tr), rank = cfsp_rank();
    if (!par && rank != 0) return 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    h5_quiet();
    if (rank == 0) cfsp_tmp_register(tmp);
    hid_t fapl = ckpt_fapl(par);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5_CHECK(H5Pclose(fapl));
    int opened = f >= 0;             /* parallel: every rank must have it open before the collective calls */
    if (par) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &opened, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD));
    if (!opened) {
        if (f >= 0) H5Fclose(f);
        return FAIL("%s: cannot create the checkpoint (%s)", tmp, f < 0 ? "here" : "on another rank");
    }
    const lora_plan *p = &tr->plan;
    int L = p->L;
    int64_t np = tr->nparam, d2[2];
    int writer = !par || tr->replica == 0;          /* replicas hold the same state: replica 0 writes */

    /* the metadata: every dataset (kept open, its offset noted) and attribute, the same on every rank */
    static const char *const state[3] = { "/state/param", "/state/adam_m", "/state/adam_v" };
    hid_t sds[3];
    uint64_t soff[3];
    for (int k = 0; k < 3; k++) {
        sds[k] = h5_create_dataset(f, state[k], H5T_IEEE_F32LE, 1, &np);
        soff[k] = ds_offset(sds[k]);
    }
    int64_t dL = L;
    hid_t rds = h5_create_dataset(f, "/plan/ranks", H5T_STD_I32LE, 1, &dL);
    uint64_t roff = ds_offset(rds);
    size_t nlm = (size_t)L * LORA_NMOD * 2;
    hid_t *lds = xmalloc(sizeof(hid_t) * nlm);
    uint64_t *loff = xmalloc(sizeof(uint64_t) * nlm);
    char pth[160];
    for (size_t i = 0; i < nlm; i++) lds[i] = -1;
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            int64_t o, in;
            lora_module_shape(&tr->m->cfg, l, t, &o, &in);
            for (int ab = 0; ab < 2; ab++) {
                size_t i = ((size_t)l * LORA_NMOD + t) * 2 + ab;
                snprintf(pth, sizeof pth, "/lora/%d/%s/%c", l, lora_module_paths[t], ab ? 'B' : 'A');
                d2[0] = ab ? o : p->rank[l];
                d2[1] = ab ? p->rank[l] : in;
                lds[i] = h5_create_dataset(f, pth, H5T_IEEE_F32LE, 2, d2);
                loff[i] = ds_offset(lds[i]);
            }
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
    h5_attr_string(f, "plan", lora_plan_names[p->adaptive]);
    h5_attr_i64(f, "r", p->r);
    h5_attr_double(f, "alpha", p->alpha);
    h5_attr_i64(f, "alpha_scales", p->alpha_scales);
    h5_attr_string(f, "model", tr->m->path);
    h5_attr_string(f, "meta", meta_json ? meta_json : "{}");
    h5_attr_string(f, "trainer", trainer_kind_names[tr->kind]);
    /* on the disk before the first raw byte (collective); if it cannot be, no rank may close the
     * file normally (the close would write it again, and diverge): the job ends here */
    int bad = H5Fflush(f, H5F_SCOPE_GLOBAL) < 0;
    if (par) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD));
    if (bad) {           /* one line: rank 0 ends the job (MPI_Abort); the others wait in a barrier it never joins */
        if (rank == 0 || !par) DIE("%s: writing the checkpoint's metadata failed (disk full?)", tmp);
        MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        DIE("%s: writing the checkpoint's metadata failed (disk full?)", tmp);
    }

    /* the bytes: each rank its own (ranks that write none open no writer) */
    raw_writer *w = writer || rank == 0 ? raw_open(tmp, 0) : NULL;
    if (writer)
        for (int k = 0; k < 3; k++)
            write_raw(w, soff[k], (uint64_t)tr->pbase * sizeof(float), (const float *[3]){ tr->param, tr->adam_m, tr->adam_v }[k],
                      (size_t)tr->nlocal * sizeof(float), tmp, state[k]);
    if (rank == 0) write_raw(w, roff, 0, p->rank, sizeof(int32_t) * (size_t)L, tmp, "/plan/ranks");
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0 || !writer || l < tr->b0 || l >= tr->b1) continue;
            int64_t o, in;
            lora_module_shape(&tr->m->cfg, l, t, &o, &in);
            for (int ab = 0; ab < 2; ab++) {
                size_t i = ((size_t)l * LORA_NMOD + t) * 2 + ab;
                write_raw(w, loff[i], 0, trainer_param(tr, ab ? tr->offB[l][t] : tr->offA[l][t]),
                          sizeof(float) * (size_t)(ab ? o : in) * (size_t)p->rank[l], tmp, "a LoRA matrix");
            }
        }
    int rc = w ? raw_close(w, NULL, 0) : 0;
    for (int k = 0; k < 3; k++) H5_CHECK(H5Dclose(sds[k]));
    H5_CHECK(H5Dclose(rds));
    for (size_t i = 0; i < nlm; i++) if (lds[i] >= 0) H5_CHECK(H5Dclose(lds[i]));
    free(lds);
    free(loff);
    bad = H5Fclose(f) < 0;
    if (bad && !rc) rc = FAIL("%s: closing the checkpoint failed", tmp);
    int any = rc != 0;
    if (par) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD));
    if (rc) return rc;                                                   /* this rank's own reason */
    if (any) return FAIL("%s: writing the checkpoint failed on another rank", tmp);
    if (rank != 0) return 0;
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) { if (fd >= 0) close(fd); return FAIL("%s: fsync failed", tmp); }
    if (close(fd) != 0) return FAIL("%s: close failed", tmp);
    if (rename(tmp, path) != 0) return FAIL("cannot rename %s to %s", tmp, path);
    cfsp_tmp_unregister(tmp);
    return 0;
}

/* elements [start, start + n) of the 1-D dataset path of nparam values */
static int read_part(hid_t f, const char *file, const char *path, float *v, int64_t nparam, int64_t start, int64_t n)
{
    if (H5Lexists(f, "/state", H5P_DEFAULT) <= 0 || H5Lexists(f, path, H5P_DEFAULT) <= 0) return FAIL("%s: dataset %s is missing", file, path);
    hid_t ds = H5Dopen2(f, path, H5P_DEFAULT);
    if (ds < 0) return FAIL("%s: dataset %s cannot be opened", file, path);
    hid_t fs = H5Dget_space(ds);
    hsize_t dims[1] = { 0 };
    int rc = 0;
    if (fs < 0 || H5Sget_simple_extent_ndims(fs) != 1 || H5Sget_simple_extent_dims(fs, dims, NULL) < 0 || (int64_t)dims[0] != nparam)
        rc = FAIL("%s: dataset %s: expected %lld values (this plan's adapters)", file, path, (long long)nparam);
    if (!rc && n > 0) {
        hsize_t st = (hsize_t)start, cnt = (hsize_t)n;
        hid_t ms = H5Screate_simple(1, &cnt, NULL);
        if (ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &cnt, NULL) < 0 || H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, v) < 0)
            rc = FAIL("%s: dataset %s cannot be read", file, path);
        if (ms >= 0) H5Sclose(ms);
    }
    if (fs >= 0) H5Sclose(fs);
    H5Dclose(ds);
    return rc;
}

int train_ckpt_read(trainer *tr, const char *path)
{
    h5_quiet();
    if (path_exists(path) && input_check(path, NULL)) return -1;
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
    {   /* the adapted projections and the scaling must be this run's too (same shapes are not enough:
         * k_proj and v_proj adapters have one shape under GQA) */
        const lora_plan *p = &tr->plan;
        char want[128] = "";
        for (int t = 0; t < LORA_NMOD; t++) if (p->target[t]) { strcat(want, want[0] ? "," : ""); strcat(want, lora_module_names[t]); }
        char *got = h5_attr_read_string(f, "targets");
        int tok = got && !strcmp(got, want);
        if (!tok) FAIL("%s: the checkpoint adapts '%s', this run '%s' (use the same --targets)", path, got ? got : "(missing)", want);
        free(got);
        if (!tok) goto out;
        double alpha = 0;
        int64_t r = 0, as = -1;
        if (h5_attr_read_num(f, path, "alpha", H5T_NATIVE_DOUBLE, &alpha) || h5_attr_read_i64(f, path, "r", &r) ||
            h5_attr_read_i64(f, path, "alpha_scales", &as))
            goto out;
        if (alpha != p->alpha || r != p->r || as != p->alpha_scales) {
            FAIL("%s: the checkpoint has r %lld, alpha %g, alpha_scales %lld; this run r %d, alpha %g, alpha_scales %d (use the same --rank/--alpha/--alpha-scales)",
                 path, (long long)r, alpha, (long long)as, p->r, p->alpha, p->alpha_scales);
            goto out;
        }
    }
    if (read_part(f, path, "/state/param", tr->param, tr->nparam, tr->pbase, tr->nlocal) ||
        read_part(f, path, "/state/adam_m", tr->adam_m, tr->nparam, tr->pbase, tr->nlocal) ||
        read_part(f, path, "/state/adam_v", tr->adam_v, tr->nparam, tr->pbase, tr->nlocal))
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
    int par = par_io(tr), rank = cfsp_rank();
    if (!par && rank != 0) return 0;
    if (!m->from_h5) return FAIL("--merge: the model %s is not a pruned HDF5 checkpoint (use --peft for a Hugging Face directory)", m->path);
    ckpt_merge *out = par ? ckpt_merge_begin_par(m->path, out_path) : ckpt_merge_begin(m->path, out_path);
    if (!out) return -1;
    const lora_plan *p = &tr->plan;
    int rc = 0;
    for (int l = 0; !rc && l < p->L; l++)
        for (int t = 0; !rc && t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            char name[192];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lora_module_paths[t]);
            int64_t o, in;
            lora_module_shape(&m->cfg, l, t, &o, &in);
            float *W = NULL;
            if (l >= tr->b0 && l < tr->b1 && (!par || tr->replica == 0)) {
                /* W + alpha/r B A in fp32; merge.c rounds it to the stored dtype */
                const wmat *w = &m->w[l][t];
                int64_t rows = w->rows, cols = w->cols, r = p->rank[l];
                W = xmalloc(sizeof(float) * (size_t)(rows * cols));
                convert_to_f32(w->dtype, w->data, W, (size_t)(rows * cols));
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)r, (float)lora_plan_scaling(p, l),
                            trainer_param(tr, tr->offB[l][t]), (int)r, trainer_param(tr, tr->offA[l][t]), (int)cols, 1.0f, W, (int)cols);
            }
            rc = par ? ckpt_merge_tensor_par(out, name, W, o, in, trainer_owner(tr, l)) : ckpt_merge_tensor(out, name, W, o, in);
            free(W);
        }
    ckpt_merge_info info = { .from = m->path, .plan = lora_plan_names[p->adaptive], .steps = tr->step, .params = p->params };
    return ckpt_merge_end(out, !rc, &info);
}

/* rank 0 receives block l's adapter (A if ab = 0, else B) of module t from its owner into buf (n floats) */
static const float *adapter_at_root(const trainer *tr, int l, int t, int ab, int64_t n, float *buf)
{
    int owner = trainer_owner(tr, l), rank = cfsp_rank();
    const float *v = l >= tr->b0 && l < tr->b1 ? trainer_param(tr, ab ? tr->offB[l][t] : tr->offA[l][t]) : NULL;
    if (tr->kind == TRAINER_DATA || owner == 0) return v;
    if (rank == owner) MPI_CHECK(MPI_Send(v, (int)n, MPI_FLOAT, 0, 7201, MPI_COMM_WORLD));
    else if (rank == 0) MPI_CHECK(MPI_Recv(buf, (int)n, MPI_FLOAT, owner, 7201, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    return buf;
}

/* ---- PEFT safetensors ------------------------------------------------------------------------------ */
int train_peft_write(const trainer *tr, const char *out_path)
{
    const lora_plan *p = &tr->plan;
    int rank = cfsp_rank();
    if (tr->kind == TRAINER_DATA && rank != 0) return 0;
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
    FILE *f = NULL;
    int ok = 1;
    if (rank == 0) {                  /* a failure here still lets the other ranks' sends complete */
        cfsp_tmp_register(tmp);
        f = fopen(tmp, "wb");
        uint64_t len = hl + pad;
        unsigned char lb[8];
        for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(len >> (8 * i));
        ok = f && fwrite(lb, 1, 8, f) == 8 && fwrite(js, 1, hl, f) == hl;
        for (size_t i = 0; f && i < pad; i++) ok &= fputc(' ', f) != EOF;
    }
    free(js);
    /* the data in the header's order; float32 little-endian (the host order on every supported
     * machine); pipelined: every other stage's blocks sent to rank 0 one adapter at a time */
    float *buf = NULL;
    for (int l = 0; l < p->L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (tr->offA[l][t] < 0) continue;
            int64_t o, in;
            lora_module_shape(&tr->m->cfg, l, t, &o, &in);
            for (int ab = 0; ab < 2; ab++) {
                int64_t n = ab ? o * p->rank[l] : p->rank[l] * in;
                buf = rank == 0 ? xrealloc(buf, sizeof(float) * (size_t)(n > 0 ? n : 1)) : buf;
                const float *v = adapter_at_root(tr, l, t, ab, n, buf);
                if (rank == 0 && f) ok &= fwrite(v, 4, (size_t)n, f) == (size_t)n;
            }
        }
    free(buf);
    if (rank != 0) return 0;
    if (!f) return FAIL("%s: cannot create", tmp);
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;   /* on the device before the rename */
    ok &= fclose(f) == 0;
    if (!ok) return FAIL("%s: write failed (disk full?)", tmp);
    if (rename(tmp, out_path) != 0) return FAIL("cannot rename %s to %s", tmp, out_path);
    cfsp_tmp_unregister(tmp);
    return 0;
}
