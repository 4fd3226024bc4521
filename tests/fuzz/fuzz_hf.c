/* fuzz_hf.c — libFuzzer harness for the Hugging Face tokenizer.json reader (src/tok/hf.c: the model,
 * normalizer, pre-tokenizer and added-token parsing, the split-regex compiler of hf_regex.c, our
 * vocabulary / merge hash tables) and for encoding with whatever tokenizer it accepts. The whole
 * input is the tokenizer.json text (an exact-size heap copy, not NUL-terminated); when it parses, the
 * vocabulary view the GGUF exporter writes from is walked (entries, merges, added-token lookup: ids
 * below tokenizer_vocab_size), a fixed set of texts plus the input's last 64 bytes (as text: valid
 * UTF-8 or not) are encoded, every id must be below tokenizer_vocab_size (1 + the largest id it can
 * produce), and encoding the same text twice must give the same ids; a failure (parse or encode)
 * must leave a message (tok_fuzz_check.h). Built by
 * mpi_scripts/fuzz.sh with the src/tok sources; seeds from tests/fuzz/make_tok_corpus.py. */
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/err.h"
#include "tok_fuzz_check.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *texts[] = {
    "",
    " ",
    "Hello  world, it's 12345 o'clock!\n\n\tWe'RE here, they'd've said 'no'.  ",
    "<|begin_of_text|>mid<|end_of_text|> <s>x</s> <unk> <|start_story|>Once<|end_story|>",
    "\xc3\x9c" "n" "\xc3\xaf" "c" "\xc3\xb6" "d" "\xc3\xa9" " \xe6\x97\xa5\xe6\x9c\xac 123456789 \xd9\xa3\xd9\xa4 \xc2\xbd \xe2\x80\xa8 \xf0\x9f\x98\x80\xf0\x9f\x8f\xbd \xe3\x80\x80x",
    "\xff\xfe invalid \xc3\x28 utf-8 \xe2\x82",
    "e\xcc\x81 \xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 a\xcc\xa3\xcc\x82 \xcc\x81x \xe2\x84\xab",   /* NFC: marks, jamo, U+212B */
    "   \r\n\r\n  leading and trailing \t ",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    tokenizer *t = NULL;
    int rc = tokenizer_from_hf_json(buf, size, "fuzz/tokenizer.json", &t);
    if (rc == 0) {
        if (!t) abort();
        tok_fuzz_check(t, texts, sizeof texts / sizeof texts[0], buf, size);
        tokenizer_free(t);
    } else if (t || !cfsp_last_error()[0]) {
        abort();
    }
    cfsp_clear_error();
    free(buf);
    return 0;
}
