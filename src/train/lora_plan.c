/* lora_plan.c — LoRA rank plans (uniform, importance-adaptive) and their PEFT adapter_config.json
 * (see lora_plan.h). */
#include "cfsp/train/lora_plan.h"
#include "cfsp/ckpt/layout.h"
#include "cfsp/format/h5util.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const lora_module_names[LORA_NMOD] = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
const char *const lora_module_paths[LORA_NMOD] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" };

int lora_parse_targets(const char *s, int *mask)
{
    static const char *const shortn[LORA_NMOD] = { "q", "k", "v", "o", "gate", "up", "down" };
    memset(mask, 0, sizeof(int) * LORA_NMOD);
    if (!strcmp(s, "all")) { for (int t = 0; t < LORA_NMOD; t++) mask[t] = 1; return 0; }
    char buf[256];
    if (strlen(s) >= sizeof buf) return FAIL("--targets '%s': too long", s);
    snprintf(buf, sizeof buf, "%s", s);
    int any = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int t = 0; t < LORA_NMOD; t++) if (!strcmp(tok, shortn[t]) || !strcmp(tok, lora_module_names[t])) found = t;
        if (found < 0) return FAIL("--targets: unknown projection '%s' (expected q,k,v,o,gate,up,down or all)", tok);
        mask[found] = 1;
        any = 1;
    }
    if (!any) return FAIL("--targets '%s': no projection named", s);
    return 0;
}

void lora_module_shape(const model_config *c, int l, int t, int64_t *out, int64_t *in)
{
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim, M = c->ffn[l];
    switch (t) {
    case TM_Q: *out = Q; *in = D; break;
    case TM_K: case TM_V: *out = KV; *in = D; break;
    case TM_O: *out = D; *in = Q; break;
    case TM_GATE: case TM_UP: *out = M; *in = D; break;
    default: *out = D; *in = M; break;
    }
}

void lora_sigmoid_scores(const double *imp, int L, double a, double temp_scale, double *s)
{
    double mid = 0;
    for (int l = 0; l < L; l++) mid += imp[l];
    mid /= L;
    for (int l = 0; l < L; l++) s[l] = 1.0 / (1.0 + exp(-a * ((imp[l] - mid) / 1e4 * temp_scale)));
}

typedef struct { double frac; int l; } frac_rem;

static int by_frac_desc(const void *a, const void *b)
{
    const frac_rem *x = a, *y = b;
    if (x->frac > y->frac) return -1;
    if (x->frac < y->frac) return 1;
    return x->l - y->l;
}

void lora_adaptive_ranks(const double *weight, const int64_t *cost, int L, int r, int *rank)
{
    int64_t budget = 0;
    for (int l = 0; l < L; l++) budget += (int64_t)r * cost[l];
    int *fixed = xcalloc((size_t)L, sizeof(int));
    double *x = xmalloc(sizeof(double) * (size_t)L);
    for (;;) {                                    /* rank = lambda * weight; blocks below 1 are fixed at 1 */
        double rest = (double)budget, wc = 0;
        for (int l = 0; l < L; l++) {
            if (fixed[l]) rest -= (double)cost[l];
            else wc += weight[l] * (double)cost[l];
        }
        int changed = 0;
        for (int l = 0; l < L; l++) {
            if (fixed[l]) { x[l] = 1.0; continue; }
            x[l] = wc > 0 ? rest / wc * weight[l] : 1.0;
            if (x[l] < 1.0) { fixed[l] = 1; changed = 1; }
        }
        if (!changed) break;
    }
    int64_t used = 0;
    frac_rem *rem = xmalloc(sizeof(frac_rem) * (size_t)L);
    for (int l = 0; l < L; l++) {
        double f = floor(x[l] + 1e-9);          /* 2.9999999999 from the division counts as 3 */
        rank[l] = (int)f < 1 ? 1 : (int)f;
        used += (int64_t)rank[l] * cost[l];
        rem[l].frac = fixed[l] ? -1.0 : x[l] - f;
        rem[l].l = l;
    }
    qsort(rem, (size_t)L, sizeof(frac_rem), by_frac_desc);
    for (int i = 0; i < L; i++) {
        int l = rem[i].l;
        if (used + cost[l] <= budget) { rank[l]++; used += cost[l]; }
    }
    free(rem);
    free(x);
    free(fixed);
}

void lora_plan_build(lora_plan *p, const model_config *c, const int *target, int r, double alpha, int alpha_scales,
                     int adaptive, const double *imp, double a, double temp_scale)
{
    memset(p, 0, sizeof *p);
    int L = c->n_layers;
    p->L = L;
    memcpy(p->target, target, sizeof p->target);
    p->r = r;
    p->alpha = alpha;
    p->alpha_scales = alpha_scales;
    p->adaptive = imp ? adaptive : LORA_UNIFORM;
    p->rank = xmalloc(sizeof(int) * (size_t)L);
    p->share = xmalloc(sizeof(double) * (size_t)L);
    p->cost = xcalloc((size_t)L, sizeof(int64_t));
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (!target[t]) continue;
            int64_t o, i;
            lora_module_shape(c, l, t, &o, &i);
            p->cost[l] += o + i;
        }
    if (p->adaptive) {
        if (p->adaptive == LORA_ADAPTIVE) lora_sigmoid_scores(imp, L, a, temp_scale, p->share);
        else for (int l = 0; l < L; l++) p->share[l] = imp[l] > 1e-9 ? imp[l] : 1e-9;   /* pruned fractions; none pruned: ~0 */
        double sum = 0;
        for (int l = 0; l < L; l++) sum += p->share[l];
        for (int l = 0; l < L; l++) p->share[l] /= sum;
        lora_adaptive_ranks(p->share, p->cost, L, r, p->rank);
    } else {
        for (int l = 0; l < L; l++) { p->share[l] = 1.0 / L; p->rank[l] = r; }
    }
    for (int l = 0; l < L; l++) {
        p->params += (int64_t)p->rank[l] * p->cost[l];
        p->params_uniform += (int64_t)r * p->cost[l];
    }
}

void lora_plan_free(lora_plan *p)
{
    free(p->rank);
    free(p->share);
    free(p->cost);
    memset(p, 0, sizeof *p);
}

double lora_plan_scaling(const lora_plan *p, int l)
{
    return p->alpha_scales ? p->alpha / p->r : p->alpha / p->rank[l];
}

/* ---- importances ------------------------------------------------------------------------------ */
static int read_f64_vec(hid_t f, const char *file, const char *path, double *v, int L)
{
    int rc = h5_read_vec(f, file, path, H5T_NATIVE_DOUBLE, v, L);
    for (int l = 0; !rc && l < L; l++) if (!isfinite(v[l])) rc = FAIL("%s: %s[%d] is not finite", file, path, l);
    return rc;
}



const char *const lora_plan_names[3] = { "uniform", "adaptive", "pruned" };

int lora_read_pruned_fraction(const char *path, int L, double *frac)
{
    h5_quiet();
    if (!path_exists(path)) return FAIL("%s: no such file", path);
    if (input_check(path, NULL)) return -1;
    if (H5Fis_hdf5(path) <= 0) return FAIL("%s: not an HDF5 file (--plan pruned needs a pruned checkpoint)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: not an HDF5 file", path);
    char *fmt = h5_attr_read_string(f, "format");
    int rc = -1;
    if (!fmt || strncmp(fmt, CKPT_FORMAT_PREFIX, strlen(CKPT_FORMAT_PREFIX)))
        FAIL("%s: not a pruned checkpoint of cfsp-mpi (format %s): --plan pruned reads its keep fractions", path, fmt ? fmt : "missing");
    else if (!read_f64_vec(f, path, CKPT_DS_KEEP_FRACTION, frac, L)) {
        rc = 0;
        for (int l = 0; l < L; l++) {
            if (!(frac[l] >= 0 && frac[l] <= 1)) { rc = FAIL("%s: %s[%d] = %g: expected a fraction in [0, 1]", path, CKPT_DS_KEEP_FRACTION, l, frac[l]); break; }
            frac[l] = 1.0 - frac[l];
        }
    }
    free(fmt);
    if (H5Fclose(f) < 0 && !rc) DIE("%s: closing the HDF5 file failed", path);
    return rc;
}

int lora_read_importance(const char *path, int L, const char *metric, int reference, double *imp, double *temp_scale)
{
    h5_quiet();
    if (!path_exists(path)) return FAIL("%s: no such file", path);
    if (input_check(path, NULL)) return -1;
    if (H5Fis_hdf5(path) <= 0) return FAIL("%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FAIL("%s: not an HDF5 file", path);
    int rc = -1;
    int64_t ns = 0, sl = 0;
    char p[128];
    char *fmt = h5_attr_read_string(f, "format");
    if (fmt && !strncmp(fmt, "cfsp-mpi-stats/", 15)) {
        snprintf(p, sizeof p, "/importance/%s", metric);
        if (read_f64_vec(f, path, p, imp, L) || h5_attr_read_i64(f, path, "nsamples", &ns) || h5_attr_read_i64(f, path, "seqlen", &sl)) goto out;
    } else if (fmt && !strncmp(fmt, CKPT_FORMAT_PREFIX, strlen(CKPT_FORMAT_PREFIX))) {
        /* the importances of the run's global metric, its nsamples and seqlen from the options */
        char *opts = h5_attr_read_string(f, "options");
        cJSON *j = opts ? cJSON_Parse(opts) : NULL;
        free(opts);
        const cJSON *gm = j ? cJSON_GetObjectItemCaseSensitive(j, "global_metric") : NULL;
        const cJSON *a = j ? cJSON_GetObjectItemCaseSensitive(j, "nsamples") : NULL, *b = j ? cJSON_GetObjectItemCaseSensitive(j, "seqlen") : NULL;
        int ok = cJSON_IsString(gm) && cJSON_IsNumber(a) && cJSON_IsNumber(b);
        if (ok && strcmp(gm->valuestring, metric)) {
            FAIL("%s: the pruned file holds '%s' importances, --global-metric is '%s' (give the statistics file with --stats)", path, gm->valuestring, metric);
            cJSON_Delete(j);
            goto out;
        }
        if (ok) { ns = (int64_t)a->valuedouble; sl = (int64_t)b->valuedouble; }
        cJSON_Delete(j);
        if (!ok) { FAIL("%s: attribute 'options' lacks global_metric / nsamples / seqlen", path); goto out; }
        if (read_f64_vec(f, path, CKPT_DS_IMPORTANCE, imp, L)) goto out;
    } else {
        FAIL("%s: neither a statistics file nor a pruned checkpoint of cfsp-mpi (format %s)", path, fmt ? fmt : "missing");
        goto out;
    }
    if (ns < 1 || sl < 1) { FAIL("%s: nsamples %lld, seqlen %lld: expected positive", path, (long long)ns, (long long)sl); goto out; }
    *temp_scale = reference ? 1.0 : 131072.0 / ((double)ns * (double)sl);
    rc = 0;
out:
    free(fmt);
    if (H5Fclose(f) < 0 && !rc) DIE("%s: closing the HDF5 file failed", path);   /* best-effort once failing */
    return rc;
}

/* ---- PEFT adapter_config.json ----------------------------------------------------------------- */
int lora_plan_write_peft(const lora_plan *p, const char *path, const char *base_model, int force)
{
    if (!force && path_exists(path)) return FAIL("%s exists (use --force to replace it)", path);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddStringToObject(j, "base_model_name_or_path", base_model ? base_model : "");
    cJSON_AddNumberToObject(j, "r", p->r);
    cJSON_AddNumberToObject(j, "lora_alpha", p->alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", 0.0);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(j, "use_rslora", 0);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    cJSON_AddBoolToObject(j, "init_lora_weights", 1);
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int t = 0; t < LORA_NMOD; t++) if (p->target[t]) cJSON_AddItemToArray(tm, cJSON_CreateString(lora_module_names[t]));
    cJSON *rp = cJSON_AddObjectToObject(j, "rank_pattern"), *ap = cJSON_AddObjectToObject(j, "alpha_pattern");
    for (int l = 0; l < p->L; l++)
        for (int t = 0; t < LORA_NMOD; t++) {
            if (!p->target[t] || !p->adaptive) continue;
            char key[96];
            snprintf(key, sizeof key, "model.layers.%d.%s", l, lora_module_paths[t]);
            if (p->rank[l] != p->r) cJSON_AddNumberToObject(rp, key, p->rank[l]);
            double al = p->alpha_scales ? p->alpha * p->rank[l] / p->r : p->alpha;
            if (al != p->alpha) cJSON_AddNumberToObject(ap, key, al);
        }
    /* provenance (ignored by PEFT) */
    cJSON *c = cJSON_AddObjectToObject(j, "cfsp_plan");
    cJSON_AddStringToObject(c, "plan", lora_plan_names[p->adaptive]);
    cJSON *ra = cJSON_AddArrayToObject(c, "block_ranks"), *sh = cJSON_AddArrayToObject(c, "importance_share");
    for (int l = 0; l < p->L; l++) {
        cJSON_AddItemToArray(ra, cJSON_CreateNumber(p->rank[l]));
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(p->share[l]));
    }
    cJSON_AddNumberToObject(c, "lora_params", (double)p->params);
    cJSON_AddNumberToObject(c, "lora_params_uniform", (double)p->params_uniform);
    cJSON_AddBoolToObject(c, "alpha_scales_with_rank", p->alpha_scales);
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    size_t n = strlen(txt);
    txt = xrealloc(txt, n + 2);
    txt[n] = '\n';
    txt[n + 1] = 0;
    int rc = write_text_atomic(path, txt);
    free(txt);
    return rc;
}
