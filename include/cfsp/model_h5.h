/* model_h5.h — the pruned checkpoint: one HDF5 file per (method, ratio), written by all ranks in
 * parallel through MPI-IO (collective metadata, each rank writes its own blocks), tensors in the
 * stored dtype, FNV-1a checksums per tensor. */
#ifndef CFSP_MODEL_H5_H
#define CFSP_MODEL_H5_H
#include "cfsp/pipeline.h"

#define MODEL_H5_FORMAT "cfsp-mpi-pruned/1"

typedef struct {
    const model_config *cfg;
    const stage_map *map;
    const rank_weights *w;          /* embeddings, final norm, lm_head, attention of own blocks */
    const block_weights *blocks;    /* this rank's pruned blocks */
    int64_t *const *kept;           /* kept channel indices per own block */
    const int *counts;              /* [L] channel count of every block (all ranks) */
    const double *importance;       /* [L] (rank 0) */
    const double *keep_fraction;    /* [L] (rank 0) */
    double ratio;
    const char *method;
    const char *options_json;
} model_out;

/* Collective. Writes the file at path (the caller's temporary name, renamed when the whole job has
 * succeeded); returns the bytes of tensor data written by this rank. */
uint64_t model_h5_write(const char *path, const model_out *mo, double *seconds);
/* Serial: recompute every tensor checksum of a file; 0 if all match (prints a summary). */
int model_h5_verify(const char *path);
#endif
