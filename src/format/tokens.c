/* tokens.c — token files and calibration window offsets (bit-compatible with CPython's random). */
#include "cfsp/format/tokens.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <stdlib.h>
#include <string.h>

/* "FILE@START:END" selects tokens [START, END) of FILE (END may be empty: to the end) */
static int split_range(const char *spec, char *path, size_t n, int64_t *lo, int64_t *hi)
{
    *lo = 0;
    *hi = -1;
    const char *at = strrchr(spec, '@');
    if (!at || path_exists(spec)) {
        if (strlen(spec) >= n) return FAIL("%s: path too long", spec);
        strcpy(path, spec);
        return 0;
    }
    if ((size_t)(at - spec) >= n) return FAIL("%s: path too long", spec);
    memcpy(path, spec, (size_t)(at - spec));
    path[at - spec] = 0;
    char *end = NULL;
    long long a = strtoll(at + 1, &end, 10);
    if (end == at + 1 || *end != ':' || a < 0) return FAIL("%s: expected FILE@START:END (token indices)", spec);
    const char *b = end + 1;
    if (*b) {
        long long e = strtoll(b, &end, 10);
        if (*end || e <= a) return FAIL("%s: expected FILE@START:END with END > START", spec);
        *hi = e;
    }
    *lo = a;
    return 0;
}

int tokens_read(const char *spec, int vocab, token_file *t)
{
    char *buf = NULL, path[4096];
    size_t len = 0;
    int64_t lo, hi;
    memset(t, 0, sizeof *t);
    if (split_range(spec, path, sizeof path, &lo, &hi)) return -1;
    if (read_whole_file(path, (size_t)1 << 36, &buf, &len)) return -1;
    if (len % 4 != 0) { free(buf); return FAIL("%s: size %zu bytes is not a multiple of 4 (expected uint32 token ids)", path, len); }
    if (len == 0) { free(buf); return FAIL("%s: token file is empty", path); }
    int64_t n = (int64_t)(len / 4);
    uint32_t *ids = xmalloc(len);
    const unsigned char *p = (const unsigned char *)buf;
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        if (v >= (uint32_t)vocab) {
            free(buf); free(ids);
            return FAIL("%s: token %lld has id %u, not below vocab_size %d", path, (long long)i, v, vocab);
        }
        ids[i] = v;
    }
    free(buf);
    if (hi < 0) hi = n;
    if (lo >= n || hi > n) { free(ids); return FAIL("%s: range [%lld, %lld) outside the file's %lld tokens", spec, (long long)lo, (long long)hi, (long long)n); }
    if (lo > 0) memmove(ids, ids + lo, sizeof(uint32_t) * (size_t)(hi - lo));
    t->ids = ids;
    t->n = hi - lo;
    return 0;
}

void tokens_free(token_file *t) { free(t->ids); memset(t, 0, sizeof *t); }

static void mt_init(py_random *r, uint32_t s)
{
    r->mt[0] = s;
    for (int i = 1; i < 624; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->idx = 624;
}

/* CPython random.seed(int): init_by_array over the 32-bit words of |seed| (at least one word) */
void py_random_seed(py_random *r, uint64_t seed)
{
    uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    int klen = key[1] ? 2 : 1;
    mt_init(r, 19650218u);
    int i = 1, j = 0;
    for (int k = 624 > klen ? 624 : klen; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++; j++;
        if (i >= 624) { r->mt[0] = r->mt[623]; i = 1; }
        if (j >= klen) j = 0;
    }
    for (int k = 623; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= 624) { r->mt[0] = r->mt[623]; i = 1; }
    }
    r->mt[0] = 0x80000000u;
    r->idx = 624;
}

static uint32_t mt_next(py_random *r)
{
    if (r->idx >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (r->mt[k] & 0x80000000u) | (r->mt[(k + 1) % 624] & 0x7fffffffu);
            r->mt[k] = r->mt[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->idx = 0;
    }
    uint32_t y = r->mt[r->idx++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static uint64_t getrandbits(py_random *r, int k)
{
    if (k <= 32) return mt_next(r) >> (32 - k);
    uint64_t lo = mt_next(r), hi = mt_next(r) >> (64 - k);   /* CPython fills words low to high */
    return lo | hi << 32;
}

int64_t py_random_randint(py_random *r, int64_t lo, int64_t hi)
{
    uint64_t n = (uint64_t)(hi - lo + 1);
    int k = 0;
    while (k < 64 && (n >> k)) k++;         /* n.bit_length() */
    uint64_t v = getrandbits(r, k);
    while (v >= n) v = getrandbits(r, k);
    return lo + (int64_t)v;
}

int calib_offsets(int64_t ntokens, int nsamples, int seqlen, int random, uint64_t seed, const char *fname, int64_t *offsets)
{
    if (random) {
        if (ntokens < (int64_t)seqlen + 1)
            return FAIL("%s: %lld tokens, need more than seqlen = %d for random calibration windows", fname, (long long)ntokens, seqlen);
        py_random r;
        py_random_seed(&r, seed);
        for (int i = 0; i < nsamples; i++) offsets[i] = py_random_randint(&r, 0, ntokens - seqlen - 1);
    } else {
        if ((int64_t)nsamples * seqlen > ntokens)
            return FAIL("%s: %lld tokens, too few for nsamples x seqlen = %d x %d consecutive windows", fname, (long long)ntokens, nsamples, seqlen);
        for (int i = 0; i < nsamples; i++) offsets[i] = (int64_t)i * seqlen;
    }
    return 0;
}
