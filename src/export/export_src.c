/* export_src.c — the tensor source of `cfsp-mpi export` (see export.h): the checkpoint reader of
 * cfsp/ckpt/reader.h under export's names, and the size of the row panels the exporters stream. */
#include "cfsp/export/export.h"

int ex_source_open_h5(const char *path, const char *src_dir_override, ex_source *s) { return ckpt_open(path, src_dir_override, s); }
int ex_source_open_dir(const char *dir, ex_source *s) { return ckpt_open_dir(dir, s); }
const ex_tensor *ex_find(const ex_source *s, const char *name) { return ckpt_find(s, name); }
int ex_read_rows(ex_source *s, const ex_tensor *t, int64_t r0, int64_t n, void *buf) { return ckpt_read_rows(s, t, r0, n, buf); }
void ex_source_close(ex_source *s) { ckpt_close(s); }
uint64_t ex_tensor_bytes(const ex_tensor *t) { return ckpt_tensor_bytes(t); }

int64_t ex_panel_rows(const ex_tensor *t, int64_t multiple)
{
    int64_t row = t->cols * (int64_t)dtype_size(t->dtype);
    int64_t n = (int64_t)EX_PANEL_BYTES / (row ? row : 1);
    if (multiple < 1) multiple = 1;
    n -= n % multiple;
    if (n < multiple) n = multiple;
    return n > t->rows ? t->rows : n;
}
