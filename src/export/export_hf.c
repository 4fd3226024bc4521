/* export_hf.c — the Hugging Face Nemotron-NAS / DeciLM directory writer (see export.h).
 *
 * OUTDIR/config.json: the source config with architectures ["DeciLMForCausalLM"], model_type
 *   "nemotron-nas" and one block_configs entry per block in Nemotron-NAS's format
 *   ({"attention": {"n_heads_in_group", "no_op", "replace_with_linear", "sparsify"},
 *     "ffn": {"ffn_mult" | "intermediate_size", "no_op", "replace_with_linear", "sparsify"}}):
 *   - every block's size a multiple of 256: ffn.ffn_mult alone, a value checked here (per block,
 *     before anything is written) to give exactly the block's size by the runtimes' rule
 *     (nas_ffn_mult_size, model_config.h), with and without their rounding to 6 decimals;
 *   - otherwise ffn.intermediate_size alone (no ffn_mult can express such a size), and one line
 *     on stderr says which runtimes read that (see below) and that `run --align 256` avoids it.
 *   cfsp-mpi's own loader (model_config.c) reads either. A block left with no FFN channel gets
 *   one zero channel (exact: silu(0) * 0), as in the GGUF export.
 *
 * The runtimes' rule, read in their sources (facts only; not run here):
 *   - vLLM, vllm/model_executor/models/nemotron_nas.py, DeciLMDecoderLayer.__init__ with
 *     _ffn_mult_to_intermediate_size / _find_multiple: size = int(2 * ffn_mult * hidden_size / 3)
 *     rounded up to a multiple of 256 when the ffn config object has an ffn_mult attribute, else
 *     block_config.ffn.intermediate_size (the only runtime with a fallback).
 *   - sglang, python/sglang/srt/models/nemotron_nas.py, DeciLMDecoderLayer.__init__: the same
 *     rule from ffn_mult, unconditionally (no intermediate_size).
 *   - TensorRT-LLM, tensorrt_llm/_torch/models/modeling_nemotron_nas.py,
 *     NemotronNASDecoderLayer.__init__ (GatedMLP size), and tensorrt_llm/models/nemotron_nas/
 *     convert.py, hf_block_config_to_layer_config (ffn["ffn_mult"]): the same rule, ffn_mult only.
 *   - mlx-lm, mlx_lm/models/nemotron-nas.py, FFNConfig / MLP.__init__: the same rule; FFNConfig is a
 *     dataclass of no_op, replace_with_linear, sparsify, ffn_mult only (an intermediate_size key is
 *     an unexpected keyword there, hence never written beside ffn_mult), ffn_mult required for an
 *     active FFN and rounded to 6 decimals in __post_init__.
 *   - NVIDIA's remote code (modeling_decilm.py of the Nemotron checkpoints on the Hub,
 *     _ffn_mult_to_intermediate_size; its block_config.py FFNConfig / BlockConfig.__post_init__):
 *     the same rule; ffn_mult asserted present for an active FFN and rounded to 6 decimals,
 *     keys other than its fields (intermediate_size) removed with a warning. vLLM takes its
 *     config object from this code (trust_remote_code), whose FFNConfig always has ffn_mult.
 *   - llama.cpp, convert_hf_to_gguf.py, DeciModel._ffn_mult_to_intermediate_size: the same rule.
 *   TensorRT-LLM's Python notes name NVIDIA's modeling_decilm.py as the rule's origin.
 * OUTDIR/model.safetensors or model-0000i-of-0000N.safetensors: at most shard_bytes per file
 *   (8-byte length + header + data; a tensor larger than that gets a file of its own), tensors in
 *   their stored dtype, bit for bit; OUTDIR/model.safetensors.index.json (always written).
 * OUTDIR/<tokenizer files of the source checkpoint>, copied.
 * Written in OUTDIR.tmp.<pid> and renamed; with --force an existing export directory is replaced
 * (only the files an export writes are removed; a directory holding anything else is refused). */
#include "cfsp/export/export.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *tokenizer_files[] = { "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                         "added_tokens.json", "vocab.json", "merges.txt", "generation_config.json" };
#define NTOKF (sizeof tokenizer_files / sizeof tokenizer_files[0])

typedef struct { char **p; int n; } strlist;
static void sl_add(strlist *l, const char *s) { l->p = xrealloc(l->p, sizeof(char *) * (size_t)(l->n + 1)); l->p[l->n++] = xstrdup(s); }
static void sl_free(strlist *l) { for (int i = 0; i < l->n; i++) free(l->p[i]); free(l->p); l->p = NULL; l->n = 0; }

/* is `name` one of the files an export writes? */
static int export_file_name(const char *name)
{
    if (!strcmp(name, "config.json") || !strcmp(name, "model.safetensors") || !strcmp(name, "model.safetensors.index.json")) return 1;
    int a, b, k = 0;
    if (sscanf(name, "model-%5d-of-%5d.safetensors%n", &a, &b, &k) == 2 && k == (int)strlen(name)) return 1;
    for (size_t i = 0; i < NTOKF; i++) if (!strcmp(name, tokenizer_files[i])) return 1;
    return 0;
}

static int write_file(const char *path, const char *text, strlist *created)
{
    FILE *f = fopen(path, "wb");
    if (!f) return FAIL("%s: cannot create: %s", path, strerror(errno));
    sl_add(created, path);
    size_t n = strlen(text);
    int bad = fwrite(text, 1, n, f) != n;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;   /* on the device before the directory's rename */
    bad |= fclose(f) != 0;
    return bad ? FAIL("%s: write failed: %s", path, strerror(errno)) : 0;
}

static int copy_file(const char *from, const char *to, strlist *created)
{
    if (input_check(from, NULL)) return -1;
    FILE *in = fopen(from, "rb");
    if (!in) return FAIL("%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) { fclose(in); return FAIL("%s: cannot create: %s", to, strerror(errno)); }
    sl_add(created, to);
    char buf[1 << 16];
    size_t n;
    int bad = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) if (fwrite(buf, 1, n, out) != n) { bad = 1; break; }
    bad |= ferror(in);
    fclose(in);                                        /* read only: nothing to lose */
    bad |= fflush(out) != 0 || fsync(fileno(out)) != 0;
    bad |= fclose(out) != 0;
    return bad ? FAIL("%s: copying %s failed", to, from) : 0;
}

/* one safetensors header entry; offsets given, or 20-digit placeholders for an upper bound */
static int entry(char *out, size_t n, const ckpt_tensor *t, uint64_t b, uint64_t e, int bound)
{
    char shape[64];
    if (t->ndim == 2) snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)t->rows, (long long)t->cols);
    else snprintf(shape, sizeof shape, "[%lld]", (long long)t->rows);
    if (bound) return snprintf(out, n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%020d,%020d]}", t->name, dtype_name(t->dtype), shape, 0, 0);
    return snprintf(out, n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}", t->name, dtype_name(t->dtype), shape,
                    (unsigned long long)b, (unsigned long long)e);
}

#define META "{\"__metadata__\":{\"format\":\"pt\"}"

static int write_shard(ckpt_source *s, int first, int last, const char *path, strlist *created)
{
    /* header */
    size_t cap = 256 + (size_t)(last - first) * 400, hl = strlen(META);
    char *hdr = xmalloc(cap);
    memcpy(hdr, META, hl);
    uint64_t off = 0;
    for (int i = first; i < last; i++) {
        uint64_t nb = ckpt_tensor_bytes(&s->t[i]);
        hl += (size_t)entry(hdr + hl, cap - hl, &s->t[i], off, off + nb, 0);
        off += nb;
    }
    hdr[hl++] = '}';
    while (hl % 8) hdr[hl++] = ' ';
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    FILE *f = fopen(path, "wb");
    if (!f) { free(hdr); return FAIL("%s: cannot create: %s", path, strerror(errno)); }
    sl_add(created, path);
    cfsp_tmp_register(path);
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    int rc = 0;
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(hdr, 1, hl, f) != hl) rc = FAIL("%s: write failed: %s", path, strerror(errno));
    free(hdr);
    unsigned char *buf = NULL;
    size_t bcap = 0;
    for (int i = first; i < last && !rc; i++) {
        const ckpt_tensor *t = &s->t[i];
        int64_t panel = ex_panel_rows(t, 1);
        size_t rowb = (size_t)t->cols * dtype_size(t->dtype), need = (size_t)panel * rowb;
        if (need > bcap) { free(buf); buf = xmalloc(need); bcap = need; }
        for (int64_t r = 0; r < t->rows && !rc; r += panel) {
            int64_t n = t->rows - r < panel ? t->rows - r : panel;
            rc = ckpt_read_rows(s, t, r, n, buf);
            if (!rc && fwrite(buf, 1, (size_t)n * rowb, f) != (size_t)n * rowb) rc = FAIL("%s: write failed: %s", path, strerror(errno));
        }
    }
    free(buf);
    if ((fflush(f) != 0 || fsync(fileno(f)) != 0) && !rc) rc = FAIL("%s: write failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && !rc) rc = FAIL("%s: write failed: %s", path, strerror(errno));
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the padded form's architecture: the source's own (a DeciLM source with one attention shape is a
 * LLaMA model) */
static void own_architecture(const model_config *c, const char **arch, const char **type)
{
    /* a DeciLM model with q/k/v biases (a qwen2 one exported as DeciLM) is a Qwen2 model */
    if (c->family == FAMILY_QWEN2 || c->qkv_bias) { *arch = "Qwen2ForCausalLM"; *type = "qwen2"; }
    else if (c->family == FAMILY_QWEN3) { *arch = "Qwen3ForCausalLM"; *type = "qwen3"; }
    else if (!strcmp(c->model_type, "mistral")) { *arch = "MistralForCausalLM"; *type = "mistral"; }
    else { *arch = "LlamaForCausalLM"; *type = "llama"; }
}

/* ffn_mult for a block of m channels (a multiple of 256) that gives exactly m by every runtime's
 * rule, raw and rounded to 6 decimals; 0, or -1 when there is none (then the export fails) */
static int exact_ffn_mult(int64_t m, int hidden, double *out)
{
    /* the plain 3m/(2 hidden), then the middle of the interval that rounds up to m */
    double want[2] = { 1.5 * (double)m / hidden, 1.5 * ((double)m - 128) / hidden };
    for (int i = 0; i < 2; i++) {
        char b[64];
        snprintf(b, sizeof b, "%.6f", want[i]);
        double x = strtod(b, NULL);
        /* the number as config.json will hold it (cJSON prints 15 significant digits, or 17 when
         * 15 do not read back the same double) */
        char j[64];
        snprintf(j, sizeof j, "%1.15g", x);
        if (strtod(j, NULL) != x) snprintf(j, sizeof j, "%1.17g", x);
        double y = strtod(j, NULL);
        if (nas_ffn_mult_size(y, hidden, 0) == m && nas_ffn_mult_size(y, hidden, 1) == m) { *out = y; return 0; }
    }
    return -1;
}

/* do the blocks' sizes all have an exact ffn_mult? */
static int all_ffn_mult(const model_config *c)
{
    for (int l = 0; l < c->n_layers; l++) if (c->ffn[l] <= 0 || c->ffn[l] % 256) return 0;
    return 1;
}

static char *hf_config(const ckpt_source *s, int padded)
{
    const model_config *c = &s->cfg;
    cJSON *src = cJSON_Parse(s->config_text);
    if (!src) src = cJSON_CreateObject();
    const char *drop[] = { "intermediate_sizes", "block_configs", "architectures", "model_type", "cfsp", "intermediate_size" };
    for (size_t i = 0; i < sizeof drop / sizeof drop[0] - (padded ? 0 : 1); i++) cJSON_DeleteItemFromObject(src, drop[i]);
    const char *an = "DeciLMForCausalLM", *mt = "nemotron-nas";
    if (padded) own_architecture(c, &an, &mt);
    cJSON *j = cJSON_CreateObject(), *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString(an));
    cJSON_AddItemToObject(j, "architectures", arch);
    cJSON_AddStringToObject(j, "model_type", mt);
    if (padded) cJSON_AddNumberToObject(j, "intermediate_size", c->ffn_default);
    while (src->child) {                          /* the other fields, in their order */
        cJSON *it = cJSON_DetachItemViaPointer(src, src->child);
        char *k = xstrdup(it->string);
        cJSON_AddItemToObject(j, k, it);
        free(k);
    }
    cJSON_Delete(src);
    if (padded) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "method", s->method);
        cJSON_AddNumberToObject(p, "ratio", s->ratio);
        cJSON_AddStringToObject(p, "source", s->in_path[0] ? s->in_path : s->src_dir);
        cJSON *ks = cJSON_CreateArray();
        for (int l = 0; l < c->n_layers; l++) cJSON_AddItemToArray(ks, cJSON_CreateNumber(ckpt_stored_ffn(s, l)));
        cJSON_AddItemToObject(p, "kept_intermediate_sizes", ks);
        cJSON_AddItemToObject(j, "cfsp", p);
        char *out = cJSON_Print(j);
        cJSON_Delete(j);
        return out;
    }
    int use_mult = all_ffn_mult(c);
    cJSON *bc = cJSON_CreateArray();
    for (int l = 0; l < c->n_layers; l++) {
        cJSON *b = cJSON_CreateObject(), *a = cJSON_CreateObject(), *ff = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "n_heads_in_group", c->n_heads / c->n_kv_heads);
        cJSON_AddFalseToObject(a, "no_op");
        cJSON_AddFalseToObject(a, "replace_with_linear");
        cJSON_AddNullToObject(a, "sparsify");
        double mult = 0;
        if (use_mult && exact_ffn_mult(c->ffn[l], c->hidden, &mult)) {
            FAIL("%s: block %d: no ffn_mult gives FFN size %d with hidden_size %d by the Nemotron-NAS rule (internal error)",
                 s->in_path[0] ? s->in_path : s->src_dir, l, c->ffn[l], c->hidden);
            cJSON_Delete(bc);
            cJSON_Delete(j);
            return NULL;
        }
        if (use_mult) cJSON_AddNumberToObject(ff, "ffn_mult", mult);
        else cJSON_AddNumberToObject(ff, "intermediate_size", c->ffn[l]);
        cJSON_AddFalseToObject(ff, "no_op");
        cJSON_AddFalseToObject(ff, "replace_with_linear");
        cJSON_AddNullToObject(ff, "sparsify");
        cJSON_AddItemToObject(b, "attention", a);
        cJSON_AddItemToObject(b, "ffn", ff);
        cJSON_AddItemToArray(bc, b);
    }
    cJSON_AddItemToObject(j, "block_configs", bc);
    /* Qwen2's q/k/v biases (no o_proj bias): vLLM's nemotron_nas.py reads qkv_bias for q/k/v alone
     * (attention_bias would declare an o_proj bias too); cfsp-mpi's config parser the same */
    if (c->qkv_bias) {
        cJSON_DeleteItemFromObject(j, "attention_bias");
        cJSON_DeleteItemFromObject(j, "qkv_bias");
        cJSON_AddFalseToObject(j, "attention_bias");
        cJSON_AddTrueToObject(j, "qkv_bias");
    }
    /* the source family's own fields that a DeciLM config does not read */
    const char *qwen_only[] = { "use_sliding_window", "sliding_window", "max_window_layers", "layer_types" };
    for (size_t i = 0; c->family == FAMILY_QWEN2 && i < sizeof qwen_only / sizeof qwen_only[0]; i++) cJSON_DeleteItemFromObject(j, qwen_only[i]);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "method", s->method);
    cJSON_AddNumberToObject(p, "ratio", s->ratio);
    cJSON_AddStringToObject(p, "source", s->in_path[0] ? s->in_path : s->src_dir);
    cJSON_AddItemToObject(j, "cfsp", p);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

/* remove a previous export directory: only the files an export writes, then the directory */
static int remove_old_export(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return FAIL("%s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return FAIL("%s: cannot list: %s", dir, strerror(errno));
    struct dirent *e;
    strlist other = { 0 }, ours = { 0 };
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        sl_add(export_file_name(e->d_name) ? &ours : &other, e->d_name);
    }
    closedir(d);
    int rc = 0;
    if (other.n) rc = FAIL("%s: exists and holds '%s', which an export does not write; not replacing it (remove it yourself)", dir, other.p[0]);
    for (int i = 0; !rc && i < ours.n; i++) {
        char p[8400];
        snprintf(p, sizeof p, "%s/%s", dir, ours.p[i]);
        if (unlink(p) != 0) rc = FAIL("%s: cannot remove: %s", p, strerror(errno));
    }
    if (!rc && rmdir(dir) != 0) rc = FAIL("%s: cannot remove: %s", dir, strerror(errno));
    sl_free(&other);
    sl_free(&ours);
    return rc;
}

int export_hf(ckpt_source *s, const ex_options *o)
{
    if (s->has_bias)
        return FAIL("%s: block %d carries mlp.down_proj.bias (flap's bias compensation); the %s layout has no FFN bias, so the export would change the model",
                    s->in_path, s->bias_layer, o->padded ? "Hugging Face" : "DeciLM / Nemotron-NAS");
    if (!o->padded && s->cfg.family == FAMILY_QWEN3)
        return FAIL("%s: a qwen3 model: DeciLM / Nemotron-NAS has no q_norm / k_norm; export it with --format hf-padded (Qwen3ForCausalLM, every FFN zero-padded to the widest block)",
                    s->in_path[0] ? s->in_path : s->src_dir);
    uint64_t limit = o->shard_bytes ? o->shard_bytes : 5000000000ULL;
    if (limit < 1024) return FAIL("--shard-size %llu: at least 1024 bytes", (unsigned long long)limit);
    if (path_exists(o->out) && !o->force) return FAIL("%s: output exists (use --force to overwrite)", o->out);
    if (!o->padded) {
        int z = ckpt_pad_empty_ffn(s);
        if (z) fprintf(stderr, "cfsp-mpi: export: %d block%s without FFN channels get one zero channel (exact; Nemotron-NAS has no FFN of size 0)\n", z, z == 1 ? "" : "s");
    }
    char *cfg_text = hf_config(s, o->padded);         /* before anything is written: it can fail */
    if (!cfg_text) return -1;
    if (!o->padded && !all_ffn_mult(&s->cfg)) {
        int l = 0;
        while (l < s->cfg.n_layers && s->cfg.ffn[l] % 256 == 0) l++;
        fprintf(stderr, "cfsp-mpi: export: block %d keeps %d FFN channels, no multiple of 256: config.json gives block_configs[i].ffn.intermediate_size "
                "without ffn_mult, which of the Nemotron-NAS runtimes only vLLM's nemotron_nas.py reads (its fallback when the ffn config has no ffn_mult; sglang, TensorRT-LLM, mlx-lm, "
                "NVIDIA's modeling_decilm.py and llama.cpp's converter derive every size from ffn_mult); prune with `run --align 256` for "
                "sizes every runtime loads, or export --format hf-padded\n", l, s->cfg.ffn[l]);
    }
    char tmpdir[4200];
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp.%d", o->out, (int)getpid());
    if (mkdir_p(tmpdir)) { free(cfg_text); return -1; }
    strlist created = { 0 };
    int rc = 0;

    /* shard plan: greedy in tensor order, bounded by an upper bound of the header size */
    int nt = s->nt, nsh = 0;
    int *first = xmalloc(sizeof(int) * (size_t)(nt + 1));
    char ebuf[512];
    for (int i = 0; i < nt;) {
        first[nsh++] = i;
        uint64_t hb = strlen(META) + 1 + 8 + 8, data = 0;
        int j = i;
        while (j < nt) {
            uint64_t e = (uint64_t)entry(ebuf, sizeof ebuf, &s->t[j], 0, 0, 1), nb = ckpt_tensor_bytes(&s->t[j]);
            if (j > i && hb + e + data + nb > limit) break;
            hb += e;
            data += nb;
            j++;
        }
        if (j == i + 1 && hb + data > limit)
            fprintf(stderr, "cfsp-mpi: export: tensor %s (%llu bytes) exceeds --shard-size; it gets a file of its own\n", s->t[i].name,
                    (unsigned long long)ckpt_tensor_bytes(&s->t[i]));
        i = j;
    }
    first[nsh] = nt;
    char **shard_name = xcalloc((size_t)nsh, sizeof(char *));
    for (int k = 0; k < nsh; k++) {
        char n[64];
        if (nsh == 1) snprintf(n, sizeof n, "model.safetensors");
        else snprintf(n, sizeof n, "model-%05d-of-%05d.safetensors", k + 1, nsh);
        shard_name[k] = xstrdup(n);
    }
    char p[8400];
    uint64_t total = 0;
    for (int k = 0; k < nsh && !rc; k++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, shard_name[k]);
        rc = write_shard(s, first[k], first[k + 1], p, &created);
    }
    for (int i = 0; i < nt; i++) total += ckpt_tensor_bytes(&s->t[i]);

    /* index (weight_map sorted by name, as transformers writes it) */
    if (!rc) {
        cJSON *ix = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *wm = cJSON_CreateObject();
        cJSON_AddNumberToObject(meta, "total_size", (double)total);
        cJSON_AddItemToObject(ix, "metadata", meta);
        char **names = xmalloc(sizeof(char *) * (size_t)nt);
        int *shard_of = xmalloc(sizeof(int) * (size_t)nt);
        for (int k = 0; k < nsh; k++) for (int i = first[k]; i < first[k + 1]; i++) shard_of[i] = k;
        for (int i = 0; i < nt; i++) names[i] = s->t[i].name;
        qsort(names, (size_t)nt, sizeof(char *), cmp_str);
        for (int i = 0; i < nt; i++) {
            int at = (int)(ckpt_find(s, names[i]) - s->t);
            cJSON_AddStringToObject(wm, names[i], shard_name[shard_of[at]]);
        }
        cJSON_AddItemToObject(ix, "weight_map", wm);
        char *text = cJSON_Print(ix);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", tmpdir);
        rc = write_file(p, text, &created);
        free(text); free(names); free(shard_of);
        cJSON_Delete(ix);
    }
    if (!rc) {
        snprintf(p, sizeof p, "%s/config.json", tmpdir);
        rc = write_file(p, cfg_text, &created);
    }
    free(cfg_text);
    int ncopied = 0;
    for (size_t i = 0; i < NTOKF && !rc; i++) {
        char from[8400];
        snprintf(from, sizeof from, "%s/%s", s->src_dir, tokenizer_files[i]);
        if (!path_exists(from)) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, tokenizer_files[i]);
        rc = copy_file(from, p, &created);
        ncopied++;
    }
    if (!rc && ncopied == 0) fprintf(stderr, "cfsp-mpi: export: %s holds no tokenizer files; none copied\n", s->src_dir);
    if (!rc && path_exists(o->out)) rc = remove_old_export(o->out);
    if (!rc && rename(tmpdir, o->out) != 0) rc = FAIL("cannot rename %s to %s: %s", tmpdir, o->out, strerror(errno));
    for (int i = 0; i < created.n; i++) {
        if (rc) unlink(created.p[i]);
        cfsp_tmp_unregister(created.p[i]);
    }
    if (rc) rmdir(tmpdir);
    if (!rc) {
        const char *an = "DeciLMForCausalLM", *mt = "nemotron-nas";
        if (o->padded) own_architecture(&s->cfg, &an, &mt);
        printf("%s: %s / %s, %d tensors in %d safetensors file%s (%llu bytes of tensors), %d tokenizer file%s copied; FFN sizes",
               o->out, an, mt, nt, nsh, nsh == 1 ? "" : "s", (unsigned long long)total, ncopied, ncopied == 1 ? "" : "s");
        for (int l = 0; l < s->cfg.n_layers; l++) printf(" %d", ckpt_stored_ffn(s, l));
        if (o->padded) printf(", zero-padded to %d", s->cfg.ffn_default);
        printf("\n");
    }
    for (int k = 0; k < nsh; k++) free(shard_name[k]);
    free(shard_name); free(first);
    sl_free(&created);
    return rc;
}
