/* err.c — failure reporting, coordinated exits and temporary-file cleanup (see err.h). */
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank = -1, g_nranks = 1;
static char g_msg[1024];

/* The registered temporary files: a list of any length that the SIGTERM / SIGINT handler may walk
 * at any moment. It only grows at its head; no node is freed, and a node's path and link never
 * change once it is in the list: a node is complete (path written, live set) before the head is
 * published with release order, so the handler, reading the head with acquire order, sees only
 * whole nodes. Unregistering clears live; registering a path again revives its dead node, so a job
 * that reuses names does not grow the list. Lock-free atomics are what C11 allows a signal
 * handler to touch. */
#if ATOMIC_POINTER_LOCK_FREE != 2 || ATOMIC_INT_LOCK_FREE != 2
#error "err.c: the temporary-file list needs lock-free atomic pointers and ints"
#endif
typedef struct tmp_node {
    struct tmp_node *next;
    atomic_int live;
    char path[];
} tmp_node;
static _Atomic(tmp_node *) g_tmp;

void cfsp_err_init(int rank, int nranks) { g_rank = rank; g_nranks = nranks; }
int cfsp_rank(void) { return g_rank < 0 ? 0 : g_rank; }
int cfsp_nranks(void) { return g_nranks; }
const char *cfsp_last_error(void) { return g_msg; }
void cfsp_clear_error(void) { g_msg[0] = 0; }

static const char *short_file(const char *f)
{
    const char *s = strstr(f, "src/");
    return s ? s : f;
}

int cfsp_fail_at(const char *file, int line, const char *fmt, ...)
{
    char body[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    /* keep the message on one line whatever the input contained */
    for (char *p = body; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    snprintf(g_msg, sizeof g_msg, "cfsp-mpi: error: %s [rank %d, %s:%d]", body, cfsp_rank(),
             short_file(file), line);
    return -1;
}

/* also the signal handler's: only atomics and unlink (async-signal-safe) */
static void remove_tmp_files(void)
{
    for (tmp_node *n = atomic_load_explicit(&g_tmp, memory_order_acquire); n; n = n->next)
        if (atomic_exchange_explicit(&n->live, 0, memory_order_acq_rel)) unlink(n->path);
}

void cfsp_tmp_register(const char *path)
{
    tmp_node *head = atomic_load_explicit(&g_tmp, memory_order_acquire);
    for (tmp_node *n = head; n; n = n->next)
        if (strcmp(n->path, path) == 0) {
            atomic_store_explicit(&n->live, 1, memory_order_release);
            return;
        }
    size_t len = strlen(path);
    tmp_node *n = xmalloc(sizeof *n + len + 1);
    memcpy(n->path, path, len + 1);
    atomic_init(&n->live, 1);
    n->next = head;
    while (!atomic_compare_exchange_weak_explicit(&g_tmp, &n->next, n, memory_order_release, memory_order_acquire)) {}
}

void cfsp_tmp_unregister(const char *path)
{
    for (tmp_node *n = atomic_load_explicit(&g_tmp, memory_order_acquire); n; n = n->next)
        if (strcmp(n->path, path) == 0) atomic_store_explicit(&n->live, 0, memory_order_release);
}

static void on_signal(int sig)
{
    remove_tmp_files();   /* unlink is async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

void cfsp_install_signal_cleanup(void)
{
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
}

_Noreturn void cfsp_die_at(const char *file, int line, const char *fmt, ...)
{
    char body[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cfsp-mpi: fatal: %s [rank %d, %s:%d]\n", body, cfsp_rank(), short_file(file),
            line);
    fflush(stderr);
    remove_tmp_files();
    /* unchecked: this is the failure path itself (a failing call here could only DIE again);
     * MPI_Abort does not return when it works, exit(1) follows when it does not */
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin && g_nranks > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void cfsp_sync(int rc)
{
    int init = 0;
    MPI_CHECK(MPI_Initialized(&init));
    if (!init) {
        if (rc != 0) {
            fprintf(stderr, "%s\n", g_msg[0] ? g_msg : "cfsp-mpi: error: (no message)");
            remove_tmp_files();
            exit(1);
        }
        return;
    }
    int mine = rc != 0 ? cfsp_rank() : g_nranks, first = g_nranks;
    MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == g_nranks) return;
    if (cfsp_rank() == first) {
        fprintf(stderr, "%s\n", g_msg[0] ? g_msg : "cfsp-mpi: error: (no message)");
        fflush(stderr);
    }
    remove_tmp_files();
    MPI_CHECK(MPI_Finalize());
    exit(1);
}

_Noreturn void cfsp_exit_all(int status)
{
    remove_tmp_files();
    MPI_CHECK(MPI_Finalize());
    exit(status);
}

int cfsp_fault(const char *action, const char *where)
{
    const char *f = getenv("CFSP_FAULT");
    char a[32], w[32];
    int r = -1;
    return f && sscanf(f, "%31[^:]:%d:%31s", a, &r, w) == 3 && r == cfsp_rank() && !strcmp(a, action) && !strcmp(w, where);
}
