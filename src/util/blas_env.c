/* blas_env.c — OpenBLAS kernel and thread choice for this process (see blas_env.h).
 *
 * Two measured problems this module owns:
 *  1. OpenBLAS 0.3.21's runtime dispatch (DYNAMIC_ARCH) falls back to its generic "Prescott" SSE3
 *     kernels on CPUs it does not recognise by cpuid family/model, which virtual machines often
 *     report; on an AVX-512 KVM guest that cost 3.5x in sgemm (14.4 vs 50.2 GFLOP/s at the 7B block
 *     shapes, results/bench). OpenBLAS reads OPENBLAS_CORETYPE only when the library is loaded, so
 *     the fix is to set it and re-execute the program before MPI_Init, once.
 *  2. An MPI job where the user did not set OPENBLAS_NUM_THREADS gets OpenBLAS's default of one
 *     thread per online core in every rank, all bound to the rank's one core by mpirun. After
 *     MPI_Init the thread count is set to the cores this rank may run on divided by the ranks of
 *     the job on this node (>= 1), unless the user chose one. */
#include "cfsp/util/blas_env.h"
#include "cfsp/util/err.h"
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int);

static const char *generic_cores[] = { "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                       "Katmai", "Coppermine", "Northwood", "Banias", "Athlon", "Opteron",
                                       "Opteron_SSE3", "Barcelona", NULL };

const char *blas_better_coretype(const char *corename)
{
    int generic = 0;
    for (int i = 0; generic_cores[i] && !generic; i++) generic = !strcasecmp(corename, generic_cores[i]);
    if (!generic) return NULL;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void blas_fix_coretype(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv("CFSP_BLAS_REEXEC")) return;
    const char *better = blas_better_coretype(openblas_get_corename());
    if (!better) return;
    setenv("OPENBLAS_CORETYPE", better, 1);
    setenv("CFSP_BLAS_REEXEC", openblas_get_corename(), 1);   /* once; remembers what dispatch chose */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the generic kernels (correct, only slower) */
    unsetenv("OPENBLAS_CORETYPE");
}

int blas_set_threads(void)
{
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS") || getenv("GOTO_NUM_THREADS"))
        return openblas_get_num_threads();
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int local = 1;
    MPI_CHECK(MPI_Comm_size(node, &local));
    MPI_CHECK(MPI_Comm_free(&node));
    cpu_set_t set;
    int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    /* a rank bound to its own cores uses them all; unbound ranks share the node's cores */
    int bound = cores < (int)sysconf(_SC_NPROCESSORS_ONLN);
    int threads = bound ? cores : cores / (local > 0 ? local : 1);
    if (threads < 1) threads = 1;
    openblas_set_num_threads(threads);
    return threads;
}

int blas_threads(void) { return openblas_get_num_threads(); }

void blas_describe(char *buf, size_t len)
{
    const char *was = getenv("CFSP_BLAS_REEXEC");
    snprintf(buf, len, "OpenBLAS %s kernels%s%s%s, %d thread%s per rank", openblas_get_corename(),
             was ? " (runtime dispatch chose " : "", was ? was : "", was ? "; set OPENBLAS_CORETYPE to override)" : "",
             openblas_get_num_threads(), openblas_get_num_threads() == 1 ? "" : "s");
}
