/* fuzz_h5ckpt.c — libFuzzer harness for the pruned-checkpoint reader (src/ckpt/reader.c: ckpt_open,
 * ckpt_read_rows with its streaming checksums, ckpt_pad_ffn / ckpt_pad_empty_ffn, ckpt_close — the
 * input of `cfsp-mpi export`, `recover` and `verify`), model_h5_verify (src/ckpt/model_h5.c:
 * `cfsp-mpi verify FILE.h5`) and the h5util.c readers under them. libhdf5 is an uninstrumented
 * system library, not hardened against arbitrary bytes, so the harness is STRUCTURED: the fuzz
 * input is a small program of edits applied with the HDF5 API to a valid pruned checkpoint, and the
 * readers run on the edited file. The templates are built in the harness (once per byte-0 value,
 * cached as file images) the way model_h5_write lays a file out, from the layout the readers use
 * (layout.h names, shapes and kinds; h5util.c's dataset, dtype and attribute writers; model_h5.h's
 * tensor checksum; the root attributes format, method, ratio, options, config with
 * intermediate_sizes, num_tensors, tensor_checksum): D 8, 2 heads, vocab 16, FFN 6 pruned to [3] /
 * [3, 6] (MHA: [5] / [5, 1]). Byte 0: bits 0-1 family (llama GQA, qwen2 q/k/v biases, qwen3 q/k
 * norms with head_dim 6, llama MHA), bits 2-3 stored dtype (f32, f16, bf16, mixed), bit 4 tied
 * embeddings, bit 5 flap's down_proj.bias, bit 6 a /1 file (another checksum function: read
 * unverified), bit 7 two blocks (else one). Byte 1, the reading: bits 0-1 padding (none,
 * ckpt_pad_ffn to the widest block or wider, ckpt_pad_empty_ffn), bits 2-3 rows per ckpt_read_rows
 * call (all, half, a third, 3), bit 4 every third tensor read twice, bit 5 every third tensor first
 * read in reverse panel order (unverified by design, unless one panel), bit 6 --model given (else
 * the options' model path), bits 6 and 7 also model_h5_verify. Then up to 24 edits (an opcode byte
 * mod 12 and fixed argument bytes; a truncated edit ends the program; make_h5_corpus.py writes the
 * seeds) on 38 dataset slots (every block kind of every block, embeddings, norm, lm_head, the three
 * /cfsp datasets): 0 ELEM raw bits of one element (flag: rewrite its checksum), 1 CKSUM set / flip
 * / delete / as i64, double, string, array, null space, u32 / recompute, 2 REMOVE the dataset or
 * its group, a group in its place, a dangling or an aliasing soft link, a hard link, 3 RESHAPE
 * (rank 0-3, dimensions around the expected ones up to 2^32, chunked and unwritten when large), 4
 * RETYPE keeping the raw bytes (the three canonical types, big-endian f32 / f16, f64, ints, string,
 * compound, array, opaque, float types with another exponent bias or normalisation), 5 STRING
 * format / method / options / config (tables, literals; fixed, unterminated, variable length,
 * deleted, integer, array, null space), 6 CONFIG one key of the config JSON (layers, sizes, heads,
 * head_dim, vocab, tie, model_type, dtype, intermediate_sizes and its entries: numbers up to 1e300,
 * bools, strings, null, deleted, arrays, objects), 7 RATIO, 8 NUM_TENSORS, 9 RESIZE_FFN a block's
 * gate / up / down / kept_channels together (1 .. 2^32 channels; flags: update intermediate_sizes,
 * write checksums), 10 EXTRA objects the readers must ignore, 11 FIXALL every checksum and
 * num_tensors recomputed. The oracle is a second implementation of the documented checks (reader.h,
 * layout.h): every slot is probed with plain HDF5 calls (link chain, dataset, rank, dimensions,
 * whether its type is exactly one of the canonical F32 / F16 / BF16 file types, its checksum
 * attribute, the checksum of its raw bytes) and the config parsed with model_config_parse;
 * ckpt_open must accept exactly the files the checks accept, list tensors whose dtype, shape and
 * checksum are the file's with FFN sizes of 1 .. 2^30; a tensor read from row 0 to its end must
 * fail exactly when its data do not match its checksum (/2), return the file's bytes (zeros in the
 * padding); verify must accept exactly when every checksum-bearing dataset matches and their count
 * is num_tensors (not predicted after links: aliases; not run when a dataset exceeds 1 MB or 2^20
 * rows: verify reads datasets whole); every failure leaves a message
 * naming the file; no HDF5 identifier stays open. Files go to $TMPDIR (/dev/shm under fuzz.sh): the
 * readers take a path, and HDF5 1.10 has no environment switch to the core driver. No MPI_Init: the
 * readers are serial and open files with the default (sec2) driver; err.c's FAIL only records the
 * message (MPI_Initialized is asked by DIE / cfsp_sync only, which would end the run: a crash
 * here). verify's stdout / stderr lines go to /dev/null while it runs (sanitizer reports go to the
 * real stderr; CFSP_FUZZ_VERBOSE=1 keeps them and prints each prediction and result). Built by
 * mpi_scripts/fuzz.sh. */
#include "cfsp/ckpt/layout.h"
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/ckpt/reader.h"
#include "cfsp/format/h5util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
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

#define MAXL 2                          /* templates have 1 or 2 blocks */
#define NKIND CK_NBLOCK                 /* block kinds CK_LN1 .. CK_KN */
#define S_BLOCK(l, k) ((l) * NKIND + (k))
#define S_EMBED (MAXL * NKIND)
#define S_NORM (S_EMBED + 1)
#define S_HEAD (S_EMBED + 2)
#define S_CFSP (S_EMBED + 3)            /* importance, keep_fraction, intermediate_sizes */
#define NSLOT (S_EMBED + 6)
#define RAWCAP 1024                     /* raw bytes kept per slot for comparing reads */
#define DATACAP (1u << 20)              /* larger datasets are not read (nor verified) */
#define MAX_FFN (1 << 30)               /* model_config.c's bound on FFN sizes */
#define MAX_OPS 24
#define BIT(i) (1ULL << (i))

/* ---- the process (the rest in h5_fuzz_edit.h) ---- */
static hid_t g_canon[3];                /* the canonical file types of DT_F32, DT_F16, DT_BF16 */

static _Noreturn void oracle(const char *what, const char *detail, int rc, int pred)
{
    quiet(0);
    fprintf(stderr, "fuzz_h5ckpt: oracle failed: %s %s (rc %d, predicted %d; message: %s)\n", what, detail ? detail : "", rc, pred,
            cfsp_last_error());
    abort();
}

/* ---- slots ---- */
static int slot_kind(int s, int *l)
{
    *l = s < S_EMBED ? s / NKIND : -1;
    if (s < S_EMBED) return s % NKIND;
    return s == S_EMBED ? CK_EMBED : s == S_NORM ? CK_NORM : s == S_HEAD ? CK_HEAD : -1;
}
static void slot_path(int s, char *out, size_t n)
{
    static const char *const cf[3] = { CKPT_DS_IMPORTANCE, CKPT_DS_KEEP_FRACTION, CKPT_DS_FFN_SIZES };
    if (s >= S_CFSP) { snprintf(out, n, "%s", cf[s - S_CFSP]); return; }
    int l, k = slot_kind(s, &l);
    char name[128];
    ckpt_tensor_name((ckpt_kind)k, l < 0 ? 0 : l, name, sizeof name);
    ckpt_dataset_path(name, out, n);
}
static int slot_of(const ckpt_tensor *t)
{
    if (t->kind == CK_EMBED) return S_EMBED;
    if (t->kind == CK_NORM) return S_NORM;
    if (t->kind == CK_HEAD) return S_HEAD;
    if (t->kind < CK_NBLOCK && t->layer >= 0 && t->layer < MAXL) return S_BLOCK(t->layer, t->kind);
    return -1;
}

/* ---- the probed state ---- */
enum { DS_OK, DS_MISSING, DS_NOTDS, DS_BADSPACE };
enum { CK_U64, CK_MISSING, CK_BAD };
typedef struct {
    int kind;                  /* DS_* */
    int nd;                    /* rank (dims read when <= 4) */
    hsize_t dims[4];
    int canon;                 /* dtype_t when the type equals a canonical one, else -1 */
    H5T_class_t cls;
    size_t es;
    int ck;                    /* CK_* */
    uint64_t ck_val;
    int data;                  /* 1: data_ck known (raw bytes read), 0: not read (large), -1: unreadable */
    uint64_t data_ck, nbytes;
    unsigned char raw[RAWCAP]; /* the raw bytes when nbytes <= RAWCAP */
} sstate;
typedef struct {
    sstate sl[NSLOT];
    int fmt_st, cfg_st, opt_st;        /* S_* (derived from the edits: what a string reader gets) */
    char fmt[80], opt[200];
    char *cfg;                          /* the config text (owned; xstrdup'ed per iteration) */
    int numt_exists, numt_ok;           /* num_tensors: present; one integer */
    int64_t numt;
    int ratio_bad;                      /* ratio present and not one float */
    int links;                          /* soft / hard links made: verify not predicted */
    int npairs;                         /* slots that alias each other (a link and its target) */
    unsigned char pair[2 * MAX_OPS][2];
    int big;                            /* some dataset > DATACAP: verify not run */
} cstate;

static int probe_num(hid_t obj, const char *name, hid_t mt, H5T_class_t want, void *out)
{
    if (H5Aexists(obj, name) <= 0) return -2;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t sp = H5Aget_space(a), t = H5Aget_type(a);
    int ok = sp >= 0 && t >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Tget_class(t) == want && H5Aread(a, mt, out) >= 0;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok ? 0 : -1;
}

static void data_shape(const sstate *d, int64_t *rows, int64_t *cols)
{
    *rows = d->nd >= 1 ? (int64_t)d->dims[0] : 1;
    *cols = d->nd == 2 ? (int64_t)d->dims[1] : 1;
}

static void probe_slot(hid_t f, int s, sstate *d)
{
    char p[256];
    slot_path(s, p, sizeof p);
    memset(d, 0, offsetof(sstate, raw));
    d->canon = -1;
    d->ck = CK_MISSING;
    if (!link_chain(f, p)) { d->kind = DS_MISSING; return; }
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    if (ds < 0) { d->kind = DS_NOTDS; return; }
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    d->nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    d->kind = d->nd < 0 || (d->nd <= 4 && H5Sget_simple_extent_dims(sp, d->dims, NULL) < 0) ? DS_BADSPACE : DS_OK;
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (ty >= 0) {
        d->cls = H5Tget_class(ty);
        d->es = H5Tget_size(ty);
        for (int k = 0; k < 3; k++) if (H5Tequal(ty, g_canon[k]) > 0) d->canon = k;
    }
    d->nbytes = np < 0 ? UINT64_MAX : (uint64_t)np * d->es;
    /* not read: large, or more than 2^20 rows of nothing (verify is then not run on the file: this
     * harness does not predict the sizes verify refuses; verify's loop over the rows of [2^62, 0]
     * was item 9 of results/fuzz/README.md) */
    if (d->nbytes > DATACAP || (d->kind == DS_OK && d->nd >= 1 && d->nd <= 4 && d->dims[0] > (1u << 20))) d->data = 0;
    else if (d->kind != DS_OK || ty < 0 || (d->cls != H5T_FLOAT && d->cls != H5T_INTEGER) || d->es < 1 || d->es > 8) d->data = -1;
    else {
        unsigned char *buf = xcalloc(d->nbytes + 1, 1);
        if (H5Dread(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) d->data = -1;
        else {
            int64_t r, c;
            data_shape(d, &r, &c);
            d->data = 1;
            if (d->nd <= 2) d->data_ck = tensor_checksum(buf, d->es, r, c, 0, 0, c);
            if (d->nbytes <= RAWCAP) memcpy(d->raw, buf, d->nbytes);
        }
        free(buf);
    }
    int r = probe_num(ds, CKPT_A_CHECKSUM, H5T_NATIVE_UINT64, H5T_INTEGER, &d->ck_val);
    d->ck = r == 0 ? CK_U64 : r == -2 ? CK_MISSING : CK_BAD;
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
    H5Dclose(ds);
}

static void probe_root(hid_t f, cstate *s)
{
    s->numt_exists = H5Aexists(f, CKPT_A_NUM_TENSORS) > 0;
    s->numt_ok = probe_num(f, CKPT_A_NUM_TENSORS, H5T_NATIVE_INT64, H5T_INTEGER, &s->numt) == 0;
    double r;
    s->ratio_bad = H5Aexists(f, CKPT_A_RATIO) > 0 && probe_num(f, CKPT_A_RATIO, H5T_NATIVE_DOUBLE, H5T_FLOAT, &r) != 0;
}
static void probe_all(hid_t f, cstate *s)
{
    s->big = 0;
    for (int i = 0; i < NSLOT; i++) {
        probe_slot(f, i, &s->sl[i]);
        if (s->sl[i].kind == DS_OK && s->sl[i].data == 0) s->big = 1;
    }
    probe_root(f, s);
}

/* ---- what the checks say (reader.h / layout.h) ---- */
typedef struct {
    int n;
    struct { int slot; int nd; int64_t rows, cols; } t[NSLOT];
    int verify;                /* /2 */
    int ffn[MAXL];
} expect;

/* one tensor's dataset as check_dataset must find it: rows < 0 = read from the file */
static int slot_ok(const cstate *s, int slot, int nd, int64_t rows, int64_t cols, int verify)
{
    const sstate *d = &s->sl[slot];
    if (d->kind != DS_OK || d->nd < 1 || d->nd > 4 || d->canon < 0 || d->nd != nd) return 0;
    if (rows >= 0 && (int64_t)d->dims[0] != rows) return 0;
    if (nd == 2 && (int64_t)d->dims[1] != cols) return 0;
    if (verify && d->ck != CK_U64) return 0;
    return 1;
}

static int predict_open(const cstate *s, int override, expect *e)
{
    memset(e, 0, sizeof *e);
    if (s->fmt_st != S_KNOWN) return 0;
    if (!strcmp(s->fmt, CKPT_FORMAT)) e->verify = 1;
    else if (strcmp(s->fmt, CKPT_FORMAT_V1)) return 0;
    if (!s->numt_exists || s->cfg_st != S_KNOWN || s->ratio_bad) return 0;
    if (!override) {
        if (s->opt_st != S_KNOWN) return 0;
        cJSON *j = cJSON_Parse(s->opt);
        const cJSON *m = j ? cJSON_GetObjectItemCaseSensitive(j, CKPT_OPTIONS_MODEL) : NULL;
        int ok = cJSON_IsString(m) && m->valuestring[0];
        cJSON_Delete(j);
        if (!ok) return 0;
    }
    model_config c;
    if (model_config_parse(s->cfg, strlen(s->cfg), "fuzz/config", &c)) { cfsp_clear_error(); return 0; }
    int rc = 1;
    static const ckpt_kind block[] = { CK_LN1, CK_Q, CK_K, CK_V, CK_O, CK_QB, CK_KB, CK_VB, CK_QN, CK_KN, CK_LN2, CK_GATE, CK_UP, CK_DOWN };
    if (c.n_layers > MAXL) rc = 0;           /* blocks without dataset slots: missing */
    /* list_tensors' order: embeddings, the blocks, the final norm, lm_head (unless tied), then biases */
    ckpt_kind top[3] = { CK_EMBED, CK_NORM, CK_HEAD };
    if (rc) {
        int64_t dims[2];
        int nd = ckpt_tensor_shape(&c, CK_EMBED, 0, dims);
        if (!slot_ok(s, S_EMBED, nd, dims[0], dims[1], e->verify)) rc = 0;
        e->t[0].slot = S_EMBED;
        e->t[0].nd = nd;
        e->t[0].rows = dims[0];
        e->t[0].cols = dims[1];
        e->n = 1;
    }
    for (int l = 0; rc && l < c.n_layers; l++) {
        int64_t m = -1;
        for (size_t i = 0; rc && i < sizeof block / sizeof block[0]; i++) {
            if (!ckpt_kind_in_block(&c, block[i])) continue;
            int64_t dims[2];
            int nd = ckpt_tensor_shape(&c, block[i], block[i] == CK_GATE ? -1 : m, dims);
            int sl = S_BLOCK(l, block[i]);
            if (!slot_ok(s, sl, nd, dims[0], nd == 2 ? dims[1] : 1, e->verify)) { rc = 0; break; }
            if (block[i] == CK_GATE) {
                m = (int64_t)s->sl[sl].dims[0];
                if (m < 1 || m > MAX_FFN) { rc = 0; break; }
                e->ffn[l] = (int)m;
            }
            e->t[e->n].slot = sl;
            e->t[e->n].nd = nd;
            e->t[e->n].rows = block[i] == CK_GATE ? m : dims[0];
            e->t[e->n].cols = nd == 2 ? dims[1] : 1;
            e->n++;
        }
    }
    for (int i = 1; rc && i < (c.tie_embeddings ? 2 : 3); i++) {
        int64_t dims[2];
        int nd = ckpt_tensor_shape(&c, top[i], 0, dims);
        int sl = S_EMBED + i;
        if (!slot_ok(s, sl, nd, dims[0], nd == 2 ? dims[1] : 1, e->verify)) { rc = 0; break; }
        e->t[e->n].slot = sl;
        e->t[e->n].nd = nd;
        e->t[e->n].rows = dims[0];
        e->t[e->n].cols = nd == 2 ? dims[1] : 1;
        e->n++;
    }
    if (rc) {
        cJSON *j = cJSON_Parse(s->cfg);
        const cJSON *is = j ? cJSON_GetObjectItemCaseSensitive(j, CKPT_CONFIG_FFN_SIZES) : NULL;
        if (cJSON_IsArray(is)) {
            if (cJSON_GetArraySize(is) != c.n_layers) rc = 0;
            for (int l = 0; rc && l < c.n_layers; l++) {
                const cJSON *x = cJSON_GetArrayItem(is, l);
                if (!cJSON_IsNumber(x) || x->valuedouble != (double)e->ffn[l]) rc = 0;
            }
        }
        cJSON_Delete(j);
    }
    for (int l = 0; rc && l < c.n_layers; l++) {
        int sl = S_BLOCK(l, CK_BIAS);
        if (s->sl[sl].kind == DS_MISSING) continue;
        if (!slot_ok(s, sl, 1, c.hidden, 1, e->verify)) { rc = 0; break; }
        e->t[e->n].slot = sl;
        e->t[e->n].nd = 1;
        e->t[e->n].rows = c.hidden;
        e->t[e->n].cols = 1;
        e->n++;
    }
    model_config_free(&c);
    return rc;
}

/* model_h5_verify: 1 accept, 0 reject, -1 cannot tell (aliases) */
static int predict_verify(const cstate *s)
{
    if (s->links) return -1;
    if (!s->numt_ok) return 0;
    int64_t n = 0;
    for (int i = 0; i < NSLOT; i++) {
        const sstate *d = &s->sl[i];
        if (d->kind == DS_MISSING || d->kind == DS_NOTDS) continue;
        if (d->ck == CK_MISSING) continue;
        if (d->kind != DS_OK || d->ck == CK_BAD || d->nd > 2) return 0;
        if ((d->cls != H5T_FLOAT && d->cls != H5T_INTEGER) || d->es < 1 || d->es > 8) return 0;
        if (d->data != 1 || d->data_ck != d->ck_val) return 0;
        n++;
    }
    return n == s->numt;
}

/* ---- templates ---- */
typedef struct {
    int built, L, v1, ffn[MAXL];
    model_config cfg;
    unsigned char *img;
    size_t len;
    cstate st;
    char *cfg_text;
} templ;
static templ g_t[256];

static void fill_random(unsigned char *b, size_t n, size_t es, int is_float, uint64_t *rs)
{
    for (size_t i = 0; i < n; i += es) {
        uint64_t z = splitmix(rs);
        if (!is_float) { int64_t v = (int64_t)(z % 1000); memcpy(b + i, &v, es < 8 ? es : 8); continue; }
        float x = (float)((double)(z >> 11) / 9007199254740992.0 * 2 - 1);
        if (es == 4) memcpy(b + i, &x, 4);
        else { uint16_t h = (z >> 62) ? f32_to_bf16(x) : f32_to_f16(x); memcpy(b + i, &h, 2); }
    }
}

static const char *const fam_json[4] = {
    "\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"num_key_value_heads\":1",
    "\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",\"num_key_value_heads\":1,\"use_sliding_window\":false",
    "\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"num_key_value_heads\":1,\"head_dim\":6",
    "\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"num_key_value_heads\":2",
};

static dtype_t kind_dtype(int dmode, ckpt_kind k)
{
    if (k == CK_BIAS) return DT_F32;
    if (dmode < 3) return (dtype_t)(dmode == 0 ? DT_F32 : dmode == 1 ? DT_F16 : DT_BF16);
    if (k == CK_EMBED || k == CK_HEAD) return DT_F16;          /* mixed: norms / extras f32, matrices bf16 */
    int nd;
    int64_t dims[2];
    model_config c = { .hidden = 8, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4 };
    nd = ckpt_tensor_shape(&c, k, 1, dims);
    return nd == 2 ? DT_BF16 : DT_F32;
}

static templ *get_templ(unsigned v)
{
    templ *t = &g_t[v];
    if (t->built) return t;
    int fam = v & 3, dmode = (v >> 2) & 3, tie = (v >> 4) & 1, bias = (v >> 5) & 1;
    t->v1 = (v >> 6) & 1;
    static const int ffn_pat[2][MAXL] = { { 3, 6 }, { 5, 1 } };   /* 1 block: [3] or [5]; 2 blocks: [3, 6] or [5, 1] */
    int L = 1 + (int)(v >> 7);
    for (int l = 0; l < MAXL; l++) t->ffn[l] = ffn_pat[fam == 3][l];
    static const char *const tdn[4] = { "float32", "float16", "bfloat16", "bfloat16" };
    char src[1024];
    snprintf(src, sizeof src,
             "{%s,\"num_hidden_layers\":%d,\"hidden_size\":8,\"intermediate_size\":6,\"num_attention_heads\":2,\"vocab_size\":16,\"max_position_embeddings\":64,"
             "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"hidden_act\":\"silu\",\"bos_token_id\":1,\"eos_token_id\":2,"
             "\"tie_word_embeddings\":%s,\"torch_dtype\":\"%s\"}",
             fam_json[fam], L, tie ? "true" : "false", tdn[dmode]);
    if (model_config_parse(src, strlen(src), "fuzz/template", &t->cfg)) { fprintf(stderr, "fuzz_h5ckpt: %s\n", cfsp_last_error()); abort(); }
    const model_config *c = &t->cfg;
    t->L = c->n_layers;
    uint64_t rs = 0xc4ec0000u + v;
    hid_t f = H5Fcreate(g_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) abort();
    uint64_t file_sum = FNV1A64_INIT;
    int64_t ntens = 0;
    /* in model_h5_write's order: every block's datasets in ckpt_kind order, then the model's */
    for (int i = 0; i < NSLOT - 3; i++) {
        int l, k = slot_kind(i, &l);
        if (l >= t->L) continue;
        if (k == CK_BIAS ? !bias : k < CK_NBLOCK && !ckpt_kind_in_block(c, (ckpt_kind)k)) continue;
        if (k == CK_HEAD && tie) continue;
        int64_t dims[2];
        int nd = ckpt_tensor_shape(c, (ckpt_kind)k, l >= 0 ? t->ffn[l] : 0, dims);
        dtype_t dt = kind_dtype(dmode, (ckpt_kind)k);
        hid_t ty = k == CK_KEPT ? H5Tcopy(H5T_STD_I64LE) : h5_dtype(dt);
        char p[256];
        slot_path(i, p, sizeof p);
        hid_t ds = h5_create_dataset(f, p, ty, nd, dims);
        if (k != CK_KEPT) h5_attr_string(ds, CKPT_A_DTYPE, dtype_name(dt));
        size_t es = k == CK_KEPT ? 8 : dtype_size(dt);
        int64_t rows = dims[0], cols = nd == 2 ? dims[1] : 1;
        size_t nb = (size_t)(rows * cols) * es;
        unsigned char *b = xmalloc(nb + 1);
        if (k == CK_KEPT) for (int64_t j = 0; j < rows; j++) { int64_t x = 2 * j + (j & 1); memcpy(b + 8 * j, &x, 8); }
        else fill_random(b, nb, es, 1, &rs);
        if (dt != DT_F32 && k != CK_KEPT) {     /* keep the bits of the dtype: bf16 or f16 rounding */
            for (size_t j = 0; j < nb; j += 2) {
                float x = (float)((double)(splitmix(&rs) >> 11) / 9007199254740992.0 - 0.5);
                uint16_t h = dt == DT_BF16 ? f32_to_bf16(x) : f32_to_f16(x);
                memcpy(b + j, &h, 2);
            }
        }
        if (H5Dwrite(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) < 0) abort();
        uint64_t ck = t->v1 ? splitmix(&rs) : tensor_checksum(b, es, rows, cols, 0, 0, cols);
        h5_attr_u64(ds, CKPT_A_CHECKSUM, ck);
        file_sum = fnv1a64(file_sum, &ck, sizeof ck);
        ntens++;
        free(b);
        H5Tclose(ty);
        H5Dclose(ds);
    }
    int64_t dL[1] = { t->L };
    double imp[MAXL], keep[MAXL];
    int64_t m[MAXL];
    for (int l = 0; l < t->L; l++) { imp[l] = 0.1 * (l + 1); keep[l] = t->ffn[l] / 6.0; m[l] = t->ffn[l]; }
    hid_t d1 = h5_create_dataset(f, CKPT_DS_IMPORTANCE, H5T_IEEE_F64LE, 1, dL), d2 = h5_create_dataset(f, CKPT_DS_KEEP_FRACTION, H5T_IEEE_F64LE, 1, dL),
          d3 = h5_create_dataset(f, CKPT_DS_FFN_SIZES, H5T_STD_I64LE, 1, dL);
    if (H5Dwrite(d1, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, imp) < 0 || H5Dwrite(d2, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, keep) < 0 ||
        H5Dwrite(d3, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, m) < 0)
        abort();
    H5Dclose(d1); H5Dclose(d2); H5Dclose(d3);
    /* pruned_config_json: the source config plus intermediate_sizes */
    cJSON *j = cJSON_Parse(src), *arr = cJSON_CreateArray();
    for (int l = 0; l < t->L; l++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(t->ffn[l]));
    cJSON_AddItemToObject(j, CKPT_CONFIG_FFN_SIZES, arr);
    t->cfg_text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    hid_t root = H5Gopen2(f, "/", H5P_DEFAULT);
    h5_attr_string(root, CKPT_A_FORMAT, t->v1 ? CKPT_FORMAT_V1 : CKPT_FORMAT);
    h5_attr_string(root, CKPT_A_METHOD, bias ? "flap" : "cfsp");
    h5_attr_double(root, CKPT_A_RATIO, 0.25);
    h5_attr_string(root, CKPT_A_OPTIONS, "{\"model\":\"fuzz/source-model\",\"ratios\":[0.25],\"method\":\"cfsp\"}");
    h5_attr_string(root, CKPT_A_CONFIG, t->cfg_text);
    h5_attr_i64(root, CKPT_A_NUM_TENSORS, ntens);
    h5_attr_u64(root, CKPT_A_FILE_CHECKSUM, file_sum);
    H5Gclose(root);
    if (H5Fclose(f) < 0) abort();
    t->img = read_file(&t->len);
    f = H5Fopen(g_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) abort();
    memset(&t->st, 0, sizeof t->st);
    probe_all(f, &t->st);
    H5Fclose(f);
    t->st.fmt_st = t->st.cfg_st = t->st.opt_st = S_KNOWN;
    snprintf(t->st.fmt, sizeof t->st.fmt, "%s", t->v1 ? CKPT_FORMAT_V1 : CKPT_FORMAT);
    snprintf(t->st.opt, sizeof t->st.opt, "{\"model\":\"fuzz/source-model\",\"ratios\":[0.25],\"method\":\"cfsp\"}");
    t->st.cfg = NULL;
    expect e;
    t->st.cfg = t->cfg_text;
    if (predict_open(&t->st, 0, &e) != 1 || (!t->v1 && predict_verify(&t->st) != 1)) {
        fprintf(stderr, "fuzz_h5ckpt: template %u: predicted not accepted\n", v);
        abort();
    }
    t->st.cfg = NULL;
    t->built = 1;
    return t;
}

/* ---- the edit program (its reader and the common edits: h5_fuzz_edit.h) ---- */
/* raw bytes into dataset p, in its own file type */
static void write_raw(hid_t f, const char *p, const void *b)
{
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    if (ds < 0) return;
    hid_t ty = H5Dget_type(ds);
    if (ty >= 0) { H5Dwrite(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, b); H5Tclose(ty); }
    H5Dclose(ds);
}
/* the raw bytes of a probed, readable dataset (caller frees) */
static unsigned char *read_raw(hid_t f, int slot, const sstate *d)
{
    if (d->kind != DS_OK || d->data != 1) return NULL;
    char p[256];
    slot_path(slot, p, sizeof p);
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
    if (ds < 0) return NULL;
    hid_t ty = H5Dget_type(ds);
    unsigned char *b = xcalloc(d->nbytes + 1, 1);
    if (ty < 0 || H5Dread(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) < 0) { free(b); b = NULL; }
    if (ty >= 0) H5Tclose(ty);
    H5Dclose(ds);
    return b;
}

static hid_t make_type(unsigned ty)
{
    hid_t t;
    switch (ty % 16) {
    case 0: return H5Tcopy(H5T_IEEE_F32LE);
    case 1: return h5_dtype(DT_F16);
    case 2: return h5_dtype(DT_BF16);
    case 3: return H5Tcopy(H5T_IEEE_F32BE);
    case 4: return H5Tcopy(H5T_IEEE_F64LE);
    case 5: return H5Tcopy(H5T_STD_I32LE);
    case 6: return H5Tcopy(H5T_STD_U16LE);
    case 7: return H5Tcopy(H5T_STD_I8LE);
    case 8: t = H5Tcopy(H5T_C_S1); H5Tset_size(t, 4); return t;
    case 9: t = H5Tcreate(H5T_COMPOUND, 4); H5Tinsert(t, "x", 0, H5T_IEEE_F32LE); return t;
    case 10: t = h5_dtype(DT_BF16); H5Tset_ebias(t, 100); return t;          /* bf16 fields, another bias */
    case 11: t = h5_dtype(DT_F16); H5Tset_order(t, H5T_ORDER_BE); return t;   /* big-endian half */
    case 12: t = h5_dtype(DT_BF16); H5Tset_norm(t, H5T_NORM_NONE); return t;  /* no implied mantissa bit */
    case 13: t = H5Tcopy(H5T_IEEE_F32LE); H5Tset_ebias(t, 126); return t;
    case 14: { hsize_t one = 1; return H5Tarray_create2(H5T_IEEE_F32LE, 1, &one); }
    default: return H5Tcreate(H5T_OPAQUE, 4);
    }
}

static const char *const fmt_table[] = { CKPT_FORMAT, CKPT_FORMAT_V1, "cfsp-mpi-pruned/3", "cfsp-mpi-stats/2", "", CKPT_FORMAT_PREFIX, CKPT_FORMAT " " };
static const char *const opt_table[] = {
    "{\"model\":\"fuzz/source-model\"}", "{\"model\":\"\"}", "{\"model\":5}", "{}", "{", "null", "{\"model\":\"/nonexistent\"}",
    "{\"model\":[\"a\"]}", "{\"model\":\"x\"} trailing", "\"model\"", "{\"Model\":\"x\"}", NULL /* a 5000-byte path */,
};
static const char *const str_vals[] = { "llama", "qwen2", "qwen3", "mistral", "mixtral", "nemotron-nas", "3", "", "float32", "bfloat16", "float64" };
static const char *const cfg_keys[] = { "num_hidden_layers", "hidden_size", "intermediate_size", CKPT_CONFIG_FFN_SIZES, "num_attention_heads",
                                        "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "model_type", "torch_dtype",
                                        "rms_norm_eps", "max_position_embeddings", "attention_bias", "use_sliding_window", "qkv_bias" };
#define NKEYS (sizeof cfg_keys / sizeof cfg_keys[0])

static double num_value(unsigned sel, double cur)
{
    static const double tab[] = { 0, 1, 2, 3, 4, 5, 6, 8, 16, 1 << 30, 1073741825.0, 2147483648.0, -1, 1e300, -1e300, 3.5, -0.0, 4096, 4097, 1e-5, 7 };
    unsigned n = sizeof tab / sizeof tab[0];
    sel %= n + 3;
    return sel == n ? cur : sel == n + 1 ? cur + 1 : sel == n + 2 ? cur - 1 : tab[sel];
}

static void put_config(hid_t f, cstate *s, char *text)
{
    free(s->cfg);
    s->cfg = text;
    put_string(f, CKPT_A_CONFIG, 0, text, strlen(text), &s->cfg_st, NULL, 0);
}

static void config_edit(hid_t f, cstate *s, unsigned key, unsigned kind, unsigned sel, unsigned l)
{
    if (s->cfg_st != S_KNOWN) return;
    cJSON *j = cJSON_Parse(s->cfg);
    if (!cJSON_IsObject(j)) { cJSON_Delete(j); return; }
    const char *k = cfg_keys[key % NKEYS];
    cJSON *cur = cJSON_GetObjectItemCaseSensitive(j, k);
    double cv = cJSON_IsNumber(cur) ? cur->valuedouble : 0;
    cJSON *nv = NULL;
    int del = 0;
    if (!strcmp(k, CKPT_CONFIG_FFN_SIZES) && kind % 8 < 4 && cJSON_IsArray(cur)) {
        int n = cJSON_GetArraySize(cur);
        switch (kind % 8) {
        case 0:                         /* one entry */
            if (n) {
                cJSON *e = cJSON_GetArrayItem(cur, (int)(l % (unsigned)n));
                double ev = cJSON_IsNumber(e) ? e->valuedouble : 0;
                cJSON_ReplaceItemInArray(cur, (int)(l % (unsigned)n), cJSON_CreateNumber(num_value(sel, ev)));
            }
            break;
        case 1: cJSON_AddItemToArray(cur, cJSON_CreateNumber(num_value(sel, 1))); break;
        case 2: if (n) cJSON_DeleteItemFromArray(cur, n - 1); break;
        default:                        /* an entry of another type */
            if (n) cJSON_ReplaceItemInArray(cur, (int)(l % (unsigned)n), sel & 1 ? cJSON_CreateString("3") : cJSON_CreateNull());
            break;
        }
    } else {
        switch (kind % 8) {
        case 0: case 4: nv = cJSON_CreateNumber(num_value(sel, cv)); break;
        case 1: nv = cJSON_CreateBool(sel & 1); break;
        case 2: nv = cJSON_CreateString(str_vals[sel % (sizeof str_vals / sizeof str_vals[0])]); break;
        case 3: nv = cJSON_CreateNull(); break;
        case 5: del = 1; break;
        case 6: nv = cJSON_CreateArray(); break;
        default: nv = cJSON_CreateObject(); break;
        }
        if (del) cJSON_DeleteItemFromObjectCaseSensitive(j, k);
        else if (cur) cJSON_ReplaceItemInObjectCaseSensitive(j, k, nv);
        else cJSON_AddItemToObject(j, k, nv);
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (text) put_config(f, s, text);
}

/* the FFN of block l as m channels: gate / up [m, D], down [D, m], kept_channels [m] */
static void resize_ffn(hid_t f, cstate *s, const templ *t, unsigned l, unsigned code, unsigned fl, uint64_t seed)
{
    static const int64_t tab[] = { 1, 2, 3, 4, 5, 6, 7, 9, 16, 64, 1 << 30, (1LL << 30) + 1, 1LL << 31, (1LL << 32) + 3, -1, -2 };
    l %= (unsigned)t->L;
    int64_t cur = s->sl[S_BLOCK(l, CK_GATE)].kind == DS_OK && s->sl[S_BLOCK(l, CK_GATE)].nd >= 1 ? (int64_t)s->sl[S_BLOCK(l, CK_GATE)].dims[0] : t->ffn[l];
    int64_t m = tab[code % 16];
    if (m == -1) m = cur + 1;
    if (m == -2) m = cur > 1 ? cur - 1 : 1;
    int64_t D = t->cfg.hidden;
    int big = m * D * 4 > 65536;
    const ckpt_kind kinds[4] = { CK_GATE, CK_UP, CK_DOWN, CK_KEPT };
    for (int i = 0; i < 4; i++) {
        int sl = S_BLOCK(l, kinds[i]);
        char p[256];
        slot_path(sl, p, sizeof p);
        dtype_t dt = s->sl[sl].canon >= 0 ? (dtype_t)s->sl[sl].canon : kind_dtype(3, kinds[i]);
        hid_t ty = kinds[i] == CK_KEPT ? H5Tcopy(H5T_STD_I64LE) : h5_dtype(dt);
        size_t es = kinds[i] == CK_KEPT ? 8 : dtype_size(dt);
        hsize_t dims[2] = { (hsize_t)m, (hsize_t)D };
        if (kinds[i] == CK_DOWN) { dims[0] = (hsize_t)D; dims[1] = (hsize_t)m; }
        int nd = kinds[i] == CK_KEPT ? 1 : 2;
        if (link_chain(f, p)) H5Ldelete(f, p, H5P_DEFAULT);
        make_ds(f, p, ty, nd, dims, big ? 256 : 0, 1);
        if (!big) {
            int64_t rows = (int64_t)dims[0], cols = nd == 2 ? (int64_t)dims[1] : 1;
            size_t nb = (size_t)(rows * cols) * es;
            unsigned char *b = xmalloc(nb + 1);
            fill_random(b, nb, es, kinds[i] != CK_KEPT, &seed);
            write_raw(f, p, b);
            if (fl & 2) set_ck(f, p, tensor_checksum(b, es, rows, cols, 0, 0, cols));
            free(b);
        } else if (fl & 2)
            set_ck(f, p, seed);                 /* present (ckpt_open reads it), not the data's */
        H5Tclose(ty);
    }
    if ((fl & 1) && s->cfg_st == S_KNOWN) {
        cJSON *j = cJSON_Parse(s->cfg);
        cJSON *a = j ? cJSON_GetObjectItemCaseSensitive(j, CKPT_CONFIG_FFN_SIZES) : NULL;
        if (cJSON_IsArray(a) && (int)l < cJSON_GetArraySize(a)) {
            cJSON_ReplaceItemInArray(a, (int)l, cJSON_CreateNumber((double)m));
            char *text = cJSON_PrintUnformatted(j);
            if (text) put_config(f, s, text);
        }
        cJSON_Delete(j);
    }
}

/* apply one edit; -1 when the program ended inside it */
static int apply(hid_t f, rd *r, cstate *s, const templ *t)
{
    unsigned op = u8(r) % 12;
    char p[256], q[256];
    uint64_t tm = 0;            /* the slots to probe again */
    int troot = 0;              /* and the root attributes */
    switch (op) {
    case 0: {                   /* ELEM */
        unsigned sl = u8(r) % NSLOT, idx = (unsigned)un(r, 2);
        uint64_t raw = un(r, 4);
        unsigned fl = u8(r);
        if (r->eof) return -1;
        sstate *d = &s->sl[sl];
        unsigned char *b = read_raw(f, (int)sl, d);
        if (!b) break;
        uint64_t np = d->nbytes / (d->es ? d->es : 1);
        if (np) {
            unsigned char *e = b + (idx % np) * d->es;
            for (size_t k = 0; k < d->es; k++) e[k] = (unsigned char)(raw >> (8 * (k % 4)));
            slot_path((int)sl, p, sizeof p);
            write_raw(f, p, b);
            if ((fl & 1) && d->nd <= 2) {
                int64_t rr, cc;
                data_shape(d, &rr, &cc);
                set_ck(f, p, tensor_checksum(b, d->es, rr, cc, 0, 0, cc));
            }
        }
        free(b);
        tm = BIT(sl);
        break;
    }
    case 1: {                   /* CKSUM */
        unsigned sl = u8(r) % NSLOT, mode = u8(r);
        uint64_t raw = un(r, 8);
        if (r->eof) return -1;
        sstate *d = &s->sl[sl];
        if (d->kind == DS_MISSING || d->kind == DS_NOTDS) break;
        slot_path((int)sl, p, sizeof p);
        hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
        if (ds < 0) break;
        if (mode % 12 == 10) { uint64_t v = (d->ck == CK_U64 ? d->ck_val : raw) ^ (1ULL << (raw & 63)); attr_scalar(ds, CKPT_A_CHECKSUM, H5T_STD_U64LE, &v); }
        else if (mode % 12 == 11) { if (d->data == 1) attr_scalar(ds, CKPT_A_CHECKSUM, H5T_STD_U64LE, &d->data_ck); }
        else put_number(ds, CKPT_A_CHECKSUM, mode, raw, 0);
        H5Dclose(ds);
        tm = BIT(sl);
        break;
    }
    case 2: {                   /* REMOVE */
        unsigned sl = u8(r) % NSLOT, mode = u8(r) % 7, o = u8(r) % NSLOT;
        if (r->eof) return -1;
        slot_path((int)sl, p, sizeof p);
        slot_path((int)o, q, sizeof q);
        hid_t lc = lcpl_mk();
        tm = BIT(sl);
        if (mode == 1 || mode == 6) {    /* its group (.../gate_proj), or the one above (.../mlp) */
            char *z = strrchr(p, '/');
            if (z && z != p) *z = 0;
            if (mode == 6 && (z = strrchr(p, '/')) && z != p) *z = 0;
            if (link_chain(f, p)) H5Ldelete(f, p, H5P_DEFAULT);
            size_t pl = strlen(p);
            for (int i = 0; i < NSLOT; i++) {   /* every slot under it */
                slot_path(i, q, sizeof q);
                if (!strncmp(q, p, pl) && (q[pl] == '/' || !q[pl])) tm |= BIT(i);
            }
        } else {
            if (link_chain(f, p)) H5Ldelete(f, p, H5P_DEFAULT);
            if (mode == 2) { hid_t g = H5Gcreate2(f, p, lc, H5P_DEFAULT, H5P_DEFAULT); if (g >= 0) H5Gclose(g); }
            if (mode == 3) H5Lcreate_soft("/nowhere/at/all", f, p, lc, H5P_DEFAULT);
            int linked = (mode == 4 && o != sl && H5Lcreate_soft(q, f, p, lc, H5P_DEFAULT) >= 0) ||
                         (mode == 5 && o != sl && link_chain(f, q) && H5Lcreate_hard(f, q, f, p, lc, H5P_DEFAULT) >= 0);
            if (linked && s->npairs < 2 * MAX_OPS) {
                s->links = 1;
                s->pair[s->npairs][0] = (unsigned char)sl;
                s->pair[s->npairs][1] = (unsigned char)o;
                s->npairs++;
            }
        }
        H5Pclose(lc);
        break;
    }
    case 3: {                   /* RESHAPE (also: create a missing slot, e.g. a bias) */
        unsigned sl = u8(r) % NSLOT, nd = u8(r) % 5, c0 = u8(r), c1 = u8(r), fl = u8(r);
        uint64_t seed = u8(r);
        if (r->eof) return -1;
        sstate *d = &s->sl[sl];
        int l, k = slot_kind((int)sl, &l);
        int64_t ed[2] = { 1, 1 };
        int end = 1;
        if (k >= 0) end = ckpt_tensor_shape(&t->cfg, (ckpt_kind)k, l >= 0 ? t->ffn[l] : 0, ed);
        else ed[0] = t->L;
        if (d->kind == DS_OK && d->nd >= 1 && d->nd <= 2) { ed[0] = (int64_t)d->dims[0]; if (d->nd == 2) ed[1] = (int64_t)d->dims[1]; end = d->nd; }
        static const int64_t tab[] = { -1, -1, -1, -2, -3, 0, 1, 2, 3, 7, 8, 9, 16, 1 << 30, 1LL << 31, (1LL << 32) + 8 };
        hsize_t dims[4];
        int ndim = nd == 4 ? end : (int)nd;
        for (int i = 0; i < ndim; i++) {
            int64_t e = i < 2 ? ed[i] : 1, v = tab[(i == 0 ? c0 : c1 + (unsigned)i) % 16];
            dims[i] = (hsize_t)(v == -1 ? e : v == -2 ? e + 1 : v == -3 ? (e > 0 ? e - 1 : 0) : v);
        }
        uint64_t np = 1;
        int big = 0;
        for (int i = 0; i < ndim; i++) { if (dims[i] && np > (1ULL << 40) / dims[i]) big = 1; np *= dims[i] ? dims[i] : 1; }
        hid_t ty;
        if (d->kind == DS_OK) {
            slot_path((int)sl, p, sizeof p);
            hid_t ds = H5Dopen2(f, p, H5P_DEFAULT);
            ty = ds >= 0 ? H5Dget_type(ds) : -1;
            if (ds >= 0) H5Dclose(ds);
            if (ty < 0) ty = H5Tcopy(H5T_IEEE_F32LE);
        } else
            ty = k == CK_KEPT ? H5Tcopy(H5T_STD_I64LE) : k >= 0 ? h5_dtype(kind_dtype(3, (ckpt_kind)k)) : H5Tcopy(H5T_IEEE_F64LE);
        size_t es = H5Tget_size(ty);
        big |= np * es > 65536;
        slot_path((int)sl, p, sizeof p);
        if (link_chain(f, p)) H5Ldelete(f, p, H5P_DEFAULT);
        make_ds(f, p, ty, ndim, dims, (big || (fl & 4)) ? 256 : 0, 1);
        if (!big) {
            size_t nb = (size_t)np * es;
            unsigned char *b = xmalloc(nb + 1);
            fill_random(b, nb, es, H5Tget_class(ty) == H5T_FLOAT, &seed);
            write_raw(f, p, b);
            if ((fl & 1) && ndim <= 2) {
                int64_t rr = ndim >= 1 ? (int64_t)dims[0] : 1, cc = ndim == 2 ? (int64_t)dims[1] : 1;
                set_ck(f, p, tensor_checksum(b, es, rr, cc, 0, 0, cc));
            }
            free(b);
        } else if (fl & 1)
            set_ck(f, p, seed);
        H5Tclose(ty);
        tm = BIT(sl);
        break;
    }
    case 4: {                   /* RETYPE, raw bytes kept (truncated / zero-extended per element) */
        unsigned sl = u8(r) % NSLOT, ty = u8(r), fl = u8(r);
        if (r->eof) return -1;
        sstate *d = &s->sl[sl];
        unsigned char *b = read_raw(f, (int)sl, d);
        if (!b) break;
        hid_t nt = make_type(ty);
        size_t es = nt >= 0 ? H5Tget_size(nt) : 0;
        if (es) {
            uint64_t np = d->nbytes / d->es;
            unsigned char *nb = xcalloc(np * es + 1, 1);
            for (uint64_t i = 0; i < np; i++) memcpy(nb + i * es, b + i * d->es, es < d->es ? es : d->es);
            slot_path((int)sl, p, sizeof p);
            H5Ldelete(f, p, H5P_DEFAULT);
            make_ds(f, p, nt, d->nd, d->dims, (fl & 4) ? 256 : 0, 1);
            write_raw(f, p, nb);
            if ((fl & 1) && d->nd <= 2) {
                int64_t rr, cc;
                data_shape(d, &rr, &cc);
                set_ck(f, p, tensor_checksum(nb, es, rr, cc, 0, 0, cc));
            } else if (fl & 2 && d->ck == CK_U64)
                set_ck(f, p, d->ck_val);        /* the old value: right when the bytes are the same */
            free(nb);
        }
        if (nt >= 0) H5Tclose(nt);
        free(b);
        tm = BIT(sl);
        break;
    }
    case 5: {                   /* STRING */
        unsigned which = u8(r) % 4, mode = u8(r), sel = u8(r);
        if (r->eof) return -1;
        char lit[80];
        const char *z = NULL;
        size_t len = 0;
        char *big = NULL;
        if (sel >= 0xc0) {
            len = sel & 0x3f;
            for (size_t i = 0; i < len; i++) lit[i] = (char)u8(r);
            if (r->eof) return -1;
            lit[len] = 0;
            z = lit;
        } else if (which == 0) z = fmt_table[sel % (sizeof fmt_table / sizeof fmt_table[0])];
        else if (which == 2) {
            z = opt_table[sel % (sizeof opt_table / sizeof opt_table[0])];
            if (!z) {
                big = xmalloc(5100);
                memcpy(big, "{\"model\":\"", 10);
                memset(big + 10, 'a', 5000);
                memcpy(big + 5010, "\"}", 3);
                z = big;
            }
        } else if (which == 3) z = sel & 1 ? "{" : sel & 2 ? "null" : "";
        else z = sel & 1 ? "wanda_sp" : "a-method-name-longer-than-thirty-two-bytes";
        if (!len) len = strlen(z);
        static const char *const names[4] = { CKPT_A_FORMAT, CKPT_A_METHOD, CKPT_A_OPTIONS, CKPT_A_CONFIG };
        char zz[80];
        if (which == 0) put_string(f, names[0], mode, z, len, &s->fmt_st, s->fmt, sizeof s->fmt);
        else if (which == 1) put_string(f, names[1], mode, z, len, NULL, NULL, 0);
        else if (which == 2) {
            put_string(f, names[2], mode, z, len, &s->opt_st, s->opt, sizeof s->opt);
            /* the 5000-byte path does not fit s->opt: what matters is that it is a model path */
            if (s->opt_st == S_KNOWN && strlen(z) >= sizeof s->opt) snprintf(s->opt, sizeof s->opt, "{\"model\":\"aaaa\"}");
        } else {
            int st;
            put_string(f, names[3], mode, z, len, &st, zz, sizeof zz);
            free(s->cfg);
            s->cfg = st == S_KNOWN ? xstrdup(zz) : NULL;
            s->cfg_st = st;
        }
        free(big);
        break;
    }
    case 6: {                   /* CONFIG */
        unsigned key = u8(r), kind = u8(r), sel = u8(r), l = u8(r);
        if (r->eof) return -1;
        config_edit(f, s, key, kind, sel, l);
        break;
    }
    case 7: {                   /* RATIO */
        unsigned mode = u8(r);
        uint64_t raw = un(r, 8);
        if (r->eof) return -1;
        double x;
        memcpy(&x, &raw, 8);
        if (mode % 3 == 0) attr_scalar(f, CKPT_A_RATIO, H5T_NATIVE_DOUBLE, &x);
        else put_number(f, CKPT_A_RATIO, mode / 3, raw, 1);
        troot = 1;
        break;
    }
    case 8: {                   /* NUM_TENSORS */
        unsigned mode = u8(r);
        uint64_t raw = un(r, 8);
        if (r->eof) return -1;
        int64_t n = 0;
        for (int i = 0; i < NSLOT; i++) n += s->sl[i].kind == DS_OK && s->sl[i].ck != CK_MISSING;
        if (mode % 13 == 10) raw = (uint64_t)n;
        else if (mode % 13 == 11) raw = (uint64_t)(n + 1);
        else if (mode % 13 == 12) raw = (uint64_t)(n - 1);
        put_number(f, CKPT_A_NUM_TENSORS, mode % 13 >= 10 ? 0 : mode % 13, raw, 1);
        troot = 1;
        break;
    }
    case 9: {                   /* RESIZE_FFN */
        unsigned l = u8(r), code = u8(r), fl = u8(r);
        uint64_t seed = u8(r);
        if (r->eof) return -1;
        l %= (unsigned)t->L;
        resize_ffn(f, s, t, l, code, fl, seed);
        tm = BIT(S_BLOCK(l, CK_GATE)) | BIT(S_BLOCK(l, CK_UP)) | BIT(S_BLOCK(l, CK_DOWN)) | BIT(S_BLOCK(l, CK_KEPT));
        break;
    }
    case 10: {                  /* EXTRA */
        unsigned w = u8(r), kind = u8(r) % 5;
        if (r->eof) return -1;
        if (kind == 0) { int64_t x = (int64_t)w; attr_scalar(f, "extra", H5T_STD_I64LE, &x); }
        else if (kind == 1) {
            slot_path((int)(w % NSLOT), p, sizeof p);
            hid_t ds = link_chain(f, p) ? H5Dopen2(f, p, H5P_DEFAULT) : -1;
            if (ds >= 0) { put_string(ds, CKPT_A_DTYPE, 0, "F16", 3, NULL, NULL, 0); H5Dclose(ds); }
        } else if (kind == 2) {
            snprintf(p, sizeof p, "/model/layers/%u/mlp/extra_proj/weight", w % 8);
            hsize_t d[2] = { 2, 8 };
            make_ds(f, p, H5T_IEEE_F32LE, 2, d, 0, 1);
        } else if (kind == 3) {
            hid_t lc = lcpl_mk();
            snprintf(p, sizeof p, "/model/layers/%u/other", 3 + w % 4);
            hid_t g = H5Gcreate2(f, p, lc, H5P_DEFAULT, H5P_DEFAULT);
            if (g >= 0) H5Gclose(g);
            H5Pclose(lc);
        } else { uint64_t x = w; attr_scalar(f, CKPT_A_FILE_CHECKSUM, H5T_STD_U64LE, &x); }
        break;
    }
    default: {                  /* FIXALL: what a consistent writer would have written */
        int64_t n = 0;
        for (int i = 0; i < NSLOT; i++) {
            sstate *d = &s->sl[i];
            if (d->kind != DS_OK || d->ck == CK_MISSING) continue;
            n++;
            if (d->data == 1 && d->nd <= 2) { slot_path(i, p, sizeof p); set_ck(f, p, d->data_ck); }
        }
        attr_scalar(f, CKPT_A_NUM_TENSORS, H5T_STD_I64LE, &n);
        tm = ~0ULL;
        troot = 1;
        break;
    }
    }
    /* what aliases a touched slot changed with it (links both ways, and through chains) */
    for (int grew = 1; grew;) {
        grew = 0;
        for (int k = 0; k < s->npairs; k++) {
            uint64_t a = BIT(s->pair[k][0]), b = BIT(s->pair[k][1]);
            if ((tm & (a | b)) && (tm & (a | b)) != (a | b)) { tm |= a | b; grew = 1; }
        }
    }
    if (tm) {
        s->big = 0;
        for (int i = 0; i < NSLOT; i++) {
            if (tm & BIT(i)) probe_slot(f, i, &s->sl[i]);
            if (s->sl[i].kind == DS_OK && s->sl[i].data == 0) s->big = 1;
        }
    }
    if (troot) probe_root(f, s);
    return 0;
}

static cstate g_s;

/* read every listed tensor as the exporters do; check against the probes */
static void read_all(ckpt_source *src, unsigned mode, int pred)
{
    static const int64_t panel_rows[4] = { 0, -2, -3, 3 };    /* all rows, half, a third of them, 3 */
    int64_t pr = panel_rows[(mode >> 2) & 3];
    for (int i = 0; i < src->nt; i++) {
        const ckpt_tensor *t = &src->t[i];
        int sl = slot_of(t);
        if (sl < 0) oracle("a tensor outside the layout", t->name, 0, pred);
        const sstate *d = &g_s.sl[sl];
        int64_t srows = t->stored_rows || t->stored_cols ? t->stored_rows : t->rows;
        int64_t scols = t->stored_rows || t->stored_cols ? t->stored_cols : t->cols;
        uint64_t bytes = (uint64_t)t->rows * (uint64_t)t->cols * dtype_size(t->dtype);
        if (bytes > DATACAP || d->data != 1) continue;
        int bad = src->ck_verify && d->data_ck != d->ck_val;
        int64_t step = pr > 0 ? pr : pr < 0 ? (t->rows - pr - 1) / -pr : t->rows;
        size_t row = (size_t)t->cols * dtype_size(t->dtype);
        unsigned char *buf = xmalloc((size_t)bytes + 1);
        memset(buf, 0xa5, (size_t)bytes + 1);
        int extra = i % 3 == 0;                 /* the second pass and the reverse one: every third tensor */
        int passes = extra && (mode & 0x10) ? 2 : 1;
        if (extra && (mode & 0x20)) {                      /* reverse panel order first: verified only as one panel */
            int failed = 0;
            int64_t last = (t->rows - 1) / step * step;
            for (int64_t r0 = last; r0 >= 0 && !failed; r0 -= step) {
                int64_t n = t->rows - r0 < step ? t->rows - r0 : step;
                failed = ckpt_read_rows(src, t, r0, n, buf + (size_t)r0 * row) != 0;
            }
            int64_t first = step < srows ? step : srows;   /* stored rows in the panel at row 0 */
            int want = bad && first >= srows;
            if (failed != want) oracle(failed ? "a reverse read failed" : "a reverse single-panel read missed a checksum mismatch", t->name, failed, want);
            if (failed && !strstr(cfsp_last_error(), g_path)) oracle("a read failure without a message naming the file", t->name, failed, want);
            cfsp_clear_error();
        }
        for (int pass = 0; pass < passes; pass++) {
            int failed = 0;
            for (int64_t r0 = 0; r0 < t->rows && !failed; r0 += step) {
                int64_t n = t->rows - r0 < step ? t->rows - r0 : step;
                failed = ckpt_read_rows(src, t, r0, n, buf + (size_t)r0 * row) != 0;
            }
            if (failed != bad) oracle(failed ? "a read failed" : "a read missed a checksum mismatch", t->name, failed, bad);
            if (failed) {
                if (!strstr(cfsp_last_error(), g_path)) oracle("a read failure without a message naming the file", t->name, failed, bad);
                cfsp_clear_error();
                break;
            }
            /* the file's bytes, zeros in the padding */
            size_t es = dtype_size(t->dtype), srow = (size_t)scols * es;
            if (d->nbytes <= RAWCAP && d->nbytes != (uint64_t)srows * srow) oracle("stored size", t->name, 0, pred);
            for (int64_t rr = 0; rr < t->rows; rr++) {
                const unsigned char *got = buf + (size_t)rr * row;
                for (size_t b = 0; b < row; b++) {
                    int stored = rr < srows && b < srow;
                    unsigned want = stored ? (d->nbytes <= RAWCAP ? d->raw[(size_t)rr * srow + b] : got[b]) : 0;
                    if (got[b] != want) oracle(stored ? "read bytes not the file's" : "padding not zero", t->name, 0, pred);
                }
            }
        }
        if (buf[bytes] != 0xa5) oracle("a read wrote past its rows", t->name, 0, pred);
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(g_path, sizeof g_path, "%s/cfsp_fuzz_h5ckpt_%d.h5", dir && *dir ? dir : "/tmp", (int)getpid());
        g_verbose = getenv("CFSP_FUZZ_VERBOSE") && atoi(getenv("CFSP_FUZZ_VERBOSE"));
        g_errfd = dup(2);
        g_outfd = dup(1);
        g_null = open("/dev/null", O_WRONLY);
        if (g_errfd < 0 || g_outfd < 0 || g_null < 0) abort();
        __sanitizer_set_report_fd((void *)(intptr_t)g_errfd);
        atexit(cleanup);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        /* keep HDF5's freed blocks on its free lists: each file open callocs a ~1 MB metadata cache,
         * which under ASan's allocator is a fresh mmap (page faults) every time otherwise */
        H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
        g_canon[0] = H5Tcopy(H5T_IEEE_F32LE);
        g_canon[1] = h5_dtype(DT_F16);
        g_canon[2] = h5_dtype(DT_BF16);
        g_base = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    }
    if (size < 2) return 0;
    templ *t = get_templ(data[0]);
    unsigned mode = data[1];
    free(g_s.cfg);
    g_s = t->st;
    g_s.cfg = xstrdup(t->cfg_text);
    if (write_file(t->img, t->len)) abort();
    rd r = { data + 2, size - 2, 0, 0 };
    if (r.n) {
        hid_t f = H5Fopen(g_path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (f < 0) abort();
        for (int k = 0; k < MAX_OPS && !r.eof && r.i < r.n; k++)
            if (apply(f, &r, &g_s, t)) break;
        if (H5Fclose(f) < 0) abort();
    }
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != g_base) { fprintf(stderr, "fuzz_h5ckpt: the harness left HDF5 objects open\n"); abort(); }

    int override = (mode >> 6) & 1;
    expect e;
    int pred = predict_open(&g_s, override, &e);
    ckpt_source src;
    int rc = ckpt_open(g_path, override ? "fuzz/override-model" : NULL, &src);
    if (g_verbose) fprintf(stderr, "fuzz_h5ckpt: predicted %d, ckpt_open %d %s\n", pred, rc, cfsp_last_error());
    if (rc == 0) {
        if (pred == 0) oracle("ckpt_open accepted a file the checks reject", NULL, rc, pred);
        if (src.nt != e.n) oracle("ckpt_open listed another number of tensors", NULL, rc, pred);
        if (src.ck_verify != e.verify) oracle("ck_verify", NULL, rc, pred);
        for (int i = 0; i < src.nt; i++) {
            const ckpt_tensor *tt = &src.t[i];
            int sl = e.t[i].slot;
            const sstate *d = &g_s.sl[sl];
            if (tt->ndim != e.t[i].nd || tt->rows != e.t[i].rows || tt->cols != e.t[i].cols || (int)tt->dtype != d->canon)
                oracle("a tensor's dtype or shape is not the file's", tt->name, rc, pred);
            if (tt->ck_has != e.verify || (e.verify && tt->ck_want != d->ck_val)) oracle("a tensor's checksum is not the file's", tt->name, rc, pred);
        }
        for (int l = 0; l < src.cfg.n_layers; l++)
            if (src.cfg.ffn[l] < 1 || src.cfg.ffn[l] > MAX_FFN || src.cfg.ffn[l] != e.ffn[l]) oracle("an FFN size is not the file's", NULL, rc, pred);
        if (!override && !src.src_dir[0]) oracle("no source directory", NULL, rc, pred);
        unsigned pad = mode & 3;
        if (pad == 1 || pad == 2) {
            int64_t m = ckpt_max_ffn(&src) + (pad == 2 ? 1 + (data[1] >> 4 & 3) : 0);
            if ((uint64_t)m * (uint64_t)src.cfg.hidden * 4 <= DATACAP) ckpt_pad_ffn(&src, m);
        } else if (pad == 3 && ckpt_pad_empty_ffn(&src) != 0)
            oracle("ckpt_pad_empty_ffn padded a block that has channels", NULL, rc, pred);
        read_all(&src, mode, pred);
    } else {
        if (pred == 1) oracle("ckpt_open rejected a valid file", NULL, rc, pred);
        if (!strstr(cfsp_last_error(), g_path)) oracle("a failure without a message naming the file", NULL, rc, pred);
    }
    ckpt_close(&src);
    cfsp_clear_error();
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != g_base) oracle("HDF5 identifiers left open by the reader", NULL, rc, pred);

    if ((mode & 0xc0) == 0xc0 && !g_s.big) {
        int vp = predict_verify(&g_s);
        quiet(1);
        int vr = model_h5_verify(g_path);
        quiet(0);
        if (g_verbose) fprintf(stderr, "fuzz_h5ckpt: verify predicted %d, model_h5_verify %d %s\n", vp, vr, cfsp_last_error());
        if (vp >= 0 && (vr == 0) != vp) oracle(vr == 0 ? "verify accepted a damaged file" : "verify rejected a consistent file", NULL, vr, vp);
        if (vr && !strstr(cfsp_last_error(), g_path)) oracle("a verify failure without a message naming the file", NULL, vr, vp);
        cfsp_clear_error();
        if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != g_base) oracle("HDF5 identifiers left open by verify", NULL, vr, vp);
    }
    return 0;
}
