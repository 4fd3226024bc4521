/* fuzz_config.c — libFuzzer harness for model_config_parse (Hugging Face config.json).
 * On success checks the invariants the rest of cfsp-mpi relies on. Built by mpi_scripts/fuzz.sh. */
#include "cfsp/format/model_config.h"
#include "cfsp/util/err.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    model_config c;
    int rc = model_config_parse(buf, size, "fuzz/config.json", &c);
    if (rc == 0) {
        if (c.hidden < 1 || c.n_layers < 1 || c.n_layers > CFSP_MAX_LAYERS || c.n_heads < 1 ||
            c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads || c.head_dim < 2 || c.head_dim % 2 ||
            c.vocab < 1 || c.bos_id < -1 || c.bos_id >= c.vocab || c.eos_id < -1 || c.eos_id >= c.vocab ||
            !(c.eps > 0) || !c.ffn || !c.source_json || memcmp(c.source_json, buf, size) != 0)
            abort();
        for (int l = 0; l < c.n_layers; l++)
            if (c.ffn[l] < 1) abort();
        (void)model_block_params(&c, 0);
        model_config_free(&c);
    } else if (!cfsp_last_error()[0]) {
        abort();
    }
    cfsp_clear_error();
    free(buf);
    return 0;
}
