/* mkmodel.c — cfsp-mpi-mkmodel: writes a random-weight LLaMA, Qwen2 or Qwen3 checkpoint in
 * Hugging Face layout (config.json + model.safetensors, or model-0000i-of-0000N.safetensors shards
 * with model.safetensors.index.json) for tests and benchmarks.
 *
 * Families (--family): llama (LlamaForCausalLM, the default); qwen2 (Qwen2ForCausalLM: the same
 * blocks plus 1-D q_proj/k_proj/v_proj biases, each right after its weight, no o_proj bias);
 * qwen3 (Qwen3ForCausalLM: the same blocks plus the per-head RMSNorm weights self_attn.q_norm and
 * self_attn.k_norm [head_dim], after o_proj; no biases).  All other tensors are LLaMA's.
 *
 * This file owns the whole tool: option parsing and validation, the tensor list,
 * the shard plan, deterministic value generation (xoshiro256** seeded by splitmix64,
 * one stream per tensor, sum-of-four-uniforms approximation of N(0,1)), rounding
 * f32 -> bf16/f16 (round to nearest even), the safetensors/JSON writers, and the
 * atomic output (every file is written as DIR/.name.tmp and renamed at the end).
 * Tensors are streamed in chunks of CHUNK_ELEMS values, so memory stays bounded
 * whatever the model size; a child process generates the chunks into shared
 * buffers while the parent writes them, so generation overlaps the disk writes.
 * Needs libc + libm (POSIX: fork, pipe, mmap) and, from the cfsp library, only the option
 * parser of every cfsp-mpi command (util/opts.h: the same --help, --config FILE.json and errors).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#define _FILE_OFFSET_BITS 64

#include "cfsp/util/err.h"
#include "cfsp/util/opts.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

#define PROG "cfsp-mpi-mkmodel"
#define CHUNK_ELEMS ((size_t)1 << 20) /* values generated and written at a time */
#define SLOT_BYTES (CHUNK_ELEMS * 4)    /* one chunk in the widest dtype */
#define NSLOTS 4                        /* chunk buffers shared with the generator */
#define MAX_POSITION_EMBEDDINGS 4096

enum dtype { DT_F32, DT_F16, DT_BF16 };
enum family { FAM_LLAMA, FAM_QWEN2, FAM_QWEN3 };
enum init { INIT_EMBED, INIT_LINEAR, INIT_NORM, INIT_BIAS };

struct options {
    char out[4096];
    uint64_t hidden, ffn, layers, heads, kv_heads, head_dim, vocab;
    uint64_t shard_bytes, seed;
    int dtype;                           /* enum dtype */
    int family;                          /* enum family */
    int tie, force;
    double rope_theta, rope_llama3, eps; /* rope_llama3 == 0: no rope_scaling */
    char ffn_list[65536];                /* --ffn-per-layer text, "" if absent */
    uint64_t *ffn_per_layer;             /* [layers] intermediate size of each layer */
};

struct tensor {
    char name[96];
    uint64_t shape[2];
    int ndim;
    enum init init;
    uint64_t bytes;  /* data bytes */
    uint64_t offset; /* begin within its shard's data buffer */
    unsigned shard;
};

struct plan {
    struct tensor *t;
    size_t n;
    unsigned nshards;
    uint64_t total_bytes;
};

/* A file being written: its temporary name until it is renamed. */
struct outfile {
    char *tmp, *final;
    int renamed;
};

static struct outfile *g_files;
static size_t g_nfiles;

/* Growable string for the JSON texts. */
struct strbuf {
    char *buf;
    size_t len, cap;
};

/* ------------------------------------------------------------------ errors */

static void remove_temps(void)
{
    for (size_t i = 0; i < g_nfiles; i++)
        if (!g_files[i].renamed)
            remove(g_files[i].tmp);
}

/* Prints "cfsp-mpi-mkmodel: <what>: <problem>", removes temporary files, exits 1. */
static void die(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: %s: ", PROG, what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    remove_temps();
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("memory", "cannot allocate %zu bytes", n);
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* ------------------------------------------------------- checked arithmetic */

static uint64_t mul_checked(uint64_t a, uint64_t b, const char *what)
{
    if (a != 0 && b > UINT64_MAX / a)
        die(what, "size overflows 64-bit");
    return a * b;
}

static uint64_t add_checked(uint64_t a, uint64_t b, const char *what)
{
    if (b > UINT64_MAX - a)
        die(what, "size overflows 64-bit");
    return a + b;
}

/* ---------------------------------------------------------------- strbuf */

static void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
    for (;;) {
        size_t room = sb->cap - sb->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->buf ? sb->buf + sb->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            die("json", "formatting failed");
        if ((size_t)n < room) {
            sb->len += (size_t)n;
            return;
        }
        size_t cap = sb->cap ? sb->cap : 4096;
        while (cap - sb->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(sb->buf, cap);
        if (!p)
            die("memory", "cannot allocate %zu bytes", cap);
        sb->buf = p;
        sb->cap = cap;
    }
}

/* JSON text of a float that reads back as v and always looks like a float:
 * whole numbers as "10000.0", others in the shortest "%g" form ("1e-05"). */
static void fmt_double(char *out, size_t n, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, n, "%.1f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    if (!strpbrk(out, ".eE"))
        strncat(out, ".0", n - strlen(out) - 1);
}

/* ------------------------------------------------------------ option parsing */

static const char *const dtype_names[] = { "f32", "f16", "bf16" };   /* enum dtype */
static const char *const family_names[] = { "llama", "qwen2", "qwen3" }; /* enum family */
#define O(...) OPT(struct options, __VA_ARGS__)
static const opt_def mk_table[] = {
    O(OPT_STR, out, "out", NULL, NULL, "the model directory written", .flags = OPT_REQUIRED),
    O(OPT_I64, hidden, "hidden", NULL, ">= 1", "hidden size D", .flags = OPT_REQUIRED),
    O(OPT_I64, ffn, "ffn", NULL, ">= 1", "intermediate size M (required unless --ffn-per-layer)"),
    O(OPT_I64, layers, "layers", NULL, ">= 1", "blocks L", .flags = OPT_REQUIRED),
    O(OPT_I64, heads, "heads", NULL, ">= 1", "attention heads H", .flags = OPT_REQUIRED),
    O(OPT_I64, kv_heads, "kv-heads", NULL, ">= 1", "key/value heads K (divides H)", .flags = OPT_REQUIRED),
    O(OPT_I64, head_dim, "head-dim", NULL, ">= 1", "head dimension, even (not given: D/H)"),
    O(OPT_I64, vocab, "vocab", NULL, ">= 1", "vocabulary size V", .flags = OPT_REQUIRED),
    O(OPT_ENUM, dtype, "dtype", NULL, NULL, "the weights' dtype", .flags = OPT_REQUIRED, .names = dtype_names, .nnames = 3),
    O(OPT_ENUM, family, "family", "llama", NULL, "model family: llama (LlamaForCausalLM); qwen2 (Qwen2ForCausalLM: "
      "+ q/k/v_proj biases); qwen3 (Qwen3ForCausalLM: + self_attn.q_norm/k_norm)", .names = family_names, .nnames = 3),
    O(OPT_I64, shard_bytes, "shard-bytes", "0", ">= 0", "largest safetensors shard in bytes (0: one model.safetensors)"),
    O(OPT_I64, seed, "seed", "1", ">= 0", "seed of the random weights"),
    O(OPT_BOOL, tie, "tie", "0", NULL, "tie_word_embeddings (no lm_head.weight)"),
    O(OPT_DBL, rope_theta, "rope-theta", "10000", "> 0", "rope_theta"),
    O(OPT_DBL, rope_llama3, "rope-llama3", NULL, "> 0", "rope_scaling of type llama3 with this factor (not given: none)"),
    O(OPT_DBL, eps, "eps", "1e-5", "> 0", "rms_norm_eps"),
    O(OPT_STR, ffn_list, "ffn-per-layer", NULL, NULL, "m0,m1,...: the intermediate size of each block (replaces --ffn; writes block_configs)"),
    O(OPT_BOOL, force, "force", "0", NULL, "overwrite an existing model in DIR"),
};
static const opt_table mk_opt_table = {
    PROG, PROG, PROG " --out DIR --hidden D --ffn M --layers L --heads H --kv-heads K --vocab V --dtype f32|f16|bf16 [options]",
    PROG " — writes a random-weight LLaMA, Qwen2 or Qwen3 checkpoint (config.json + safetensors) into DIR",
    mk_table, sizeof mk_table / sizeof mk_table[0] };

static void parse_args(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof *o);
    int rc = opts_parse(&mk_opt_table, argc, argv, 1, o, NULL);
    if (rc == 1)
        exit(0);                                     /* --help printed */
    if (rc) {
        fprintf(stderr, "%s\n", cfsp_last_error());
        exit(1);
    }
}

/* Unsigned decimal (an --ffn-per-layer value); zero allowed only when allow_zero. */
static uint64_t parse_u64(const char *what, const char *s, int allow_zero)
{
    const char *p = s;
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9')
        die(what, "'%s' is not a non-negative integer", s);
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno == ERANGE)
        die(what, "'%s' overflows 64-bit", s);
    if (*end != '\0')
        die(what, "'%s' is not a non-negative integer", s);
    if (v == 0 && !allow_zero)
        die(what, "must be positive");
    return (uint64_t)v;
}

/* Splits --ffn-per-layer into o->ffn_per_layer; returns the largest value. */
static uint64_t parse_ffn_list(struct options *o)
{
    const char *what = "--ffn-per-layer";
    char *copy = xstrdup(o->ffn_list);
    uint64_t count = 1, max = 0;
    for (const char *p = copy; *p; p++)
        count += *p == ',';
    if (count != o->layers)
        die(what, "has %llu values but --layers is %llu", (unsigned long long)count,
            (unsigned long long)o->layers);
    char *item = copy;
    for (uint64_t l = 0; l < count; l++) {
        char *comma = strchr(item, ',');
        if (comma)
            *comma = '\0';
        o->ffn_per_layer[l] = parse_u64(what, item, 0);
        if (o->ffn_per_layer[l] > max)
            max = o->ffn_per_layer[l];
        item = comma ? comma + 1 : item + strlen(item);
    }
    free(copy);
    return max;
}

static void validate(struct options *o)
{
    if (!o->ffn && !o->ffn_list[0])
        die("--ffn", "required (see --help)");

    if (o->heads % o->kv_heads != 0)
        die("--kv-heads", "must divide --heads (%llu %% %llu != 0)",
            (unsigned long long)o->heads, (unsigned long long)o->kv_heads);
    if (!o->head_dim) {
        if (o->hidden % o->heads != 0)
            die("--heads", "must divide --hidden (%llu %% %llu != 0); or give --head-dim",
                (unsigned long long)o->hidden, (unsigned long long)o->heads);
        o->head_dim = o->hidden / o->heads;
    }
    if (o->head_dim % 2 != 0)
        die("--head-dim", "must be even (rotary embeddings rotate pairs), got %llu",
            (unsigned long long)o->head_dim);
    mul_checked(o->heads, o->head_dim, "--heads * --head-dim");

    if (o->layers > SIZE_MAX / sizeof(uint64_t) / 16)
        die("--layers", "too many layers (%llu)", (unsigned long long)o->layers);
    o->ffn_per_layer = xmalloc((size_t)o->layers * sizeof(uint64_t));
    if (o->ffn_list[0]) {
        uint64_t max = parse_ffn_list(o);
        if (o->ffn && o->ffn != max)
            die("--ffn", "is %llu but the largest --ffn-per-layer value is %llu",
                (unsigned long long)o->ffn, (unsigned long long)max);
        o->ffn = max;
    } else {
        for (uint64_t l = 0; l < o->layers; l++)
            o->ffn_per_layer[l] = o->ffn;
    }
}

/* ------------------------------------------------------------- tensor plan */

static unsigned dtype_size(enum dtype d)
{
    return d == DT_F32 ? 4 : 2;
}

static const char *dtype_safetensors(enum dtype d)
{
    return d == DT_F32 ? "F32" : d == DT_F16 ? "F16" : "BF16";
}

static const char *dtype_torch(enum dtype d)
{
    return d == DT_F32 ? "float32" : d == DT_F16 ? "float16" : "bfloat16";
}

static void add_tensor(struct plan *p, const struct options *o, enum init init, uint64_t rows,
                       uint64_t cols, const char *fmt, ...)
{
    struct tensor *t = &p->t[p->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->init = init;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->bytes = mul_checked(mul_checked(rows, cols ? cols : 1, t->name), dtype_size(o->dtype),
                           t->name);
    p->total_bytes = add_checked(p->total_bytes, t->bytes, "total model size");
}

/* All tensors in file order: embeddings, layer by layer, final norm, lm_head.  A block is
 * input_layernorm, q_proj, k_proj, v_proj, o_proj, post_attention_layernorm, gate/up/down_proj;
 * qwen2 puts each q/k/v_proj.bias right after its weight, qwen3 q_norm, k_norm after o_proj. */
static void build_plan(struct plan *p, const struct options *o)
{
    uint64_t d = o->hidden, q = o->heads * o->head_dim, kv = o->kv_heads * o->head_dim;
    int qwen2 = o->family == FAM_QWEN2, qwen3 = o->family == FAM_QWEN3;
    size_t cap = 3 + 12 * (size_t)o->layers;
    p->t = calloc(cap, sizeof *p->t);
    if (!p->t)
        die("memory", "cannot allocate the list of %zu tensors", cap);
    p->n = 0;
    p->total_bytes = 0;
    mul_checked(o->kv_heads, o->head_dim, "--kv-heads * --head-dim");

    add_tensor(p, o, INIT_EMBED, o->vocab, d, "model.embed_tokens.weight");
    for (uint64_t l = 0; l < o->layers; l++) {
        unsigned long long ll = (unsigned long long)l;
        uint64_t m = o->ffn_per_layer[l];
        const char *pre = "model.layers";
        add_tensor(p, o, INIT_NORM, d, 0, "%s.%llu.input_layernorm.weight", pre, ll);
        add_tensor(p, o, INIT_LINEAR, q, d, "%s.%llu.self_attn.q_proj.weight", pre, ll);
        if (qwen2)
            add_tensor(p, o, INIT_BIAS, q, 0, "%s.%llu.self_attn.q_proj.bias", pre, ll);
        add_tensor(p, o, INIT_LINEAR, kv, d, "%s.%llu.self_attn.k_proj.weight", pre, ll);
        if (qwen2)
            add_tensor(p, o, INIT_BIAS, kv, 0, "%s.%llu.self_attn.k_proj.bias", pre, ll);
        add_tensor(p, o, INIT_LINEAR, kv, d, "%s.%llu.self_attn.v_proj.weight", pre, ll);
        if (qwen2)
            add_tensor(p, o, INIT_BIAS, kv, 0, "%s.%llu.self_attn.v_proj.bias", pre, ll);
        add_tensor(p, o, INIT_LINEAR, d, q, "%s.%llu.self_attn.o_proj.weight", pre, ll);
        if (qwen3) {
            add_tensor(p, o, INIT_NORM, o->head_dim, 0, "%s.%llu.self_attn.q_norm.weight", pre, ll);
            add_tensor(p, o, INIT_NORM, o->head_dim, 0, "%s.%llu.self_attn.k_norm.weight", pre, ll);
        }
        add_tensor(p, o, INIT_NORM, d, 0, "%s.%llu.post_attention_layernorm.weight", pre, ll);
        add_tensor(p, o, INIT_LINEAR, m, d, "%s.%llu.mlp.gate_proj.weight", pre, ll);
        add_tensor(p, o, INIT_LINEAR, m, d, "%s.%llu.mlp.up_proj.weight", pre, ll);
        add_tensor(p, o, INIT_LINEAR, d, m, "%s.%llu.mlp.down_proj.weight", pre, ll);
    }
    add_tensor(p, o, INIT_NORM, d, 0, "model.norm.weight");
    if (!o->tie)
        add_tensor(p, o, INIT_LINEAR, o->vocab, d, "lm_head.weight");
}

/* Splits the tensors, in order, into shards of at most about max_bytes of data
 * (0 = one shard); a tensor larger than max_bytes gets a shard of its own. */
static void plan_shards(struct plan *p, uint64_t max_bytes)
{
    unsigned shard = 0;
    uint64_t used = 0;
    int start_new = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct tensor *t = &p->t[i];
        if (max_bytes && used > 0 && (start_new || used + t->bytes > max_bytes)) {
            if (shard == 99999)
                die("--shard-bytes", "more than 99999 shards");
            shard++;
            used = 0;
        }
        t->shard = shard;
        t->offset = used;
        used += t->bytes;
        start_new = max_bytes && t->bytes > max_bytes;
    }
    p->nshards = shard + 1;
}

static void shard_name(char *out, size_t n, const struct options *o, const struct plan *p,
                       unsigned shard)
{
    if (o->shard_bytes == 0)
        snprintf(out, n, "model.safetensors");
    else
        snprintf(out, n, "model-%05u-of-%05u.safetensors", shard + 1, p->nshards);
}

/* ------------------------------------------------------- value generation */

struct rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Independent stream for tensor number `stream` under `seed`: the values of a
 * tensor do not depend on dtype, sharding or chunking. */
static void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed;
    uint64_t y = splitmix64(&x) ^ stream;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&y);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(struct rng *r) /* xoshiro256** */
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Approximately N(0,1): the centred sum of the four 16-bit pieces of one 64-bit
 * draw (Irwin-Hall, n = 4), scaled to unit variance; mean exactly 0, |z| < 3.47. */
static inline float rng_normal(struct rng *r, float unit)
{
    uint64_t v = rng_next(r);
    int32_t sum = (int32_t)(v & 0xFFFF) + (int32_t)((v >> 16) & 0xFFFF) +
                  (int32_t)((v >> 32) & 0xFFFF) + (int32_t)(v >> 48) - 2 * 65535;
    return (float)sum * unit;
}

/* ------------------------------------------------------ dtype conversion */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* bf16 = upper half of the f32 bits, rounded to nearest even; NaN stays NaN. */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((x >> 16) | 0x0040u);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

/* IEEE binary16, round to nearest even, with subnormals, overflow to inf. */
static inline uint16_t f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) /* NaN: keep quiet, keep top payload bits */
        return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
    if (ax >= 0x477FF000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7C00u);
    if (ax >= 0x38800000u) { /* normal half: rebias exponent 127 -> 15, round 13 bits */
        uint32_t r = ax - 0x38000000u;
        r += 0x0FFFu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    uint32_t e = ax >> 23; /* subnormal half: value = mant * 2^(e-150), unit 2^-24 */
    if (e < 102)           /* below 2^-25: rounds to zero */
        return sign;
    uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* Fills out[0..n) with mu + sigma * N(0,1) in the output dtype, little-endian. */
static void fill_chunk(unsigned char *out, size_t n, enum dtype dt, struct rng *r, float mu,
                       float sigma)
{
    const float unit = (float)(1.0 / sqrt((65536.0 * 65536.0 - 1.0) / 3.0));
    size_t i;
    switch (dt) {
    case DT_F32:
        for (i = 0; i < n; i++) {
            uint32_t b = f32_bits(mu + sigma * rng_normal(r, unit));
            out[4 * i] = (unsigned char)b;
            out[4 * i + 1] = (unsigned char)(b >> 8);
            out[4 * i + 2] = (unsigned char)(b >> 16);
            out[4 * i + 3] = (unsigned char)(b >> 24);
        }
        break;
    case DT_BF16:
        for (i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(mu + sigma * rng_normal(r, unit));
            out[2 * i] = (unsigned char)h;
            out[2 * i + 1] = (unsigned char)(h >> 8);
        }
        break;
    case DT_F16:
        for (i = 0; i < n; i++) {
            uint16_t h = f32_to_f16(mu + sigma * rng_normal(r, unit));
            out[2 * i] = (unsigned char)h;
            out[2 * i + 1] = (unsigned char)(h >> 8);
        }
        break;
    }
}

/* Mean and standard deviation of a tensor's values: embeddings N(0,1), norm
 * weights 1 + 0.1 N(0,1), linear weights N(0, 1/fan_in) with fan_in = columns,
 * biases (qwen2's q/k/v_proj) 0.5 N(0,1), large enough to matter in the forward pass. */
static void init_params(const struct tensor *t, float *mu, float *sigma)
{
    *mu = t->init == INIT_NORM ? 1.0f : 0.0f;
    if (t->init == INIT_NORM)
        *sigma = 0.1f;
    else if (t->init == INIT_BIAS)
        *sigma = 0.5f;
    else if (t->init == INIT_LINEAR)
        *sigma = (float)(1.0 / sqrt((double)t->shape[1]));
    else
        *sigma = 1.0f;
}

/* --------------------------------------------------------- generator process
 * A forked child generates the values of all tensors, in plan order (which is
 * also file order), into NSLOTS buffers shared with the parent, while the parent
 * writes the chunks it already has.  Slot numbers travel as single bytes through
 * two pipes: "empty" (parent -> child) and "filled" (child -> parent).  If the
 * parent exits, the child sees EOF (or SIGPIPE) and ends too. */

struct generator {
    unsigned char *slots; /* NSLOTS * SLOT_BYTES, shared */
    int filled_rd, empty_wr;
    pid_t pid;
};

static size_t chunk_len(uint64_t left)
{
    return left < CHUNK_ELEMS ? (size_t)left : CHUNK_ELEMS;
}

static int read_byte(int fd, unsigned char *b)
{
    ssize_t r;
    do
        r = read(fd, b, 1);
    while (r < 0 && errno == EINTR);
    return r == 1;
}

static int write_byte(int fd, unsigned char b)
{
    ssize_t r;
    do
        r = write(fd, &b, 1);
    while (r < 0 && errno == EINTR);
    return r == 1;
}

/* Child: fills chunks in the order stream_tensor consumes them. */
static void generator_child(const struct plan *p, const struct options *o, unsigned char *slots,
                            int empty_rd, int filled_wr)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct tensor *t = &p->t[i];
        struct rng r;
        float mu, sigma;
        uint64_t left = t->bytes / dtype_size(o->dtype);
        rng_seed(&r, o->seed, i);
        init_params(t, &mu, &sigma);
        while (left > 0) {
            size_t n = chunk_len(left);
            unsigned char slot;
            if (!read_byte(empty_rd, &slot))
                _exit(1); /* the parent is gone */
            fill_chunk(slots + (size_t)slot * SLOT_BYTES, n, o->dtype, &r, mu, sigma);
            if (!write_byte(filled_wr, slot))
                _exit(1);
            left -= n;
        }
    }
    _exit(0);
}

/* Dies with the reason the child stopped early (exit status or signal). */
static void generator_died(struct generator *g)
{
    int status;
    if (waitpid(g->pid, &status, 0) != g->pid)
        die("generator", "child process ended unexpectedly");
    if (WIFSIGNALED(status))
        die("generator", "child process killed by signal %d", WTERMSIG(status));
    die("generator", "child process exited early with status %d", WEXITSTATUS(status));
}

/* Waits for the next filled chunk; returns its buffer and slot number. */
static const unsigned char *generator_next(struct generator *g, unsigned char *slot)
{
    if (!read_byte(g->filled_rd, slot) || *slot >= NSLOTS)
        generator_died(g);
    return g->slots + (size_t)*slot * SLOT_BYTES;
}

/* Hands a written slot back.  Failure is ignored: once the child has produced
 * its last chunk it exits, and a child that died early shows up as EOF in
 * generator_next or as a bad status in generator_finish. */
static void generator_release(struct generator *g, unsigned char slot)
{
    (void)write_byte(g->empty_wr, slot);
}

static void generator_start(struct generator *g, const struct plan *p, const struct options *o)
{
    int empty[2], filled[2];
    g->slots = mmap(NULL, NSLOTS * SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
    if (g->slots == MAP_FAILED)
        die("generator", "cannot map %zu bytes: %s", (size_t)(NSLOTS * SLOT_BYTES),
            strerror(errno));
    if (pipe(empty) != 0 || pipe(filled) != 0)
        die("generator", "cannot create pipes: %s", strerror(errno));
    fflush(NULL);
    g->pid = fork();
    if (g->pid < 0)
        die("generator", "cannot fork: %s", strerror(errno));
    if (g->pid == 0) {
        close(empty[1]);
        close(filled[0]);
        generator_child(p, o, g->slots, empty[0], filled[1]);
    }
    close(empty[0]);
    close(filled[1]);
    signal(SIGPIPE, SIG_IGN); /* a dead child shows up as EPIPE, not as our death */
    g->filled_rd = filled[0];
    g->empty_wr = empty[1];
    for (unsigned char s = 0; s < NSLOTS; s++)
        generator_release(g, s);
}

static void generator_finish(struct generator *g)
{
    int status;
    close(g->empty_wr);
    close(g->filled_rd);
    if (waitpid(g->pid, &status, 0) != g->pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        die("generator", "child process failed");
    munmap(g->slots, NSLOTS * SLOT_BYTES);
}

/* ------------------------------------------------------------------ output */

/* Registers DIR/.name.tmp -> DIR/name and opens the temporary file. */
static FILE *open_output(const char *dir, const char *name, struct outfile *out)
{
    char tmpname[160];
    snprintf(tmpname, sizeof tmpname, ".%s.tmp", name);
    out->tmp = path_join(dir, tmpname);
    out->final = path_join(dir, name);
    out->renamed = 0;
    g_nfiles++;
    FILE *f = fopen(out->tmp, "wb");
    if (!f)
        die(out->tmp, "cannot create: %s", strerror(errno));
    return f;
}

static void write_bytes(FILE *f, const void *buf, size_t n, const char *path)
{
    if (n && fwrite(buf, 1, n, f) != n)
        die(path, "write failed: %s", strerror(errno));
}

static void close_output(FILE *f, const char *path)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        die(path, "write failed: %s", strerror(errno));
}

static void write_small_file(const char *dir, const char *name, const struct strbuf *sb,
                             struct outfile *out)
{
    FILE *f = open_output(dir, name, out);
    write_bytes(f, sb->buf, sb->len, out->tmp);
    close_output(f, out->tmp);
}

/* Safetensors JSON header of one shard, padded with spaces to a multiple of 8. */
static void shard_header(struct strbuf *sb, const struct plan *p, const struct options *o,
                         unsigned shard)
{
    sb_printf(sb, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < p->n; i++) {
        const struct tensor *t = &p->t[i];
        if (t->shard != shard)
            continue;
        sb_printf(sb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu", t->name,
                  dtype_safetensors(o->dtype), (unsigned long long)t->shape[0]);
        if (t->ndim == 2)
            sb_printf(sb, ",%llu", (unsigned long long)t->shape[1]);
        sb_printf(sb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset,
                  (unsigned long long)(t->offset + t->bytes));
    }
    sb_printf(sb, "}");
    while (sb->len % 8 != 0)
        sb_printf(sb, " ");
}

/* Appends one tensor to f, chunk by chunk, as the generator delivers it. */
static void stream_tensor(FILE *f, const char *path, const struct tensor *t,
                          const struct options *o, struct generator *g)
{
    unsigned esize = dtype_size(o->dtype);
    uint64_t left = t->bytes / esize;
    while (left > 0) {
        size_t n = chunk_len(left);
        unsigned char slot;
        const unsigned char *chunk = generator_next(g, &slot);
        write_bytes(f, chunk, n * esize, path);
        generator_release(g, slot);
        left -= n;
    }
}

static void write_shard(const char *dir, const struct plan *p, const struct options *o,
                        unsigned shard, struct generator *g, struct outfile *out)
{
    char name[64];
    struct strbuf hdr = {0};
    unsigned char len8[8];
    shard_name(name, sizeof name, o, p, shard);
    shard_header(&hdr, p, o, shard);
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));

    FILE *f = open_output(dir, name, out);
    write_bytes(f, len8, 8, out->tmp);
    write_bytes(f, hdr.buf, hdr.len, out->tmp);
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].shard == shard)
            stream_tensor(f, out->tmp, &p->t[i], o, g);
    close_output(f, out->tmp);
    free(hdr.buf);
}

static void index_json(struct strbuf *sb, const struct plan *p, const struct options *o)
{
    char name[64];
    sb_printf(sb, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {",
              (unsigned long long)p->total_bytes);
    for (size_t i = 0; i < p->n; i++) {
        shard_name(name, sizeof name, o, p, p->t[i].shard);
        sb_printf(sb, "%s\n    \"%s\": \"%s\"", i ? "," : "", p->t[i].name, name);
    }
    sb_printf(sb, "\n  }\n}\n");
}

/* config.json.  Every family: the sizes, hidden_act, rms_norm_eps, rope_theta, rope_scaling,
 * vocab_size, max_position_embeddings, tie_word_embeddings, block_configs (--ffn-per-layer),
 * torch_dtype, bos/eos_token_id.  llama: head_dim, attention_bias and mlp_bias false.  qwen2:
 * head_dim only when it is not hidden/heads, the sliding-window keys (off), attention_dropout.
 * qwen3: head_dim, attention_bias false, the sliding-window keys (off), attention_dropout. */
static void config_json(struct strbuf *sb, const struct options *o)
{
    static const char *const arch[] = { "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM" };
    char theta[40], eps[40], factor[40];
    int llama = o->family == FAM_LLAMA, qwen2 = o->family == FAM_QWEN2;
    fmt_double(theta, sizeof theta, o->rope_theta);
    fmt_double(eps, sizeof eps, o->eps);
    sb_printf(sb, "{\n");
    sb_printf(sb, "  \"architectures\": [\"%s\"],\n", arch[o->family]);
    sb_printf(sb, "  \"model_type\": \"%s\",\n", family_names[o->family]);
    sb_printf(sb, "  \"hidden_size\": %llu,\n", (unsigned long long)o->hidden);
    sb_printf(sb, "  \"intermediate_size\": %llu,\n", (unsigned long long)o->ffn);
    sb_printf(sb, "  \"num_hidden_layers\": %llu,\n", (unsigned long long)o->layers);
    sb_printf(sb, "  \"num_attention_heads\": %llu,\n", (unsigned long long)o->heads);
    sb_printf(sb, "  \"num_key_value_heads\": %llu,\n", (unsigned long long)o->kv_heads);
    if (!qwen2 || o->heads * o->head_dim != o->hidden)
        sb_printf(sb, "  \"head_dim\": %llu,\n", (unsigned long long)o->head_dim);
    sb_printf(sb, "  \"hidden_act\": \"silu\",\n");
    sb_printf(sb, "  \"rms_norm_eps\": %s,\n", eps);
    sb_printf(sb, "  \"rope_theta\": %s,\n", theta);
    if (o->rope_llama3 > 0) {
        fmt_double(factor, sizeof factor, o->rope_llama3);
        sb_printf(sb,
                  "  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %s, "
                  "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                  "\"original_max_position_embeddings\": 8192},\n",
                  factor);
    } else {
        sb_printf(sb, "  \"rope_scaling\": null,\n");
    }
    sb_printf(sb, "  \"vocab_size\": %llu,\n", (unsigned long long)o->vocab);
    sb_printf(sb, "  \"max_position_embeddings\": %d,\n", MAX_POSITION_EMBEDDINGS);
    sb_printf(sb, "  \"tie_word_embeddings\": %s,\n", o->tie ? "true" : "false");
    if (llama) {
        sb_printf(sb, "  \"attention_bias\": false,\n");
        sb_printf(sb, "  \"mlp_bias\": false,\n");
    } else {
        if (!qwen2)
            sb_printf(sb, "  \"attention_bias\": false,\n");
        sb_printf(sb, "  \"use_sliding_window\": false,\n");
        sb_printf(sb, "  \"sliding_window\": %s,\n", qwen2 ? "4096" : "null");
        sb_printf(sb, "  \"max_window_layers\": %llu,\n", (unsigned long long)o->layers);
        sb_printf(sb, "  \"attention_dropout\": 0.0,\n");
    }
    if (o->ffn_list[0]) {
        sb_printf(sb, "  \"block_configs\": [");
        for (uint64_t l = 0; l < o->layers; l++)
            sb_printf(sb,
                      "%s\n    {\"attention\": {\"n_heads_in_group\": %llu}, "
                      "\"ffn\": {\"intermediate_size\": %llu}}",
                      l ? "," : "", (unsigned long long)(o->heads / o->kv_heads),
                      (unsigned long long)o->ffn_per_layer[l]);
        sb_printf(sb, "\n  ],\n");
    }
    sb_printf(sb, "  \"torch_dtype\": \"%s\",\n", dtype_torch(o->dtype));
    sb_printf(sb, "  \"bos_token_id\": 1,\n");
    sb_printf(sb, "  \"eos_token_id\": 2\n");
    sb_printf(sb, "}\n");
}

/* ------------------------------------------------------------ directories */

/* mkdir -p DIR; fails unless DIR ends up a directory. */
static void make_dirs(const char *dir)
{
    char *p = xstrdup(dir);
    struct stat st;
    int err = 0;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        mkdir(p, 0777);
        *s = '/';
    }
    if (mkdir(p, 0777) != 0)
        err = errno;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
        die(dir, "cannot create directory: %s", strerror(err ? err : ENOTDIR));
    free(p);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* model.safetensors, model.safetensors.index.json or model-NNNNN-of-NNNNN.safetensors */
static int is_weight_file_name(const char *s)
{
    if (strcmp(s, "model.safetensors") == 0 || strcmp(s, "model.safetensors.index.json") == 0)
        return 1;
    if (strncmp(s, "model-", 6) != 0)
        return 0;
    s += 6;
    if (*s < '0' || *s > '9')
        return 0;
    while (*s >= '0' && *s <= '9')
        s++;
    if (strncmp(s, "-of-", 4) != 0)
        return 0;
    s += 4;
    if (*s < '0' || *s > '9')
        return 0;
    while (*s >= '0' && *s <= '9')
        s++;
    return strcmp(s, ".safetensors") == 0;
}

/* Removes weight files of an earlier checkpoint in DIR that are not part of
 * this one, so a loader cannot mix the two (e.g. an old index next to a new
 * single file).  Must run after the new files are renamed into place. */
static void remove_stale_weights(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        die(dir, "cannot list directory: %s", strerror(errno));
    while ((e = readdir(d)) != NULL) {
        int ours = 0;
        if (!is_weight_file_name(e->d_name))
            continue;
        for (size_t i = 0; i < g_nfiles; i++) {
            const char *base = strrchr(g_files[i].final, '/') + 1;
            ours |= strcmp(base, e->d_name) == 0;
        }
        if (!ours) {
            char *path = path_join(dir, e->d_name);
            if (remove(path) != 0)
                die(path, "cannot remove stale weight file: %s", strerror(errno));
            free(path);
        }
    }
    closedir(d);
}

static void rename_output(struct outfile *f)
{
    if (rename(f->tmp, f->final) != 0)
        die(f->final, "cannot rename from %s: %s", f->tmp, strerror(errno));
    f->renamed = 1;
}

/* -------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct options o;
    struct plan p;
    struct strbuf sb = {0};
    struct generator gen;

    parse_args(argc, argv, &o);
    validate(&o);
    build_plan(&p, &o);
    plan_shards(&p, o.shard_bytes);

    make_dirs(o.out);
    char *config_path = path_join(o.out, "config.json");
    if (file_exists(config_path) && !o.force)
        die(config_path, "exists (use --force to overwrite)");

    /* output files: shards, index, config.json (config last: it marks a complete model) */
    g_files = calloc((size_t)p.nshards + 2, sizeof *g_files);
    if (!g_files)
        die("memory", "cannot allocate the file list");

    generator_start(&gen, &p, &o);
    for (unsigned s = 0; s < p.nshards; s++)
        write_shard(o.out, &p, &o, s, &gen, &g_files[g_nfiles]);
    generator_finish(&gen);
    if (o.shard_bytes > 0) {
        index_json(&sb, &p, &o);
        write_small_file(o.out, "model.safetensors.index.json", &sb, &g_files[g_nfiles]);
        sb.len = 0;
    }
    config_json(&sb, &o);
    write_small_file(o.out, "config.json", &sb, &g_files[g_nfiles]);

    for (size_t i = 0; i + 1 < g_nfiles; i++)
        rename_output(&g_files[i]);
    remove_stale_weights(o.out);
    rename_output(&g_files[g_nfiles - 1]);

    printf("%s: wrote %s: %zu tensors, %llu data bytes, %u safetensors file%s\n", PROG, o.out,
           p.n, (unsigned long long)p.total_bytes, p.nshards, p.nshards == 1 ? "" : "s");
    free(sb.buf);
    free(config_path);
    free(p.t);
    free(o.ffn_per_layer);
    for (size_t i = 0; i < g_nfiles; i++) {
        free(g_files[i].tmp);
        free(g_files[i].final);
    }
    free(g_files);
    return 0;
}
