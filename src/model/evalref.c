/* evalref.c — the dense model as the reference of an evaluation: the scratch file of dense logits,
 * the per-position KL divergence and argmax agreement of a pruned pass, and their summary (see
 * evalref.h). */
#include "cfsp/model/evalref.h"
#include "cfsp/util/err.h"
#include "cfsp/util/util.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void eval_ref_space(const char *dir, int V, int64_t cap, double *need, double *avail)
{
    *need = (double)cap * (double)V * sizeof(float);
    *avail = (double)free_disk_bytes(dir);
}

int eval_ref_open(eval_ref *r, const char *dir, int V, int64_t cap, int per_window)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    uint64_t need = (uint64_t)cap * (uint64_t)V * sizeof(float);
    int64_t avail = free_disk_bytes(dir);
    if (avail >= 0 && (uint64_t)avail < need)
        return FAIL("%s: --kl-dir: the dense logits of the KL divergence need %.3g GB (%lld positions x %d words x 4 bytes), "
                    "the file system has %.3g GB free (--kl-dir DIR elsewhere, fewer --eval-windows, or --kl 0)",
                    dir, need / 1e9, (long long)cap, V, avail / 1e9);
    char path[4200];
    snprintf(path, sizeof path, "%s/.cfsp-dense-logits.XXXXXX", dir);
    r->fd = mkstemp(path);
    if (r->fd < 0) return FAIL("%s: --kl-dir: cannot create the scratch file of the dense logits there: %s", dir, strerror(errno));
    if (unlink(path) != 0) {                 /* no name: gone with the process, however it ends */
        int e = errno;
        close(r->fd);
        r->fd = -1;
        return FAIL("%s: cannot unlink the scratch file of the dense logits: %s", path, strerror(e));
    }
    r->V = V;
    r->cap = cap;
    r->per_window = per_window > 0 ? per_window : 1;
    r->lse = xmalloc(sizeof(double) * (size_t)(cap ? cap : 1));
    r->top1 = xmalloc(sizeof(int32_t) * (size_t)(cap ? cap : 1));
    r->kl = xmalloc(sizeof(double) * (size_t)(cap ? cap : 1));
    r->row = xmalloc(sizeof(float) * (size_t)V);
    return 0;
}

void eval_ref_close(eval_ref *r)
{
    if (r->fd >= 0) close(r->fd);
    free(r->lse);
    free(r->top1);
    free(r->kl);
    free(r->row);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

void eval_ref_begin(eval_ref *r, int compare)
{
    r->compare = compare;
    r->n = 0;
    r->agree = 0;
    r->err = 0;
    r->err_pos = -1;
}

static int32_t argmax(const float *v, int n)
{
    int32_t k = 0;
    for (int j = 1; j < n; j++) if (v[j] > v[k]) k = j;
    return k;
}

/* all of n bytes at off, retrying short transfers; 0 or an errno (EIO for an early end of file) */
static int full_io(int fd, void *buf, size_t n, off_t off, int write)
{
    char *p = buf;
    while (n > 0) {
        ssize_t k = write ? pwrite(fd, p, n, off) : pread(fd, p, n, off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno;
        if (k == 0) return write ? ENOSPC : EIO;
        p += k;
        n -= (size_t)k;
        off += k;
    }
    return 0;
}

void eval_ref_row(eval_ref *r, const float *logits, double lse)
{
    int64_t i = r->n++;
    if (r->err || i >= r->cap) return;           /* reported by eval_ref_end */
    int V = r->V;
    off_t off = (off_t)i * (off_t)V * (off_t)sizeof(float);
    if (!r->compare) {
        r->lse[i] = lse;
        r->top1[i] = argmax(logits, V);
        if ((r->err = full_io(r->fd, (void *)logits, sizeof(float) * (size_t)V, off, 1))) r->err_pos = i;
        return;
    }
    if ((r->err = full_io(r->fd, r->row, sizeof(float) * (size_t)V, off, 0))) {
        r->err_pos = i;
        return;
    }
    /* the log-probabilities and the sum in double; p_d by expf (relative error ~1e-7, well inside the
     * float32 logits' own; half the time of exp, measured: results/bench/kl.md) */
    const float *d = r->row;
    double ld = r->lse[i], kl = 0.0;
    for (int j = 0; j < V; j++) {
        double lpd = (double)d[j] - ld, lpp = (double)logits[j] - lse;
        kl += (double)expf((float)lpd) * (lpd - lpp);
    }
    r->kl[i] = kl;
    r->agree += argmax(logits, V) == r->top1[i];
}

int eval_ref_end(const eval_ref *r)
{
    if (r->err)
        return FAIL("%s: the scratch file of the dense logits (--kl-dir): %s position %lld failed: %s", r->dir,
                    r->compare ? "reading" : "writing", (long long)r->err_pos, strerror(r->err));
    if (r->n != r->cap)
        return FAIL("the KL divergence: %lld evaluated positions, the dense pass had %lld", (long long)r->n, (long long)r->cap);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double percentile_sorted(const double *v, int64_t n, double q)
{
    double h = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(h);
    if (lo >= n - 1) return v[n - 1];
    double t = h - (double)lo, a = v[lo], b = v[lo + 1];
    return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1.0 - t);   /* NumPy's _lerp */
}

kl_summary eval_ref_summary(const eval_ref *r)
{
    kl_summary s = { NAN, NAN, NAN, NAN, NAN, r->n, 0, NULL };
    if (r->n <= 0) return s;
    s.nwin = (int)((r->n + r->per_window - 1) / r->per_window);
    s.win = xcalloc((size_t)s.nwin, sizeof(double));
    for (int w = 0; w < s.nwin; w++) {
        int64_t a = (int64_t)w * r->per_window, b = a + r->per_window < r->n ? a + r->per_window : r->n;
        double t = 0.0;
        for (int64_t i = a; i < b; i++) t += r->kl[i];
        s.win[w] = t / (double)(b - a);
    }
    double *v = xmalloc(sizeof(double) * (size_t)r->n), sum = 0.0;
    for (int64_t i = 0; i < r->n; i++) sum += v[i] = r->kl[i];
    qsort(v, (size_t)r->n, sizeof *v, cmp_double);
    s.mean = sum / (double)r->n;
    s.median = percentile_sorted(v, r->n, 0.5);
    s.p99 = percentile_sorted(v, r->n, 0.99);
    s.max = v[r->n - 1];
    s.top1 = (double)r->agree / (double)r->n;
    free(v);
    return s;
}
