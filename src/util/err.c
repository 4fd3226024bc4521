/* err.c — failure reporting, coordinated exits and temporary-file cleanup (see err.h). */
#include "cfsp/util/err.h"
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank = -1, g_nranks = 1;
static char g_msg[1024];

#define MAX_TMP 64
static char g_tmp[MAX_TMP][4096];
static volatile sig_atomic_t g_tmp_used[MAX_TMP];

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

static void remove_tmp_files(void)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp_used[i]) { unlink(g_tmp[i]); g_tmp_used[i] = 0; }
}

void cfsp_tmp_register(const char *path)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (!g_tmp_used[i]) {
            snprintf(g_tmp[i], sizeof g_tmp[i], "%s", path);
            g_tmp_used[i] = 1;
            return;
        }
}

void cfsp_tmp_unregister(const char *path)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp_used[i] && strcmp(g_tmp[i], path) == 0) g_tmp_used[i] = 0;
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
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin && g_nranks > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void cfsp_sync(int rc)
{
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        if (rc != 0) {
            fprintf(stderr, "%s\n", g_msg[0] ? g_msg : "cfsp-mpi: error: (no message)");
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
    MPI_Finalize();
    exit(1);
}

_Noreturn void cfsp_exit_all(int status)
{
    remove_tmp_files();
    MPI_Finalize();
    exit(status);
}

int cfsp_fault(const char *action, const char *where)
{
    const char *f = getenv("CFSP_FAULT");
    char a[32], w[32];
    int r = -1;
    return f && sscanf(f, "%31[^:]:%d:%31s", a, &r, w) == 3 && r == cfsp_rank() && !strcmp(a, action) && !strcmp(w, where);
}
