/* fuzz_spm.c — libFuzzer harness for the sentencepiece tokenizer.model reader (src/tok/spm.c: the
 * bounds-checked protobuf reader, piece validation, the precompiled-charsmap double array) and for
 * encoding with whatever model it accepts. The whole input is the ModelProto; when it parses, a
 * fixed set of texts plus the input's last 64 bytes (as text: valid UTF-8 or not) are encoded with
 * it, and every id must be a piece of the model; when it does not parse, a message must have been
 * left. Built by mpi_scripts/fuzz.sh (with the src/tok sources; see results/tokenizer/README.md). */
#include "cfsp/err.h"
#include "cfsp/tokenizer.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *texts[] = {
    "",
    " ",
    "Hello  world, it's 12345!\n\n\tend ",
    "\xef\xbc\xa1\xef\xac\x81 \xe6\x97\xa5\xe6\x9c\xac \xe2\x80\xa6 <sep> @@ <s> <unk> \xc2\xa0x",
    "\xff\xfe invalid \xc3\x28 utf-8 \xe2\x82",
    "   leading and trailing   ",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size heap copy: ASan catches any read past the end */
    unsigned char *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    tokenizer *t = NULL;
    int rc = tokenizer_from_spm(buf, size, "fuzz/tokenizer.model", &t);
    if (rc == 0) {
        if (!t) abort();
        int vocab = tokenizer_vocab_size(t);
        if (vocab < 1) abort();
        size_t ntexts = sizeof texts / sizeof texts[0];
        for (size_t k = 0; k <= ntexts; k++) {
            const char *s = k < ntexts ? texts[k] : (const char *)buf + (size > 64 ? size - 64 : 0);
            size_t len = k < ntexts ? strlen(texts[k]) : (size > 64 ? 64 : size);
            uint32_t *ids = NULL;
            int64_t n = 0;
            cfsp_clear_error();
            if (tokenizer_encode(t, s, len, 0, "fuzz/text", &ids, &n) == 0) {
                for (int64_t i = 0; i < n; i++)
                    if (ids[i] >= (uint32_t)vocab) abort();
            } else if (!cfsp_last_error()[0]) {
                abort();
            }
            free(ids);
        }
        tokenizer_free(t);
    } else if (t || !cfsp_last_error()[0]) {
        abort();
    }
    cfsp_clear_error();
    free(buf);
    return 0;
}
