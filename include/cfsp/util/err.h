/* err.h — the one error convention of cfsp-mpi.
 *
 * Two kinds of failure:
 *  - Recoverable, detected while validating inputs (parsers, option checks): the function calls
 *    FAIL("file: field: problem"), which records one message (with rank, source file and line) and
 *    returns -1. Callers propagate -1. At phase boundaries every rank calls cfsp_sync(rc): a
 *    collective that, if any rank failed, prints the message of the lowest failing rank as one line,
 *    removes registered temporary files, finalizes MPI and exits 1 on every rank (no hang, no abort
 *    banner). Parsers built this way can be fuzzed without MPI.
 *  - Unexpected, mid-computation (an MPI/HDF5/IO call failing, out of memory): DIE(...) prints one
 *    line naming rank, file and line, removes temporary files and calls MPI_Abort.
 * MPI_CHECK / H5_CHECK / IO_CHECK wrap library calls so that every return code is checked. */
#ifndef CFSP_ERR_H
#define CFSP_ERR_H
#include <stddef.h>

void cfsp_err_init(int rank, int nranks);      /* after MPI_Init; before it rank is -1 */
int cfsp_rank(void);
int cfsp_nranks(void);

int cfsp_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define FAIL(...) cfsp_fail_at(__FILE__, __LINE__, __VA_ARGS__)
const char *cfsp_last_error(void);             /* the message recorded by the last FAIL */
void cfsp_clear_error(void);

_Noreturn void cfsp_die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define DIE(...) cfsp_die_at(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond, ...) do { if (!(cond)) DIE(__VA_ARGS__); } while (0)

/* Collective: every rank passes its status (0 or -1). Returns only if all succeeded. */
void cfsp_sync(int rc);
/* Collective exit with status 0 after cleanup (e.g. --help). */
_Noreturn void cfsp_exit_all(int status);

/* Test hook: 1 if the environment variable CFSP_FAULT is "ACTION:R:WHERE" with R this rank (any
 * thread may ask). Used by tests to kill a rank mid-write (kill:R:write, model_h5.c), to make the
 * raw writer's device writes fail (eio:R:rawio), its O_DIRECT open be refused (nodirect:R:rawio) or
 * its O_DIRECT writes fail with EINVAL (einval:R:rawio), or
 * it write without its thread, as when MPI grants no MPI_THREAD_FUNNELED (nothread:R:rawio), or
 * kill a rank in the middle of training step K of the pipelined trainer (kill:R:stepK, train_pipe.c), or
 * make rank R's second rename of the commit fail with EIO (erename:R:commit, run.c), or make the
 * rank that takes the output directory's lock hold it, before any work, until the file named by
 * CFSP_FAULT_RELEASE exists (hold:R:lock, util.c). */
int cfsp_fault(const char *action, const char *where);

/* Temporary outputs: registered paths (any number of them) are unlinked on any failure path (also
 * on SIGTERM/SIGINT). */
void cfsp_tmp_register(const char *path);
void cfsp_tmp_unregister(const char *path);
void cfsp_install_signal_cleanup(void);

#define MPI_CHECK(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) { \
    char es_[MPI_MAX_ERROR_STRING]; int el_ = 0; MPI_Error_string(rc_, es_, &el_); \
    DIE("%s failed: %s", #call, es_); } } while (0)
#define H5_CHECK(call) do { if ((long long)(call) < 0) DIE("HDF5 call %s failed", #call); } while (0)

#endif
