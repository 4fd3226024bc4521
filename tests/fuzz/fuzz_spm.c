/* fuzz_spm.c — libFuzzer harness for the sentencepiece tokenizer.model reader (src/tok/spm.c: the
 * bounds-checked protobuf reader, piece validation, the precompiled-charsmap double array) and for
 * encoding with whatever model it accepts (the one reader: the GGUF exporter writes from it too).
 * The whole input is the ModelProto; when it parses, the vocabulary view is walked and a fixed set
 * of texts plus the input's last 64 bytes are encoded with it (tok_fuzz_check.h: entries and ids
 * below the vocabulary size, the same ids twice); when it does not parse, a message must be left.
 * Built by mpi_scripts/fuzz.sh (with the src/tok sources; see results/tokenizer/README.md). */
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/err.h"
#include "tok_fuzz_check.h"
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
        tok_fuzz_check(t, texts, sizeof texts / sizeof texts[0], (const char *)buf, size);
        tokenizer_free(t);
    } else if (t || !cfsp_last_error()[0]) {
        abort();
    }
    cfsp_clear_error();
    free(buf);
    return 0;
}
