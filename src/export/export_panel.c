/* export_panel.c — the row panels the exporters stream (see export.h): how many rows of a tensor
 * one panel of at most EX_PANEL_BYTES holds. The tensors come from the checkpoint reader
 * (cfsp/ckpt/reader.h). */
#include "cfsp/export/export.h"

int64_t ex_panel_rows(const ckpt_tensor *t, int64_t multiple)
{
    int64_t row = t->cols * (int64_t)dtype_size(t->dtype);
    int64_t n = (int64_t)EX_PANEL_BYTES / (row ? row : 1);
    if (multiple < 1) multiple = 1;
    n -= n % multiple;
    if (n < multiple) n = multiple;
    return n > t->rows ? t->rows : n;
}
