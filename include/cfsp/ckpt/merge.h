/* merge.h — `recover --merge`'s output in the checkpoint format: a copy of a pruned checkpoint with
 * some tensors replaced, serial (rank 0) or parallel (every rank writes the tensors it owns). The caller computes each new tensor in fp32; the copy
 * stores it rounded to the tensor's stored dtype with its new checksum, so that `cfsp-mpi verify`
 * and the reader accept it as any pruned checkpoint. It is written as OUT.tmp and renamed into
 * place only when complete. */
#ifndef CFSP_CKPT_MERGE_H
#define CFSP_CKPT_MERGE_H
#include <stdint.h>

typedef struct ckpt_merge ckpt_merge;

/* the provenance recorded in the copy (layout.h's CKPT_A_MERGED_*) in place of the file-level
 * fingerprint of the checksums, which no longer applies */
typedef struct {
    const char *from;          /* the pruned checkpoint merged into */
    const char *plan;          /* "uniform" | "adaptive" */
    int64_t steps;             /* optimizer steps trained */
    int64_t params;            /* adapter parameters */
} ckpt_merge_info;

/* Copy the pruned checkpoint src to out_path.tmp (registered with cfsp_tmp_register) and open the
 * copy for writing. NULL (after a FAIL message) if it cannot. */
ckpt_merge *ckpt_merge_begin(const char *src, const char *out_path);
/* Replace the tensor called name (Hugging Face name) by the fp32 values v [rows, cols], rounded to
 * its stored dtype; FAIL if the copy has no such tensor or it has another shape. */
int ckpt_merge_tensor(ckpt_merge *m, const char *name, const float *v, int64_t rows, int64_t cols);
/* collective: the parallel form. Rank 0 copies the file, every rank opens the copy (MPI-IO). */
ckpt_merge *ckpt_merge_begin_par(const char *src, const char *out_path);
/* collective: the tensor's values v are given by rank owner only (NULL elsewhere) */
int ckpt_merge_tensor_par(ckpt_merge *m, const char *name, const float *v, int64_t rows, int64_t cols, int owner);
/* (parallel form: collective; a failed write on any rank fails every rank) ok: record info, close, fsync and rename the copy to out_path; otherwise close it only (the
 * registered .tmp is removed at exit). Frees m. 0 when the output is in place, else -1. */
int ckpt_merge_end(ckpt_merge *m, int ok, const ckpt_merge_info *info);
#endif
