/* rawio.c — a rank's raw tensor bytes to the HDF5 file at HDF5's offsets, O_DIRECT, from a
 * writer thread (see rawio.h). The calling thread copies each aligned piece into one of NBUF
 * aligned buffers and queues it; the thread writes the queue in order and frees the buffers. */
#include "cfsp/ckpt/rawio.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBUF 3
#define BUF_BYTES (8u << 20)
#define SMALL_BYTES (1u << 20)   /* pieces below this (norms, strided rows) go straight to the buffered fd */

typedef struct { int buf; uint64_t off; size_t len; } job;

static int g_threaded = 1;

size_t raw_alignment(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    return pg > 4096 ? (size_t)pg : 4096;
}
void raw_set_threaded(int ok) { g_threaded = ok; }

struct raw_writer {
    char path[4096];
    int fd_direct, fd_buffered;     /* fd_direct -1: everything buffered */
    char refused[160];              /* why O_DIRECT is not used ("" if it is, or was not asked for) */
    int asked_direct;
    size_t align;                   /* raw_alignment(); BUF_BYTES is a multiple of it */
    unsigned char *buf[NBUF];
    int buf_free[NBUF];
    job queue[NBUF];
    int q_head, q_len, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv_job, cv_free;
    pthread_t thread;
    int threaded;                   /* 0: no writer thread, pieces are written by the caller */
    /* the first error of either thread */
    int err_no;
    uint64_t err_off;
    size_t err_len;
};

/* every byte or an errno (a short write without an error is retried) */
static int pwrite_all(int fd, const unsigned char *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0) { if (errno == EINTR) continue; return errno; }
        if (k == 0) return EIO;
        p += k; n -= (size_t)k; off += (uint64_t)k;
    }
    return 0;
}

static void note_error(raw_writer *w, int e, uint64_t off, size_t len)
{
    if (!w->err_no) { w->err_no = e; w->err_off = off; w->err_len = len; }
}

/* write one queued piece (on the writer thread, or on the caller's without one); w->mu not held */
static void run_job(raw_writer *w, job j)
{
    pthread_mutex_lock(&w->mu);
    int fd = w->fd_direct >= 0 ? w->fd_direct : w->fd_buffered, skip = w->err_no != 0;
    pthread_mutex_unlock(&w->mu);
    int e = 0;
    if (!skip) {
        if (cfsp_fault("eio", "rawio")) e = EIO;                                   /* test hooks (err.h) */
        else if (fd == w->fd_direct && cfsp_fault("einval", "rawio")) e = EINVAL;
        else e = pwrite_all(fd, w->buf[j.buf], j.len, j.off);
        if (e == EINVAL && fd == w->fd_direct) {      /* the file system wants a larger alignment: buffered from now on */
            e = pwrite_all(w->fd_buffered, w->buf[j.buf], j.len, j.off);
            if (close(fd) != 0 && !e) e = errno;
            pthread_mutex_lock(&w->mu);
            snprintf(w->refused, sizeof w->refused, "O_DIRECT write refused: %s", strerror(EINVAL));
            w->fd_direct = -1;
            pthread_mutex_unlock(&w->mu);
        }
    }
    pthread_mutex_lock(&w->mu);
    if (e) note_error(w, e, j.off, j.len);
    w->buf_free[j.buf] = 1;
    pthread_cond_signal(&w->cv_free);
    pthread_mutex_unlock(&w->mu);
}

static void *writer_main(void *arg)
{
    raw_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->q_len == 0 && !w->stop) pthread_cond_wait(&w->cv_job, &w->mu);
        if (w->q_len == 0) break;
        job j = w->queue[w->q_head];
        w->q_head = (w->q_head + 1) % NBUF;
        w->q_len--;
        pthread_mutex_unlock(&w->mu);
        run_job(w, j);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static int fail_io(raw_writer *w)
{
    return FAIL("%s: writing %zu bytes at offset %llu failed: %s", w->path, w->err_len, (unsigned long long)w->err_off,
                strerror(w->err_no));
}

raw_writer *raw_open(const char *path, int direct)
{
    raw_writer *w = xcalloc(1, sizeof *w);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->asked_direct = direct;
    w->align = raw_alignment();
    if (BUF_BYTES % w->align) DIE("%s: page size %zu does not divide the %u-byte write buffer", path, w->align, BUF_BYTES);
    w->fd_direct = -1;
    w->fd_buffered = open(path, O_WRONLY | O_CLOEXEC);
    if (w->fd_buffered < 0) DIE("%s: cannot open for writing: %s", path, strerror(errno));
    if (direct) {
        w->fd_direct = cfsp_fault("nodirect", "rawio") ? (errno = EINVAL, -1) : open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
        if (w->fd_direct < 0) snprintf(w->refused, sizeof w->refused, "O_DIRECT open refused: %s", strerror(errno));
    }
    for (int i = 0; i < NBUF; i++) {
        void *p = NULL;
        int e = posix_memalign(&p, w->align, BUF_BYTES);
        if (e) DIE("%s: cannot allocate a %u-byte aligned write buffer: %s", path, BUF_BYTES, strerror(e));
        w->buf[i] = p;
        w->buf_free[i] = 1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_job, NULL);
    pthread_cond_init(&w->cv_free, NULL);
    w->threaded = g_threaded && !cfsp_fault("nothread", "rawio");      /* test hook (err.h) */
    if (w->threaded) {
        int e = pthread_create(&w->thread, NULL, writer_main, w);
        if (e) DIE("%s: cannot start the writer thread: %s", path, strerror(e));
    }
    return w;
}

/* a buffer of the caller's, waiting for the thread to free one */
static int take_buffer(raw_writer *w)
{
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->err_no) { pthread_mutex_unlock(&w->mu); return -1; }   /* reported by raw_close */
        for (int i = 0; i < NBUF; i++)
            if (w->buf_free[i]) { w->buf_free[i] = 0; pthread_mutex_unlock(&w->mu); return i; }
        pthread_cond_wait(&w->cv_free, &w->mu);
    }
}

static void queue_job(raw_writer *w, int b, uint64_t off, size_t len)
{
    if (!w->threaded) { run_job(w, (job){ b, off, len }); return; }
    pthread_mutex_lock(&w->mu);
    w->queue[(w->q_head + w->q_len) % NBUF] = (job){ b, off, len };
    w->q_len++;
    pthread_cond_signal(&w->cv_job);
    pthread_mutex_unlock(&w->mu);
}

static void write_buffered(raw_writer *w, uint64_t off, const void *src, size_t n)
{
    int e = pwrite_all(w->fd_buffered, src, n, off);
    if (e) {
        pthread_mutex_lock(&w->mu);
        note_error(w, e, off, n);
        pthread_mutex_unlock(&w->mu);
    }
}

void raw_write(raw_writer *w, uint64_t off, const void *src, size_t n)
{
    const unsigned char *s = src;
    pthread_mutex_lock(&w->mu);
    int direct = w->fd_direct >= 0, failed = w->err_no != 0;
    pthread_mutex_unlock(&w->mu);
    if (failed) return;                       /* the first error is reported by raw_close */
    uint64_t al = w->align, a = (off + al - 1) / al * al, z = (off + n) / al * al;
    if (!direct) { a = off; z = off + n; }    /* all through the queue, unaligned is fine */
    if (z <= a || n < SMALL_BYTES) { write_buffered(w, off, s, n); return; }
    if (a > off) write_buffered(w, off, s, (size_t)(a - off));
    for (uint64_t p = a; p < z; p += BUF_BYTES) {
        size_t len = z - p < BUF_BYTES ? (size_t)(z - p) : BUF_BYTES;
        int b = take_buffer(w);
        if (b < 0) return;
        memcpy(w->buf[b], s + (p - off), len);
        queue_job(w, b, p, len);
    }
    if (off + n > z) write_buffered(w, z, s + (z - off), (size_t)(off + n - z));
}

int raw_close(raw_writer *w, char *mode, size_t mode_cap)
{
    if (w->threaded) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_signal(&w->cv_job);
        pthread_mutex_unlock(&w->mu);
        int e = pthread_join(w->thread, NULL);
        if (e) DIE("%s: joining the writer thread: %s", w->path, strerror(e));
    }
    int rc = w->err_no ? fail_io(w) : 0;
    if (!rc && w->fd_direct >= 0 && fdatasync(w->fd_direct) != 0) rc = FAIL("%s: fdatasync: %s", w->path, strerror(errno));
    if (!rc && fdatasync(w->fd_buffered) != 0) rc = FAIL("%s: fdatasync: %s", w->path, strerror(errno));
    if (w->fd_direct >= 0 && close(w->fd_direct) != 0 && !rc) rc = FAIL("%s: close: %s", w->path, strerror(errno));
    if (close(w->fd_buffered) != 0 && !rc) rc = FAIL("%s: close: %s", w->path, strerror(errno));
    if (mode) {
        if (!w->asked_direct) snprintf(mode, mode_cap, "buffered");
        else if (w->refused[0]) snprintf(mode, mode_cap, "buffered (%s)", w->refused);
        else snprintf(mode, mode_cap, "direct");
    }
    for (int i = 0; i < NBUF; i++) free(w->buf[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv_job);
    pthread_cond_destroy(&w->cv_free);
    free(w);
    return rc;
}
