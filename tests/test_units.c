/* test_units.c — unit tests of the pure functions: CPython-compatible calibration offsets,
 * half-precision conversions, safetensors / config / index parsers (good and bad inputs),
 * the allocation and selection rules, and the stage planner. Exit 1 on the first failure. */
#include "cfsp/ckpt/model_h5.h"
#include "cfsp/format/model_config.h"
#include "cfsp/format/safetensors.h"
#include "cfsp/format/tokens.h"
#include "cfsp/model/weights.h"
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/pipeline/pipeline.h"
#include "cfsp/prune/prune.h"
#include "cfsp/util/blas_env.h"
#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include "cfsp/util/util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures = 0, checks = 0;
#define EXPECT(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static void test_py_random(void)
{
    /* values printed by CPython: random.seed(0); [random.randint(0, 393013-256-1) for _ in range(5)] */
    int64_t want[5] = { 201979, 220500, 21225, 135746, 268055 }, off[5];
    EXPECT(calib_offsets(393013, 5, 256, 1, 0, "x", off) == 0, "offsets");
    for (int i = 0; i < 5; i++) EXPECT(off[i] == want[i], "offset %d = %lld, CPython %lld", i, (long long)off[i], (long long)want[i]);
    /* random.seed(12345678901); [random.randint(0, 10**12) for _ in range(3)] (two-word seed, 40-bit draws) */
    py_random r;
    py_random_seed(&r, 12345678901ULL);
    int64_t w2[3] = { 656898118805LL, 954891488787LL, 388195424302LL };
    for (int i = 0; i < 3; i++) { int64_t v = py_random_randint(&r, 0, 1000000000000LL); EXPECT(v == w2[i], "randint %lld vs %lld", (long long)v, (long long)w2[i]); }
    EXPECT(calib_offsets(100, 2, 100, 1, 0, "tok.bin", off) == -1, "too few tokens for random windows");
    EXPECT(strstr(cfsp_last_error(), "tok.bin") != NULL, "error names the file: %s", cfsp_last_error());
    EXPECT(calib_offsets(100, 2, 50, 0, 0, "x", off) == 0 && off[1] == 50, "consecutive");
}

static void test_halfs(void)
{
    /* every finite bf16 / f16 value survives f32 and back */
    int bad16 = 0, badbf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (isfinite(f) && f32_to_f16(f) != h && !(f == 0 && (h & 0x7fff) == 0)) bad16++;
        float g = bf16_to_f32((uint16_t)h);
        if (isfinite(g) && f32_to_bf16(g) != h) badbf++;
    }
    EXPECT(bad16 == 0, "%d f16 values do not round-trip", bad16);
    EXPECT(badbf == 0, "%d bf16 values do not round-trip", badbf);
    EXPECT(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0x0001) == ldexpf(1, -24) && f16_to_f32(0xc000) == -2.0f, "f16 decode");
    EXPECT(f32_to_bf16(1.00390625f) == 0x3f80, "bf16 ties to even (down)");
    EXPECT(f32_to_bf16(1.01171875f) == 0x3f82, "bf16 ties to even (up)");
    EXPECT(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(1e-8f) == 0, "f16 overflow/underflow");
    /* the vectorised row conversions (SSE2 bf16, F16C f16) against the scalar ones, every value,
     * at an odd start and length so both the vector body and the tail run */
    uint16_t *all = malloc(sizeof(uint16_t) * 65541);
    float *out = malloc(sizeof(float) * 65541);
    for (uint32_t h = 0; h < 65541; h++) all[h] = (uint16_t)(h * 40503u);   /* a permutation of 0..65535, then 5 more */
    for (int dt = 0; dt < 2; dt++) {
        int bad = 0;
        convert_to_f32(dt ? DT_F16 : DT_BF16, all + 3, out, 65538);
        for (uint32_t i = 0; i < 65538; i++) {
            float want = dt ? f16_to_f32(all[i + 3]) : bf16_to_f32(all[i + 3]);
            uint32_t a, b;
            memcpy(&a, &want, 4); memcpy(&b, &out[i], 4);
            if (isnan(want) ? !isnan(out[i]) : a != b) bad++;
        }
        EXPECT(bad == 0, "%s row conversion: %d of 65538 values differ from the scalar conversion", dt ? "f16" : "bf16", bad);
    }
    free(all); free(out);
}

static int parse_st(const char *json, uint64_t data_size)
{
    st_model m;
    memset(&m, 0, sizeof m);
    int rc = st_parse_header(json, strlen(json), data_size, "t.safetensors", 0, &m);
    for (int i = 0; i < m.nt; i++) free(m.t[i].name);
    free(m.t);
    free(m.hash);
    return rc;
}

static void test_safetensors_parser(void)
{
    EXPECT(parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"__metadata__\":{\"x\":\"y\"}}", 24) == 0, "good header: %s", cfsp_last_error());
    struct { const char *json; uint64_t size; const char *want; } bad[] = {
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, "needs 24" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 20, "truncated" },
        { "{\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "not supported" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "twice" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "overflow" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "begin" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 8, "data_offsets" },
        { "[1,2]", 8, "expected a JSON object" },
        { "{\"a\":", 8, "not valid JSON" },
        { "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "expected a string" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfsp_clear_error();
        int rc = parse_st(bad[i].json, bad[i].size);
        EXPECT(rc == -1 && strstr(cfsp_last_error(), bad[i].want) && strstr(cfsp_last_error(), "t.safetensors"),
               "bad header %zu: rc %d, message '%s', expected to mention '%s'", i, rc, cfsp_last_error(), bad[i].want);
    }
    char deep[400];
    memset(deep, '[', 300);
    deep[300] = 0;
    EXPECT(parse_st(deep, 0) == -1 && strstr(cfsp_last_error(), "nested"), "deep nesting: %s", cfsp_last_error());
    EXPECT(parse_st("{\"\xff\xfe\":1}", 0) == -1 && strstr(cfsp_last_error(), "UTF-8"), "invalid UTF-8: %s", cfsp_last_error());
    char **files = NULL;
    int nf = 0;
    const char *idx = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\",\"c\":\"s1.safetensors\"}}";
    EXPECT(st_parse_index(idx, strlen(idx), "i.json", &files, &nf) == 0 && nf == 2, "index parse");
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    const char *evil = "{\"weight_map\":{\"a\":\"../etc/passwd\"}}";
    EXPECT(st_parse_index(evil, strlen(evil), "i.json", &files, &nf) == -1, "index path traversal refused");
}

static const char *CFG = "{\"hidden_size\":64,\"intermediate_size\":172,\"num_hidden_layers\":5,\"num_attention_heads\":8,"
                         "\"num_key_value_heads\":4,\"vocab_size\":512,\"rms_norm_eps\":1e-5,\"torch_dtype\":\"float32\"%s}";

static int parse_cfg(const char *extra, model_config *c)
{
    char buf[2048];
    snprintf(buf, sizeof buf, CFG, extra);
    return model_config_parse(buf, strlen(buf), "config.json", c);
}

static void test_config_parser(void)
{
    model_config c;
    EXPECT(parse_cfg("", &c) == 0 && c.head_dim == 8 && c.ffn[4] == 172 && c.n_kv_heads == 4, "good config: %s", cfsp_last_error());
    model_config_free(&c);
    EXPECT(parse_cfg(",\"model_type\":\"qwen2\",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":32768}", &c) == 0 &&
           c.rope_yarn && c.qkv_bias && !c.qk_norm && c.family == FAMILY_QWEN2 && c.yarn_orig_max_pos == 32768 &&
           fabs(c.yarn_attn_factor - (0.1 * log(4.0) + 1.0)) < 1e-15 && c.yarn_beta_fast == 32 && c.yarn_beta_slow == 1 && c.yarn_truncate,
           "qwen2 + yarn rope (defaults: betas 32 / 1, attention factor 0.1 ln(factor) + 1, truncate)");
    model_config_free(&c);
    EXPECT(parse_cfg(",\"model_type\":\"qwen3\",\"head_dim\":16,\"bos_token_id\":null", &c) == 0 && c.qk_norm && !c.qkv_bias &&
           c.head_dim == 16 && c.bos_id == -1, "qwen3: q/k norms, explicit head_dim, bos_token_id null = no BOS");
    model_config_free(&c);
    EXPECT(parse_cfg(",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}", &c) == 0 && c.rope_llama3, "llama3 rope");
    model_config_free(&c);
    EXPECT(parse_cfg(",\"block_configs\":[{\"ffn\":{\"intermediate_size\":10}},{\"ffn\":{\"intermediate_size\":20}},{\"ffn\":{\"intermediate_size\":30}},{\"ffn\":{\"intermediate_size\":40}},{\"ffn\":{\"intermediate_size\":50}}]", &c) == 0 && c.ffn[3] == 40, "block_configs: %s", cfsp_last_error());
    model_config_free(&c);
    struct { const char *json; const char *want; } bad[] = {
        { "{\"hidden_size\":64}", "num_hidden_layers" },
        { "{\"hidden_size\":-4,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":1,\"vocab_size\":4}", "hidden_size" },
        { "{\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":6,\"vocab_size\":4}", "does not divide hidden_size" },
        { "{\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"num_key_value_heads\":3,\"vocab_size\":4}", "num_key_value_heads" },
        { "{\"hidden_size\":\"64\",\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4}", "expected an integer" },
        { "{\"hidden_size\":1e300,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4}", "hidden_size" },
        { "{\"hidden_size\":64,\"intermediate_size\":0,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4}", "intermediate_size" },
        { "{\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4,\"torch_dtype\":\"int8\"}", "torch_dtype" },
        { "{\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4,\"rope_scaling\":{\"rope_type\":\"longrope\"}}", "rope_type" },
        { "{\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4,\"rope_scaling\":{\"rope_type\":\"yarn\"}}", "rope_scaling.factor" },
        { "{\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4,\"model_type\":\"qwen3\",\"attention_bias\":true}", "attention_bias" },
        { "{\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4,\"model_type\":\"qwen2\",\"use_sliding_window\":true}", "use_sliding_window" },
        { "{\"hidden_size\":64,\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":4,\"model_type\":\"gemma\"}", "model_type" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfsp_clear_error();
        int rc = model_config_parse(bad[i].json, strlen(bad[i].json), "config.json", &c);
        EXPECT(rc == -1 && strstr(cfsp_last_error(), bad[i].want) && strstr(cfsp_last_error(), "config.json"),
               "bad config %zu: '%s' should mention '%s'", i, cfsp_last_error(), bad[i].want);
        if (rc == 0) model_config_free(&c);
    }
}

static void test_allocation(void)
{
    double imp[6] = { 1000, 3000, 20000, 5000, 8000, 60000 }, keep[6];
    for (double p = 0.1; p < 0.95; p += 0.2) {
        alloc_keep_fraction(imp, 6, p, 1.0, 1.0, keep);
        double mean = 0, mx = 0;
        for (int l = 0; l < 6; l++) { mean += keep[l] / 6; if (keep[l] > mx) mx = keep[l]; }
        EXPECT(fabs(mean - (1 - p)) < 1e-12, "mean keep %.15f != %.15f", mean, 1 - p);
        EXPECT(mx < 1.0, "a block keeps %.4f >= 100%% at p=%.1f", mx, p);
        for (int l = 0; l < 5; l++)
            if (imp[l] < imp[5]) EXPECT(keep[l] <= keep[5], "more important block keeps less");
    }
    /* the squeeze: p = 0.1 with a strongly dominant block triggers it; max stays below 1 */
    double imp2[3] = { 0, 0, 1e6 };
    alloc_keep_fraction(imp2, 3, 0.1, 1.0, 1.0, keep);
    EXPECT(keep[2] < 1.0 && keep[2] > keep[0], "squeeze keeps the max below 100%% (%.6f)", keep[2]);
    /* default_count: exact round, align clamps */
    EXPECT(default_count(172, 0.5, 0) == 86 && default_count(172, 0.001, 0) == 1 && default_count(384, 0.5, 128) == 256
           && default_count(384, 0.1, 128) == 128 && default_count(100, 0.9, 128) == 100, "default_count");
    /* reference selection keeps floor(m r) + 1, ties at the threshold stay */
    double s[10] = { 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 };
    int64_t idx[10];
    EXPECT(select_cfsp(s, 10, 0.5, 1, 0, idx) == 6, "reference keeps floor(m*r)+1");
    EXPECT(select_cfsp(s, 10, 0.5, 0, 0, idx) == 5 && idx[4] == 4, "default keeps round(m*r), the top ones");
    double t[4] = { 1, 1, 1, 0 };
    EXPECT(select_cfsp(t, 4, 0.25, 1, 0, idx) == 3, "ties at the threshold all kept (reference)");
    EXPECT(select_cfsp(t, 4, 0.25, 0, 0, idx) == 1 && idx[0] == 0, "default breaks ties by index");
    EXPECT(select_cfsp(s, 10, 0.3, 1, 128, idx) == 10, "reference align quirk: count rounding to 0 keeps all");
    /* global threshold: standardised scores, every block keeps >= 1 */
    double sc[6] = { 1, 2, 3, 10, 20, 30 };
    int m[2] = { 3, 3 }, counts[2];
    alloc_global_threshold(sc, m, 2, 0.5, counts);
    EXPECT(counts[0] + counts[1] == 3 && counts[0] >= 1 && counts[1] >= 1, "global threshold counts %d %d", counts[0], counts[1]);
}

static void test_stages(void)
{
    model_config c;
    EXPECT(parse_cfg("", &c) == 0, "cfg");
    unit_plan up;
    units_plan(&c, 0, 64, &up);
    EXPECT(up.n == 10 && up.u[0].slice == -1 && up.u[1].slice == 0 && up.u[1].c1 == 172, "whole-FFN plan: %d units", up.n);
    for (int P = 1; P <= 10; P++) {
        stage_map map;
        EXPECT(stages_plan(&up, P, &map) == 0, "plan %d", P);
        int ok = map.first[0] == 0 && map.first[P] == up.n;
        for (int r = 0; r < P; r++) ok &= map.first[r + 1] > map.first[r];
        EXPECT(ok, "stages for P=%d: contiguous and non-empty", P);
        stages_free(&map);
    }
    stage_map map;
    EXPECT(stages_plan(&up, 11, &map) == -1 && strstr(cfsp_last_error(), "only 10 stage units"), "more ranks than units: %s", cfsp_last_error());
    units_free(&up);
    /* slices: 172 channels in slices of at most 50 -> 4 slices 43 each, covering [0, 172) in order */
    units_plan(&c, 50, 64, &up);
    EXPECT(up.n == 25, "sliced plan: %d units", up.n);
    int cover = 1;
    for (int u = 0, prev = 0; u < up.n; u++) {
        if (up.u[u].slice < 0) { prev = 0; continue; }
        cover &= up.u[u].c0 == prev && up.u[u].c1 > up.u[u].c0 && up.u[u].nslices == 4;
        prev = up.u[u].c1;
        if (up.u[u].slice == 3) cover &= prev == 172;
    }
    EXPECT(cover, "slices tile every block's channels");
    /* balance: 25 units over 8 ranks, the largest stage at most twice the mean */
    EXPECT(stages_plan(&up, 8, &map) == 0, "8 ranks");
    double tot = 0, mx = 0;
    for (int u = 0; u < up.n; u++) tot += up.u[u].cost;
    for (int r = 0; r < 8; r++) {
        double s = 0;
        for (int u = map.first[r]; u < map.first[r + 1]; u++) s += up.u[u].cost;
        if (s > mx) mx = s;
    }
    EXPECT(mx <= 2 * tot / 8, "balanced: max stage %.0f vs mean %.0f", mx, tot / 8);
    stages_free(&map);
    units_free(&up);
    model_config_free(&c);
}

/* the OpenBLAS kernel override: only for generic fallback cores, only to what this CPU runs */
static void test_blas_coretype(void)
{
    EXPECT(blas_better_coretype("Zen") == NULL, "a specific core is kept");
    EXPECT(blas_better_coretype("SkylakeX") == NULL, "a specific core is kept");
    EXPECT(blas_better_coretype("Haswell") == NULL, "a specific core is kept");
    const char *b = blas_better_coretype("Prescott");
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *want = avx512 ? "SkylakeX" : avx2 ? "Haswell" : NULL;
    EXPECT((b == NULL) == (want == NULL) && (!b || !strcmp(b, want)), "Prescott -> %s, expected %s", b ? b : "none", want ? want : "none");
}

/* the AVX2 tensor checksum equals the scalar definition (and the NumPy one, test_outputs.py) for
 * every element size, row length (tails of 0..3 elements), placement and positions past 2^32 */
static void test_checksum_vector(void)
{
    uint64_t st = 12345;
    unsigned char *buf = malloc(64 * 67 * 8);
    for (int i = 0; i < 64 * 67 * 8; i++) { st = st * 6364136223846793005ULL + 1442695040888963407ULL; buf[i] = (unsigned char)(st >> 56); }
    const size_t ess[] = { 2, 4, 8, 1 };
    const int64_t full[] = { 67, 1000, 5000000000LL };
    int same = 1;
    for (int e = 0; e < 4; e++)
        for (int64_t cols = 0; cols <= 67; cols += (cols < 9 ? 1 : 29))
            for (int f = 0; f < 3; f++) {
                int64_t r0 = f == 2 ? 3 : 5, c0 = full[f] - cols;
                tensor_checksum_force_scalar(1);
                uint64_t a = tensor_checksum(buf, ess[e], 64, cols, r0, c0, full[f]);
                tensor_checksum_force_scalar(0);
                uint64_t b = tensor_checksum(buf, ess[e], 64, cols, r0, c0, full[f]);
                if (a != b) { same = 0; printf("  checksum es %zu cols %lld full %lld: %016llx vs %016llx\n", ess[e], (long long)cols,
                                               (long long)full[f], (unsigned long long)a, (unsigned long long)b); }
            }
    EXPECT(same, "vectorised tensor checksum equals the scalar one");
    /* additivity: two column halves placed side by side sum to the whole */
    uint64_t whole = tensor_checksum(buf, 2, 8, 40, 0, 0, 40), parts = 0;
    unsigned char *l = malloc(8 * 17 * 2), *r = malloc(8 * 23 * 2);
    for (int i = 0; i < 8; i++) { memcpy(l + i * 34, buf + i * 80, 34); memcpy(r + i * 46, buf + i * 80 + 34, 46); }
    parts = tensor_checksum(l, 2, 8, 17, 0, 0, 40) + tensor_checksum(r, 2, 8, 23, 0, 17, 40);
    EXPECT(whole == parts, "column parts add up to the whole tensor's checksum");
    free(l); free(r); free(buf);
}

/* util/opts.c, the option parser of every command: kinds, ranges with open and closed ends,
 * defaults < run file < command line, '-' or '_', --name=value, bool flags without a value,
 * positional arguments, and where a value came from */
typedef struct { char s[8], pos[16]; int i, b, e, n; double d, l[3]; int64_t w; } opt_probe;
static void test_opts(void)
{
    static const char *const names[] = { "x", "yy" };
    static const opt_def defs[] = {
        OPT(opt_probe, OPT_STR, s, "s", "ab", NULL, "text"),
        OPT(opt_probe, OPT_INT, i, "int-opt", "3", "[1, 5)", "int"),
        OPT(opt_probe, OPT_BOOL, b, "flag", "0", NULL, "bool"),
        OPT(opt_probe, OPT_ENUM, e, "kind", "yy", NULL, "enum", .names = names, .nnames = 2),
        OPT(opt_probe, OPT_DBL, d, "dbl", "0.5", "(0, 1]", "double"),
        OPT(opt_probe, OPT_DBL_LIST, l, "list", "", "> 0", "list", .count_off = offsetof(opt_probe, n)),
        OPT(opt_probe, OPT_I64, w, "wide", "-5", NULL, "int64"),
        OPT(opt_probe, OPT_STR, pos, "POS", NULL, NULL, "positional", .flags = OPT_POSITIONAL | OPT_REQUIRED),
    };
    const opt_table t = { "probe", "probe", "probe [options] POS", NULL, defs, sizeof defs / sizeof defs[0] };
    opt_probe p;
    opt_result r;
    char *a0[] = { "probe", "P" };
    memset(&p, 0, sizeof p);
    EXPECT(opts_parse(&t, 2, a0, 1, &p, &r) == 0 && !strcmp(p.s, "ab") && p.i == 3 && p.b == 0 && p.e == 1 && p.d == 0.5
           && p.n == 0 && p.w == -5 && !strcmp(p.pos, "P") && r.npos == 1, "opts: defaults: %s", cfsp_last_error());
    const char *path = "/tmp/cfsp_test_opts.json";
    FILE *f = fopen(path, "w");
    fputs("{\"int_opt\": 2, \"dbl\": 1, \"list\": [0.25, 3], \"_note\": \"skipped\", \"wide\": 8589934592}", f);
    fclose(f);
    char *a1[] = { "probe", "--config", (char *)path, "--int_opt=4", "--flag", "Q", "--kind", "x", "--list", "1,2,3" };
    memset(&p, 0, sizeof p);
    EXPECT(opts_parse(&t, 10, a1, 1, &p, &r) == 0 && p.i == 4 && p.b == 1 && p.e == 0 && p.d == 1.0 && p.n == 3 && p.l[2] == 3.0
           && p.w == 8589934592LL && !strcmp(p.pos, "Q"), "opts: run file then command line: %s", cfsp_last_error());
    char w[256];
    EXPECT(!strcmp(opts_where(&t, &r, "dbl", w, sizeof w), "/tmp/cfsp_test_opts.json: dbl")
           && !strcmp(opts_where(&t, &r, "int-opt", w, sizeof w), "probe: --int-opt"), "opts: where a value came from: %s", w);
    char *a2[] = { "probe", "--config", (char *)path, "Q" };
    memset(&p, 0, sizeof p);
    EXPECT(opts_parse(&t, 4, a2, 1, &p, &r) == 0 && p.i == 2 && !strcmp(opts_where(&t, &r, "int-opt", w, sizeof w), "/tmp/cfsp_test_opts.json: int_opt"),
           "opts: a run-file key with '_' is named as written: %s", w);
    remove(path);
    static const struct { const char *arg, *want; } bad[] = {
        { "--int-opt=5", "probe: --int-opt = '5': expected an integer in [1, 5)" },
        { "--int-opt=0", "probe: --int-opt = '0': expected an integer in [1, 5)" },
        { "--int-opt=2.0", "probe: --int-opt = '2.0': expected an integer" },
        { "--dbl=0", "probe: --dbl = '0': expected a number in (0, 1]" },
        { "--dbl=nan", "probe: --dbl = 'nan': expected a number" },
        { "--list=1,,2", "probe: --list = '1,,2': expected a comma-separated list of at most 3 numbers > 0" },
        { "--list=1,2,3,4", "probe: --list = '1,2,3,4': expected a comma-separated list of at most 3 numbers > 0" },
        { "--kind=z", "probe: --kind = 'z': expected x or yy" },
        { "--flag=2", "probe: --flag = '2': expected 1, 0, true or false" },
        { "--s=toolongtext", "probe: --s = 'toolongtext': expected a non-empty text of at most 7 bytes" },
        { "--dbll=1", "probe: unknown option '--dbll' (see probe --help)" },
        { "--kind", "probe: --kind: missing value" },
        { "R", "probe: unexpected argument 'R' (usage: probe [options] POS)" },
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char *a3[] = { "probe", "P", (char *)bad[k].arg };
        memset(&p, 0, sizeof p);
        cfsp_clear_error();
        int rc = opts_parse(&t, 3, a3, 1, &p, NULL);
        EXPECT(rc == -1 && strstr(cfsp_last_error(), bad[k].want), "opts: %s -> '%s', expected '%s'", bad[k].arg, cfsp_last_error(), bad[k].want);
    }
    char *a4[] = { "probe", "--flag" };
    memset(&p, 0, sizeof p);
    EXPECT(opts_parse(&t, 2, a4, 1, &p, NULL) == -1 && strstr(cfsp_last_error(), "probe: missing POS (usage: probe [options] POS)"),
           "opts: a required positional: %s", cfsp_last_error());
}

/* util/err.c: 300 registered temporary files (more than the 64 it once kept) are all removed when
 * the process fails (DIE) and when it is killed by SIGTERM; an unregistered one stays. In a child
 * process each time, like a rank. */
static int count_files(const char *dir, int *kept7)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    *kept7 = 0;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') { n++; *kept7 |= !strcmp(e->d_name, "f7.tmp"); }
    if (d) closedir(d);
    return n;
}

static void test_tmp_cleanup(void)
{
    char dir[] = "/tmp/cfsp_units_tmp_XXXXXX", p[256];
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    for (int mode = 0; mode < 2; mode++) {           /* 0: DIE, 1: SIGTERM */
        int ready[2];
        EXPECT(pipe(ready) == 0, "pipe");
        pid_t pid = fork();
        if (pid == 0) {
            close(ready[0]);
            freopen("/dev/null", "w", stderr);
            cfsp_install_signal_cleanup();
            for (int i = 0; i < 300; i++) {
                snprintf(p, sizeof p, "%s/f%d.tmp", dir, i);
                FILE *f = fopen(p, "w");
                if (f) fclose(f);
                cfsp_tmp_register(p);
            }
            snprintf(p, sizeof p, "%s/f7.tmp", dir);
            cfsp_tmp_unregister(p);
            if (mode == 0) DIE("test: failing with 300 temporary files");
            if (write(ready[1], "x", 1) != 1) _exit(3);
            for (;;) pause();
        }
        close(ready[1]);
        char c;
        if (mode == 1 && read(ready[0], &c, 1) == 1) kill(pid, SIGTERM);
        close(ready[0]);
        int status = 0, kept7 = 0;
        waitpid(pid, &status, 0);
        int left = count_files(dir, &kept7);
        EXPECT(mode ? WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM : WIFEXITED(status) && WEXITSTATUS(status) == 1,
               "%s: the child ended by %s (status %d)", mode ? "SIGTERM" : "DIE", mode ? "the signal" : "exit 1", status);
        EXPECT(left == 1 && kept7, "%s: 299 of 300 temporary files removed, the unregistered one kept: %d left",
               mode ? "SIGTERM" : "DIE", left);
        snprintf(p, sizeof p, "%s/f7.tmp", dir);
        unlink(p);
    }
    rmdir(dir);
}

int main(void)
{
    test_py_random();
    test_halfs();
    test_safetensors_parser();
    test_config_parser();
    test_allocation();
    test_stages();
    test_blas_coretype();
    test_checksum_vector();
    test_opts();
    test_tmp_cleanup();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
