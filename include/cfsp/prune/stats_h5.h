/* stats_h5.h — the calibration statistics file (serial HDF5, written and read by the root):
 * every block's importances for all global metrics and per-channel activation sums, the token
 * counts and a fingerprint of the model, so that `cfsp-mpi prune --stats` needs no forward pass. */
#ifndef CFSP_STATS_H5_H
#define CFSP_STATS_H5_H
#include "cfsp/format/model_config.h"
#include "cfsp/prune/stats.h"

#define STATS_H5_FORMAT "cfsp-mpi-stats/2"     /* every dataset carries a "checksum" (model_h5.h's tensor_checksum) */
#define STATS_H5_FORMAT_V1 "cfsp-mpi-stats/1"  /* no checksums: read with a warning, range-checked */

int stats_h5_write(const char *path, const model_config *c, const block_stats *all, int nsamples, int seqlen, uint64_t fingerprint);
/* all[L] must be stats_init'ed with the model's sizes; FAILs (one line naming the file and the
 * dataset or attribute) on any mismatch: the model's fingerprint and shapes, a checksum, counts
 * (nsamples >= 1, seqlen >= 2, ntokens = nsamples x seqlen), a value that is not finite, a negative
 * sum of squares or importance, an angular / cosine importance above ntokens / 2 ntokens */
int stats_h5_read(const char *path, const model_config *c, block_stats *all, int *nsamples, int *seqlen, uint64_t fingerprint);
#endif
