/* fuzz_index.c — libFuzzer harness for st_parse_index (model.safetensors.index.json).
 * On success every shard name must be a non-empty plain file name, listed once. */
#include "cfsp/format/safetensors.h"
#include "cfsp/util/err.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    char **files = NULL;
    int nf = -1;
    int rc = st_parse_index(buf, size, "fuzz/model.safetensors.index.json", &files, &nf);
    if (rc == 0) {
        if (nf < 1 || !files) abort();
        for (int i = 0; i < nf; i++) {
            if (!files[i][0] || strchr(files[i], '/') || !strcmp(files[i], "..")) abort();
            for (int j = 0; j < i && nf <= 256; j++)
                if (!strcmp(files[i], files[j])) abort();
        }
    } else {
        if (files || nf != 0 || !cfsp_last_error()[0]) abort();
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    cfsp_clear_error();
    free(buf);
    return 0;
}
