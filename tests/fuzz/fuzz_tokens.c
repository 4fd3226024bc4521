/* fuzz_tokens.c — libFuzzer harness for tokens_read (uint32 token-id files and the FILE@START:END
 * slice syntax) and calib_offsets. tokens_read takes a path, so the input is written to a
 * per-process temporary file. Input layout:
 *   byte 0-1  vocab_size - 1 (little-endian, so 1..65536)
 *   byte 2    k = length of the slice suffix (k & 31; 0 = no '@' suffix)
 *   k bytes   the text after '@' (e.g. "3:17"); NUL bytes end it early
 *   byte      nsamples (0..63), byte seqlen (1..256), byte: random (bit 0)
 *   the rest  the token file's contents. */
#include "cfsp/format/tokens.h"
#include "cfsp/util/err.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_path[256];

static void cleanup(void) { if (g_path[0]) unlink(g_path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(g_path, sizeof g_path, "%s/cfsp_fuzz_tokens_%d.bin", dir && *dir ? dir : "/tmp", (int)getpid());
        atexit(cleanup);
    }
    if (size < 6) return 0;
    int vocab = 1 + (int)(data[0] | data[1] << 8);
    size_t k = data[2] & 31u;
    size_t pos = 3;
    if (pos + k + 3 > size) return 0;
    char suffix[40];
    size_t sl = 0;
    for (size_t i = 0; i < k && data[pos + i]; i++) suffix[sl++] = (char)data[pos + i];
    suffix[sl] = 0;
    pos += k;
    int nsamples = data[pos] & 63, seqlen = 1 + data[pos + 1], random = data[pos + 2] & 1;
    pos += 3;
    FILE *f = fopen(g_path, "wb");
    if (!f) abort();
    if (size > pos && fwrite(data + pos, 1, size - pos, f) != size - pos) abort();
    fclose(f);
    char spec[320];
    if (k) snprintf(spec, sizeof spec, "%s@%s", g_path, suffix);
    else snprintf(spec, sizeof spec, "%s", g_path);
    token_file t;
    int rc = tokens_read(spec, vocab, &t);
    if (rc == 0) {
        if (t.n < 1 || !t.ids) abort();
        for (int64_t i = 0; i < t.n; i++)
            if (t.ids[i] >= (uint32_t)vocab) abort();
        int64_t off[64];
        if (calib_offsets(t.n, nsamples, seqlen, random, 42, spec, off) == 0)
            for (int i = 0; i < nsamples; i++)
                if (off[i] < 0 || off[i] + seqlen > t.n) abort();
        tokens_free(&t);
    } else if (!cfsp_last_error()[0]) {
        abort();
    }
    cfsp_clear_error();
    return 0;
}
