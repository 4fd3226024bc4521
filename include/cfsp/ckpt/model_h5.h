/* model_h5.h — the pruned checkpoint: one HDF5 file per (method, ratio), written by all ranks in
 * parallel (collective metadata through MPI-IO: every rank creates every dataset in the same
 * order; each rank writes the data of its own stage units — whole tensors, or row / column
 * ranges of a block's FFN tensors), tensors in the stored dtype, a checksum per tensor. The names
 * and shapes of its datasets and attributes are layout.h's; the reader is reader.h, the rewrite of
 * merged tensors merge.h. */
#ifndef CFSP_MODEL_H5_H
#define CFSP_MODEL_H5_H
#include "cfsp/model/weights.h"
#include <stddef.h>

typedef struct {
    const model_config *cfg;
    const st_model *st;             /* the source headers (dtypes), identical on every rank */
    const rank_weights *w;          /* embeddings, final norm, lm_head */
    const unit_weights *units;      /* this rank's (pruned) units */
    const int *counts;              /* [L] kept channels per block */
    const int *kofs;                /* [units] offset of each FFN slice's kept channels in its block */
    int64_t *const *kept;           /* per own unit: kept block-channel indices (FFN slices) */
    const float *bias;              /* rank 0: [L][D] summed flap bias, or NULL */
    const double *importance;       /* [L] (rank 0) */
    const double *keep_fraction;    /* [L] (rank 0) */
    double ratio;
    const char *method;
    const char *options_json;
    int write_io;                   /* WRITE_IO_* */
} model_out;

/* How tensor bytes reach the file. HDF5 (MPI-IO, collective metadata) always creates the file and
 * its datasets; then either each rank writes its bytes at the datasets' offsets itself (rawio.h),
 * through O_DIRECT (falling back to buffered writes where the file system refuses it) or buffered,
 * or through H5Dwrite (independent MPI-IO). The files are the same byte for byte in their data. */
enum { WRITE_IO_DIRECT, WRITE_IO_BUFFERED, WRITE_IO_MPIIO };

/* Collective. Writes the file at path (the caller's temporary name, renamed when the whole job
 * has succeeded) and fsyncs it; returns the bytes of tensor data written by this rank. io_mode
 * (if not NULL) receives how this rank's bytes went: "direct", "buffered[ (why)]" or "mpiio". */
uint64_t model_h5_write(const char *path, const model_out *mo, double *seconds, char *io_mode, size_t io_mode_cap);
/* Serial: recompute every tensor checksum of a file; 0 if all match (prints a summary). */
int model_h5_verify(const char *path);

/* The tensor checksum: sum over elements (mod 2^64) of a 64-bit mix of (position, raw bits), so
 * that parts written by different ranks combine exactly. Elements of a [rows, cols] block placed
 * at (r0, c0) of a dataset with full_cols columns. */
uint64_t tensor_checksum(const void *data, size_t elsize, int64_t rows, int64_t cols, int64_t r0, int64_t c0, int64_t full_cols);
/* tests: 1 = always the scalar loop (the AVX2 one must give the same sums) */
void tensor_checksum_force_scalar(int on);
#endif
