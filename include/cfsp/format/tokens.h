/* tokens.h — token-id files (uint32 little-endian) and the calibration / evaluation windows
 * cut from them, including the reference's random offsets (Python's random.seed / randint). */
#ifndef CFSP_TOKENS_H
#define CFSP_TOKENS_H
#include <stdint.h>

typedef struct { uint32_t *ids; int64_t n; } token_file;

int tokens_read(const char *path, int vocab, token_file *t);
void tokens_free(token_file *t);

/* Python-compatible Mersenne Twister: random.seed(seed) then randint(0, hi) */
typedef struct { uint32_t mt[624]; int idx; } py_random;
void py_random_seed(py_random *r, uint64_t seed);
int64_t py_random_randint(py_random *r, int64_t lo, int64_t hi);

/* nsamples windows of seqlen tokens: random offsets (reference) or consecutive. */
int calib_offsets(int64_t ntokens, int nsamples, int seqlen, int random, uint64_t seed, const char *fname, int64_t *offsets);
#endif
