/* tok_fuzz_check.h — the check shared by the two tokenizer harnesses (fuzz_hf.c, fuzz_spm.c): for a
 * tokenizer the reader accepted, walk what it declares (tokenizer_info / tokenizer_entry /
 * tokenizer_merge, the view the GGUF exporter writes from): every entry's id below
 * tokenizer_vocab_size, its text of `len` bytes without a NUL, its type 1..6, every merge's ids
 * below the vocabulary size, the unk id too, an added token found again by its content; then
 * encode the fixed texts plus the input's last 64 bytes (as text: valid UTF-8 or not); every id
 * must be below tokenizer_vocab_size, encoding the same text twice must give the same ids, and a
 * failed encode must leave a message. Aborts on any violation. */
#ifndef CFSP_TOK_FUZZ_CHECK_H
#define CFSP_TOK_FUZZ_CHECK_H
#include "cfsp/tok/tokenizer.h"
#include "cfsp/util/err.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void tok_fuzz_check_view(const tokenizer *t, int vocab)
{
    tok_info info;
    tokenizer_info(t, &info);
    if (info.nentries < 1 || info.nmerges < 0 || info.unk_id < -1 || info.unk_id >= vocab) abort();
    if (info.file == TOK_FILE_SPM && (info.nentries != vocab || info.nmerges != 0)) abort();
    for (int i = 0; i < info.nentries; i++) {
        tok_entry e;
        tokenizer_entry(t, i, &e);
        if (e.id < 0 || e.id >= vocab || !e.text || strlen(e.text) != e.len || e.type < TOK_NORMAL || e.type > TOK_BYTE) abort();
        if (e.type == TOK_CONTROL || e.type == TOK_USER_DEFINED) {
            if (info.file != TOK_FILE_HF) continue;
            int id = tokenizer_added_id(t, e.text);      /* the first added token of that content */
            if (id < 0 || id >= vocab) abort();
        }
    }
    for (int r = 0; r < info.nmerges; r++) {
        int ids[3];
        tokenizer_merge(t, r, ids);
        for (int k = 0; k < 3; k++) if (ids[k] < 0 || ids[k] >= vocab) abort();
    }
}

static void tok_fuzz_check(tokenizer *t, const char *const *texts, size_t ntexts, const char *input, size_t size)
{
    int vocab = tokenizer_vocab_size(t);
    if (vocab < 1) abort();
    tok_fuzz_check_view(t, vocab);
    for (size_t k = 0; k <= ntexts; k++) {
        const char *s = k < ntexts ? texts[k] : input + (size > 64 ? size - 64 : 0);
        size_t len = k < ntexts ? strlen(texts[k]) : (size > 64 ? 64 : size);
        uint32_t *ids = NULL, *ids2 = NULL;
        int64_t n = 0, n2 = 0;
        cfsp_clear_error();
        if (tokenizer_encode(t, s, len, 0, "fuzz/text", &ids, &n) == 0) {
            for (int64_t i = 0; i < n; i++)
                if (ids[i] >= (uint32_t)vocab) abort();
            if (tokenizer_encode(t, s, len, 0, "fuzz/text", &ids2, &n2) != 0 || n2 != n ||
                (n && memcmp(ids, ids2, (size_t)n * sizeof *ids)))
                abort();
        } else if (!cfsp_last_error()[0]) {
            abort();
        }
        free(ids);
        free(ids2);
    }
}
#endif
