/* blas_env.h — choose OpenBLAS's kernels and thread count for an MPI rank (blas_env.c). */
#ifndef CFSP_BLAS_ENV_H
#define CFSP_BLAS_ENV_H
#include <stddef.h>

/* The OPENBLAS_CORETYPE worth forcing when the runtime dispatch chose `corename`: NULL when the
 * choice is fine (a specific core) or nothing better is supported by this CPU. */
const char *blas_better_coretype(const char *corename);
/* Before MPI_Init: if OpenBLAS fell back to generic kernels on a CPU with AVX2/AVX-512, set
 * OPENBLAS_CORETYPE and re-execute the program (once). Returns only if nothing was done. */
void blas_fix_coretype(char **argv);
/* After MPI_Init: unless the user set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, one BLAS thread per
 * core this rank may use (its affinity mask; shared by the node's ranks when unbound). */
int blas_set_threads(void);
/* the BLAS threads of this rank (the bf16 backend gives oneDNN the same number) */
int blas_threads(void);
/* "OpenBLAS Haswell kernels, 1 thread per rank" */
void blas_describe(char *buf, size_t len);
#endif
