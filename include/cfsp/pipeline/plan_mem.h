/* plan_mem.h — the memory of one rank of a run, as cfsp-mpi lays it out (layer: pipeline): the
 * stored bytes of the tensors weights_load maps for the rank's units (model/weights.c), its
 * embedding / final norm / lm_head, the working buffers pipeline_init and fwd_ws_init_width
 * allocate, and the request rule derived from them. `cfsp-mpi plan` prints it per rank.
 *
 * Request rule (bytes per rank):
 *     request = stored + margin + buffers + 1 GiB,  margin = max(stored / 4, largest FFN slice)
 *   stored   the mapped weights, resident once touched (every pass reads all of them);
 *   margin   a pruning step copies the kept rows/columns of each FFN slice before dropping the
 *            original's pages (prune/slice.c), so copy and original overlap by up to one slice;
 *            the quarter also covers allocator slack and page-cache pages a memory cgroup counts;
 *   buffers  computed exactly below (allocated once per run);
 *   1 GiB    MPI, HDF5 and OpenBLAS buffers, the token streams every rank holds, the statistics
 *            (16 bytes per FFN channel), the checkpoint writer's buffers (3 x 8 MB), the last
 *            rank's KL reference (model/evalref.h: 20 bytes per evaluated position + a vocabulary
 *            row; 2.6 MB for 64 windows of 2048 tokens). */
#ifndef CFSP_PLAN_MEM_H
#define CFSP_PLAN_MEM_H
#include "cfsp/format/safetensors.h"
#include "cfsp/pipeline/pipeline.h"

#define PLAN_MEM_FIXED_BYTES (1ull << 30)

typedef struct {
    int first_unit, last_unit;     /* this rank's units [first, last) */
    int has_embed, has_head;       /* rank 0 embeds; the last rank holds the final norm + lm_head */
    int attention_units, ffn_width;/* own attention units (key/value caches); widest own FFN slice */
    /* stored bytes, in the tensors' stored dtypes (= weights_load's bytes_expected) */
    uint64_t unit_bytes;           /* attention q/k/v/o + input norm; FFN gate/up rows + down columns (+ the post-attention norm with slice 0) */
    uint64_t embed_bytes;          /* embed_tokens [V, D]: rank 0, and the last rank when tied */
    uint64_t head_bytes;           /* final norm + lm_head [V, D] (tied: the norm only) */
    uint64_t stored_bytes;         /* the sum of the three */
    uint64_t largest_ffn_bytes;    /* the largest own FFN slice */
    /* working buffers (fp32) */
    uint64_t panel_bytes;          /* the 16-bit -> fp32 weight conversion panel (forward.c) */
    uint64_t activation_bytes;     /* forward activations at --chunk (with the bf16 mode's rounded operands), the 3 rotating micro-batch buffers [3, chunk, D] */
    uint64_t kv_cache_bytes;       /* key + value cache [seqlen, KV] per own attention unit */
    uint64_t logits_bytes;         /* last rank: logits [head_rows, V] */
    uint64_t table_bytes;          /* RoPE tables [seqlen, head_dim/2] x 2, fp32 copies of the norms */
    uint64_t buffer_bytes;         /* the sum of the five */
    uint64_t margin_bytes, request_bytes;   /* the request rule above */
} rank_mem;

/* Memory of rank r of P under the stage map, for calibration / evaluation at seqlen and chunk.
 * st: the checkpoint's headers for the stored dtypes (NULL: every tensor in the config's
 * torch_dtype); a tensor the rank needs that st lacks is an error, as in weights_load. */
int plan_rank_mem(const model_config *c, const st_model *st, const unit_plan *up, const stage_map *map,
                  int r, int seqlen, int chunk, rank_mem *m);
#endif
