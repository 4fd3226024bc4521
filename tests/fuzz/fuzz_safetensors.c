/* fuzz_safetensors.c — libFuzzer harness for st_parse_header (safetensors header JSON).
 * Input layout: the first 8 bytes (little-endian) give the size of the file's data buffer
 * (inputs shorter than 8 bytes use 0); the rest is the header text. Every header is parsed
 * twice into one st_model (as file 0 and file 1), so the second pass also exercises duplicate
 * names across files and the hash table after growth. Built by mpi_scripts/fuzz.sh. */
#include "cfsp/format/safetensors.h"
#include "cfsp/util/err.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t data_size = 0;
    size_t skip = size < 8 ? size : 8;
    for (size_t i = 0; i < skip; i++) data_size |= (uint64_t)data[i] << (8 * i);
    /* small sizes are the interesting ones; keep the top byte so that huge ones also occur */
    if (!(data_size >> 63)) data_size &= 0xffffffffu;
    const char *json = (const char *)data + skip;
    size_t len = size - skip;
    /* an exact-size heap copy: ASan catches any read past the header's end */
    char *buf = malloc(len ? len : 1);
    if (len) memcpy(buf, json, len);
    st_model m;
    memset(&m, 0, sizeof m);
    int rc = st_parse_header(buf, len, data_size, "fuzz.safetensors", 0, &m);
    if (rc == 0) {
        /* every accepted tensor must be within the data buffer and consistent with its shape */
        for (int i = 0; i < m.nt; i++) {
            const st_tensor *t = &m.t[i];
            if (t->end < t->begin || t->end > data_size) abort();
            if (st_find(&m, t->name) != t) abort();
            uint64_t count = dtype_size(t->dtype);
            for (int d = 0; d < t->ndim; d++) count *= (uint64_t)t->shape[d];
            if (count != st_nbytes(t)) abort();
        }
        /* no two accepted tensors overlap */
        for (int i = 0; i < m.nt; i++)
            for (int j = i + 1; j < m.nt && m.nt <= 512; j++) {
                const st_tensor *a = &m.t[i], *b = &m.t[j];
                if (a->begin < a->end && b->begin < b->end && a->begin < b->end && b->begin < a->end) abort();
            }
        int nt = m.nt;
        rc = st_parse_header(buf, len, data_size, "fuzz-2.safetensors", 1, &m);
        if (rc == 0 && nt > 0) abort();   /* the same names again must be rejected */
    } else if (!cfsp_last_error()[0]) {
        abort();                          /* a failure always leaves a message */
    }
    cfsp_clear_error();
    /* st_close frees names, tensors and the hash; it has no files to close here */
    st_close(&m);
    free(buf);
    return 0;
}
